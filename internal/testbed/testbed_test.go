package testbed

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// crashEnv makes the test binary play a test that crashes with a
// namespace and a process in it.
const crashEnv = "VIRTUALD_TEST_NETNS_CRASH"

// A test that dies (here with SIGKILL, which no cleanup survives) leaves
// no namespace behind, nor any process it started in one: nothing names
// or holds the namespace but the dead test's thread and processes.
func TestCrashLeavesNoNamespace(t *testing.T) {
	RequirePrivileges(t)
	if os.Getenv(crashEnv) != "" {
		crashWithNamespace(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var id string
	var pid int
	line, _ := bufio.NewReader(out).ReadString('\n')
	if _, err := fmt.Sscanf(line, "namespace %s process %d\n", &id, &pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the crashing test said %q: %v", line, err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("the test meant to crash did not")
	}
	// The kernel frees the namespace once the process in it is gone;
	// the process goes when its signal is delivered.
	deadline := time.Now().Add(10 * time.Second)
	for unix.Kill(pid, 0) == nil || len(pidsIn(id)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the crash, process %d or others (%v) still hold %s", pid, pidsIn(id), id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ino uint64
	if _, err := fmt.Sscanf(id, "net:[%d]", &ino); err != nil {
		t.Fatalf("namespace %q: %v", id, err)
	}
	entries, err := os.ReadDir("/run/netns")
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat("/run/netns/"+e.Name(), &st) == nil && st.Ino == ino {
			t.Errorf("/run/netns/%s names the crashed test's namespace", e.Name())
		}
	}
	if err != nil && !os.IsNotExist(err) {
		t.Error(err)
	}
}

// crashWithNamespace makes a namespace, starts a process in it, says both
// on stdout once the process is inside, and dies.
func crashWithNamespace(t *testing.T) {
	ns := NewNetNS(t)
	p := ns.Start(nil, "sleep", "1000")
	id, err := os.Readlink(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if l, err := os.Readlink("/proc/" + strconv.Itoa(p.Process.Pid) + "/ns/net"); err == nil && l == id {
			break
		}
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("namespace %s process %d\n", id, p.Process.Pid)
	unix.Kill(os.Getpid(), unix.SIGKILL)
}
