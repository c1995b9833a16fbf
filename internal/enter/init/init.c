// virtuald-init: the part of entering a virtual host that runs inside its
// new namespaces. Package enter starts it with clone(2) into fresh mount,
// pid, ipc and uts namespaces (those the entry asks for); it makes the
// root the root of the mount namespace, names the host, trims the
// capability bounding set, sets no_new_privs, and starts the service as
// the entry's user. In a pid namespace it stays as its pid 1: it reaps
// every orphan, passes on the signals its parent sends, and exits with
// the service's status, so that the super-server sees the service's life.
//
// It is built static, without a C library (make generate), so that it
// starts in microseconds and holds nothing a tenant could use; the Go
// side embeds the binary and runs it from a memfd, so it is never looked
// up by a path a tenant or a local user could change.
//
// argv: virtuald-init FLAGS ROOTFD ERRFD SYNCFD UID GID CAPS CLONE HOSTNAME
//	PATH ARGC ARGV0 [ARG...] [REPORTFD REPORTARG...]
//
//	FLAGS     letters: m pivot_root into the root (else chroot), p be pid 1
//	          of a pid namespace, h set the host name, u set uid, g set gid
//	          (and drop supplementary groups), t give the service fd 0 as
//	          its controlling terminal in a new session, U enter a new
//	          user namespace (and then, with m, a new mount namespace
//	          owned by it) with the parent's help on SYNCFD, w start in
//	          place (below), c join the cgroup whose cgroup.procs is open
//	          on fd 6 (accept mode's cpu group of the entry), first of all
//	ROOTFD    with m: a private, detached clone of the checked root's mount
//	          tree (open_tree), made in the caller's mount namespace,
//	          since a directory opened there is not in this one; else
//	          the checked root directory itself (O_PATH)
//	ERRFD     where a failure is written, as two native ints (step,
//	          errno), before exiting 127; close-on-exec for the service,
//	          so its end without a word means the service was executed
//	SYNCFD    with U, a socket to the parent (not open without U):
//	          virtuald-init sends a byte once in its new user namespace,
//	          the parent maps its ids, idmaps the root's mounts and sends
//	          a byte back (its end without the byte means the parent
//	          failed)
//	CAPS      the capabilities the bounding set keeps, a hex mask
//	CLONE     with w, the namespaces to clone into, a hex clone(2) mask
//	ARGC      how many arguments the service gets (ARGV0 and ARGs)
//
// With w, virtuald executed virtuald-init in its own place (per
// connection, where the super-server waits for the process it started):
// virtuald-init clones itself into the new namespaces (ERRFD is then its
// own pipe), where the clone goes on as above, and stays outside as the
// clone's parent, passing on signals and exiting with its status. Its
// clones share its memory (the service's until it executes, as vfork's
// child), so that no process here costs a copy of an address space. Where
// the start fails, or the service exits 127 (a missing library, or
// program), it executes virtuald again by REPORTFD (an O_PATH descriptor
// of virtuald's own executable) with the REPORTARGs followed by the
// step, the errno and the status, with ROOTFD on fd 3 and /dev/null on
// 0-2, for virtuald to explain it in its log. So the connection costs
// one process fewer than virtuald starting virtuald-init and waiting.
//
// Every failure is fatal: nothing is served with less than asked.
#include <asm/unistd.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <linux/prctl.h>
#include <linux/sched.h>
#include <linux/fcntl.h>
#include <asm/ioctls.h>
#include <asm/signal.h>

#define SIGCHLD_ 17
#define CLONE_NEWNS_ 0x00020000
#define CLONE_NEWUSER_ 0x10000000
#define WNOHANG_ 1
#define MNT_DETACH_ 2
#define MS_REC_ 16384
#define MS_PRIVATE_ (1 << 18)
#define CLOSE_RANGE_CLOEXEC_ (1U << 2)
#define O_RDWR_ 2
#define O_CLOEXEC__ 02000000
#define AT_EMPTY_PATH_ 0x1000
#define SIGKILL_ 9
#define CLONE_VM_ 0x00000100
#define CLONE_VFORK_ 0x00004000

// Steps, as the Go side names them (enter.steps).
enum {
	stepArgs = 1, stepPrivate, stepMoveMount, stepPivot,
	stepDetach, stepChroot, stepHostname, stepCaps, stepNoNewPrivs,
	stepGroups, stepGID, stepUID, stepFork, stepExec, stepTerminal,
	stepCloseRange, stepSignals, stepGo, stepUserns, stepClone, stepCgroup,
};

#define CGROUPFD 6

#if defined(__x86_64__)
static long sys(long n, long a, long b, long c, long d, long e, long f)
{
	long ret;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
__asm__(".text\n.globl _start\n_start:\n xor %rbp,%rbp\n mov %rsp,%rdi\n and $-16,%rsp\n call start\n hlt\n");
#elif defined(__aarch64__)
static long sys(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;
	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory");
	return x0;
}
__asm__(".text\n.globl _start\n_start:\n mov x29, #0\n mov x30, #0\n mov x0, sp\n and sp, x0, #-16\n bl start\n");
#else
#error "virtuald-init: no system call convention for this architecture"
#endif

// vclone starts fn in a child that shares this process's memory
// (CLONE_VM in flags) on a stack of its own, stackTop: no copy of the
// address space to make and tear down, which costs a process start of
// this program ten times over where page tables are dear (a hypervisor's
// guest). fn never returns. It returns the child's pid, or -errno.
long vclone(unsigned long flags, void *stackTop, void (*fn)(void));
#if defined(__x86_64__)
__asm__(".text\n.globl vclone\nvclone:\n"
	" and $-16, %rsi\n sub $16, %rsi\n mov %rdx, 8(%rsi)\n"
	" xor %edx, %edx\n xor %r10d, %r10d\n xor %r8d, %r8d\n"
	" mov $56, %eax\n syscall\n" // clone(flags, stack, 0, 0, 0)
	" test %rax, %rax\n jnz 1f\n"
	// The child: its stack 16-byte aligned at the call, as the ABI has it.
	" xor %ebp, %ebp\n mov 8(%rsp), %rax\n call *%rax\n hlt\n"
	"1: ret\n");
#elif defined(__aarch64__)
__asm__(".text\n.globl vclone\nvclone:\n"
	" and x1, x1, #-16\n str x2, [x1, #-16]!\n"
	" mov x2, #0\n mov x3, #0\n mov x4, #0\n"
	" mov x8, #220\n svc 0\n" // clone(flags, stack, 0, 0, 0)
	" cbnz x0, 1f\n"
	" ldr x2, [sp], #16\n mov x29, #0\n mov x30, #0\n blr x2\n"
	"2: b 2b\n"
	"1: ret\n");
#endif

#define S0(n) sys(n, 0, 0, 0, 0, 0, 0)
#define S1(n, a) sys(n, (long)(a), 0, 0, 0, 0, 0)
#define S2(n, a, b) sys(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define S3(n, a, b, c) sys(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define S4(n, a, b, c, d) sys(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define S5(n, a, b, c, d, e) sys(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

static int errfd = -1;

static void __attribute__((noreturn)) quit(int code)
{
	for (;;)
		S1(__NR_exit_group, code);
}

// fail reports step and the error of the system call that returned ret.
static void __attribute__((noreturn)) fail(int step, long ret)
{
	int rec[2] = {step, (int)-ret};
	if (errfd >= 0)
		S3(__NR_write, errfd, rec, sizeof rec);
	quit(127);
}

static long check(int step, long ret)
{
	if (ret < 0 && ret > -4096)
		fail(step, ret);
	return ret;
}

static int number(const char *s, unsigned long *v, int base)
{
	unsigned long n = 0;
	if (!*s)
		return -1;
	for (; *s; s++) {
		int d;
		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = *s - 'a' + 10;
		else
			return -1;
		n = n * base + d;
	}
	*v = n;
	return 0;
}

static int has(const char *flags, char c)
{
	for (; *flags; flags++)
		if (*flags == c)
			return 1;
	return 0;
}

static unsigned long len(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

// enterRoot makes the root the whole file system the service sees: the
// clone of its mount tree is attached over "/" of the (new, private)
// mount namespace and becomes its root; the old root is detached, so no
// "..", second chroot or path reaches above it.
static void enterRoot(int tree)
{
	check(stepPrivate, S5(__NR_mount, 0, "/", 0, MS_REC_ | MS_PRIVATE_, 0));
	check(stepMoveMount, S5(__NR_move_mount, tree, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH));
	check(stepPivot, S1(__NR_fchdir, tree));
	check(stepPivot, S2(__NR_pivot_root, ".", "."));
	check(stepDetach, S2(__NR_umount2, ".", MNT_DETACH_));
	check(stepDetach, S1(__NR_chdir, "/"));
}

// enterUserns moves virtuald-init into a new user namespace, where it
// becomes root (the root's range of ids outside, once the parent has
// written the maps), then, with mount, into a new mount namespace owned
// by it, where it may pivot. It unshares rather than being cloned into
// it so that it was executed as the host's root, by a path the host's
// root can open (the memfd, through its parent's descriptor table).
static void enterUserns(int syncfd, int mount)
{
	char b = 'u';
	long n;
	check(stepUserns, S1(__NR_unshare, CLONE_NEWUSER_));
	check(stepGo, S3(__NR_write, syncfd, &b, 1));
	while ((n = S3(__NR_read, syncfd, &b, 1)) == -4) // EINTR
		;
	if (n != 1)
		fail(stepGo, n < 0 ? n : -5); // EIO: the parent gave up
	check(stepUserns, S3(__NR_setresgid, 0, 0, 0));
	check(stepUserns, S3(__NR_setresuid, 0, 0, 0));
	if (mount)
		check(stepUserns, S1(__NR_unshare, CLONE_NEWNS_));
}

// trimCaps drops from the bounding set every capability not in keep: a
// service running as root keeps only those across its exec, and nothing
// it executes can get the others back.
static void trimCaps(unsigned long keep)
{
	for (int c = 0; c < 64; c++) {
		if (keep & (1UL << c))
			continue;
		long r = S2(__NR_prctl, PR_CAPBSET_DROP, c);
		if (r == -22) // EINVAL: past the last capability this kernel has
			break;
		check(stepCaps, r);
	}
	check(stepCaps, S5(__NR_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
}

// reap is pid 1's life, and the in-place parent's: every signal is
// blocked and waited for; a child's end is reaped (the service's, or an
// orphan's), any other signal (its parent's: the kernel drops those from
// inside the namespace) goes on to the service. It returns the status
// to exit with, the service's or 128 plus the signal that ended it.
static int reap(long service)
{
	unsigned long all = ~0UL;
	char info[128];
	for (;;) {
		long sig = S4(__NR_rt_sigtimedwait, &all, info, 0, sizeof all);
		if (sig < 0)
			continue;
		if (sig != SIGCHLD_) {
			S2(__NR_kill, service, sig);
			continue;
		}
		for (;;) {
			int status = 0;
			long pid = S4(__NR_wait4, -1, &status, WNOHANG_, 0);
			if (pid <= 0)
				break;
			if (pid == service)
				return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);
		}
	}
}

// format writes n in decimal to b (at least 21 bytes) and returns it.
static char *format(char *b, unsigned long n)
{
	char *p = b + 20;
	*p = 0;
	do
		*--p = '0' + n % 10;
	while (n /= 10);
	return p;
}

// Where the in-place start reports to: virtuald, again, by descriptor.
static int reportfd = -1;
static char **reportArgs;
static long reportArgc;
static char **environ;

// report executes virtuald with what it needs to explain a start that
// failed at step with error err (both 0 when the service started), or a
// service that exited with status; without a report to make, or when
// virtuald cannot be executed, it exits with status.
static void __attribute__((noreturn)) report(int step, long err, int status)
{
	char *args[40], nums[3][21];
	if (reportfd < 0 || reportArgc + 4 > (long)(sizeof args / sizeof args[0]))
		quit(status);
	long null = S3(__NR_open, "/dev/null", O_RDWR_ | O_CLOEXEC__, 0);
	if (null < 0)
		quit(status);
	for (int fd = 0; fd < 3; fd++)
		S3(__NR_dup3, null, fd, 0);
	long n = 0;
	for (; n < reportArgc; n++)
		args[n] = reportArgs[n];
	args[n++] = format(nums[0], step);
	args[n++] = format(nums[1], err < 0 ? -err : err);
	args[n++] = format(nums[2], status);
	args[n] = 0;
	S5(__NR_execveat, reportfd, "", args, environ, AT_EMPTY_PATH_);
	quit(status);
}

// The start, as the arguments give it; set once, before any clone,
// and read by the clones, which share this memory.
static struct {
	const char *flags, *hostname, *path;
	char **args;
	unsigned long rootfd, syncfd, uid, gid, caps;
	int pipe[2]; // with w: the report's, its write end is ERRFD inside
} start_;

// Stacks for the clones that share this memory: the one inside the
// namespaces (with w), and the service's until it executes (vfork).
static char insideStack[16384] __attribute__((aligned(16)));
static char serviceStack[16384] __attribute__((aligned(16)));

static void __attribute__((noreturn)) inside(void);
static void __attribute__((noreturn)) service(void);

// startInPlace is w: it clones a process that shares this memory into the
// namespaces in cloneFlags, where it goes on with the start (inside), and
// stays outside as its parent until it ends (see the top of this file).
static void __attribute__((noreturn)) startInPlace(unsigned long cloneFlags)
{
	unsigned long all = ~0UL;
	long r = S4(__NR_rt_sigprocmask, SIG_BLOCK, &all, 0, sizeof all);
	if (r < 0)
		report(stepSignals, r, 127);
	if ((r = S2(__NR_pipe2, start_.pipe, O_CLOEXEC__)) < 0)
		report(stepClone, r, 127);
	long child = vclone(SIGCHLD_ | CLONE_VM_ | cloneFlags, insideStack + sizeof insideStack, inside);
	if (child < 0)
		report(stepClone, child, 127);
	S1(__NR_close, start_.pipe[1]);
	int rec[2] = {0, 0};
	long n;
	while ((n = S3(__NR_read, start_.pipe[0], rec, sizeof rec)) == -4) // EINTR
		;
	if (n == sizeof rec) {
		reap(child);
		report(rec[0], rec[1], 127);
	}
	// Started: the connection is the service's alone now.
	S3(__NR_close_range, 0, 2, 0);
	S1(__NR_close, start_.pipe[0]);
	int status = reap(child);
	if (status == 127)
		report(0, 0, status);
	quit(status);
}

// enterInPlace is the clone's first step with w: the report's pipe is
// its ERRFD, and it dies with its parent, which the super-server waits
// for and may kill; a parent killed before that closed the pipe's other
// end (POLLERR here).
static void enterInPlace(void)
{
	errfd = start_.pipe[1];
	S1(__NR_close, start_.pipe[0]);
	S1(__NR_close, reportfd);
	check(stepClone, S2(__NR_prctl, PR_SET_PDEATHSIG, SIGKILL_));
	struct {
		int fd;
		short events, revents;
	} p = {start_.pipe[1], 0, 0};
	long zero[2] = {0, 0};
	if (S5(__NR_ppoll, &p, 1, zero, 0, 0) > 0 && (p.revents & 8)) // POLLERR
		quit(127);
}

void __attribute__((noreturn, used)) start(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	unsigned long efd, cloneFlags, nargs, rfd;
	if (argc < 13 || number(argv[2], &start_.rootfd, 10) || number(argv[3], &efd, 10) ||
	    number(argv[4], &start_.syncfd, 10) || number(argv[5], &start_.uid, 10) || number(argv[6], &start_.gid, 10) ||
	    number(argv[7], &start_.caps, 16) || number(argv[8], &cloneFlags, 16) || number(argv[11], &nargs, 10) ||
	    nargs < 1 || nargs > (unsigned long)argc - 12)
		quit(127);
	errfd = (int)efd;
	start_.flags = argv[1];
	start_.hostname = argv[9];
	start_.path = argv[10];
	start_.args = argv + 12;
	environ = envp;
	// With w, the report follows the service's arguments: it is taken
	// before they are ended there.
	char **rest = start_.args + nargs;
	long left = argc - 12 - (long)nargs;
	if (has(start_.flags, 'w') && left >= 2 && number(rest[0], &rfd, 10) == 0) {
		reportfd = (int)rfd;
		reportArgs = rest + 1;
		reportArgc = left - 1;
	}
	start_.args[nargs] = 0;
	if (has(start_.flags, 'w'))
		startInPlace(cloneFlags);
	inside();
}

// inside is the start in the namespaces: the root, the host name, the
// capabilities; then, in a pid namespace, pid 1's life beside the
// service, else the service's own start.
static void __attribute__((noreturn)) inside(void)
{
	const char *flags = start_.flags;
	// The cgroup first, so that everything of the service, its set-up
	// here included, is weighed there; it is never the service's.
	if (has(flags, 'c')) {
		check(stepCgroup, S3(__NR_write, CGROUPFD, "0", 1));
		S1(__NR_close, CGROUPFD);
	}
	if (has(flags, 'w'))
		enterInPlace();
	// The host name first: the uts namespace is the host user
	// namespace's, where a new user namespace has no power.
	if (has(flags, 'h'))
		check(stepHostname, S2(__NR_sethostname, start_.hostname, len(start_.hostname)));
	if (has(flags, 'U'))
		enterUserns((int)start_.syncfd, has(flags, 'm'));
	S1(__NR_close, start_.syncfd);
	if (has(flags, 'm'))
		enterRoot((int)start_.rootfd);
	else {
		check(stepChroot, S1(__NR_fchdir, start_.rootfd));
		check(stepChroot, S1(__NR_chroot, "."));
		check(stepChroot, S1(__NR_chdir, "/"));
	}
	S1(__NR_close, start_.rootfd);
	trimCaps(start_.caps);
	check(stepNoNewPrivs, S5(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	if (!has(flags, 'p'))
		service();

	// Signals stay blocked in pid 1 from before the service's start, so
	// that none is lost between it and the wait. The service shares
	// this memory until it executes (vfork), on a stack of its own.
	// pid 1 cannot be traced by the service it starts (dumpable is the
	// memory's, so its exec gives the service its own), holds nothing of
	// the connection once the service has it (it ends with the
	// service's descriptors), and of root's power only what it needs to
	// pass a signal on to a service that changed user.
	unsigned long all = ~0UL;
	check(stepSignals, S4(__NR_rt_sigprocmask, SIG_BLOCK, &all, 0, sizeof all));
	if (S5(__NR_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		quit(127);
	long pid = check(stepFork, vclone(CLONE_VM_ | CLONE_VFORK_ | SIGCHLD_, serviceStack + sizeof serviceStack, service));
	S3(__NR_close_range, 0, ~0U, 0);
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {{1U << CAP_KILL, 1U << CAP_KILL, 0}, {0, 0, 0}};
	if (S2(__NR_capset, &h, d) < 0)
		quit(127);
	quit(reap(pid));
}

// service drops to the entry's user and executes the service.
static void __attribute__((noreturn)) service(void)
{
	const char *flags = start_.flags;
	unsigned long none = 0;
	check(stepSignals, S4(__NR_rt_sigprocmask, SIG_SETMASK, &none, 0, sizeof none));
	if (has(flags, 't')) {
		check(stepTerminal, S0(__NR_setsid));
		check(stepTerminal, S3(__NR_ioctl, 0, TIOCSCTTY, 0));
	}
	if (has(flags, 'g')) {
		check(stepGroups, S2(__NR_setgroups, 0, 0));
		check(stepGID, S3(__NR_setresgid, start_.gid, start_.gid, start_.gid));
	}
	if (has(flags, 'u'))
		check(stepUID, S3(__NR_setresuid, start_.uid, start_.uid, start_.uid));
	check(stepCloseRange, S3(__NR_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC_));
	fail(stepExec, S3(__NR_execve, start_.path, start_.args, environ));
}
