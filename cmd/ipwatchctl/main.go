// Command ipwatchctl inspects virtuald conf files and (with ipwatchd) the
// live address-to-root map. This release has the offline command:
//
//	ipwatchctl check CONF...
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
