package ipc

import "time"

// Status is the reply to OpStatus, as JSON: the contract of
// `ipwatchctl status -json` (see the README).
type Status struct {
	Version        string       `json:"version"`
	UptimeSeconds  float64      `json:"uptime_seconds"`
	BPF            string       `json:"bpf"` // "on", or why it is off
	NetlinkResyncs uint64       `json:"netlink_resyncs"`
	Queries        QueryCounts  `json:"queries"`
	Confs          []ConfStatus `json:"confs"`
	Unmapped       []Unmapped   `json:"unmapped"`
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
	Path       string        `json:"path"`
	Generation uint64        `json:"generation"` // 0: never loaded
	LoadedAt   time.Time     `json:"loaded_at"`
	Error      string        `json:"error"`    // why the last load failed ("" when it did not); the last good copy is kept
	Problems   []string      `json:"problems"` // FILE:LINE messages of the loaded copy
	Entries    []EntryStatus `json:"entries"`
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
	Warning     string          `json:"warning,omitempty"` // served, but unsafe: e.g. no user=, so the service runs as root
	Addresses   []AddressStatus `json:"addresses"`         // interface addresses this entry serves now
	Connections uint64          `json:"connections"`       // seen by the kernel (BPF); 0 when BPF is off
	Resolved    uint64          `json:"resolved"`          // virtuald's questions answered with this entry
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

// ReloadResult is the reply to OpReload, as JSON.
type ReloadResult struct {
	Confs []ConfStatus `json:"confs"` // without entries
}
