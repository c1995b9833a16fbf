package service

import (
	"os"
	"testing"
)

// BenchmarkMissingLibraries is virtuald's library check before the exec,
// per connection: the whole closure of a program, in the host's root
// (whose etc/ld.so.cache is full-size), for a program with PAM and for a
// small one.
func BenchmarkMissingLibraries(b *testing.B) {
	r := openRoot(b, "/")
	for _, program := range []string{"/usr/sbin/in.ftpd", "/usr/bin/id"} {
		b.Run(program, func(b *testing.B) {
			if _, err := os.Stat(program); err != nil {
				b.Skip(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if libs := r.MissingLibraries(program, nil); libs != "" {
					b.Fatalf("libraries missing on the host: %s", libs)
				}
			}
		})
	}
}
