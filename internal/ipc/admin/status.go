package admin

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
)

// Status is the reply to ipc.OpStatus, as JSON: the contract of
// `ipwatchctl status -json` (see the README).
type Status struct {
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	BPF           string  `json:"bpf"` // "on", or why it is off
	// Shedding says whether the kernel refuses, for per-connection
	// services, new connections past an entry's rate= ("on", or why it
	// is off), and ShedLimited how many addresses and ports it limits
	// now.
	Shedding       string       `json:"shedding"`
	ShedLimited    int          `json:"shed_limited"`
	NetlinkResyncs uint64       `json:"netlink_resyncs"`
	Queries        QueryCounts  `json:"queries"`
	Confs          []ConfStatus `json:"confs"`
	Unmapped       []Unmapped   `json:"unmapped"`
	// ServiceProblems are super-server lines that start virtuald but
	// that ipwatchd cannot understand (see ConfStatus.Services).
	ServiceProblems []ServiceProblem `json:"service_problems"`
}

// ServiceProblem is a super-server's line or unit that starts virtuald
// but cannot be understood.
type ServiceProblem struct {
	From   string `json:"from"` // FILE:LINE, or the unit's path
	Reason string `json:"reason"`
}

// QueryCounts counts resolve questions by the answer given.
type QueryCounts struct {
	OK      uint64 `json:"ok"`
	Stale   uint64 `json:"stale"`
	Racy    uint64 `json:"racy"` // the file had changed too recently to answer for it by identity
	Unknown uint64 `json:"unknown"`
	Error   uint64 `json:"error"`
}

// ConfStatus is one conf file as the daemon holds it.
type ConfStatus struct {
	Path         string      `json:"path"`
	Generation   uint64      `json:"generation"` // 0: never loaded
	LoadedAt     time.Time   `json:"loaded_at"`
	Error        string      `json:"error"`                   // why the last load failed ("" when it did not): every entry is then refused (state invalid), as virtuald refuses every connection
	Adopted      string      `json:"adopted"`                 // why the daemon serves it: given with -conf, named by a service, or asked about by a virtuald (forgotten when it is gone)
	Problems     []string    `json:"problems"`                // FILE:LINE messages of the loaded copy, the first DefaultStatusLimit
	ProblemsMore int         `json:"problems_more,omitempty"` // problems beyond those (ipwatchctl check lists them all)
	Counts       StateCounts `json:"counts"`                  // every entry, by state
	// CheckedAt is when the roots of the entries not listed, and of the
	// absent ones, were last checked (by the daemon's validator); zero
	// when every root was checked for this reply.
	CheckedAt time.Time `json:"checked_at"`
	// Checking is set while the daemon's validator has not yet checked
	// every root of a large file: entries not listed count as valid.
	Checking bool          `json:"checking,omitempty"`
	Entries  []EntryStatus `json:"entries"` // those the query lists (see StatusQuery)
	More     int           `json:"more"`    // entries the query matches beyond those listed
	// Services are the super-servers' services that start virtuald with
	// this file, as ipwatchd found them (inetd.conf, xinetd, systemd
	// socket units).
	Services []ServiceStatus `json:"services"`
	// ProgramsNotReady counts the entries inside whose root a program
	// of those services cannot start (see EntryStatus.Programs).
	ProgramsNotReady int `json:"programs_not_ready"`
	// ProgramsCheckedAt is when the programs were last checked inside
	// every root (zero: not yet, or no services).
	ProgramsCheckedAt time.Time `json:"programs_checked_at"`
	// ConnectionsCounted says what an entry's Connections count.
	ConnectionsCounted string `json:"connections_counted"`
}

// ServiceStatus is one service of a super-server that starts virtuald.
type ServiceStatus struct {
	From        string   `json:"from"`         // FILE:LINE, or the unit's path
	SuperServer string   `json:"super_server"` // "inetd", "xinetd" or "systemd"
	Name        string   `json:"name"`         // the service's name there
	Program     string   `json:"program"`      // what virtuald starts inside the root
	Args        []string `json:"args"`         // its argv, argv[0] first
	Accept      bool     `json:"accept"`       // virtuald -accept (else one virtuald per connection)
	Isolate     string   `json:"isolate"`      // virtuald's -isolate: the isolation of the entries without isolate=
	Transport   string   `json:"transport"`    // "tcp" or "udp"
	Port        uint16   `json:"port"`         // 0 when not known
	Address     string   `json:"address"`      // the address the socket is bound to; "" for every address
}

// StateCounts counts entries by state.
type StateCounts struct {
	Live    int `json:"live"`
	Absent  int `json:"absent"`
	Invalid int `json:"invalid"`
}

// Entry states.
const (
	StateLive    = "live"    // an interface holds an address this entry serves
	StateAbsent  = "absent"  // valid, but no interface holds an address it serves
	StateInvalid = "invalid" // refused, for Reason
)

// EntryStatus is one entry of a conf file.
type EntryStatus struct {
	Key         string          `json:"key"`
	Line        int             `json:"line"`
	Root        string          `json:"root"`
	User        string          `json:"user"`
	Group       string          `json:"group"`
	State       string          `json:"state"`
	Reason      string          `json:"reason"`
	Isolate     string          `json:"isolate"`            // the namespaces its service runs in ("none", "all", "mount,pid"...): its isolate=, else the services' -isolate (the weakest), else all
	Hostname    string          `json:"hostname,omitempty"` // hostname=
	Warning     string          `json:"warning,omitempty"`  // served, but unsafe: e.g. root without a mount namespace, which can leave its root
	Relay       *RelayStatus    `json:"relay,omitempty"`    // the log relay of its root (ipwatchd -relay-syslog), for a valid entry
	Addresses   []AddressStatus `json:"addresses"`          // interface addresses this entry serves now
	Connections uint64          `json:"connections"`        // TCP connections the kernel accepted for it (BPF; see ConfStatus.ConnectionsCounted); 0 when BPF is off
	Ports       []PortCount     `json:"ports,omitempty"`    // Connections by service port, when the file's services give ports
	Resolved    uint64          `json:"resolved"`           // virtuald's questions answered with this entry
	Limits      string          `json:"limits,omitempty"`   // its max=, rate= and per-source=, as the conf writes them
	Refused     uint64          `json:"refused"`            // connections virtuald refused for its limits (max=, rate=, per-source=, -max-per-entry), in both modes
	Shed        uint64          `json:"shed"`               // connections to per-connection services the kernel refused past its rate= (see Status.Shedding), on every port
	// Programs says, for each program the file's services start, whether
	// it can start inside this entry's root.
	Programs []ProgramStatus `json:"programs,omitempty"`
}

// PortCount is an entry's connections on one service port.
type PortCount struct {
	Port        uint16   `json:"port"`
	Services    []string `json:"services"` // the services on that port
	Connections uint64   `json:"connections"`
}

// ProgramStatus is whether a service's program can start inside an
// entry's root, as `ipwatchctl check -program` would say.
type ProgramStatus struct {
	Program  string   `json:"program"`
	Services []string `json:"services"` // the services that start it, "NAME at FROM"
	State    string   `json:"state"`    // ProgramReady, or why not
	Reason   string   `json:"reason"`
}

// Program states, the ones a resolve's answer carries (ipc.ProgramCheck).
const (
	ProgramReady              = ipc.ProgramReady
	ProgramMissing            = ipc.ProgramMissing
	ProgramInterpreterMissing = ipc.ProgramInterpreterMissing
	ProgramLibrariesMissing   = ipc.ProgramLibrariesMissing
	ProgramUnchecked          = ipc.ProgramUnchecked // the entry is refused, or its root failed the last check, or not checked yet
)

// RelayStatus is the log relay of an entry's root: a dev/log that
// ipwatchd serves and relays to the host's syslog.
type RelayStatus struct {
	State   string `json:"state"`            // "on", or "off" for Reason
	Reason  string `json:"reason,omitempty"` // why it is off
	Relayed uint64 `json:"relayed"`          // messages of the root relayed (every entry of the root counts them)
	Dropped uint64 `json:"dropped"`          // over the root's rate, or the queue toward the host's syslog full
}

// AddressStatus is an interface address.
type AddressStatus struct {
	Address   string `json:"address"`
	Interface string `json:"interface"`
	Label     string `json:"label,omitempty"`
	Live      bool   `json:"live"`
}

// Unmapped is an interface address that no entry of any conf file serves.
type Unmapped struct {
	Address     string `json:"address"`
	Interface   string `json:"interface"`
	Connections uint64 `json:"connections"`
}

// StatusQuery says which entries a status lists. Without All, at most
// Limit entries per conf file; with it, every matching entry, streamed in
// frames (ipc.OpStatus with "all" answers ipc.ReplyOK with the header,
// then ipc.ReplyEntries frames, then ipc.ReplyEnd).
type StatusQuery struct {
	All   bool
	State string       // "" for any, or StateLive, StateAbsent, StateInvalid
	Match netip.Prefix // zero for any; one address: the entry serving it; a prefix: the entries whose keys lie within it
	Limit int          // 0: DefaultStatusLimit
}

// DefaultStatusLimit is how many entries per conf file a status lists
// unless asked for more: what a person reads first.
const DefaultStatusLimit = 100

// AppendFrame appends the query's request frame to b.
func (q StatusQuery) AppendFrame(b []byte) []byte {
	var args []string
	if q.All {
		args = append(args, "all")
	}
	if q.State != "" {
		args = append(args, "state="+q.State)
	}
	if q.Match.IsValid() {
		args = append(args, "match="+q.Match.String())
	}
	if q.Limit > 0 {
		args = append(args, "limit="+strconv.Itoa(q.Limit))
	}
	return ipc.AppendRequest(b, ipc.OpStatus, args...)
}

// ParseStatusQuery reads a status request from the fields of its frame.
func ParseStatusQuery(req [][]byte) (StatusQuery, error) {
	var q StatusQuery
	if len(req) < 2 || string(req[0]) != ipc.Version || string(req[1]) != ipc.OpStatus {
		return q, fmt.Errorf("%w: not a version %s status request", ipc.ErrFrame, ipc.Version)
	}
	for _, f := range req[2:] {
		name, value, _ := strings.Cut(string(f), "=")
		var err error
		switch name {
		case "all":
			q.All = true
		case "state":
			if value != StateLive && value != StateAbsent && value != StateInvalid {
				err = errors.New("state must be live, absent or invalid")
			}
			q.State = value
		case "match":
			q.Match, err = ParseMatch(value)
		case "limit":
			q.Limit, err = strconv.Atoi(value)
			if err == nil && q.Limit < 1 {
				err = errors.New("limit must be positive")
			}
		default:
			err = fmt.Errorf("unknown status option %q", name)
		}
		if err != nil {
			return q, fmt.Errorf("%w: %v", ipc.ErrFrame, err)
		}
	}
	return q, nil
}

// ParseMatch reads an address (as a full-length prefix) or a prefix.
func ParseMatch(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ConfList is the reply to ipc.OpConfs and ipc.OpReload, as JSON: the
// conf files the daemon serves, without their entries.
type ConfList struct {
	Confs []ConfStatus `json:"confs"`
	// RelaySyslog says ipwatchd serves dev/log in every valid root
	// (-relay-syslog): check then does not warn about a missing one.
	RelaySyslog bool `json:"relay_syslog,omitempty"`
}
