package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkProcessScaling measures how this machine's process work (a
// fork, an exec and an exit: what every connection costs) scales across
// its CPUs: /bin/true started and waited for in a loop, alone, two loops
// at once (in this process, as accept mode's starts are), and one loop
// beside a process that only computes, each for 2 s.
// It reports each loop's rate against the loop alone, and how much the
// two loops did together (scaling: 2 where each CPU starts processes as
// fast as one alone, 1 where starts are done one at a time, whatever the
// CPUs). Variants: plain, and in new mount, pid, ipc and uts namespaces
// (as an isolated service starts).
//
// Issue 23's fair share rests on it: where two entries' starts slow each
// other whatever their CPU weights (scaling near 1), a quiet entry beside
// a flood of starts keeps about half its rate at best.
func BenchmarkProcessScaling(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: namespaces")
	}
	b.Run("plain", func(b *testing.B) { benchScaling(b, 0) })
	b.Run("namespaces", func(b *testing.B) {
		benchScaling(b, syscall.CLONE_NEWNS|syscall.CLONE_NEWPID|syscall.CLONE_NEWIPC|syscall.CLONE_NEWUTS)
	})
}

func benchScaling(b *testing.B, clone uintptr) {
	const phase = 2 * time.Second
	// starts runs n loops of /bin/true for phase, and spinners loops
	// that compute, and returns each start loop's rate.
	starts := func(n, spinners int) []float64 {
		var stop atomic.Bool
		var wg sync.WaitGroup
		counts := make([]int, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runtime.LockOSThread()
				attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Cloneflags: clone}}
				for !stop.Load() {
					pid, err := syscall.ForkExec("/bin/true", []string{"true"}, attr)
					if err != nil {
						b.Error(err)
						return
					}
					var ws syscall.WaitStatus
					syscall.Wait4(pid, &ws, 0, nil)
					counts[i]++
				}
			}()
		}
		// The computing loops are processes of their own, as the
		// others on a host are.
		var spin []*exec.Cmd
		for range spinners {
			c := exec.Command("sh", "-c", "while :; do :; done")
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			spin = append(spin, c)
		}
		time.Sleep(phase)
		stop.Store(true)
		wg.Wait()
		for _, c := range spin {
			c.Process.Kill()
			c.Wait()
		}
		rates := make([]float64, n)
		for i, c := range counts {
			rates[i] = float64(c) / phase.Seconds()
		}
		return rates
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| round | one loop alone (starts/s) | two loops at once, each (x alone) | scaling (two together / one alone) | one loop beside a computing loop (x alone) |\n|---|---:|---:|---:|---:|\n")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		alone := starts(1, 0)[0]
		two := starts(2, 0)
		beside := starts(1, 1)[0]
		scaling := (two[0] + two[1]) / alone
		fmt.Fprintf(&sb, "| %d | %.0f | %.2f, %.2f | %.2f | %.2f |\n", i+1, alone, two[0]/alone, two[1]/alone, scaling, beside/alone)
		b.ReportMetric(scaling, "scaling")
	}
	b.StopTimer()
	fmt.Print(sb.String())
}
