package main

import (
	"strconv"
	"strings"

	"github.com/virtuald/virtuald/internal/ipc"
)

// environment is what virtuald takes from the environment it was started
// with. run reads it once, from the variables and the pid it is handed,
// so that everything after is tested without a process of its own.
type environment struct {
	socket string // $VIRTUALD_SOCKET
	// listenFDs counts the listening sockets systemd passed from fd 3
	// on (LISTEN_FDS), when LISTEN_PID names this process; 0 otherwise.
	listenFDs int
	// service is what the service is started with: every variable but
	// systemd's socket-passing ones, which name virtuald's pid and
	// descriptors it does not pass on: a service must not believe them.
	service []string
	// front is $VIRTUALD_FRONT: what virtuald's front found when it
	// asked the daemon before handing the connection over (front.go).
	front string
}

func readEnvironment(env []string, pid int) environment {
	e := environment{service: make([]string, 0, len(env))}
	var listenPID, listenFDs string
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		switch name {
		case ipc.SocketEnv:
			e.socket = value
		case "LISTEN_PID":
			listenPID = value
			continue
		case "LISTEN_FDS":
			listenFDs = value
			continue
		case "LISTEN_FDNAMES":
			continue
		case frontEnv:
			e.front = value
			continue
		}
		e.service = append(e.service, kv)
	}
	if p, err := strconv.Atoi(listenPID); err == nil && p == pid {
		if n, err := strconv.Atoi(listenFDs); err == nil && n > 0 {
			e.listenFDs = n
		}
	}
	return e
}
