package main

import (
	"math"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A service started for an entry that runs fewer services than the
// entries that run any do on average (a quiet entry beside a flooded
// one) is favoured by the scheduler for its first -favour (20 ms), from
// its clone on: its session's autogroup (sched(7): the kernel weighs each
// session as one group, and each service is a session of its own) gets
// a negative nice (favourNice), as much as brings the entry's services
// to the weight of the busiest entry's, nice -20 at most. Without it the
// quiet entry's one service waits for a CPU among the flood's many, each
// a group of equal weight. BenchmarkFlood: the quiet entry keeps about
// half its rate alone with it (0.44-0.58 a round), 0.39-0.47x without;
// with a service as costly to start as a Go program, 0.26-0.38x, against
// 0.14-0.27x with a fixed nice -10 (BENCHMARKS.md "A fair share without
// limits"). Lowering the flood's weight instead left CPUs idle and did
// not help: its processes then hold longer what every start needs (the
// kernel's namespace locks, Go's fork lock).
//
// With -cpu-share entry (package cpugroup), where every entry's services
// share one cgroup and autogroups weigh nothing, the favour is the
// weight of the entry's group instead (cpugroup.Groups.Boost): as many
// times the default as the nice would weigh its session, for -favour
// after each favoured start. One weight per entry makes the flood's
// share no larger than the quiet entry's; the favour makes the quiet
// entry's one service run at once when it wakes, which its rate
// depends on more than on its share.
//
// The favour is bounded so that no tenant stays above the host's own
// processes, nor weighs more than the busiest entry does: it lasts
// -favour at most and is taken back before its service is reaped (so a
// process the service left in its session keeps nothing); a process that
// makes a session of its own gets a new group at nice 0; an entry is
// favoured only while below the average, so a tenant alone or on a par
// with the others never is. It needs CAP_SYS_NICE (a negative nice) and
// CAP_SYS_ADMIN (the kernel limits others to one change a second), or
// it is off (favourWorks); where the kernel's autogroups are off, or the
// super-server has a cpu cgroup of its own, the write changes nothing.

// favourNice is the nice that gives own sessions the weight of busiest
// ones: each nice step weighs 1.25 times the next (sched(7)), so
// log1.25(busiest/own) steps, at most 20 (nice -20); 0 when own is not
// fewer.
func favourNice(busiest, own int) int {
	if own <= 0 || busiest <= own {
		return 0
	}
	return -min(20, int(math.Log(float64(busiest)/float64(own))/math.Log(1.25)))
}

// favourWorks says why -favour cannot work in this process, or "": it
// needs CAP_SYS_NICE and CAP_SYS_ADMIN in the effective set, so that the
// favour, once given, can always be taken back (without CAP_SYS_ADMIN
// the kernel refuses a second change to a group within a second). Where
// the kernel's autogroups are off, the favour is given but weighs
// nothing until they are turned on; the log says so.
func favourWorks() (why string, note string) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return "capget: " + err.Error(), ""
	}
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_SYS_NICE, "CAP_SYS_NICE"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			return "it needs " + c.name, ""
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/sched_autogroup_enabled"); err != nil {
		return "the kernel has no autogroups (CONFIG_SCHED_AUTOGROUP)", ""
	} else if strings.TrimSpace(string(b)) == "0" {
		note = "the kernel's autogroups are off (kernel.sched_autogroup_enabled = 0): -favour weighs nothing until they are on"
	}
	return "", note
}

// setSessionNice sets the nice of the autogroup of pid's session. pid
// must be an unreaped child that leads its session (Setsid): the write
// would otherwise weigh whatever session pid's number now names.
func setSessionNice(pid, nice int) error {
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		return unix.ESRCH
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/autogroup", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(strconv.Itoa(nice)))
	return err
}

// favour gives the service just started as pid its favour, nice, and
// takes it back after -favour; a.favoured holds it until then, and reap
// takes it back first if the service ends sooner.
func (a *acceptor) favour(pid, nice int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, reaped := a.unclaimed[pid]; reaped || setSessionNice(pid, nice) != nil {
		return
	}
	a.favoured[pid] = true
	time.AfterFunc(a.opts.Favour, func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.unfavour(pid)
	})
}

// unfavour takes pid's favour back, if it has one; a.mu is held, so pid
// is not reaped in between (reap holds it too).
func (a *acceptor) unfavour(pid int) {
	if a.favoured[pid] {
		delete(a.favoured, pid)
		setSessionNice(pid, 0)
	}
}

// exitedChild returns the pid of a child that has exited, without
// reaping it (waitid with WNOWAIT), or 0 when none has.
func exitedChild() int {
	var info [128]byte // siginfo_t
	_, _, errno := unix.Syscall6(unix.SYS_WAITID, unix.P_ALL, 0, uintptr(unsafe.Pointer(&info[0])),
		unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, 0, 0)
	if errno != 0 {
		return 0
	}
	// si_pid follows si_signo, si_errno and si_code, at the union's
	// alignment: a pointer's.
	off := 3 * 4
	if unsafe.Sizeof(uintptr(0)) == 8 {
		off = 4 * 4
	}
	return int(*(*int32)(unsafe.Pointer(&info[off])))
}
