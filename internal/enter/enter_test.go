package enter

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"github.com/virtuald/virtuald/internal/testbed"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunMain(m)) }

// Many isolated starts at once, from many goroutines (as accept mode
// makes them), all start.
func TestStartConcurrent(t *testing.T) {
	testbed.RequirePrivileges(t)
	bin := testbed.Binaries(t)
	roots := testbed.NewRoots(t)
	root := roots.Root("r", "")
	testbed.Must(t, exec.Command("cp", bin["intruder"], filepath.Join(root, "intruder")).Run())
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	testbed.Must(t, err)
	defer null.Close()
	fd := int(null.Fd())
	var wg sync.WaitGroup
	errs := make(chan error, 640)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				errs <- startOnce(root, fd)
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

func startOnce(rootPath string, null int) error {
	d, err := chroot.Open(rootPath)
	if err != nil {
		return err
	}
	defer d.Close()
	done := make(chan error, 1)
	go func() { // Start's thread ends with this goroutine
		p := &Plan{Root: d, Isolate: conf.IsolateAll, Path: "/intruder", Argv: []string{"/intruder", "none"}, Files: []int{null, null, null}}
		c, err := p.Start()
		if err == nil {
			err = c.Started()
			var ws unix.WaitStatus
			unix.Wait4(c.Pid, &ws, 0, nil)
		}
		done <- err
	}()
	return <-done
}
