package enter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/creds"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunMain(m)) }

// Many isolated starts at once, from many goroutines (as accept mode
// makes them), all start.
func TestStartConcurrent(t *testing.T) {
	testbed.RequirePrivileges(t)
	root := testbed.NewRoots(t).IntruderRoot("r")
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	testbed.Must(t, err)
	defer null.Close()
	fd := int(null.Fd())
	var wg sync.WaitGroup
	errs := make(chan error, 640)
	for g := 0; g < 16; g++ {
		iso := conf.IsolateAll
		if g%2 == 1 {
			iso |= conf.IsolateUser // its virtuald-init is executed by another path
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				errs <- startIso(root, fd, iso)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed < 5 {
				t.Error(err)
			}
			failed++
		}
	}
	if failed > 0 {
		t.Errorf("%d of 640 starts failed", failed)
	}
}

// startIso starts the intruder (which exits at once) in the root at
// rootPath with isolation iso, on a goroutine of its own (Start's thread
// may end with it), and waits for it.
func startIso(rootPath string, null int, iso conf.Isolation) error {
	d, err := chroot.Open(rootPath)
	if err != nil {
		return err
	}
	defer d.Close()
	done := make(chan error, 1)
	go func() { done <- startAndWait(d, null, iso) }()
	return <-done
}

// startAndWait starts the intruder in d with isolation iso, its fds 0-2
// null, and waits for it; the error is Start's or Started's, or says
// that it did not exit 0.
func startAndWait(d *chroot.Dir, null int, iso conf.Isolation) error {
	return startArgv(d, null, iso, "/intruder", "exit")
}

func startArgv(d *chroot.Dir, null int, iso conf.Isolation, argv ...string) error {
	p := &Plan{Root: d, Isolate: iso, Path: "/intruder", Argv: argv, Files: []int{null, null, null}}
	c, err := p.Start()
	if err != nil {
		return err
	}
	err = c.Started()
	if status := c.Wait(); err == nil && status != 0 {
		err = fmt.Errorf("%v (isolate=%s) exited %d", argv, iso, status)
	}
	return err
}

// The service gets exactly its arguments, however many: the intruder
// without one says how to use it (status 2), so it ran.
func TestStartArgv(t *testing.T) {
	testbed.RequirePrivileges(t)
	root := testbed.NewRoots(t).IntruderRoot("r")
	d, err := chroot.Open(root)
	testbed.Must(t, err)
	defer d.Close()
	for _, iso := range []conf.Isolation{conf.IsolateNone, conf.IsolateAll, conf.IsolateAll | conf.IsolateUser} {
		done := make(chan error, 1)
		go func() { done <- startArgv(d, 0, iso, "/intruder") }()
		if err := <-done; err == nil || !strings.HasSuffix(err.Error(), "exited 2") {
			t.Errorf("isolate=%s, no argument: %v, want the intruder's usage status 2", iso, err)
		}
	}
}

// BenchmarkStart is one start of a static service that exits at once,
// waited for, by isolation: what each namespace adds to a connection.
func BenchmarkStart(b *testing.B) {
	testbed.RequirePrivileges(b)
	root := testbed.NewRoots(b).IntruderRoot("r")
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	testbed.Must(b, err)
	defer null.Close()
	for _, iso := range []conf.Isolation{conf.IsolateNone, conf.IsolateUTS, conf.IsolateIPC, conf.IsolatePID, conf.IsolateMount,
		conf.IsolateMount | conf.IsolatePID, conf.IsolateAll, conf.IsolateAll | conf.IsolateUser} {
		b.Run(iso.String(), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if err := startIso(root, int(null.Fd()), iso); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Fail closed: where the kernel refuses a step of the isolation asked
// for, nothing starts, and the error names the step. A root that is an
// unbindable mount cannot be cloned (open_tree refuses it); it is still
// served with isolate=none, where no mount is made. A root on a file
// system that cannot be idmapped (ramfs) is not served with
// isolate=all,user, and is with isolate=all.
func TestFailClosed(t *testing.T) {
	testbed.RequirePrivileges(t)
	roots := testbed.NewRoots(t)
	root := roots.IntruderRoot("unbindable")
	// In a private mount namespace of this test's own, so that nothing of
	// it reaches the host: the root is bound on itself, unbindable.
	done := make(chan struct{})
	var results []error
	go func() {
		defer close(done)
		runtime.LockOSThread() // the namespace ends with this thread
		testbed.Must(t, unix.Unshare(unix.CLONE_NEWNS|unix.CLONE_FS))
		testbed.Must(t, unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""))
		testbed.Must(t, unix.Mount(root, root, "", unix.MS_BIND, ""))
		testbed.Must(t, unix.Mount("", root, "", unix.MS_UNBINDABLE, ""))
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		testbed.Must(t, err)
		defer null.Close()
		for _, iso := range []conf.Isolation{conf.IsolateAll, conf.IsolateNone} {
			d, err := chroot.Open(root)
			testbed.Must(t, err)
			results = append(results, startAndWait(d, int(null.Fd()), iso)) // on this thread: the private mounts are its
			d.Close()
		}
		// ramfs cannot be idmapped: a root on it is not served with a
		// user namespace, and is served without one.
		ram := roots.Root("ramfs", "")
		testbed.Must(t, unix.Mount("ramfs", ram, "ramfs", 0, "mode=0755"))
		intruder, err := os.ReadFile(filepath.Join(root, "intruder"))
		testbed.Must(t, err)
		testbed.Must(t, os.WriteFile(filepath.Join(ram, "intruder"), intruder, 0o755))
		for _, iso := range []conf.Isolation{conf.IsolateAll | conf.IsolateUser, conf.IsolateAll} {
			d, err := chroot.Open(ram)
			testbed.Must(t, err)
			results = append(results, startAndWait(d, int(null.Fd()), iso))
			d.Close()
		}
	}()
	<-done
	var e *Error
	if !errors.As(results[0], &e) || e.Step != "cloning the root's mounts (open_tree)" || !errors.Is(e, unix.EINVAL) {
		t.Errorf("isolate=all on an unbindable root: %v, want open_tree's EINVAL, named", results[0])
	}
	if results[1] != nil {
		t.Errorf("isolate=none on the same root: %v", results[1])
	}
	if !errors.As(results[2], &e) || e.Step != "idmapping the root's mounts (mount_setattr)" || !strings.Contains(e.Error(), "a file system that supports one") {
		t.Errorf("isolate=all,user on ramfs: %v, want mount_setattr's refusal, named and explained", results[2])
	}
	if results[3] != nil {
		t.Errorf("isolate=all on the same ramfs root: %v", results[3])
	}

	// hostname= without uts is refused before anything starts.
	d, err := chroot.Open(roots.Root("plain", ""))
	testbed.Must(t, err)
	defer d.Close()
	p := &Plan{Root: d, Isolate: conf.IsolateMount, Hostname: "a.example", Path: "/x", Files: []int{0, 1, 2}}
	if _, err := p.Start(); err == nil || !strings.Contains(err.Error(), "hostname=a.example needs uts (isolate=mount)") {
		t.Errorf("hostname= without uts: %v", err)
	}
	// A user namespace maps 16-bit ids only: a uid past them is refused.
	p = &Plan{Root: d, Isolate: conf.IsolateAll | conf.IsolateUser, Cred: &creds.Cred{UID: 70000, GID: 70000, SetUID: true}, Path: "/x", Files: []int{0, 1, 2}}
	if _, err := p.Start(); err == nil || !strings.Contains(err.Error(), "uid 70000, gid 70000: a user namespace maps ids 0 to 65535 only") {
		t.Errorf("uid 70000 with a user namespace: %v", err)
	}
}
