// Command ipwatchctl is the operator's tool: it checks virtuald conf files
// offline, asks ipwatchd for the live address-to-root map and its counts,
// says what virtuald would do for an address, makes the daemon reload,
// builds roots and enters them:
//
//	ipwatchctl [-socket PATH] status [-json] [-all] [-state STATE] [-limit N] [ADDRESS|PREFIX]
//	ipwatchctl [-socket PATH] resolve [-conf FILE] IP
//	ipwatchctl check [-program PATH] [-path DIRS] [-isolate LIST] CONF...
//	ipwatchctl [-socket PATH] reload
//	ipwatchctl install [-n] [-dev] [-user NAME] [-profile NAME]... ROOT [PROGRAM...]
//	ipwatchctl adduser [-uid N] [-home DIR] [-shell PATH] [-gecos TEXT] [-password-stdin] ROOT NAME
//	ipwatchctl deluser ROOT NAME
//	ipwatchctl [-socket PATH] exec [-conf FILE] [-isolate LIST] ADDRESS [--] COMMAND [ARG...]
//	ipwatchctl version
//
// Each command is a method of env, which carries what it may touch
// (output, environment), so tests run them in-process (ctl.go).
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, stdio: [3]*os.File{os.Stdin, os.Stdout, os.Stderr}}))
}
