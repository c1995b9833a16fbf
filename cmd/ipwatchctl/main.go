// Command ipwatchctl inspects virtuald conf files and (with ipwatchd) the
// live address-to-root map, and builds roots:
//
//	ipwatchctl [-socket PATH] status|resolve|reload ...
//	ipwatchctl check [-program PATH] [-path DIRS] CONF...
//	ipwatchctl install [-n] [-dev] [-user NAME] ROOT PROGRAM...
//	ipwatchctl [-socket PATH] exec [-conf FILE] ADDRESS [--] COMMAND [ARG...]
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
