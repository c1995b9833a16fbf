package bpf

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// ShedBuckets bounds the buckets (limited entries and ports) a Shedder
// holds: the size of the program's bucket array.
const ShedBuckets = 16384

// ShedRule is one bucket's rate: a connection every Interval, Burst of
// them at once after a quiet spell.
type ShedRule struct {
	Interval time.Duration
	Burst    uint32
}

// ShedStats are one bucket's counts since its rule was first set.
type ShedStats struct {
	Passed, Dropped uint64
}

// Shedder is the shed program (shed.c) attached to a network namespace:
// new TCP connections to the addresses and ports it is given are dropped
// past their bucket's rate before a listener sees them.
//
// It is not pinned: its link is held by the process that opened it, and
// the kernel detaches it when that process exits. Its limits are the
// conf's as the daemon has it loaded now, and only the daemon can follow
// the conf: a program left running by a daemon that has gone would go on
// shedding by limits nobody updates (an operator who removes rate= and
// reloads would still see connections refused). Without the daemon the
// limits are off; virtuald -accept still applies its own.
type Shedder struct {
	objs shedObjects
	link *link.NetNsLink

	keys  map[Key]uint32      // as the kernel map holds them
	rules map[uint32]ShedRule // the buckets in use
}

// OpenShedder loads the shed program and attaches it to the calling
// thread's network namespace, with no limits yet. It needs CAP_BPF and
// CAP_PERFMON (or root) and Linux 5.9 (sk_lookup); BTF is not needed.
func OpenShedder() (s *Shedder, err error) {
	ns, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("shedding: the network namespace: %w", err)
	}
	defer ns.Close()
	s = &Shedder{keys: map[Key]uint32{}, rules: map[uint32]ShedRule{}}
	if err := loadShedObjects(&s.objs, nil); err != nil {
		return nil, fmt.Errorf("shedding: loading the bpf program: %w", err)
	}
	defer func() {
		if err != nil {
			s.objs.Close()
		}
	}()
	s.link, err = link.AttachNetNs(int(ns.Fd()), s.objs.Shed)
	if err != nil {
		return nil, fmt.Errorf("shedding: attaching sk_lookup to the network namespace: %w", err)
	}
	return s, nil
}

// Apply makes the kernel's maps hold exactly keys (each limited address
// and port to its bucket) and rules (each bucket's rate), changing only
// what differs from the last Apply. A bucket whose rule is unchanged
// keeps its state and counts; a new or changed one starts full. Rules
// whose bucket no key names are kept (their counts stay readable) until
// they are left out.
func (s *Shedder) Apply(keys map[Key]uint32, rules map[uint32]ShedRule) error {
	var errs []error
	// Keys first out, so that no key names a bucket being cleared.
	for k, idx := range s.keys {
		if n, ok := keys[k]; ok && n == idx {
			continue
		}
		if err := s.objs.ShedKeys.Delete(shedKeyOf(k)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("shedding: removing %v: %w", k, err))
			continue
		}
		delete(s.keys, k)
	}
	for idx, r := range s.rules {
		if _, ok := rules[idx]; ok {
			continue
		}
		if err := s.objs.ShedBuckets.Update(idx, shedShedBucket{}, ebpf.UpdateLock); err != nil {
			errs = append(errs, fmt.Errorf("shedding: clearing bucket %d (%v): %w", idx, r, err))
			continue
		}
		delete(s.rules, idx)
	}
	for idx, r := range rules {
		if old, ok := s.rules[idx]; ok && old == r {
			continue
		}
		if idx >= ShedBuckets || r.Interval <= 0 || r.Burst == 0 {
			errs = append(errs, fmt.Errorf("shedding: bad bucket %d: %+v", idx, r))
			continue
		}
		var b shedShedBucket
		if _, ok := s.rules[idx]; ok {
			// A changed rate keeps the counts.
			if err := s.objs.ShedBuckets.LookupWithFlags(idx, &b, ebpf.LookupLock); err != nil {
				errs = append(errs, fmt.Errorf("shedding: bucket %d: %w", idx, err))
				continue
			}
		}
		b.Interval = uint64(r.Interval)
		b.Tau = uint64(r.Burst-1) * uint64(r.Interval)
		b.Tat = 0
		if err := s.objs.ShedBuckets.Update(idx, b, ebpf.UpdateLock); err != nil {
			errs = append(errs, fmt.Errorf("shedding: bucket %d: %w", idx, err))
			continue
		}
		s.rules[idx] = r
	}
	for k, idx := range keys {
		if old, ok := s.keys[k]; ok && old == idx {
			continue
		}
		if _, ok := s.rules[idx]; !ok {
			errs = append(errs, fmt.Errorf("shedding: %v names bucket %d, which has no rule", k, idx))
			continue
		}
		if err := s.objs.ShedKeys.Update(shedKeyOf(k), idx, ebpf.UpdateAny); err != nil {
			errs = append(errs, fmt.Errorf("shedding: adding %v: %w", k, err))
			continue
		}
		s.keys[k] = idx
	}
	return errors.Join(errs...)
}

// Keys returns the limited addresses and ports as the kernel has them.
func (s *Shedder) Keys() map[Key]uint32 { return maps.Clone(s.keys) }

// Stats returns the counts of every bucket in use.
func (s *Shedder) Stats() (map[uint32]ShedStats, error) {
	out := make(map[uint32]ShedStats, len(s.rules))
	for idx := range s.rules {
		var b shedShedBucket
		if err := s.objs.ShedBuckets.LookupWithFlags(idx, &b, ebpf.LookupLock); err != nil {
			return nil, fmt.Errorf("shedding: reading bucket %d: %w", idx, err)
		}
		out[idx] = ShedStats{Passed: b.Passed, Dropped: b.Dropped}
	}
	return out, nil
}

// Close detaches the program: from then on nothing is shed.
func (s *Shedder) Close() error {
	return errors.Join(s.link.Close(), s.objs.Close())
}

func shedKeyOf(k Key) shedShedKey {
	var sk shedShedKey
	sk.Port = k.Port
	a := k.Addr.Unmap()
	if a.Is4() {
		sk.Family = unix.AF_INET
		b := a.As4()
		copy(sk.Addr[:], b[:])
	} else {
		sk.Family = unix.AF_INET6
		sk.Addr = a.As16()
	}
	return sk
}

// ShedUnavailable says in words why the shed program cannot run here, or
// "" when it may (OpenShedder's error is then the reason).
func ShedUnavailable() string {
	// CAP_PERFMON for the verifier's pointer arithmetic on the key;
	// attaching to the namespace needs nothing more (CAP_NET_ADMIN is
	// not asked for: the shipped unit's CAP_BPF and CAP_PERFMON do).
	if !hasCaps() {
		return "needs root (CAP_BPF and CAP_PERFMON)"
	}
	if _, err := os.Stat("/proc/thread-self/ns/net"); err != nil {
		return "no network namespace to attach to (/proc/thread-self/ns/net)"
	}
	return ""
}
