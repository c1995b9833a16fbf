package main

import "github.com/virtuald/virtuald/internal/ipc"

// virtuald's front (internal/enter/init/front.c) is what a super-server
// starts per connection: a static program that serves the common
// connection itself and executes this program, with the same arguments,
// for everything else. When it asked the daemon before handing over, it
// says what came of it in frontEnv, so that this program neither waits
// for a wedged daemon a second time nor counts the connection twice. The
// variable can only make this program read the file instead of asking,
// or ask without counting: it never changes an answer. The service never
// sees it.
const frontEnv = "VIRTUALD_FRONT"

// frontAnswered: the daemon answered the front (and counted the
// connection); this program asks again with a lookup, which is not
// counted.
const frontAnswered = "answered"

// frontReasons are the front's findings that leave the file to answer,
// with the words this program's own question would have logged.
var frontReasons = map[string]string{
	"absent":  "absent",
	"slow":    "slow",
	"stale":   ipc.ErrStale.Error(),
	"racy":    ipc.ErrRacy.Error(),
	"unknown": ipc.ErrUnknown.Error(),
}
