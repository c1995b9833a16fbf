// Package slots applies an entry's limits where every connection is a
// process of its own that sees no other (virtuald per connection, under
// inetd's nowait): max= and per-source=, counted here, and rate=, whose
// token bucket (the one accept mode keeps in memory) is kept here in a
// file.
//
// A connection holds its places as open file description locks
// (F_OFD_SETLK) on one byte each of its entry's file in Dir: one of the
// entry's max= bytes, one of its client address's per-source= bytes.
// The kernel lets go of them when the last descriptor of that
// description closes, which is when the connection's last process ends
// (virtuald-init outside the namespaces, virtuald as the parent, or,
// with isolate=none, the service, which inherits it), however it ends:
// nothing is given back by hand, nothing leaks when a process is killed,
// and no daemon is needed. A counter in shared memory would need all of
// that.
//
// Each entry has a file of its own, so that a service that holds its
// descriptor (isolate=none) can take or keep only its own entry's
// places. The file begins with a header: a random key (per-source
// positions of IPv6 clients are a keyed hash, so that a client cannot
// pick an address that takes another's places), the entry's refusals,
// logged and not (for a log of one line a second per entry), and rate='s
// bucket.
package slots

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/virtuald/virtuald/internal/chroot"
	"github.com/virtuald/virtuald/internal/conf"
	"golang.org/x/sys/unix"
)

// Dir is where the entries' files are. /run is root's, and a tmpfs: the
// files go with a reboot, as the connections they count.
const Dir = "/run/virtuald/slots"

// The file's layout. The header: the key of the per-source hash, then,
// under a lock of their own, the second of the last refusal logged, how
// many were not logged since, and how many in all; then, under another,
// rate='s bucket. The slots lie far past it, at offsets no file reaches:
// a lock needs no data.
const (
	keyOff     = 0
	logOff     = 16 // to 40: logged second, not logged, refused in all
	logLen     = 24
	bucketOff  = 40 // to 72: rate='s bucket (its rate, tokens, time)
	bucketLen  = 32
	maxBase    = 1 << 32 // max= slot i
	sourceBase = 1 << 61 // per-source= slot j of source position p: sourceBase | p<<20 | j
	sourceBits = 40      // source positions: IPv4 addresses as they are, IPv6 hashed above them
)

// probes bounds the slots one connection tries: a limit up to it is
// exact; past it a connection tries that many at random, so that it may
// be refused a little short of the limit (with 90% of slots taken, one in
// 10^12 is), never past it, and a refusal of a full entry costs 256 locks
// at most.
const probes = 256

// Limit says which limit refused a connection.
type Limit int

const (
	None      Limit = iota // the slots were taken
	Max                    // max=
	PerSource              // per-source=
	Rate                   // rate=
)

// File is an entry's slot file, opened by one connection: the locks it
// takes belong to this description, held while any descriptor of it is
// open.
type File struct {
	fd int
}

// Open opens the file of entry (the conf path and the entry's key) in
// dir, making dir and the file when they are missing. The file must be
// root's alone, reached without a link; the directories that make it
// must be root's and writable by root alone (the rule a root directory
// follows), so that nobody else can give a connection another file.
func Open(dir, entry string) (*File, error) {
	name := fileName(entry)
	fd, err := openFile(dir + "/" + name)
	if errors.Is(err, unix.ENOENT) {
		fd, err = create(dir, name)
	}
	if err != nil {
		return nil, fmt.Errorf("connection slots in %s: %w", dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("connection slots in %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 || st.Mode&0o077 != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("connection slots in %s: %s is not a file of root's alone", dir, name)
	}
	return &File{fd: fd}, nil
}

func openFile(path string) (int, error) {
	return unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// create makes dir (checked as a root directory is) and the file name in
// it with its key written before it has its name, so that no connection
// reads a file without its key.
func create(dir, name string) (int, error) {
	if err := mkdirAll(dir); err != nil {
		return -1, err
	}
	d, err := chroot.Open(dir)
	if err != nil {
		return -1, err
	}
	defer d.Close()
	tmp, err := unix.Openat(d.Fd(), ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, err
	}
	var key [16]byte
	if _, err := unix.Getrandom(key[:], 0); err != nil {
		unix.Close(tmp)
		return -1, err
	}
	if _, err := unix.Pwrite(tmp, key[:], keyOff); err != nil {
		unix.Close(tmp)
		return -1, err
	}
	err = unix.Linkat(tmp, "", d.Fd(), name, unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EEXIST) { // another connection made it first
		unix.Close(tmp)
		return openFile(dir + "/" + name)
	}
	if err != nil {
		unix.Close(tmp)
		return -1, err
	}
	return tmp, nil
}

// mkdirAll makes the missing directories of dir, root's, 0755 but the
// last, 0700; chroot.Open then checks them all.
func mkdirAll(dir string) error {
	for i := 1; i <= len(dir); i++ {
		if i < len(dir) && dir[i] != '/' {
			continue
		}
		mode := uint32(0o755)
		if i == len(dir) {
			mode = 0o700
		}
		if err := unix.Mkdir(dir[:i], mode); err != nil && !errors.Is(err, unix.EEXIST) {
			return err
		}
	}
	return nil
}

// fileName names entry's file: a hash, so that the name has a fixed
// length and no character of the conf's. Two entries whose names hash
// alike would share their slots; the conf is the operator's, and 128
// bits make that a matter of chance alone.
func fileName(entry string) string {
	h := fnv.New128a()
	h.Write([]byte(entry))
	var sum [16]byte
	return fmt.Sprintf("%x", h.Sum(sum[:0]))
}

// Close closes the file; the slots it took go when no descriptor of its
// description is left open (one may have gone through an exec:
// enter.Plan.Keep).
func (f *File) Close() error { return unix.Close(f.fd) }

// Fd is the file's descriptor: whoever holds it holds the slots.
func (f *File) Fd() int { return f.fd }

// Take takes the connection's places under its entry's limits, from src
// at now: a slot of max=, one of src's slots of per-source= (when src is
// known), a token of rate=; all of them or none. It returns the limit
// that refused the connection, or None. The limits on connections at
// once come first, so that a connection they refuse takes no token.
func (f *File) Take(l conf.Limits, src netip.Addr, now time.Time) (Limit, error) {
	past, err := f.take(l, src, now)
	if past != None || err != nil {
		f.lock(unix.F_UNLCK, maxBase, 0) // every slot this description took
	}
	return past, err
}

func (f *File) take(l conf.Limits, src netip.Addr, now time.Time) (Limit, error) {
	if l.PerSource > 0 && src.IsValid() {
		base, err := f.sourceBase(src)
		if err != nil {
			return None, err
		}
		if ok, err := f.takeOne(base, l.PerSource); err != nil || !ok {
			return PerSource, err
		}
	}
	if l.Max > 0 {
		if ok, err := f.takeOne(maxBase, l.Max); err != nil || !ok {
			return Max, err
		}
	}
	if l.Rate.N > 0 {
		if ok, err := f.takeToken(l.Rate, now); err != nil || !ok {
			return Rate, err
		}
	}
	return None, nil
}

// takeOne locks one of the n bytes from base, or reports that all it
// tried were taken.
func (f *File) takeOne(base int64, n int) (bool, error) {
	start := rand.IntN(n)
	for k := 0; k < min(n, probes); k++ {
		i := (start + k) % n
		if n > probes {
			i = rand.IntN(n)
		}
		switch err := f.lock(unix.F_WRLCK, base+int64(i), 1); {
		case err == nil:
			return true, nil
		case !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES):
			return false, err
		}
	}
	return false, nil
}

// takeToken takes a token of the entry's bucket for rate r, kept in the
// file, or reports that it has none.
func (f *File) takeToken(r conf.Rate, now time.Time) (bool, error) {
	if err := f.lockHeader(bucketOff, bucketLen); err != nil {
		return false, err
	}
	defer f.lock(unix.F_UNLCK, bucketOff, bucketLen)
	var b [bucketLen]byte
	if _, err := unix.Pread(f.fd, b[:], bucketOff); err != nil {
		return false, err
	}
	le := binary.LittleEndian
	bk := Bucket{Rate: conf.Rate{N: int(le.Uint64(b[0:])), Per: time.Duration(le.Uint64(b[8:]))}, Tokens: math.Float64frombits(le.Uint64(b[16:]))}
	if at := int64(le.Uint64(b[24:])); at != 0 {
		bk.At = time.Unix(0, at)
	}
	ok := bk.Fill(r, now) >= 1
	if ok {
		bk.Tokens--
	}
	le.PutUint64(b[0:], uint64(bk.Rate.N))
	le.PutUint64(b[8:], uint64(bk.Rate.Per))
	le.PutUint64(b[16:], math.Float64bits(bk.Tokens))
	le.PutUint64(b[24:], uint64(bk.At.UnixNano()))
	if _, err := unix.Pwrite(f.fd, b[:], bucketOff); err != nil {
		return false, err
	}
	return ok, nil
}

// lockHeader takes the lock of a part of the header, which connections
// hold for a few system calls each: it waits for it a few milliseconds
// at most (a service given the file, isolate=none, may hold it for good;
// the wait is bounded so that it cannot keep its entry's connections
// waiting, each a process).
func (f *File) lockHeader(off, n int64) error {
	var err error
	for try := 0; try < 50; try++ {
		if err = f.lock(unix.F_WRLCK, off, n); !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			return err
		}
		time.Sleep(100 * time.Microsecond)
	}
	return fmt.Errorf("the entry's count is held by another process: %w", err)
}

func (f *File) lock(typ int16, off, n int64) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: off, Len: n}
	return unix.FcntlFlock(uintptr(f.fd), unix.F_OFD_SETLK, &lk)
}

// sourceBase is where src's per-source slots begin: an IPv4 address is
// its own position; an IPv6 address (too long for an offset) is placed by
// a hash keyed with the file's key, above every IPv4 address.
func (f *File) sourceBase(src netip.Addr) (int64, error) {
	src = src.Unmap()
	var p uint64
	if src.Is4() {
		b := src.As4()
		p = uint64(binary.BigEndian.Uint32(b[:]))
	} else {
		var key [16]byte
		if _, err := unix.Pread(f.fd, key[:], keyOff); err != nil {
			return 0, err
		}
		b := src.As16()
		p = 1<<(sourceBits-1) | sipHash(binary.LittleEndian.Uint64(key[:8]), binary.LittleEndian.Uint64(key[8:]), b[:])&(1<<(sourceBits-1)-1)
	}
	return sourceBase | int64(p)<<20, nil
}

// Refused counts a refusal at now and says whether to log it: the first
// of each second is logged, with how many were not since the last that
// was (notLogged) and how many the entry refused in all. When the count
// cannot be kept (a process holds it: lockHeader), the refusal is logged
// without them (total 0).
func (f *File) Refused(now time.Time) (notLogged, total uint64, log bool) {
	if f.lockHeader(logOff, logLen) != nil {
		return 0, 0, true
	}
	defer f.lock(unix.F_UNLCK, logOff, logLen)
	var b [logLen]byte
	if _, err := unix.Pread(f.fd, b[:], logOff); err != nil {
		return 0, 0, true
	}
	second, notLogged, total := binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:])+1
	log = uint64(now.Unix()) != second
	if log {
		binary.LittleEndian.PutUint64(b[0:], uint64(now.Unix()))
		binary.LittleEndian.PutUint64(b[8:], 0)
	} else {
		binary.LittleEndian.PutUint64(b[8:], notLogged+1)
		notLogged = 0
	}
	binary.LittleEndian.PutUint64(b[16:], total)
	unix.Pwrite(f.fd, b[:], logOff)
	return notLogged, total, log
}
