// virtuald's front: what a super-server starts per connection as
// /usr/sbin/virtuald. It is virtuald-init (init.c, included below) with a
// second mode, chosen by argv[0]: Go's virtuald starts virtuald-init as
// "virtuald-init", a super-server starts the front as anything else.
//
// A Go program costs milliseconds of CPU to start on a VM where page
// faults are dear; this one costs a few hundred microseconds. It serves
// the common connection itself, the way the Go program would:
//
//	virtuald [-socket PATH] [-isolate none|all] CONF PROGRAM [ARG...]
//
// with a TCP connection on fd 0 and ipwatchd answering (its peer root or
// this process's uid, as internal/ipc/client.go checks) with a served
// entry without limits whose options it knows (numeric user= with group=,
// group=, isolate=, hostname=). It walks the root as internal/chroot does
// (openat2 with RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|RESOLVE_BENEATH
// from "/", each component a root-owned directory not writable by group
// or others), looks the program up inside it as internal/service does,
// logs the one line Go's virtuald logs (cmd/virtuald/connlog.go), and
// enters the root: isolated, through virtuald-init's in-place start (one
// way into a root), or with isolate=none by chroot and exec.
//
// Everything else it hands over, by executing the Go program with the
// original arguments: virtuald-go, beside this program's own file (from
// /proc/self/exe, never PATH). It parses no conf file: the one parser and
// validator are Go's, and it acts only on the daemon's answer after
// checking it as strictly as ipc.Answer.Match does; whatever it does not
// recognise is handed over, never served. When it asked the daemon, it
// tells the Go program what came of it in VIRTUALD_FRONT (answered,
// absent, slow, stale, racy, unknown), so that a connection never waits
// for a wedged daemon twice nor is counted twice.
//
// It never writes to fds 0-2 (the client's socket): its log goes to
// /dev/log, connected before the root is entered.

#define start initStart
#include "init.c"
#undef start

#define AF_UNIX_ 1
#define AF_INET_ 2
#define AF_INET6_ 10
#define SOCK_STREAM_ 1
#define SOCK_DGRAM_ 2
#define SOCK_NONBLOCK_ 04000
#define SOL_SOCKET_ 1
#define SO_TYPE_ 3
#define SO_PEERCRED_ 17
#define SO_SNDTIMEO_ 21
#define SO_ACCEPTCONN_ 30
#define SO_DOMAIN_ 39
#define O_PATH_ 010000000
#define O_DIRECTORY_ 0200000
#define O_NOFOLLOW_ 0400000
#define O_NONBLOCK_ 04000
#define O_WRONLY_ 1
#define O_CREAT_ 0100
#define O_EXCL_ 0200
#define RESOLVE_NO_MAGICLINKS_ 0x02
#define RESOLVE_NO_SYMLINKS_ 0x04
#define RESOLVE_BENEATH_ 0x08
#define RESOLVE_IN_ROOT_ 0x10
#define S_IFMT_ 0170000
#define S_IFSOCK_ 0140000
#define S_IFREG_ 0100000
#define S_IFDIR_ 0040000
#define EINTR_ 4
#define EAGAIN_ 11
#define EEXIST_ 17
#define ENOENT_ 2
#define ECONNREFUSED_ 111
#define MSG_NOSIGNAL_ 0x4000
#define POLLIN_ 1
#define POLLOUT_ 4
#define TCGETS_ 0x5401
#define CLOCK_REALTIME_ 0
#define CLOCK_MONOTONIC_ 1
#define UTIME_OMIT_ ((1L << 30) - 2L)
#define OPEN_TREE_CLONE_ 1
#define AT_RECURSIVE_ 0x8000
#define MOUNT_ATTR_SIZE_VER0_ 32
#define CLONE_NEWPID_ 0x20000000
#define CLONE_NEWIPC_ 0x08000000
#define CLONE_NEWUTS_ 0x04000000

// kept is enter.Kept as a mask: the capability bounding set of an
// isolated service (TestFrontKeptMask holds the two equal).
#define KEPT_CAPS 0x200404fbUL

// Limits: the daemon's answer (ipc's answerLimit and MaxFields), the
// request (ipc.MaxRequest), the log line (syslog's maxMessage).
#define ANSWER_LIMIT (64 << 10)
#define MAX_FIELDS 32
#define MAX_REQUEST (8 << 10)
#define MAX_MESSAGE 4096
#define PATH_MAX_ 4096
#define MAX_ENV 1024
#define DAEMON_TIMEOUT_NS 150000000L // cmd/virtuald's daemonTimeout
#define SLOW_HOLD_NS 500000000L      // ipc.SlowHold
#define PROBE_TIMEOUT_NS 25000000L   // ipc.ProbeTimeout

struct stat_ {
	unsigned long dev, ino, nlink;
	unsigned int mode, uid, gid, pad0;
	unsigned long rdev;
	long size, blksize, blocks;
	unsigned long atime, atime_ns, mtime, mtime_ns, ctime, ctime_ns;
	long unused[3];
};
#if !defined(__x86_64__)
#error "the front's struct stat is x86-64's: build it for amd64 only"
#endif

struct timespec_ {
	long sec, nsec;
};
struct sockaddr_un_ {
	unsigned short family;
	char path[108];
};
struct sockaddr_any_ {
	unsigned short family;
	unsigned char port[2];
	unsigned char v4[4]; // sin_addr; in6: flowinfo
	unsigned char v6[16];
	unsigned int scope;
	char pad[100];
};
struct ucred_ {
	int pid;
	unsigned int uid, gid;
};
struct open_how_ {
	unsigned long long flags, mode, resolve;
};
struct mount_attr_ {
	unsigned long long set, clr, propagation, userns;
};

// ---- small helpers ----

static int eq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static int prefixed(const char *s, const char *p)
{
	while (*p)
		if (*s++ != *p++)
			return 0;
	return 1;
}

static int memeq(const char *a, unsigned long n, const char *s)
{
	unsigned long i = 0;
	for (; i < n && s[i]; i++)
		if (a[i] != s[i])
			return 0;
	return i == n && !s[i];
}

// buf is a bounded string being built; ok turns 0 when it would overflow.
struct buf {
	char *b;
	unsigned long n, cap;
	int ok;
};

static void put(struct buf *b, const char *s, unsigned long n)
{
	if (!b->ok || b->n + n + 1 > b->cap) {
		b->ok = 0;
		return;
	}
	for (unsigned long i = 0; i < n; i++)
		b->b[b->n++] = s[i];
	b->b[b->n] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, len(s)); }

static void putc_(struct buf *b, char c) { put(b, &c, 1); }

static void putu(struct buf *b, unsigned long n)
{
	char d[21];
	puts_(b, format(d, n));
}

static void puthex(struct buf *b, unsigned int n)
{
	char d[8];
	int i = 8;
	do
		d[--i] = "0123456789abcdef"[n & 15];
	while (n >>= 4);
	put(b, d + i, 8 - i);
}

// decimal parses a field of digits only (what Go's strconv.ParseUint
// takes in base 10), at most max.
static int decimal(const char *s, unsigned long n, unsigned long max, unsigned long *v)
{
	unsigned long x = 0;
	if (n == 0 || n > 20)
		return -1;
	for (unsigned long i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned long d = s[i] - '0';
		if (x > (~0UL - d) / 10)
			return -1;
		x = x * 10 + d;
	}
	if (x > max)
		return -1;
	*v = x;
	return 0;
}

static long now(int clock)
{
	struct timespec_ t;
	S2(__NR_clock_gettime, clock, &t);
	return t.sec * 1000000000L + t.nsec;
}

// ---- the state of one connection ----

static struct {
	int argc;
	char **argv, **envp;
	char goPath[PATH_MAX_ + 16]; // the Go program, "" when not found
	char *env[MAX_ENV + 2];      // the service's environment
	char *handEnv[MAX_ENV + 2];  // the Go program's, with the marker
	const char *socket, *envSocket, *conf, *program, *pathEnv;
	int hasPathEnv;
	int isolate; // -1: no -isolate
	char **args;
	long nargs;
	// the connection
	int v6;
	unsigned char local[16], remote[16];
	unsigned int localPort, remotePort;
	int hasRemote;
	char localAddr[48], localText[64], remoteText[64];
	struct stat_ confStat;
} f;

static void __attribute__((noreturn)) handover(const char *marker);

// ---- addresses, as Go's net/netip writes them ----

static void putAddr(struct buf *b, const unsigned char *a, int v6)
{
	if (!v6) {
		for (int i = 0; i < 4; i++) {
			if (i)
				putc_(b, '.');
			putu(b, a[i]);
		}
		return;
	}
	unsigned int g[8];
	for (int i = 0; i < 8; i++)
		g[i] = a[2 * i] << 8 | a[2 * i + 1];
	int zs = 255, ze = 255;
	for (int i = 0; i < 8; i++) {
		int j = i;
		while (j < 8 && g[j] == 0)
			j++;
		if (j - i >= 2 && j - i > ze - zs)
			zs = i, ze = j;
	}
	for (int i = 0; i < 8; i++) {
		if (i == zs) {
			put(b, "::", 2);
			i = ze;
			if (i >= 8)
				break;
		} else if (i > 0)
			putc_(b, ':');
		puthex(b, g[i]);
	}
}

static void putAddrPort(struct buf *b, const unsigned char *a, int v6, unsigned int port)
{
	if (v6)
		putc_(b, '[');
	putAddr(b, a, v6);
	if (v6)
		putc_(b, ']');
	putc_(b, ':');
	putu(b, port);
}

// sockAddr reads an IP socket address, an IPv4-mapped IPv6 one unmapped;
// it returns whether the address is IPv6.
static int sockAddr(struct sockaddr_any_ *sa, unsigned char *a, unsigned int *port)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	*port = sa->port[0] << 8 | sa->port[1];
	if (sa->family == AF_INET_) {
		for (int i = 0; i < 4; i++)
			a[i] = sa->v4[i];
		return 0;
	}
	int m = 1;
	for (int i = 0; i < 12; i++)
		m &= sa->v6[i] == mapped[i];
	if (m) {
		for (int i = 0; i < 4; i++)
			a[i] = sa->v6[12 + i];
		return 0;
	}
	for (int i = 0; i < 16; i++)
		a[i] = sa->v6[i];
	return 1;
}

// inspect is socket.Inspect for the one case served here: a connected
// TCP socket on fd 0.
static int inspect(void)
{
	struct stat_ st;
	int v = 0;
	int vl = sizeof v;
	if (S2(__NR_fstat, 0, &st) < 0 || (st.mode & S_IFMT_) != S_IFSOCK_)
		return -1;
	if (S5(__NR_getsockopt, 0, SOL_SOCKET_, SO_DOMAIN_, &v, &vl) < 0 || (v != AF_INET_ && v != AF_INET6_))
		return -1;
	if (S5(__NR_getsockopt, 0, SOL_SOCKET_, SO_TYPE_, &v, &vl) < 0 || v != SOCK_STREAM_)
		return -1;
	if (S5(__NR_getsockopt, 0, SOL_SOCKET_, SO_ACCEPTCONN_, &v, &vl) < 0 || v != 0)
		return -1;
	struct sockaddr_any_ sa;
	int sl = sizeof sa;
	if (S3(__NR_getsockname, 0, &sa, &sl) < 0 || (sa.family != AF_INET_ && sa.family != AF_INET6_))
		return -1;
	f.v6 = sockAddr(&sa, f.local, &f.localPort);
	unsigned char r[16];
	sl = sizeof sa;
	if (S3(__NR_getpeername, 0, &sa, &sl) == 0 && (sa.family == AF_INET_ || sa.family == AF_INET6_)) {
		int rv6 = sockAddr(&sa, r, &f.remotePort);
		struct buf b = {f.remoteText, 0, sizeof f.remoteText, 1};
		putAddrPort(&b, r, rv6, f.remotePort);
		f.hasRemote = b.ok;
	}
	struct buf a = {f.localAddr, 0, sizeof f.localAddr, 1};
	putAddr(&a, f.local, f.v6);
	struct buf t = {f.localText, 0, sizeof f.localText, 1};
	putAddrPort(&t, f.local, f.v6, f.localPort);
	return a.ok && t.ok ? 0 : -1;
}

// ---- the command line and the environment ----

static int parseArgs(void)
{
	int i = 1;
	f.isolate = -1;
	for (; i < f.argc && f.argv[i][0] == '-'; i++) {
		if (i + 1 >= f.argc)
			return -1;
		if (eq(f.argv[i], "-socket"))
			f.socket = f.argv[++i];
		else if (eq(f.argv[i], "-isolate")) {
			const char *v = f.argv[++i];
			if (eq(v, "none"))
				f.isolate = 0;
			else if (eq(v, "all"))
				f.isolate = 15;
			else
				return -1;
		} else
			return -1;
	}
	if (f.argc - i < 2 || !f.argv[i][0] || !f.argv[i + 1][0])
		return -1;
	f.conf = f.argv[i];
	f.program = f.argv[i + 1];
	f.args = f.argv + i + 1;
	f.nargs = f.argc - i - 1;
	return 0;
}

// envName reports whether kv is a variable named name.
static int envName(const char *kv, const char *name)
{
	while (*name && *kv == *name)
		kv++, name++;
	return !*name && *kv == '=';
}

// readEnv is cmd/virtuald's readEnvironment: the service gets every
// variable but systemd's socket-passing ones and the front's marker.
static int readEnv(void)
{
	long n = 0;
	for (char **e = f.envp; *e; e++) {
		if (envName(*e, "LD_LIBRARY_PATH"))
			return -1; // the daemon's library check would not be the loader's
		if (envName(*e, "VIRTUALD_SOCKET"))
			f.envSocket = *e + 16; // the last one, as Go's readEnvironment
		if (envName(*e, "PATH"))
			f.pathEnv = *e + 5, f.hasPathEnv = 1;
		if (envName(*e, "LISTEN_PID") || envName(*e, "LISTEN_FDS") || envName(*e, "LISTEN_FDNAMES") ||
		    envName(*e, "VIRTUALD_FRONT"))
			continue;
		if (n == MAX_ENV)
			return -1;
		f.env[n++] = *e;
	}
	f.env[n] = 0;
	return 0;
}

// findGo sets goPath to virtuald-go in the directory of this program's
// own file.
static void findGo(void)
{
	char *p = f.goPath;
	long n = S3(__NR_readlink, "/proc/self/exe", p, PATH_MAX_);
	if (n <= 0 || n >= PATH_MAX_ || p[0] != '/') {
		p[0] = 0;
		return;
	}
	p[n] = 0;
	while (n > 0 && p[n - 1] != '/')
		n--;
	struct buf b = {p, n, sizeof f.goPath, 1};
	puts_(&b, "virtuald-go");
	if (!b.ok)
		p[0] = 0;
}

// ---- syslog ----

static int logfd = -1;

static void logConnect(void)
{
	struct sockaddr_un_ sa = {AF_UNIX_, "/dev/log"};
	long fd = S3(__NR_socket, AF_UNIX_, SOCK_DGRAM_ | O_CLOEXEC__, 0);
	if (fd < 0)
		return;
	struct timespec_ tv = {1, 0}; // a struct timeval on 64 bits
	S5(__NR_setsockopt, fd, SOL_SOCKET_, SO_SNDTIMEO_, &tv, sizeof tv);
	if (S3(__NR_connect, fd, &sa, sizeof sa) < 0) {
		S1(__NR_close, fd);
		return;
	}
	logfd = (int)fd;
}

// logSend sends msg as syslog.Logger.Log does: "<PRI>virtuald[PID]: msg".
static void logSend(int severity, const char *msg)
{
	char line[MAX_MESSAGE + 128], pid[21];
	struct buf b = {line, 0, sizeof line, 1};
	putc_(&b, '<');
	putu(&b, 3 * 8 + severity);
	puts_(&b, ">virtuald[");
	puts_(&b, format(pid, S0(__NR_getpid)));
	puts_(&b, "]: ");
	puts_(&b, msg);
	if (logfd < 0 || !b.ok)
		return;
	while (sys(__NR_sendto, logfd, (long)line, (long)b.n, MSG_NOSIGNAL_, 0, 0) == -EINTR_)
		;
}

// field adds key=value to a log line as connLog.add does, for a value of
// printable ASCII; anything else (which Go quotes with escapes this does
// not write) fails the line.
static void field(struct buf *b, const char *key, const char *value)
{
	if (b->n > 0)
		putc_(b, ' ');
	puts_(b, key);
	putc_(b, '=');
	int quote = !*value;
	for (const char *p = value; *p; p++) {
		if (*p < ' ' || *p >= 0x7f)
			b->ok = 0;
		if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\')
			quote = 1;
	}
	if (!quote) {
		puts_(b, value);
		return;
	}
	putc_(b, '"');
	for (const char *p = value; *p; p++) {
		if (*p == '"' || *p == '\\')
			putc_(b, '\\');
		putc_(b, *p);
	}
	putc_(b, '"');
}

// ---- the daemon ----

// The slow mark (ipc.SlowMark): a root-owned file beside the socket
// whose mtime says "slow until then".
static int trustedMark(struct stat_ *st)
{
	return (st->mode & S_IFMT_) == S_IFREG_ && st->uid == 0 && (st->mode & 022) == 0;
}

static char markPath[PATH_MAX_ + 8];

// heldText is ipc's heldWhy for the mark st: when the daemon will be
// asked again, in UTC, to the millisecond (truncated, as Go's .000).
static char heldText[96];

static void heldWhy(struct stat_ *st)
{
	struct buf b = {heldText, 0, sizeof heldText - 1, 1};
	unsigned long day = st->mtime % 86400, ms = st->mtime_ns / 1000000;
	unsigned long parts[3] = {day / 3600, day / 60 % 60, day % 60};
	puts_(&b, "slow (it did not answer in time; asked again after ");
	for (int i = 0; i < 3; i++) {
		if (i)
			putc_(&b, ':');
		putc_(&b, '0' + parts[i] / 10);
		putc_(&b, '0' + parts[i] % 10);
	}
	putc_(&b, '.');
	putc_(&b, '0' + ms / 100);
	putc_(&b, '0' + ms / 10 % 10);
	putc_(&b, '0' + ms % 10);
	putc_(&b, ')');
	heldText[b.n] = 0;
}

// holdSlow sets the mark fd to say "slow until SlowHold from now".
static void holdSlow(long fd)
{
	long until = now(CLOCK_REALTIME_) + SLOW_HOLD_NS;
	struct timespec_ ts[2] = {{0, UTIME_OMIT_}, {until / 1000000000L, until % 1000000000L}};
	S4(__NR_utimensat, fd, 0, ts, 0);
}

// markSlow is SlowMark.afterFirstAsk: the first connection that found
// the daemon slow holds it so for SlowHold (only root can).
static void markSlow(void)
{
	long fd = S3(__NR_open, markPath, O_WRONLY_ | O_CREAT_ | O_EXCL_ | O_NOFOLLOW_ | O_CLOEXEC__, 0644);
	if (fd == -EEXIST_)
		fd = S3(__NR_open, markPath, O_WRONLY_ | O_NOFOLLOW_ | O_NONBLOCK_ | O_CLOEXEC__, 0);
	if (fd < 0)
		return;
	struct stat_ st;
	if (S2(__NR_fstat, fd, &st) == 0 && trustedMark(&st))
		holdSlow(fd);
	S1(__NR_close, fd);
}

// waitFor polls fd for events until the deadline (CLOCK_MONOTONIC);
// -1 when it passed.
static int waitFor(long fd, short events, long deadline)
{
	for (;;) {
		long left = deadline - now(CLOCK_MONOTONIC_);
		if (left <= 0)
			return -1;
		struct timespec_ t = {left / 1000000000L, left % 1000000000L};
		struct {
			int fd;
			short events, revents;
		} p = {(int)fd, events, 0};
		long n = S5(__NR_ppoll, &p, 1, &t, 0, 0);
		if (n > 0)
			return 0;
		if (n < 0 && n != -EINTR_)
			return -2;
	}
}

// transfer does one read or write (nr) on the daemon's socket, waiting
// for it until the deadline: the bytes moved, 0 at its end, ioSlow when
// the deadline passed, ioFailed for any other error.
enum { ioSlow = -1, ioFailed = -2 };

static long transfer(long nr, long fd, char *p, unsigned long n, long deadline)
{
	for (;;) {
		// A send never raises SIGPIPE: a daemon that closed early is a
		// handover, not the front's death.
		long r = nr == __NR_read ? S3(nr, fd, p, n) : sys(__NR_sendto, fd, (long)p, (long)n, MSG_NOSIGNAL_, 0, 0);
		if (r >= 0)
			return r;
		if (r == -EINTR_)
			continue;
		if (r != -EAGAIN_)
			return ioFailed;
		int w = waitFor(fd, nr == __NR_read ? POLLIN_ : POLLOUT_, deadline);
		if (w < 0)
			return w == -1 ? ioSlow : ioFailed;
	}
}

static void putField(struct buf *b, const char *s, unsigned long n)
{
	unsigned char l[4] = {n >> 24, n >> 16, n >> 8, n};
	put(b, (const char *)l, 4);
	put(b, s, n);
}

static void putNumField(struct buf *b, unsigned long n, int sign)
{
	char d[22];
	char *p = format(d + 1, sign ? (unsigned long)-(long)n : n);
	if (sign)
		*--p = '-';
	putField(b, p, len(p));
}

static void putNum(struct buf *b, long n)
{
	if (n < 0)
		putNumField(b, (unsigned long)n, 1);
	else
		putNumField(b, (unsigned long)n, 0);
}

// The answer, as ipc.ParseResolveReply splits it: pointers into reply.
static char reply[4 + ANSWER_LIMIT + 1];
static struct {
	const char *p;
	unsigned long n;
} fields[MAX_FIELDS];
static int nfields;

// The outcomes of asking.
enum { askAnswered, askHandOver, askAbsent, askSlow, askStale, askRacy, askUnknown, askHeld };

// ask is cmd/virtuald's question (ipc.Client.Resolve): connect, check the
// peer, send the request, read the one frame of the reply, all within
// timeout (nanoseconds).
static int ask(long timeout)
{
	long deadline = now(CLOCK_MONOTONIC_) + timeout;
	static char req[MAX_REQUEST + 64];
	struct buf b = {req, 4, sizeof req, 1};
	putField(&b, "1", 1);
	putField(&b, "resolve", 7);
	putField(&b, f.conf, len(f.conf));
	putField(&b, f.localAddr, len(f.localAddr));
	putNumField(&b, f.confStat.dev, 0);
	putNumField(&b, f.confStat.ino, 0);
	putNumField(&b, (unsigned long)f.confStat.size, 0);
	putNum(&b, (long)(f.confStat.mtime * 1000000000UL + f.confStat.mtime_ns));
	putNum(&b, (long)(f.confStat.ctime * 1000000000UL + f.confStat.ctime_ns));
	putField(&b, f.program, len(f.program));
	int slash = 0;
	for (const char *p = f.program; *p; p++)
		slash |= *p == '/';
	const char *path = !slash && f.hasPathEnv ? f.pathEnv : "";
	putField(&b, path, len(path));
	if (!b.ok || b.n - 4 > MAX_REQUEST)
		return askHandOver;
	unsigned long body = b.n - 4;
	req[0] = body >> 24, req[1] = body >> 16, req[2] = body >> 8, req[3] = body;

	struct sockaddr_un_ sa = {AF_UNIX_, {0}};
	unsigned long sl = len(f.socket);
	if (f.socket[0] == '@' || sl >= sizeof sa.path)
		return askHandOver; // Go's rules for abstract and long names
	for (unsigned long i = 0; i < sl; i++)
		sa.path[i] = f.socket[i];
	long fd = S3(__NR_socket, AF_UNIX_, SOCK_STREAM_ | O_CLOEXEC__ | SOCK_NONBLOCK_, 0);
	if (fd < 0)
		return askHandOver;
	int outcome = askHandOver;
	long r = S3(__NR_connect, fd, &sa, 2 + sl + 1);
	if (r == -ENOENT_ || r == -ECONNREFUSED_) {
		outcome = askAbsent;
		goto out;
	}
	if (r == -EAGAIN_) {
		outcome = askSlow;
		goto out;
	}
	if (r < 0)
		goto out;
	struct ucred_ cred;
	int cl = sizeof cred;
	if (S5(__NR_getsockopt, fd, SOL_SOCKET_, SO_PEERCRED_, &cred, &cl) < 0)
		goto out;
	if (cred.uid != 0 && cred.uid != (unsigned int)S0(__NR_geteuid))
		goto out; // not trusted: the Go program says why
	for (unsigned long sent = 0; sent < b.n; sent += r) {
		r = transfer(__NR_sendto, fd, req + sent, b.n - sent, deadline);
		if (r <= 0) {
			outcome = r == ioSlow ? askSlow : askHandOver;
			goto out;
		}
	}
	// One frame, and nothing after it.
	unsigned long got = 0, want = 4;
	for (;;) {
		if (got >= want && want == 4) {
			unsigned long n = (unsigned char)reply[0] << 24 | (unsigned char)reply[1] << 16 |
					  (unsigned char)reply[2] << 8 | (unsigned char)reply[3];
			if (n > ANSWER_LIMIT)
				goto malformed;
			want = 4 + n;
		}
		if (got > want)
			goto malformed;
		if (got == want && want > 4)
			break;
		if (got == want) // an empty frame
			goto malformed;
		r = transfer(__NR_read, fd, reply + got, sizeof reply - got, deadline);
		if (r <= 0) {
			outcome = r == ioSlow ? askSlow : askHandOver;
			goto out;
		}
		got += r;
	}
	// The fields (ipc.Decode).
	nfields = 0;
	for (unsigned long at = 4; at < want;) {
		if (nfields == MAX_FIELDS || want - at < 4)
			goto malformed;
		unsigned long n = (unsigned char)reply[at] << 24 | (unsigned char)reply[at + 1] << 16 |
				  (unsigned char)reply[at + 2] << 8 | (unsigned char)reply[at + 3];
		at += 4;
		if (n > want - at)
			goto malformed;
		fields[nfields].p = reply + at;
		fields[nfields].n = n;
		nfields++;
		at += n;
	}
	if (nfields == 1 && memeq(fields[0].p, fields[0].n, "stale"))
		outcome = askStale;
	else if (nfields == 1 && memeq(fields[0].p, fields[0].n, "racy"))
		outcome = askRacy;
	else if (nfields == 1 && memeq(fields[0].p, fields[0].n, "unknown"))
		outcome = askUnknown;
	else if (nfields == 10 && memeq(fields[0].p, fields[0].n, "ok"))
		outcome = askAnswered;
	goto out;
malformed:
	outcome = askAnswered; // it did answer (and count): the Go program asks again, uncounted, and says what is wrong
	nfields = 0;
out:
	S1(__NR_close, fd);
	return outcome;
}

// askFirst asks as a connection that found no hold does, and holds a
// daemon it found slow.
static int askFirst(void)
{
	int asked = ask(DAEMON_TIMEOUT_NS);
	if (asked == askSlow)
		markSlow();
	return asked;
}

// consult is ipc.SlowMark.Begin, the question and Attempt.Done: the
// daemon is asked unless the mark holds it slow (askHeld, heldText
// saying why); when the hold is over, the one connection that holds the
// mark's flock asks again within ProbeTimeout, and sets the mark again
// or removes it.
static int consult(void)
{
	struct stat_ st;
	if (S4(__NR_newfstatat, AT_FDCWD, markPath, &st, 0x100 /* AT_SYMLINK_NOFOLLOW */) < 0 || !trustedMark(&st))
		return askFirst();
	long held = now(CLOCK_REALTIME_);
	if ((long)(st.mtime * 1000000000UL + st.mtime_ns) > held) {
		heldWhy(&st);
		return askHeld;
	}
	long fd = S3(__NR_open, markPath, O_NOFOLLOW_ | O_NONBLOCK_ | O_CLOEXEC__, 0);
	if (fd < 0)
		return askFirst();
	if (S2(__NR_flock, fd, 2 | 4 /* LOCK_EX|LOCK_NB */) < 0) {
		S1(__NR_close, fd);
		puts_(&(struct buf){heldText, 0, sizeof heldText - 1, 1}, "slow (another connection is asking whether it recovered)");
		return askHeld;
	}
	int asked;
	if (S2(__NR_fstat, fd, &st) < 0 || !trustedMark(&st))
		asked = askFirst();
	else if ((long)(st.mtime * 1000000000UL + st.mtime_ns) > held) {
		heldWhy(&st); // renewed by the prober before this one
		asked = askHeld;
	} else {
		asked = ask(PROBE_TIMEOUT_NS);
		if (asked == askSlow)
			holdSlow(fd);
		else
			S1(__NR_unlink, markPath);
	}
	S1(__NR_close, fd);
	return asked;
}

// ---- the table: the conf file's entries as internal/conftable compiles them ----

// The format's sizes and flags (conftable's HeaderSize, RecordSize,
// KeySize, MaxTable, FlagSuspended, RecordRefused; TestFrontTable holds
// them equal).
#define TABLE_HEADER 128
#define TABLE_RECORD 32
#define TABLE_KEY 20
#define TABLE_MAX (1L << 30)
#define TABLE_SUSPENDED 1
#define TABLE_REFUSED 1
#define PROT_READ_ 1
#define MAP_PRIVATE_ 2

static const unsigned char *table;
static unsigned long tableSize, tableRecords;

static unsigned long le64(const unsigned char *p)
{
	unsigned long v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static unsigned int le32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (unsigned int)p[3] << 24; }

#define FNV_BASIS 14695981039346656037UL

// fnv is FNV-1a of s, from h (conftable's fnv).
static unsigned long fnv(unsigned long h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211UL;
	return h;
}

// openTrusted opens the file named by hash h (in digits hex digits) and
// suffix beside the socket (conftable.Dir) as conftable's openTable
// does: no symbolic link, a regular file of one link owned by root (or
// this process's euid) that neither group nor others can write. st is
// its status.
static long openTrusted(unsigned long h, int digits, const char *suffix, struct stat_ *st)
{
	char path[PATH_MAX_ + 64];
	struct buf b = {path, 0, sizeof path, 1};
	puts_(&b, f.socket);
	puts_(&b, ".tables/");
	for (int i = 4 * (digits - 1); i >= 0; i -= 4)
		putc_(&b, "0123456789abcdef"[(h >> i) & 15]);
	puts_(&b, suffix);
	putc_(&b, 0);
	if (!b.ok)
		return -1;
	long fd = S3(__NR_open, path, O_NOFOLLOW_ | O_NONBLOCK_ | O_CLOEXEC__, 0);
	if (fd < 0)
		return -1;
	unsigned int euid = (unsigned int)S0(__NR_geteuid);
	if (S2(__NR_fstat, fd, st) < 0 || (st->mode & S_IFMT_) != S_IFREG_ || st->nlink != 1 ||
	    (st->uid != 0 && st->uid != euid) || (st->mode & 022)) {
		S1(__NR_close, fd);
		return -1;
	}
	return fd;
}

// openTable maps the table of f.conf beside the socket (conftable.Dir and
// Name) when conftable.Read would accept it and it is of the file as the
// front found it (f.confStat): a table is written only by root, and of
// one version of the file only.
static int openTable(void)
{
	unsigned long h = fnv(FNV_BASIS, f.conf);
	struct stat_ st;
	long fd = openTrusted(h, 16, ".table", &st);
	if (fd < 0)
		return -1;
	if (st.size < TABLE_HEADER || st.size > TABLE_MAX) {
		S1(__NR_close, fd);
		return -1;
	}
	long m = sys(__NR_mmap, 0, st.size, PROT_READ_, MAP_PRIVATE_, fd, 0);
	S1(__NR_close, fd);
	if (m < 0 && m > -4096)
		return -1;
	const unsigned char *t = (const unsigned char *)m;
	const struct stat_ *c = &f.confStat;
	if (!memeq((const char *)t, 8, "vdtable1") || le64(t + 8) != c->dev || le64(t + 16) != c->ino ||
	    le64(t + 24) != (unsigned long)c->size || le64(t + 32) != c->mtime * 1000000000UL + c->mtime_ns ||
	    le64(t + 40) != c->ctime * 1000000000UL + c->ctime_ns || le64(t + 56) != (unsigned long)st.size ||
	    le32(t + 48) > (st.size - TABLE_HEADER) / TABLE_RECORD)
		return -1;
	table = t, tableSize = st.size, tableRecords = le32(t + 48);
	return 0;
}

// findRecord is a binary search of the records by key.
static long findRecord(const unsigned char *key)
{
	unsigned long lo = 0, hi = tableRecords;
	while (lo < hi) {
		unsigned long mid = lo + (hi - lo) / 2;
		const unsigned char *r = table + TABLE_HEADER + TABLE_RECORD * mid;
		int c = 0;
		for (int i = 0; i < TABLE_KEY && !c; i++)
			c = (int)r[i] - (int)key[i];
		if (!c)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

// lengthPresent reports whether the table holds a prefix of bits bits of
// the connection's family (the header's bitmaps).
static int lengthPresent(int bits)
{
	const unsigned char *w = f.v6 ? table + 72 + 8 * (bits / 64) : table + 64;
	return (le64(w) >> (bits % 64)) & 1;
}

static char tableLine[21], tableKey[64];

// fromTable looks the local address up in the table as conf.File.Lookup
// does (conftable.Lookup is its Go twin): its own address, then the
// longest prefix holding it, then default. It sets the fields a daemon's
// answer would have, which answer() then checks as it checks the
// daemon's. -1: no table, no entry, or one refused (the Go program
// words why).
static int fromTable(void)
{
	if (openTable())
		return -1;
	int full = f.v6 ? 128 : 32;
	unsigned char key[TABLE_KEY] = {1, f.v6 ? 6 : 4, (unsigned char)full, 0};
	for (int i = 0; i < (f.v6 ? 16 : 4); i++)
		key[4 + i] = f.local[i];
	struct buf k = {tableKey, 0, sizeof tableKey, 1};
	const char *rule = "exact";
	long i = findRecord(key);
	if (i >= 0)
		puts_(&k, f.localAddr);
	for (int bits = full; i < 0 && bits >= 0; bits--) {
		if (!lengthPresent(bits))
			continue;
		unsigned char m[16];
		for (int j = 0; j < 16; j++) {
			long keep = (long)bits - 8 * j;
			m[j] = keep >= 8 ? f.local[j] : keep <= 0 ? 0 : f.local[j] & (0xff << (8 - keep));
		}
		key[0] = 2, key[2] = (unsigned char)bits;
		for (int j = 0; j < 16; j++)
			key[4 + j] = m[j];
		if ((i = findRecord(key)) >= 0) {
			rule = "prefix";
			putAddr(&k, m, f.v6);
			putc_(&k, '/');
			putu(&k, bits);
		}
	}
	if (i < 0) {
		unsigned char dflt[TABLE_KEY] = {3};
		if ((i = findRecord(dflt)) < 0)
			return -1;
		rule = "default";
		puts_(&k, "default");
	}
	const unsigned char *r = table + TABLE_HEADER + TABLE_RECORD * i;
	if (!k.ok || (le32(r + 28) & TABLE_REFUSED) || (!eq(rule, "exact") && (le32(table + 52) & TABLE_SUSPENDED)))
		return -1;
	// "root\0options\0" in the strings after the records.
	unsigned long at = TABLE_HEADER + TABLE_RECORD * tableRecords + le32(r + 24), n[2];
	const char *text[2];
	for (int j = 0; j < 2; j++) {
		text[j] = (const char *)table + at;
		for (n[j] = 0; at < tableSize && table[at]; at++)
			n[j]++;
		if (at++ >= tableSize)
			return -1;
	}
	const char *line = format(tableLine, le32(r + 20));
	struct {
		const char *p;
		unsigned long n;
	} set[10] = {{"ok", 2}, {"0", 1}, {rule, len(rule)}, {line, len(line)}, {tableKey, k.n}, {text[0], n[0]}, {text[1], n[1]}, {"", 0}, {"unchecked", 9}, {"", 0}};
	for (int j = 0; j < 10; j++)
		fields[j].p = set[j].p, fields[j].n = set[j].n;
	nfields = 10;
	return 0;
}

// ---- the answer, checked as ipc.Answer.Match and conf.EntryOf do ----

static struct {
	char key[64], root[PATH_MAX_], options[1024], hostname[65], program[PATH_MAX_], user[24], group[24];
	const char *rule, *state;
	unsigned long line, uid, gid;
	int hasUser, hasGroup, isolateSet, isolate;
} a;

// text copies field i into dst (n bytes): -1 for a NUL or no room.
static int text(int i, char *dst, unsigned long n)
{
	if (fields[i].n >= n)
		return -1;
	for (unsigned long j = 0; j < fields[i].n; j++)
		if (!(dst[j] = fields[i].p[j]))
			return -1;
	dst[fields[i].n] = 0;
	return 0;
}

// keyFits checks that the answer's key is, in canonical form, the entry
// rule picks for the local address (conf.Entry.Serves): the address
// itself, a prefix of it, or default. It writes the candidates as netip
// would and compares, so it parses nothing.
static int keyFits(void)
{
	char want[64];
	struct buf b = {want, 0, sizeof want, 1};
	if (eq(a.rule, "default"))
		return eq(a.key, "default") ? 0 : -1;
	if (eq(a.rule, "exact"))
		return eq(a.key, f.localAddr) ? 0 : -1;
	if (!eq(a.rule, "prefix"))
		return -1;
	const char *slash = a.key;
	while (*slash && *slash != '/')
		slash++;
	unsigned long bits;
	if (!*slash || decimal(slash + 1, len(slash + 1), f.v6 ? 128 : 32, &bits))
		return -1;
	unsigned char m[16];
	for (int i = 0; i < 16; i++) {
		long keep = (long)bits - 8 * i;
		m[i] = keep >= 8 ? f.local[i] : keep <= 0 ? 0 : f.local[i] & (0xff << (8 - keep));
	}
	putAddr(&b, m, f.v6);
	putc_(&b, '/');
	putu(&b, bits);
	return b.ok && eq(a.key, want) ? 0 : -1;
}

// cleanRoot is conf's checkRootSyntax: absolute, clean, no control
// character.
static int cleanRoot(const char *r)
{
	if (r[0] != '/')
		return -1;
	if (!r[1])
		return 0;
	for (const char *p = r; *p; p++) {
		if (*p < ' ' || *p == 0x7f)
			return -1;
		if (*p == '/' && (p[1] == '/' || !p[1] || (p[1] == '.' && (p[2] == '/' || !p[2] || (p[2] == '.' && (p[3] == '/' || !p[3]))))))
			return -1;
	}
	return 0;
}

// isolation parses an isolation in canonical form (conf.Isolation.String)
// into init's bits: 1 mount, 2 pid, 4 ipc, 8 uts, 16 user.
static int isolation(const char *s, unsigned long n)
{
	static const char *words[] = {"mount", "pid", "ipc", "uts", "user"};
	if (memeq(s, n, "none"))
		return 0;
	int bits = 0, next = 0;
	unsigned long i = 0;
	if (n >= 3 && s[0] == 'a' && s[1] == 'l' && s[2] == 'l' && (n == 3 || s[3] == ',')) {
		bits = 15, next = 4, i = n == 3 ? 3 : 4;
		if (n == 3)
			return bits;
	}
	while (i < n) {
		unsigned long j = i;
		while (j < n && s[j] != ',')
			j++;
		int w = next;
		while (w < 5 && !memeq(s + i, j - i, words[w]))
			w++;
		if (w == 5)
			return -1;
		bits |= 1 << w;
		next = w + 1;
		if (j < n && j + 1 == n)
			return -1; // a trailing comma
		i = j < n ? j + 1 : j;
	}
	if (bits == 15 && next <= 4)
		return -1; // written "all"
	if ((bits & 16) && !(bits & 1))
		return -1;
	return bits ? bits : -1;
}

static void formatIsolation(struct buf *b, int bits)
{
	static const char *words[] = {"mount", "pid", "ipc", "uts", "user"};
	if (!bits) {
		puts_(b, "none");
		return;
	}
	int first = 1;
	if ((bits & 15) == 15) {
		puts_(b, "all");
		bits &= ~15, first = 0;
	}
	for (int w = 0; w < 5; w++)
		if (bits & (1 << w)) {
			if (!first)
				putc_(b, ',');
			puts_(b, words[w]);
			first = 0;
		}
}

// options takes the options the front serves, in canonical order
// (conf.Options.String): user= and group= as numbers, isolate=,
// hostname=. Any other (limits, names) is handed over.
static int options(const char *o)
{
	static const char *names[] = {"user=", "group=", "isolate=", "hostname="};
	int next = 0;
	while (*o) {
		const char *e = o;
		while (*e && *e != ' ')
			e++;
		if (*e && !e[1])
			return -1;
		int k = next;
		while (k < 4 && !prefixed(o, names[k]))
			k++;
		if (k == 4)
			return -1;
		const char *v = o + len(names[k]);
		unsigned long n = e - v;
		switch (k) {
		case 0:
		case 1:
			if (n == 0 || n >= sizeof a.user || decimal(v, n, 0xfffffffeUL, k ? &a.gid : &a.uid))
				return -1;
			for (unsigned long i = 0; i < n; i++)
				(k ? a.group : a.user)[i] = v[i];
			(k ? a.group : a.user)[n] = 0;
			*(k ? &a.hasGroup : &a.hasUser) = 1;
			break;
		case 2:
			if ((a.isolate = isolation(v, n)) < 0)
				return -1;
			a.isolateSet = 1;
			break;
		case 3:
			if (n == 0 || n >= sizeof a.hostname)
				return -1;
			for (unsigned long i = 0; i < n; i++) {
				char c = v[i];
				if (!(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && !(c >= '0' && c <= '9') && c != '-' && c != '.')
					return -1;
				a.hostname[i] = c;
			}
			a.hostname[n] = 0;
			// conf's checkHostname: labels of 1 to 63, no '-' at either end.
			for (unsigned long i = 0, start = 0; i <= n; i++)
				if (i == n || v[i] == '.') {
					if (i == start || i - start > 63 || v[start] == '-' || v[i - 1] == '-')
						return -1;
					start = i + 1;
				}
			break;
		}
		next = k + 1;
		o = *e ? e + 1 : e;
	}
	// Only user= needs the passwd file (its primary group): the Go
	// program reads it.
	if (a.hasUser && !a.hasGroup)
		return -1;
	return 0;
}

static int answer(void)
{
	static const char *rules[] = {"exact", "prefix", "default"};
	static const char *states[] = {"unchecked", "ready", "missing", "interpreter-missing", "libraries-missing"};
	unsigned long gen;
	if (nfields != 10 || decimal(fields[1].p, fields[1].n, ~0UL, &gen) ||
	    decimal(fields[3].p, fields[3].n, 1UL << 31, &a.line) || a.line < 1)
		return -1;
	a.rule = a.state = 0;
	for (int i = 0; i < 3; i++)
		if (memeq(fields[2].p, fields[2].n, rules[i]))
			a.rule = rules[i];
	for (int i = 0; i < 5; i++)
		if (memeq(fields[8].p, fields[8].n, states[i]))
			a.state = states[i];
	if (!a.rule || !a.state || fields[7].n != 0) // "none", or a refusal: the Go program words it
		return -1;
	if (text(4, a.key, sizeof a.key) || text(5, a.root, sizeof a.root) || text(6, a.options, sizeof a.options))
		return -1;
	if (keyFits() || cleanRoot(a.root) || options(a.options))
		return -1;
	return 0;
}

// ---- the root (internal/chroot) and the program (internal/service) ----

static int checkDir(long fd)
{
	struct stat_ st;
	return S2(__NR_fstat, fd, &st) == 0 && (st.mode & S_IFMT_) == S_IFDIR_ && st.uid == 0 && (st.mode & 022) == 0 ? 0 : -1;
}

// openRoot walks the root from "/" one component at a time as
// chroot.Open does, and returns the checked directory (O_PATH).
static long openRoot(const char *path)
{
	long dir = S3(__NR_open, "/", O_PATH_ | O_DIRECTORY_ | O_CLOEXEC__, 0);
	if (dir < 0)
		return -1;
	if (checkDir(dir)) {
		S1(__NR_close, dir);
		return -1;
	}
	char name[256];
	for (const char *p = path + 1; *p;) {
		unsigned long n = 0;
		while (p[n] && p[n] != '/')
			n++;
		if (n >= sizeof name) {
			S1(__NR_close, dir);
			return -1;
		}
		for (unsigned long i = 0; i < n; i++)
			name[i] = p[i];
		name[n] = 0;
		struct open_how_ how = {O_PATH_ | O_DIRECTORY_ | O_CLOEXEC__, 0,
					RESOLVE_NO_SYMLINKS_ | RESOLVE_NO_MAGICLINKS_ | RESOLVE_BENEATH_};
		long next = S4(__NR_openat2, dir, name, &how, sizeof how);
		S1(__NR_close, dir);
		if (next < 0)
			return -1;
		dir = next;
		if (checkDir(dir)) {
			S1(__NR_close, dir);
			return -1;
		}
		p += n;
		if (*p == '/')
			p++;
	}
	return dir;
}

// statIn stats p inside the root (service.Root.stat).
static int statIn(long root, const char *p, struct stat_ *st)
{
	struct open_how_ how = {O_PATH_ | O_CLOEXEC__, 0, RESOLVE_IN_ROOT_ | RESOLVE_NO_MAGICLINKS_};
	long fd = S4(__NR_openat2, root, p, &how, sizeof how);
	if (fd < 0)
		return -1;
	long r = S2(__NR_fstat, fd, st);
	S1(__NR_close, fd);
	return r < 0 ? -1 : 0;
}

// lookPath is service.Root.LookPath: a name with a slash as it is, any
// other searched in PATH (/bin:/usr/bin without one) inside the root.
static int lookPath(long root)
{
	const char *prog = f.program;
	for (const char *p = prog; *p; p++)
		if (*p == '/') {
			struct buf b = {a.program, 0, sizeof a.program, 1};
			puts_(&b, prog);
			return b.ok ? 0 : -1;
		}
	const char *path = f.hasPathEnv ? f.pathEnv : "/bin:/usr/bin";
	int found = 0;
	for (const char *d = path;;) {
		const char *e = d;
		while (*e && *e != ':')
			e++;
		char cand[PATH_MAX_];
		struct buf b = {cand, 0, sizeof cand, 1};
		if (e == d)
			putc_(&b, '.');
		else
			put(&b, d, e - d);
		putc_(&b, '/');
		puts_(&b, prog);
		struct stat_ st;
		if (b.ok && statIn(root, cand, &st) == 0) {
			int exe = (st.mode & S_IFMT_) == S_IFREG_ && (st.mode & 0111);
			if (!found || exe) {
				struct buf o = {a.program, 0, sizeof a.program, 1};
				puts_(&o, cand);
				found = 1;
			}
			if (exe)
				return 0;
		}
		if (!*e)
			break;
		d = e + 1;
	}
	return found ? 0 : -1; // exists but is not executable: the exec fails and says so
}

// staticProgram reports whether the program is an ELF object the kernel
// starts without a loader (no PT_INTERP) that names no library (no
// PT_DYNAMIC): then service.Root.MissingLibraries has nothing to warn of,
// and no loader can write to the client. Anything else is handed over
// to the Go program's library check.
static int staticProgram(long root)
{
	struct open_how_ how = {O_NONBLOCK_ | O_CLOEXEC__, 0, RESOLVE_IN_ROOT_ | RESOLVE_NO_MAGICLINKS_};
	long fd = S4(__NR_openat2, root, a.program, &how, sizeof how);
	if (fd < 0)
		return 0;
	struct stat_ st;
	unsigned char h[64], ph[64 * 56];
	int ok = S2(__NR_fstat, fd, &st) == 0 && (st.mode & S_IFMT_) == S_IFREG_ && S4(__NR_pread64, fd, h, sizeof h, 0) == sizeof h &&
		 memeq((const char *)h, 4, "\x7f" "ELF") && h[4] == 2 && h[5] == 1;
	unsigned long phnum = ok ? (unsigned long)(h[56] | h[57] << 8) : 0;
	ok = ok && (h[54] | h[55] << 8) == 56 && phnum <= 64 &&
	     S4(__NR_pread64, fd, ph, phnum * 56, le64(h + 32)) == (long)(phnum * 56);
	for (unsigned long i = 0; ok && i < phnum; i++) {
		unsigned int type = le32(ph + 56 * i);
		ok = type != 3 /* PT_INTERP */ && type != 2 /* PT_DYNAMIC */;
	}
	S1(__NR_close, fd);
	return ok;
}

// The check files (conftable.RecordReady): CheckText, CheckPath,
// CheckRecord, CheckHeader, MaxChecked.
#define CHECK_TEXT 1024
#define CHECK_PATH 216
#define CHECK_RECORD (CHECK_PATH + 40)
#define CHECK_HEADER (16 + 2 * CHECK_TEXT)
#define MAX_CHECKED 64

// fieldIs reports whether the NUL-padded field of n bytes holds s.
static int fieldIs(const char *field, unsigned long n, const char *s)
{
	unsigned long l = len(s);
	if (l >= n)
		return 0;
	for (unsigned long i = 0; i < n; i++)
		if (field[i] != (i < l ? s[i] : 0))
			return 0;
	return 1;
}

// checkedReady reports whether the Go program's library check found
// nothing missing for this program in this root, and every file it read
// is still as it was then (the same identity): the check, in a file of
// root's beside the table, stands.
static int checkedReady(long root)
{
	static char buf[CHECK_HEADER + CHECK_RECORD * MAX_CHECKED];
	// FNV-1a of root, NUL, program, in CheckFiles (4096) names.
	unsigned long h = fnv(fnv(FNV_BASIS, a.root) * 1099511628211UL, a.program);
	struct stat_ st;
	long fd = openTrusted(h % 4096, 3, ".check", &st);
	if (fd < 0)
		return 0;
	int ok = st.size >= CHECK_HEADER + CHECK_RECORD && st.size <= (long)sizeof buf &&
		 S4(__NR_pread64, fd, buf, st.size, 0) == st.size;
	S1(__NR_close, fd);
	unsigned long n = ok ? le32((unsigned char *)buf + 8) : 0;
	if (!ok || !memeq(buf, 8, "vdcheck1") || (long)(CHECK_HEADER + CHECK_RECORD * n) != st.size ||
	    !fieldIs(buf + 16, CHECK_TEXT, a.root) || !fieldIs(buf + 16 + CHECK_TEXT, CHECK_TEXT, a.program))
		return 0;
	for (unsigned long i = 0; i < n; i++) {
		const char *r = buf + CHECK_HEADER + CHECK_RECORD * i;
		const unsigned char *id = (const unsigned char *)r + CHECK_PATH;
		struct stat_ fs;
		if (r[CHECK_PATH - 1] || statIn(root, r, &fs) || le64(id) != fs.dev || le64(id + 8) != fs.ino ||
		    le64(id + 16) != (unsigned long)fs.size || le64(id + 24) != fs.mtime * 1000000000UL + fs.mtime_ns ||
		    le64(id + 32) != fs.ctime * 1000000000UL + fs.ctime_ns)
			return 0;
	}
	return 1;
}

// ---- handing over ----

static const char *markers[] = {
	[askAnswered] = "VIRTUALD_FRONT=answered", [askAbsent] = "VIRTUALD_FRONT=absent",
	[askSlow] = "VIRTUALD_FRONT=slow",         [askStale] = "VIRTUALD_FRONT=stale",
	[askRacy] = "VIRTUALD_FRONT=racy",         [askUnknown] = "VIRTUALD_FRONT=unknown",
	[askHeld] = 0, // not asked: the Go program reads the mark again
};

// reasons are the words cmd/virtuald logs for why the daemon did not
// answer (its frontReasons).
static const char *reasons[] = {
	[askAbsent] = "absent", [askSlow] = "slow", [askStale] = "its copy of the conf is stale",
	[askRacy] = "the conf changed too recently for its copy to be vouched for", [askUnknown] = "conf unknown to it",
	[askHeld] = heldText,
};

// handover executes the Go program with the original arguments, and the
// marker (when there is one) after the service's environment.
static void __attribute__((noreturn)) handover(const char *marker)
{
	char **env = f.envp;
	if (marker) {
		long n = 0;
		for (char **e = f.envp; *e && n < MAX_ENV; e++)
			if (!envName(*e, "VIRTUALD_FRONT"))
				f.handEnv[n++] = *e;
		f.handEnv[n++] = (char *)marker;
		f.handEnv[n] = 0;
		env = f.handEnv;
	}
	if (logfd >= 0)
		S1(__NR_close, logfd);
	if (f.goPath[0])
		S3(__NR_execve, f.goPath, f.argv, env);
	// No Go program to hand over to: refuse, and say so.
	logfd = -1;
	logConnect();
	char msg[PATH_MAX_ + 128];
	struct buf b = {msg, 0, sizeof msg, 1};
	puts_(&b, "outcome=refused reason=\"cannot execute ");
	puts_(&b, f.goPath[0] ? f.goPath : "virtuald-go beside /proc/self/exe");
	puts_(&b, ", which serves what this front does not\"");
	logSend(3, b.ok ? msg : "outcome=refused reason=\"cannot execute virtuald-go\"");
	quit(1);
}

// ---- the front ----

static void __attribute__((noreturn)) front(long argc, char **argv, char **envp)
{
	f.argc = (int)argc;
	f.argv = argv;
	f.envp = envp;
	findGo();
	char tio[64];
	if (parseArgs() || readEnv() || S3(__NR_ioctl, 2, TCGETS_, tio) == 0 || inspect())
		handover(0); // a person at a terminal gets the Go program's echo
	// ipc.SocketPath: the flag, else $VIRTUALD_SOCKET, else the default.
	if (!f.socket || !f.socket[0])
		f.socket = f.envSocket && f.envSocket[0] ? f.envSocket : "/run/ipwatchd/ipwatchd.sock";
	if (S2(__NR_stat, f.conf, &f.confStat) < 0)
		handover(0);
	struct buf mb = {markPath, 0, sizeof markPath, 1};
	puts_(&mb, f.socket);
	puts_(&mb, ".slow");
	if (!mb.ok)
		handover(0);
	int asked = consult();
	if (asked == askHandOver)
		handover(0);
	// The daemon did not answer: the table answers as the file would
	// (the Go program writes it when it reads the file for the front).
	const char *marker = markers[asked];
	int viaFile = asked != askAnswered;
	if ((viaFile && fromTable()) || answer())
		handover(marker);

	// The effective isolation (enter.Plan.Isolate) and the credentials
	// (enter.Plan.credentials).
	int iso = a.isolateSet ? a.isolate : f.isolate >= 0 ? f.isolate : 15;
	if (iso & 16)
		handover(marker); // a user namespace is mapped by a parent: Go's Start
	if (a.hostname[0] && !(iso & 8))
		handover(marker);
	if (iso == 0 && !eq(a.state, "ready") && !viaFile)
		handover(marker); // the library warning, or its check, is the Go program's
	long root = openRoot(a.root);
	if (root < 0)
		handover(marker);
	if (lookPath(root))
		handover(marker);
	if (iso == 0 && viaFile && !staticProgram(root) && !checkedReady(root))
		handover(marker); // the Go program checks the libraries
	int setGroups = a.hasUser || a.hasGroup || S0(__NR_geteuid) == 0;
	unsigned long gid = a.hasGroup ? a.gid : (unsigned long)S0(__NR_getgid);

	// Isolated: the root's mount tree, cloned and private (enter's
	// cloneTree), and the Go program for virtuald-init's report.
	long tree = -1, exe = -1;
	if (iso) {
		exe = S3(__NR_open, f.goPath, O_PATH_ | O_CLOEXEC__, 0);
		if (!f.goPath[0] || exe < 0)
			handover(marker);
		if (iso & 1) {
			tree = S3(__NR_open_tree, root, "", OPEN_TREE_CLONE_ | O_CLOEXEC__ | AT_EMPTY_PATH_ | AT_RECURSIVE_);
			struct mount_attr_ attr = {0, 0, MS_PRIVATE_, 0};
			if (tree < 0 || S5(__NR_mount_setattr, tree, "", AT_EMPTY_PATH_ | AT_RECURSIVE_, &attr, sizeof attr) < 0)
				handover(marker);
		} else {
			// The root itself goes through the report's exec.
			tree = S3(__NR_fcntl, root, 1030 /* F_DUPFD_CLOEXEC */, 3);
			if (tree < 0)
				handover(marker);
		}
	}

	// The log line, as cmd/virtuald's perConnection writes it.
	char line[MAX_MESSAGE + 1], n[21], isoText[32], user[64];
	struct buf l = {line, 0, sizeof line, 1};
	field(&l, "local", f.localText);
	if (f.hasRemote)
		field(&l, "remote", f.remoteText);
	field(&l, "conf", f.conf);
	field(&l, "line", format(n, a.line));
	field(&l, "rule", a.rule);
	field(&l, "root", a.root);
	field(&l, "via", viaFile ? "file" : "daemon");
	if (viaFile)
		field(&l, "daemon", reasons[asked]);
	if (setGroups && (a.hasUser || a.hasGroup)) {
		struct buf u = {user, 0, sizeof user, 1};
		if (a.hasUser) {
			puts_(&u, a.user);
			putc_(&u, '(');
			putu(&u, a.uid);
			putc_(&u, ':');
		} else
			puts_(&u, "(:");
		putu(&u, gid);
		putc_(&u, ')');
		field(&l, "user", user);
	}
	field(&l, "program", a.program);
	struct buf ib = {isoText, 0, sizeof isoText, 1};
	formatIsolation(&ib, iso);
	field(&l, "isolate", isoText);
	field(&l, "outcome", "exec");
	if (!l.ok || l.n > MAX_MESSAGE)
		handover(marker);
	// The connection to syslog stays open (close-on-exec): with
	// isolate=none it is the only way to the host's log once inside the
	// root.
	logConnect();
	logSend(6, line);

	f.args[f.nargs] = 0;
	environ = f.env;
	if (iso) {
		// virtuald-init's in-place start, as enter.Plan.ExecIsolated
		// asks for it, its report going to the Go program.
		static char flags[8], treeText[21];
		static char *report[12];
		int k = 0;
		if (iso & 1)
			flags[k++] = 'm';
		if (iso & 2)
			flags[k++] = 'p';
		if (a.hostname[0])
			flags[k++] = 'h';
		if (setGroups) {
			flags[k++] = 'g';
			if (a.hasUser)
				flags[k++] = 'u';
		}
		flags[k++] = 'w';
		flags[k] = 0;
		unsigned long clone = (iso & 1 ? CLONE_NEWNS_ : 0) | (iso & 2 ? CLONE_NEWPID_ : 0) |
				      (iso & 4 ? CLONE_NEWIPC_ : 0) | (iso & 8 ? CLONE_NEWUTS_ : 0);
		S1(__NR_close, root);
		// A descriptor the super-server left open reaches neither the
		// service nor the report; the root's goes through the report's
		// exec.
		S3(__NR_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC_);
		S3(__NR_fcntl, tree, 2 /* F_SETFD */, 0);
		start_.flags = flags;
		start_.hostname = a.hostname;
		start_.path = a.program;
		start_.args = f.args;
		start_.rootfd = tree;
		start_.syncfd = ~0UL;
		start_.uid = a.hasUser ? a.uid : 0;
		start_.gid = gid;
		start_.caps = KEPT_CAPS;
		reportfd = (int)exe;
		report[0] = "virtuald";
		report[1] = "-virtuald-init-report";
		report[2] = f.localText;
		report[3] = (char *)f.conf;
		report[4] = a.root;
		report[5] = a.program;
		report[6] = isoText;
		report[7] = format(treeText, tree);
		reportArgs = report;
		reportArgc = 8;
		startInPlace(clone);
	}

	// isolate=none: enter.Plan.Exec.
	long r = S1(__NR_fchdir, root);
	if (r == 0)
		r = S1(__NR_chroot, ".");
	if (r == 0)
		r = S1(__NR_chdir, "/");
	if (r == 0 && setGroups) {
		r = S2(__NR_setgroups, 0, 0);
		if (r == 0)
			r = S3(__NR_setresgid, gid, gid, gid);
		if (r == 0 && a.hasUser)
			r = S3(__NR_setresuid, a.uid, a.uid, a.uid);
	}
	if (r == 0)
		r = S5(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (r == 0) // a descriptor the super-server left open reaches no service
		r = S3(__NR_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC_);
	if (r == 0)
		r = S3(__NR_execve, a.program, f.args, f.env);
	// The daemon's last pass found the program ready here; the root
	// changed since. The Go program cannot explain it from inside the
	// root: the error is the system's.
	char msg[MAX_MESSAGE + 1], errno_[21];
	struct buf m = {msg, 0, sizeof msg, 1};
	field(&m, "local", f.localText);
	field(&m, "conf", f.conf);
	field(&m, "root", a.root);
	field(&m, "program", a.program);
	field(&m, "outcome", "refused");
	char why[64];
	struct buf w = {why, 0, sizeof why, 1};
	puts_(&w, "exec failed: errno ");
	puts_(&w, format(errno_, -r));
	field(&m, "reason", why);
	if (m.ok)
		logSend(3, msg);
	quit(1);
}

void __attribute__((noreturn, used)) start(long *sp)
{
	char **argv = (char **)(sp + 1);
	if (sp[0] >= 1 && eq(argv[0], "virtuald-init"))
		initStart(sp);
	front(sp[0], argv, argv + sp[0] + 1);
}
