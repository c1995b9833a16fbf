package superserver

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// seeds adds the testdata files matching pattern to the fuzzer's corpus.
func seeds(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		names, _ := filepath.Glob(p)
		for _, name := range names {
			if data, err := os.ReadFile(name); err == nil {
				f.Add(string(data))
			}
		}
	}
}

// valid checks what every service found must be, whatever the input: a
// conf path virtuald can open, a program and its argv, a transport, a
// From that names a real line of the fuzzed text.
func valid(t *testing.T, f *finder, lines int) {
	for _, s := range f.found {
		switch {
		case !filepath.IsAbs(s.Conf):
			t.Fatalf("conf %q is not absolute", s.Conf)
		case s.Program == "" || len(s.Args) == 0 || s.Args[0] != s.Program:
			t.Fatalf("program %q, argv %q", s.Program, s.Args)
		case s.Transport != "tcp" && s.Transport != "udp":
			t.Fatalf("transport %q", s.Transport)
		case s.Address.IsValid() && s.Address.IsUnspecified():
			t.Fatalf("a wildcard address kept: %v", s.Address)
		}
		checkFrom(t, s.From, lines)
	}
	for _, p := range f.problems {
		checkFrom(t, p.From, lines)
	}
}

func checkFrom(t *testing.T, from string, lines int) {
	_, no, ok := strings.Cut(from, ":")
	if n, err := strconv.Atoi(no); ok && (err != nil || n < 1 || n > lines) {
		t.Fatalf("%q names no line of %d", from, lines)
	}
}

// FuzzInetd feeds arbitrary text to the inetd.conf reader. The corpus is
// kept in testdata/fuzz/FuzzInetd.
func FuzzInetd(f *testing.F) {
	seeds(f, "testdata/inetd.conf", "../../dist/examples/inetd.conf")
	f.Fuzz(func(t *testing.T, text string) {
		fd := &finder{ports: ports{"ftp/tcp": 21}}
		fd.parseInetd("i", text)
		valid(t, fd, strings.Count(text, "\n")+1)
	})
}

// FuzzXinetd feeds arbitrary text to the xinetd reader, includes refused
// (they would read the host's files). The corpus is kept in
// testdata/fuzz/FuzzXinetd.
func FuzzXinetd(f *testing.F) {
	seeds(f, "testdata/xinetd.d/*", "testdata/xinetd.conf.in")
	f.Fuzz(func(t *testing.T, text string) {
		fd := &finder{ports: ports{"ftp/tcp": 21}}
		st := &xinetdState{defaults: xblock{attrs: map[string][]string{}}}
		fd.parseXinetd(st, "x", text, maxIncludeDepth)
		for _, b := range st.services {
			fd.xinetdService(st, b)
		}
		valid(t, fd, strings.Count(text, "\n")+1)
	})
}

// FuzzUnit feeds arbitrary text to the unit file reader, as a socket
// unit and as the service it starts. The corpus is kept in
// testdata/fuzz/FuzzUnit.
func FuzzUnit(f *testing.F) {
	seeds(f, "testdata/systemd/*/*", "testdata/systemd/*/*/*", "../../dist/examples/*.s*")
	f.Fuzz(func(t *testing.T, text string) {
		dir := t.TempDir()
		for _, name := range []string{"v.socket", "v.service", "v@.service"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fd := &finder{}
		fd.systemd([]string{dir})
		valid(t, fd, strings.Count(text, "\n")+1)
		for _, s := range fd.found {
			if s.Port == 0 {
				t.Fatalf("a socket unit's service without a port: %+v", s)
			}
		}
		for _, v := range strings.Split(text, "\n") {
			words, err := splitCommand(v)
			if err == nil && len(words) > maxArgs {
				t.Fatalf("%d words", len(words))
			}
		}
	})
}
