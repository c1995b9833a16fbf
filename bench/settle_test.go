package bench

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtuald/virtuald/internal/ipc/admin"
)

// processCPU is the CPU time pid has used (user and system, from
// /proc/PID/stat, in clock ticks of 10 ms).
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command (which may hold spaces) in
	// parentheses: state is the first, utime and stime the 12th and 13th.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// settle waits until the daemon at sock has done its work: every conf
// file loaded, its roots checked and its services' programs checked, and
// it then uses less than 2% of a core over half a second. It returns the
// CPU the daemon used until then.
func settle(b *testing.B, sock string, pid int) time.Duration {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		st, err := admin.Client{Socket: sock}.Status(admin.StatusQuery{})
		done := err == nil
		for i := 0; done && i < len(st.Confs); i++ {
			c := st.Confs[i]
			done = c.Generation > 0 && !c.Checking && (len(c.Services) == 0 || !c.ProgramsCheckedAt.IsZero())
		}
		if done {
			before := processCPU(pid)
			time.Sleep(500 * time.Millisecond)
			if after := processCPU(pid); after-before < 10*time.Millisecond {
				return after
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("the daemon did not settle in 5 minutes: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
