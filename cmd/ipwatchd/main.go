// Command ipwatchd will keep the validated address-to-root map of every
// conf file in memory and answer virtuald's questions on a Unix socket.
// Until it does, virtuald reads its conf file itself on every connection.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: ipwatchd [-socket PATH] [-conf FILE]... [-metrics ADDR] [-bpf auto|on|off]

ipwatchd is not implemented in this release: virtuald reads its conf file
itself on every connection, and "ipwatchctl check" validates conf files.
`

func main() {
	fmt.Fprint(os.Stderr, usage)
	os.Exit(2)
}
