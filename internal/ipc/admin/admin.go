// Package admin is the operator's side of the ipc protocol: the status of
// the conf files and addresses, the list of conf files, and reload, each
// with its encoder, its decoder and a client call. Their replies are JSON
// (the status is the contract of `ipwatchctl status -json`), so they live
// apart from package ipc: virtuald, which imports ipc on every connection,
// never links encoding/json.
package admin

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/virtuald/virtuald/internal/ipc"
)

// StatusReply is the reply to a status request: ipc.ReplyOK, then st as
// JSON. It also heads a streamed status, without entries.
func StatusReply(st *Status) [][]byte { return jsonReply(st) }

// ParseStatusReply reads the reply to a status request.
func ParseStatusReply(reply [][]byte) (*Status, error) {
	var st Status
	if err := parseJSONReply(reply, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ConfsReply is the reply to a confs or a reload request: every conf
// file the daemon serves, without entries.
func ConfsReply(l *ConfList) [][]byte { return jsonReply(l) }

// ParseConfsReply reads the reply to a confs or a reload request.
func ParseConfsReply(reply [][]byte) (*ConfList, error) {
	var l ConfList
	if err := parseJSONReply(reply, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// EntriesFrame is one frame of a streamed status: a batch of the entries
// of the conf file at path.
func EntriesFrame(path string, entries []EntryStatus) ([][]byte, error) {
	b, err := json.Marshal(entries)
	if err != nil {
		return nil, err
	}
	return [][]byte{[]byte(ipc.ReplyEntries), []byte(path), b}, nil
}

// EndFrame is the last frame of a streamed status.
func EndFrame() [][]byte { return [][]byte{[]byte(ipc.ReplyEnd)} }

// ParseEntriesFrame reads a frame of a streamed status after its header.
func ParseEntriesFrame(frame [][]byte) (path string, entries []EntryStatus, err error) {
	if len(frame) != 3 || string(frame[0]) != ipc.ReplyEntries {
		return "", nil, fmt.Errorf("%w: not a frame of entries", ipc.ErrFrame)
	}
	if err := json.Unmarshal(frame[2], &entries); err != nil {
		return "", nil, fmt.Errorf("%w: entries: %v", ipc.ErrFrame, err)
	}
	return string(frame[1]), entries, nil
}

func jsonReply(v any) [][]byte {
	b, err := json.Marshal(v)
	if err != nil {
		return ipc.ErrorReply(err.Error())
	}
	return [][]byte{[]byte(ipc.ReplyOK), b}
}

func parseJSONReply(reply [][]byte, v any) error {
	status, f, err := ipc.SplitReply(reply)
	switch {
	case err != nil:
		return err
	case status != ipc.ReplyOK || len(f) != 1:
		return fmt.Errorf("%w: not a reply of JSON", ipc.ErrFrame)
	}
	if err := json.Unmarshal(f[0], v); err != nil {
		return fmt.Errorf("%w: %v", ipc.ErrFrame, err)
	}
	return nil
}

// How long each request may take: a status or the list of files is built
// in well under a second at a million entries; a reload of that many
// parses them all; a streamed status may pause this long between frames.
const (
	statusTimeout = 10 * time.Second
	reloadTimeout = 60 * time.Second
	streamTimeout = 60 * time.Second
)

// Client makes the operator's requests of the daemon at Socket.
type Client struct{ Socket string }

func (c Client) call(timeout time.Duration, frame []byte) ([][]byte, error) {
	return ipc.Client{Socket: c.Socket, Timeout: timeout}.Call(frame, ipc.MaxReply)
}

// Status asks for the status q describes, its entries up to q.Limit per
// file (q.All is for StreamStatus).
func (c Client) Status(q StatusQuery) (*Status, error) {
	reply, err := c.call(statusTimeout, q.AppendFrame(nil))
	if err != nil {
		return nil, err
	}
	return ParseStatusReply(reply)
}

// StreamStatus asks for the status of every entry q matches, and hands
// onHeader the status without entries, then onEntries each batch of
// entries as it arrives, the files in order: neither side holds more than
// a batch.
func (c Client) StreamStatus(q StatusQuery, onHeader func(*Status), onEntries func(path string, entries []EntryStatus)) error {
	q.All = true
	header := true
	return ipc.Client{Socket: c.Socket, Timeout: streamTimeout}.CallStream(q.AppendFrame(nil), func(frame [][]byte) error {
		if header {
			header = false
			st, err := ParseStatusReply(frame)
			if err != nil {
				return err
			}
			onHeader(st)
			return nil
		}
		path, entries, err := ParseEntriesFrame(frame)
		if err != nil {
			return err
		}
		onEntries(path, entries)
		return nil
	})
}

// Confs asks which conf files the daemon serves, without their entries:
// what a lookup in every file needs, however large the files are.
func (c Client) Confs() (*ConfList, error) {
	reply, err := c.call(statusTimeout, ipc.AppendRequest(nil, ipc.OpConfs))
	if err != nil {
		return nil, err
	}
	return ParseConfsReply(reply)
}

// Reload makes the daemon reload every conf file now, and returns each
// file's state once it has (root only).
func (c Client) Reload() (*ConfList, error) {
	reply, err := c.call(reloadTimeout, ipc.AppendRequest(nil, ipc.OpReload))
	if err != nil {
		return nil, err
	}
	return ParseConfsReply(reply)
}
