// Command startcost measures what a program's start costs, for a program
// that starts once per connection as virtuald does: the CPU (user and
// system, from wait4) and the minor page faults of each start, every
// variant started in turns so that the machine's noise falls on all alike,
// and each variant's difference from the first one, start by start.
//
//	startcost [-n N] [-conn] NAME=COMMAND ...  # COMMAND split on spaces
//	startcost [-n N] -imports PKG,PKG,...       # run from the module's root
//
// With -conn each start gets, as from inetd, a connection on fd 0 (the
// accepted end of a TCP connection on 127.0.0.1) and /dev/null on fds 1
// and 2, so that virtuald runs its whole per-connection path: give it
// "-isolate none CONF SERVICE" and the floor "SERVICE" (the service's
// start is then counted in both). VIRTUALD_SOCKET is passed on.
//
// With -imports it builds (static, -trimpath) a program that only exits,
// importing what bench/floor does (os, syscall), and one more that also
// imports each PKG for its side effects (package init, linked pages), and
// measures those: what a package costs a start before the program does
// anything with it. PKG may be several joined with "+" (one program
// importing them all), and named: NAME=PKG+PKG. BENCHMARKS.md ("virtuald's imports") has its figures.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

type variant struct {
	name string
	argv []string
	size int64
	cpu  []float64 // µs per start
	flt  []float64 // minor faults per start
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "startcost:", err)
		os.Exit(1)
	}
}

func run() error {
	n := flag.Int("n", 300, "starts of each variant")
	imports := flag.String("imports", "", "comma-separated packages: build one program per package")
	conn := flag.Bool("conn", false, "start each with a TCP connection on fd 0, as inetd does")
	flag.Parse()
	var vs []*variant
	if *imports != "" {
		dir, err := os.MkdirTemp(".", "_startcost")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		for i, p := range append([]string{""}, strings.Split(*imports, ",")...) {
			v, err := build(filepath.Join(dir, fmt.Sprint(i)), p)
			if err != nil {
				return err
			}
			vs = append(vs, v)
		}
	}
	for _, a := range flag.Args() {
		name, cmd, ok := strings.Cut(a, "=")
		if !ok {
			name, cmd = filepath.Base(a), a
		}
		v := &variant{name: name, argv: strings.Fields(cmd)}
		if fi, err := os.Stat(v.argv[0]); err == nil {
			v.size = fi.Size()
		}
		vs = append(vs, v)
	}
	if len(vs) < 2 {
		return fmt.Errorf("nothing to compare: give -imports or two commands or more")
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	env := []string{"PATH=/usr/bin:/bin"}
	if s, ok := os.LookupEnv("VIRTUALD_SOCKET"); ok {
		env = append(env, "VIRTUALD_SOCKET="+s)
	}
	attr := &syscall.ProcAttr{Files: []uintptr{null.Fd(), null.Fd(), null.Fd()}, Env: env}
	var ln *net.TCPListener
	if *conn {
		if ln, err = net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
	}
	for i := 0; i < *n; i++ {
		for j := range vs {
			v := vs[(i+j)%len(vs)] // rotate the order: no variant always follows the same one
			var c *net.TCPConn
			var s *os.File
			if ln != nil {
				if c, s, err = connect(ln); err != nil {
					return err
				}
				attr.Files[0] = s.Fd()
			}
			pid, err := syscall.ForkExec(v.argv[0], v.argv, attr)
			if s != nil {
				s.Close()
				c.Close()
			}
			if err != nil {
				return err
			}
			var ws syscall.WaitStatus
			var ru syscall.Rusage
			if _, err := syscall.Wait4(pid, &ws, 0, &ru); err != nil {
				return err
			}
			if ws.ExitStatus() != 0 {
				return fmt.Errorf("%s: %v", v.name, ws)
			}
			v.cpu = append(v.cpu, float64(syscall.TimevalToNsec(ru.Utime)+syscall.TimevalToNsec(ru.Stime))/1e3)
			v.flt = append(v.flt, float64(ru.Minflt))
		}
	}
	fmt.Printf("%d starts of each, in turns\n\n", *n)
	fmt.Printf("| variant | size KB | CPU µs median | faults median | CPU µs over %s (median of pairs) | faults over %s | %s's CPU / this one's (means) |\n|---|---:|---:|---:|---:|---:|---:|\n", vs[0].name, vs[0].name, vs[0].name)
	for _, v := range vs {
		fmt.Printf("| %s | %d | %.0f | %.0f | %+.0f | %+.1f | %.3f |\n", v.name, v.size/1024, median(v.cpu), median(v.flt),
			median(diff(v.cpu, vs[0].cpu)), median(diff(v.flt, vs[0].flt)), mean(vs[0].cpu)/mean(v.cpu))
	}
	return nil
}

// connect makes a connection to ln and returns its client end and the
// accepted end as a file (its Fd puts it in blocking mode, as inetd
// passes it).
func connect(ln *net.TCPListener) (*net.TCPConn, *os.File, error) {
	c, err := net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, nil, err
	}
	a, err := ln.AcceptTCP()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	defer a.Close()
	f, err := a.File()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, f, nil
}

// build compiles, in dir, a program that imports what bench/floor does,
// and pkg, and exits.
func build(d, pkg string) (*variant, error) {
	name := "floor's imports"
	src := "package main\n\nimport (\n\t\"os\"\n\t_ \"syscall\"\n"
	if pkg != "" {
		name = "+ " + pkg
		if n, p, ok := strings.Cut(pkg, "="); ok {
			name, pkg = n, p
		}
		for _, p := range strings.Split(pkg, "+") {
			src += "\t_ \"" + p + "\"\n"
		}
	}
	src += ")\n\nfunc main() { os.Exit(0) }\n"
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d, "main.go"), []byte(src), 0o644); err != nil {
		return nil, err
	}
	bin := filepath.Join(d, "prog")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./"+d)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("build with %q: %w", pkg, err)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	return &variant{name: name, argv: []string{abs}, size: fi.Size()}, nil
}

func diff(a, b []float64) []float64 {
	d := make([]float64, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}

func mean(x []float64) float64 {
	t := 0.0
	for _, v := range x {
		t += v
	}
	return t / float64(len(x))
}

func median(x []float64) float64 {
	s := slices.Clone(x)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
