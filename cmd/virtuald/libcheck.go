package main

import (
	"strings"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
	"github.com/virtuald/virtuald/internal/service"
)

// programAsk is the program virtuald will start, asked about with the
// connection's address (ipc.ResolveRequest.Program), and what the
// daemon's validator found of it inside the entry's root: the missing
// shared libraries the loader would tell only the client, without a check
// on the connection's path (0.7 ms and 4 MB for a dynamically linked
// service with the root's ld.so.cache). A nil *programAsk asks nothing.
type programAsk struct {
	name, path string
	found      ipc.ProgramCheck // set by resolve when the daemon answered
}

// askAbout is the question for program started with env, or nil when the
// daemon's check would not be the loader's: it looks libraries up without
// an LD_LIBRARY_PATH.
func askAbout(program string, env []string) *programAsk {
	if _, ok := service.Getenv(env, "LD_LIBRARY_PATH"); ok {
		return nil
	}
	a := &programAsk{name: program}
	if !strings.Contains(program, "/") { // execvp searches PATH for it
		a.path, _ = service.Getenv(env, "PATH")
	}
	return a
}

// libraryWarning is the warning for a service whose root lacks shared
// libraries it needs: the daemon's, when its last pass checked the program
// there and found it ready or short of libraries; else virtuald's own
// check (no daemon, or it has not checked that program in that root yet).
// A root changed since the daemon's pass is seen at its next (status says
// the same meanwhile).
//
// When its own check found nothing missing, checked (when not nil) is
// told which files it read and when it began (conftable.RecordReady).
func (a *programAsk) libraryWarning(root service.Root, path string, env []string, checked func(files []string, start time.Time)) string {
	if a != nil {
		switch a.found.State {
		case ipc.ProgramReady:
			return ""
		case ipc.ProgramLibrariesMissing:
			return a.found.Reason
		}
	}
	start := time.Now()
	files, libs := root.Loaded(path, env)
	if libs != "" {
		return "shared libraries missing inside the root: " + libs
	}
	if checked != nil && files != nil {
		checked(files, start)
	}
	return ""
}
