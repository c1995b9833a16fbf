// Command virtuald is started by a super-server (inetd, xinetd, systemd
// Accept=yes, tcpserver) once per connection, with the connection on fd 0.
// It resolves the socket's local address to a root directory with a conf
// file, enters that root, drops to the entry's credentials and executes the
// real service:
//
//	ftp stream tcp nowait root /usr/sbin/virtuald virtuald /etc/virtuald/conf.ftp /usr/sbin/in.ftpd -l
//
// With -accept it is started once with the listening socket instead (inetd
// "wait", systemd Accept=no) and starts the service for each connection
// itself, directly inside its root (accept.go).
//
// Its log goes to syslog, never to fds 0-2, which are the client's socket.
package main

import (
	"os"
)

func main() {
	std, err := shieldStdio()
	os.Exit(run(os.Args, os.Environ(), std, err))
}
