package bench

import (
	"testing"

	"github.com/virtuald/virtuald/bpf"
	"github.com/virtuald/virtuald/internal/testbed"
)

// BenchmarkBPFCost measures what the kernel's connection accounting costs,
// with the program attached and detached in alternating rounds in one run
// (attachCost).
func BenchmarkBPFCost(b *testing.B) {
	attachCost(b, "BPF", func(ns *testbed.NetNS, on bool) {
		testbed.MountBPFFS(b)
		pinDir := "/sys/fs/bpf/" + ns.Name
		if !on {
			if err := bpf.Remove(pinDir); err != nil {
				b.Fatal(err)
			}
			return
		}
		if err := ns.Do(func() error {
			c, err := bpf.Open(bpf.Options{PinDir: pinDir})
			if err == nil {
				c.Close()
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
	})
}
