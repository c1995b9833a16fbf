// Package addrs tracks every address on every interface of a network
// namespace through rtnetlink, for ipwatchd, and publishes the whole set as
// immutable snapshots that readers use without locking.
//
// The tracker subscribes first and dumps second: a change made while the
// dump runs is then in the dump, or in an event queued behind it, or both,
// never in neither. Because the two overlap, every update is applied as
// "this key now holds this value" or "this key is gone": an add seen twice
// or the delete of an unknown address changes nothing, and the last update
// of each key wins, so the state ends right whatever the interleaving.
//
// A netlink socket that falls behind loses events and reports it once
// (ENOBUFS). After that, or any other receive error, nothing can say what
// was missed, so the tracker drops the socket, subscribes again, dumps
// again and replaces its whole state: a resync.
//
// Links and addresses come in on one socket subscribed to RTNLGRP_LINK,
// RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR, so the kernel's order
// between them is kept (a link's addresses go before the link does) and
// one overflow means one resync. The messages are parsed here rather than
// through vishvananda/netlink's AddrSubscribe, whose AddrUpdate drops
// IFA_LABEL: re-listing a link's addresses after each event to learn a
// label would cost a dump per event and read a later state than the event
// describes, while the label in the event itself is exact. Parsing here
// also gives the dump and the events one parser, so an address has the
// same key whichever way it arrived, and leaves the tracker owning the one
// receive goroutine, which Run waits for.
package addrs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Address is one address on one interface.
type Address struct {
	Addr      netip.Addr // unmapped, no zone
	PrefixLen int
	Ifindex   int
	Interface string // link name, e.g. "eth0"
	Label     string // IPv4 label, e.g. "eth0:1" (the interface name when the address has no label of its own); "" for IPv6
	Flags     uint32 // IFA_F_* flags
	LinkUp    bool   // the link is administratively (IFF_UP) and operationally (IFF_RUNNING) up
}

// Live reports whether the address can be used: it is present and neither
// tentative (IPv6 duplicate address detection still running) nor failed DAD.
func (a Address) Live() bool {
	return a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0
}

// Snapshot is an immutable view of every address, published atomically;
// readers never lock.
type Snapshot struct {
	gen    uint64
	all    []Address                // sorted by address, then ifindex
	byAddr map[netip.Addr][]Address // runs of all
}

// Lookup returns every interface holding a (an address can be on several
// links), or nil if none does. An IPv4-mapped a finds the IPv4 address.
func (s *Snapshot) Lookup(a netip.Addr) []Address {
	return slices.Clone(s.byAddr[a.Unmap().WithZone("")])
}

// All returns every address, sorted by address, then ifindex.
func (s *Snapshot) All() []Address { return slices.Clone(s.all) }

// Generation counts the snapshots published, from 1.
func (s *Snapshot) Generation() uint64 { return s.gen }

// Options configure a Tracker.
type Options struct {
	// NetNS, when set, is the path of a network namespace (e.g.
	// /run/netns/NAME) to track instead of the caller's; tests use it.
	NetNS string
	// OnError is told about receive errors and resyncs (may be nil).
	OnError func(error)
}

// defaultRcvbuf holds thousands of events, so that only a real storm
// overflows it.
const defaultRcvbuf = 8 << 20

// Tracker follows the addresses of one network namespace.
type Tracker struct {
	onError func(error)
	ns      netns.NsHandle
	dumper  *nl.SocketHandle // for dumps; one handle so that sequence numbers never repeat

	// Tests shrink the receive buffer and slow the consumer to force overflows.
	rcvbuf      int
	beforeApply func()

	// The state, owned by Run's goroutine.
	links map[int]link
	addrs map[addrKey]Address // Interface and LinkUp are filled in at publish
	dirty bool                // changed since the last publish
	gen   uint64

	snap    atomic.Pointer[Snapshot]
	ready   chan struct{}
	mu      sync.Mutex
	changed chan struct{}
	resyncs atomic.Uint64
}

type link struct {
	name string
	up   bool
}

// addrKey identifies an address the way the kernel does: IPv6 allows an
// address once per link, IPv4 once per link, prefix length and peer.
type addrKey struct {
	ifindex int
	addr    netip.Addr
	plen    int        // IPv4 only
	peer    netip.Addr // IPv4 only
}

// New prepares a tracker; Run starts it.
func New(opts Options) (*Tracker, error) {
	ns := netns.None()
	if opts.NetNS != "" {
		var err error
		if ns, err = netns.GetFromPath(opts.NetNS); err != nil {
			return nil, fmt.Errorf("addrs: network namespace: %w", err)
		}
	}
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		if ns.IsOpen() {
			ns.Close()
		}
		return nil, fmt.Errorf("addrs: netlink socket: %w", err)
	}
	return &Tracker{
		onError: opts.OnError,
		ns:      ns,
		dumper:  &nl.SocketHandle{Socket: s},
		rcvbuf:  defaultRcvbuf,
		ready:   make(chan struct{}),
		changed: make(chan struct{}),
	}, nil
}

// Ready is closed after the first complete dump has been applied.
func (t *Tracker) Ready() <-chan struct{} { return t.ready }

// Snapshot returns the current snapshot: nil before Ready, never nil after.
func (t *Tracker) Snapshot() *Snapshot { return t.snap.Load() }

// Changed returns a channel that is closed at the next publish after this
// call. Call it before reading Snapshot, so that no change is missed, and
// again after each wake-up.
func (t *Tracker) Changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// Resyncs counts the times the tracker subscribed and dumped again after
// an error.
func (t *Tracker) Resyncs() uint64 { return t.resyncs.Load() }

// receiveError is a failure of the subscription, which a resync repairs.
type receiveError struct{ err error }

func (e receiveError) Error() string { return "receiving: " + e.err.Error() }
func (e receiveError) Unwrap() error { return e.err }

// Run tracks until ctx is done, then returns nil; it returns an error when
// it cannot subscribe or dump. Every goroutine it starts has ended when it
// returns. Call it once: it releases the tracker's sockets on return.
func (t *Tracker) Run(ctx context.Context) error {
	defer func() {
		t.dumper.Close()
		if t.ns.IsOpen() {
			t.ns.Close()
		}
	}()
	for {
		err := t.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if !errors.As(err, new(receiveError)) {
			return fmt.Errorf("addrs: %w", err)
		}
		t.resyncs.Add(1)
		if t.onError != nil {
			t.onError(fmt.Errorf("addrs: subscribing and dumping again after %w", err))
		}
	}
}

// batch is what one read of the subscription gave: updates, or the error
// that ended it.
type batch struct {
	updates []update
	err     error
}

// session subscribes, dumps, and applies events until ctx is done (nil) or
// the subscription fails (a receiveError).
func (t *Tracker) session(ctx context.Context) error {
	sub, err := nl.SubscribeAt(t.ns, netns.None(), unix.NETLINK_ROUTE,
		unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR)
	if err != nil {
		return fmt.Errorf("subscribing: %w", err)
	}
	// SO_RCVBUFFORCE may exceed net.core.rmem_max but needs CAP_NET_ADMIN.
	if err := sub.SetReceiveBufferSize(t.rcvbuf, true); err != nil {
		if err := sub.SetReceiveBufferSize(t.rcvbuf, false); err != nil {
			sub.Close()
			return fmt.Errorf("receive buffer: %w", err)
		}
	}
	batches := make(chan batch, 16)
	go receive(sub, batches)
	defer func() {
		sub.Close()
		for range batches { // until receive has returned
		}
	}()

	if err := t.dump(ctx); err != nil {
		return err
	}
	// Publish even an unchanged state: a new generation tells that the
	// state was read again, and the first one makes the tracker ready.
	t.dirty = true
	t.publish()
	for {
		select {
		case <-ctx.Done():
			return nil
		case b := <-batches:
			if err := t.applyQueued(b, batches); err != nil {
				return err
			}
			t.publish()
		}
	}
}

// applyQueued applies b and the batches already queued behind it, so that
// a burst of events is published once.
func (t *Tracker) applyQueued(b batch, batches <-chan batch) error {
	for n := len(batches); ; n-- {
		if b.err != nil {
			return receiveError{b.err}
		}
		if t.beforeApply != nil {
			t.beforeApply()
		}
		for _, u := range b.updates {
			t.apply(u)
		}
		if n == 0 {
			return nil
		}
		b = <-batches
	}
}

// receive reads the subscription until it fails or is closed, sending one
// batch per read; the last batch carries the error, then out is closed.
func receive(s *nl.NetlinkSocket, out chan<- batch) {
	defer close(out)
	for {
		msgs, from, err := s.Receive()
		if err != nil {
			out <- batch{err: err}
			return
		}
		if from.Pid != nl.PidKernel { // only the kernel speaks for its state
			continue
		}
		var b batch
		for _, m := range msgs {
			if u, ok := parse(m.Header.Type, m.Data); ok {
				b.updates = append(b.updates, u)
			}
		}
		out <- b
	}
}

// dump replaces the state with a fresh listing. Links go first, so the
// addresses listed next find their link; a link made in between arrives as
// an event, and until then its addresses are left out of snapshots.
func (t *Tracker) dump(ctx context.Context) error {
	for {
		links, addrs := make(map[int]link), make(map[addrKey]Address)
		err := t.list(unix.RTM_GETLINK, unix.RTM_NEWLINK, nl.NewIfInfomsg(unix.AF_UNSPEC),
			func(u update) { links[u.ifindex] = u.link })
		if err == nil {
			err = t.list(unix.RTM_GETADDR, unix.RTM_NEWADDR, nl.NewIfAddrmsg(unix.AF_UNSPEC),
				func(u update) { addrs[u.key] = u.addr })
		}
		if errors.Is(err, nl.ErrDumpInterrupted) && ctx.Err() == nil {
			continue // the table changed under the dump, which may have skipped entries
		}
		if err != nil {
			return fmt.Errorf("dumping: %w", err)
		}
		t.links, t.addrs = links, addrs
		return nil
	}
}

// list dumps one table (request typ, replies of type reply), passing each
// entry to f.
func (t *Tracker) list(typ int, reply uint16, hdr nl.NetlinkRequestData, f func(update)) error {
	req := nl.NewNetlinkRequest(typ, unix.NLM_F_DUMP)
	req.AddData(hdr)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: t.dumper}
	return req.ExecuteIter(unix.NETLINK_ROUTE, reply, func(m []byte) bool {
		if u, ok := parse(reply, m); ok {
			f(u)
		}
		return true
	})
}

// apply makes one update hold, whatever was there before.
func (t *Tracker) apply(u update) {
	switch {
	case u.isLink && u.del:
		t.dirty = del(t.links, u.ifindex) || t.dirty
		// The kernel deletes a link's addresses first, with events;
		// dropping them here too means none can outlive its link.
		for k := range t.addrs {
			if k.ifindex == u.ifindex {
				delete(t.addrs, k)
				t.dirty = true
			}
		}
	case u.isLink:
		t.dirty = put(t.links, u.ifindex, u.link) || t.dirty
	case u.del:
		t.dirty = del(t.addrs, u.key) || t.dirty
	default:
		t.dirty = put(t.addrs, u.key, u.addr) || t.dirty
	}
}

func put[K, V comparable](m map[K]V, k K, v V) bool {
	old, ok := m[k]
	m[k] = v
	return !ok || old != v
}

func del[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	delete(m, k)
	return ok
}

// publish makes the state visible if it changed since the last publish.
func (t *Tracker) publish() {
	if !t.dirty {
		return
	}
	t.dirty = false
	all := make([]Address, 0, len(t.addrs))
	for _, a := range t.addrs {
		l, ok := t.links[a.Ifindex]
		if !ok {
			continue // its link's event is still to come
		}
		a.Interface, a.LinkUp = l.name, l.up
		all = append(all, a)
	}
	slices.SortFunc(all, func(a, b Address) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Ifindex, b.Ifindex),
			cmp.Compare(a.PrefixLen, b.PrefixLen), strings.Compare(a.Label, b.Label))
	})
	byAddr := make(map[netip.Addr][]Address)
	for i := 0; i < len(all); {
		j := i + 1
		for j < len(all) && all[j].Addr == all[i].Addr {
			j++
		}
		byAddr[all[i].Addr] = all[i:j:j]
		i = j
	}
	t.gen++
	t.snap.Store(&Snapshot{gen: t.gen, all: all, byAddr: byAddr})
	if t.gen == 1 { // the first publish follows the first dump
		close(t.ready)
	}
	t.mu.Lock()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}
