// Package sdnotify tells systemd about the daemon's state through
// $NOTIFY_SOCKET (sd_notify(3)): READY=1, RELOADING=1, STOPPING=1.
package sdnotify

import (
	"net"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// Notify sends state. Without $NOTIFY_SOCKET (not started by systemd) it
// does nothing.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}

// Reloading is the message systemd wants before a reload (Type=notify-reload
// needs MONOTONIC_USEC to tell this reload from an earlier one).
func Reloading() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	usec := ts.Nano() / int64(time.Microsecond)
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10)
}
