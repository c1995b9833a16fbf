// Command ipwatchd keeps the validated address-to-root map of every conf
// file in memory, follows the host's addresses through netlink, and
// answers virtuald's and ipwatchctl's questions on a Unix socket.
//
//	ipwatchd [-socket PATH] [-socket-group GROUP] [-conf FILE]... [-metrics ADDR] [-metrics-max-entries N] [-bpf auto|on|off]
//	         [-relay-syslog [-relay-burst N] [-relay-rate N] [-relay-max-roots N]] [-log-format console|json] [-log-level LEVEL]
//	ipwatchd -version
//
// SIGHUP reloads every conf file; SIGTERM stops it cleanly (the socket is
// removed), and a second SIGTERM ends a stop that hangs. It tells systemd
// READY=1 after the first address dump and load (Type=notify).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/internal/buildinfo"
	"github.com/virtuald/virtuald/internal/daemon"
	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/relay"
	"github.com/virtuald/virtuald/internal/superserver"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

type confList []string

func (c *confList) String() string     { return strings.Join(*c, ",") }
func (c *confList) Set(v string) error { *c = append(*c, v); return nil }

// run is ipwatchd, with what it touches of its process injected so that
// tests run it in-process.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("ipwatchd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "the Unix socket to serve (default $VIRTUALD_SOCKET or "+ipc.DefaultSocket+")")
	socketGroup := fs.String("socket-group", "", "give the socket (mode 0660) to this group, by name or number, so that its members may read status, resolve and lookups without root (reload stays root's)")
	var confs confList
	fs.Var(&confs, "conf", "a conf file to load and watch (repeat for more); others are loaded when a root virtuald asks about them")
	bpfMode := fs.String("bpf", "auto", "count connections in the kernel: auto (when possible), on (or fail), off (and remove the pins)")
	bpfPinDir := fs.String("bpf-pin-dir", "", "where the counters are pinned, one directory per network namespace (default /sys/fs/bpf/ipwatchd)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9323)")
	metricsMax := fs.Int("metrics-max-entries", daemon.DefaultMetricsMaxEntries, "entries, and unmapped addresses, with metrics series of their own (the rest are summed as \"other\")")
	relaySyslog := fs.Bool("relay-syslog", false, "serve dev/log inside every valid entry's root and relay it to the host's syslog")
	relayBurst := fs.Int("relay-burst", relay.DefaultBurst, "messages a root may send at once before -relay-rate applies")
	relayRate := fs.Float64("relay-rate", relay.DefaultRate, "messages a second a root may send after its burst (the rest are dropped and counted)")
	relayMax := fs.Int("relay-max-roots", relay.DefaultMaxRoots, "roots whose dev/log the relay serves at most")
	defaults := superserver.DefaultSources()
	findServices := fs.Bool("find-services", true, "read the super-servers' configuration for the services that start virtuald: their conf files are loaded at start, their programs checked inside every root, their ports counted")
	inetdConf := fs.String("inetd-conf", defaults.InetdConf, "inetd's configuration (\"\" to skip)")
	xinetdConf := fs.String("xinetd-conf", defaults.XinetdConf, "xinetd's configuration, with the directories it includes (\"\" to skip)")
	systemdUnits := fs.String("systemd-units", strings.Join(defaults.SystemdDirs, ":"), "systemd's unit directories, the first overriding the others, where socket units that start virtuald are found (\"\" to skip)")
	logFormat := fs.String("log-format", "console", "console or json")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		fmt.Fprintln(stdout, "ipwatchd", buildinfo.Version())
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ipwatchd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	gid, err := lookupGroup(*socketGroup)
	if err != nil {
		fmt.Fprintln(stderr, "ipwatchd:", err)
		return 2
	}
	log, err := newLogger(*logFormat, *logLevel, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "ipwatchd:", err)
		return 2
	}
	defer log.Sync()

	cfg := daemon.Config{Socket: ipc.SocketPath(*socket, getenv(ipc.SocketEnv)), SocketGroup: gid, Confs: confs, Log: log, Version: buildinfo.Version(), Metrics: *metrics, MetricsMaxEntries: *metricsMax, BPF: *bpfMode, BPFPinDir: *bpfPinDir}
	if *findServices {
		cfg.Services = &superserver.Sources{InetdConf: *inetdConf, XinetdConf: *xinetdConf, Services: defaults.Services, Advise: true}
		if *systemdUnits != "" {
			cfg.Services.SystemdDirs = strings.Split(*systemdUnits, ":")
		}
	}
	if *relaySyslog {
		if *relayBurst < 1 || *relayRate <= 0 || *relayMax < 1 {
			fmt.Fprintln(stderr, "ipwatchd: -relay-burst, -relay-rate and -relay-max-roots must be positive")
			return 2
		}
		cfg.Relay = &relay.Config{Burst: *relayBurst, Rate: *relayRate, MaxRoots: *relayMax}
	}
	d, err := daemon.New(cfg)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	// Signals steer Run: SIGHUP reloads, SIGTERM stops, and a second
	// SIGTERM ends a stop that hangs.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, unix.SIGHUP, unix.SIGTERM, unix.SIGINT)
	if err := d.Run(context.Background(), signals); err != nil {
		log.Error("stopped", zap.Error(err))
		return 1
	}
	log.Info("stopped")
	return 0
}

// lookupGroup returns the gid of -socket-group (0, root's, for none). A
// group that does not exist stops the daemon rather than leave the socket
// to root alone while the operator believes it shared.
func lookupGroup(name string) (int, error) {
	if name == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("-socket-group %s: %v (create it: groupadd --system %s)", name, err, name)
	}
	return strconv.Atoi(g.Gid)
}

func newLogger(format, level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	cfg := zap.NewProductionEncoderConfig()
	cfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(cfg)
	case "console":
		enc = zapcore.NewConsoleEncoder(cfg)
	default:
		return nil, fmt.Errorf("-log-format must be console or json, not %q", format)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), nil
}
