// Command floor execs its arguments and does nothing else: the cheapest
// any Go wrapper started per connection can be (the Go runtime's start and
// one exec), the floor against which virtuald per connection is measured.
package main

import (
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 2 {
		os.Exit(2)
	}
	syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	os.Exit(1)
}
