// Package bpf counts, in the kernel, the TCP connections that reach
// ESTABLISHED on the passive side (accepted from a listener) per local
// address and port, IPv4 and IPv6, for ipwatchd's status. The program is
// connacct.c; this package loads it, pins it and reads its counters.
//
// It also holds the shed program (shed.c, [Shedder]): attached to the
// network namespace at sk_lookup, it refuses new TCP connections to an
// address and port past the rate ipwatchd gives it, before a listener
// sees them. It is not pinned; shed.go says why.
//
// # What is counted
//
// A connection is counted once, when the socket a listener cloned for it
// goes SYN_RECV -> ESTABLISHED, whether or not anybody accepts it later.
// Outgoing (active) connections and refused ones (no listener, so no such
// socket) are not. A connection to a dual-stack listener from an IPv4
// client is counted under the IPv4 address.
//
// The attach point is the tracepoint sock:inet_sock_set_state, through BTF
// (tp_btf): it needs kernel BTF and bpffs, no tracefs, no kprobes and no
// cgroup2 mount; connacct.c says why in full.
//
// # One namespace per pin directory
//
// The tracepoint sees every network namespace on the host; the program
// counts only the namespace of the thread that called [Open] (the daemon's),
// whose cookie it gets as a load-time constant and compares with the
// socket's. So several daemons, and tests running in parallel in their own
// namespaces, never see each other's connections.
//
// A pin directory therefore belongs to one namespace: the first Open
// records that namespace's cookie in it (the meta pin), and Open from
// another namespace refuses it ([ErrOtherNamespace]) rather than take over
// another daemon's counting. The default, /sys/fs/bpf/ipwatchd, is for the
// daemon of the host's namespace; a daemon in any other namespace that
// shares the host's bpffs must be given its own directory. Pins vanish at
// reboot (bpffs lives in memory), and so do the cookies they record.
//
// # Pins
//
// In the pin directory:
//
//	counts  per-CPU hash: struct key -> connections (the counters)
//	drops   per-CPU array: connections not counted because counts was full
//	seen    socket storage: which sockets have been counted
//	meta    array: the cookie of the namespace counted
//	link    the tracepoint link that keeps the program attached
//
// The pin directory must be root's with mode 0700, and so must every
// directory Open makes on its way (whatever the umask); the directories
// above it that Open finds must be root's and writable by nobody else
// unless sticky, as /sys/fs/bpf may be (1777); and no component may be a
// symbolic link. Otherwise Open and Remove refuse it, naming the directory
// and the reason: a local user who made it before the daemon could swap
// the pins in it. Everything done in it goes through the descriptor the
// checks were made on, never through its path again.
//
// The pinned link keeps the program running while no daemon holds it, so
// connections made while ipwatchd is down or restarting are counted too,
// into the pinned maps a new daemon takes over.
//
// # Upgrade
//
// Tracepoint links cannot have their program replaced (BPF_LINK_UPDATE
// serves cgroup, XDP, netns, tcx and a few other links, not tracepoint
// or tracing ones), so every Open re-attaches: it loads the program
// (possibly newer), reusing the pinned maps when they are compatible,
// attaches it as a second link, renames the new link's pin over the old
// one (at every instant exactly one link is pinned), and releases the old
// link, which the kernel detaches once the old pin's reference goes, an
// RCU grace period later. No connection is lost, because the new program
// runs before the old one stops. None is counted twice, although both run
// during the overlap: the first program to count a socket marks it in the
// shared seen storage and the other skips it. Every daemon start takes
// this path, so it is the tested path, not a rarely used branch.
//
// A pinned map that is not compatible with the program being loaded (a
// future change of layout) is replaced by a fresh one: its counts restart
// from zero, and [Counter.Resumed] says so.
//
// # Kernel
//
// Linux 6.1 or later with BTF: tp_btf and socket storage in tracing
// programs are older, but a hash map that is not preallocated is allowed in
// tracing programs only since 6.1. Open needs CAP_BPF and CAP_PERFMON (or
// root), and CAP_SYS_ADMIN when it has to mount bpffs.
//
// Open mounts bpffs in the caller's mount namespace. Pins outlive the
// daemon only if that is the host's bpffs: a daemon sandboxed in a mount
// namespace of its own (systemd's ProtectSystem and friends) must be given
// the host's /sys/fs/bpf read-write (systemd mounts it at boot), since a
// bpffs it mounted there itself would vanish with it.
package bpf
