// Command ipwatchctl inspects virtuald conf files and (with ipwatchd) the
// live address-to-root map. This release has the offline command:
//
//	ipwatchctl check CONF...
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
}
