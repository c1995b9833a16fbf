// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)

//go:build ignore

// The constraint above keeps the Go tool from taking this file for cgo
// source; clang reads it as a comment. bpf2go compiles it: see gen.go.

// shed drops, in the kernel, the new TCP connections to a local address
// and port past the rate its conf entry allows (rate=), before any
// listener is chosen for them: so past the limit inetd neither accepts
// nor counts them, and forks no virtuald. ipwatchd attaches it to its
// network namespace and fills its maps from the conf; see shed.go
// beside this file.
//
// Attach point: BPF_PROG_TYPE_SK_LOOKUP (Linux 5.9), attached to a network
// namespace. The kernel runs it when a packet finds no established socket
// and a listener is about to be chosen, that is for each SYN of a new
// connection, with the local address and port already parsed: no header
// parsing, one attach per namespace whatever the interfaces (addresses
// come and go on any of them), and it runs before the SYN reaches
// inetd's socket. SK_DROP ends the lookup with no socket: the kernel
// answers the SYN with a RST, the client sees "connection refused" at
// once, as it would from a virtuald that refused it, with no byte and
// no retransmission. The alternatives: tc on ingress sees packets before
// routing on every interface (one attach per interface, headers to
// parse, loopback and aliases on any of them); a socket filter sits on
// inetd's own socket, which ipwatchd does not own (inetd makes it again
// on every SIGHUP).
//
// The cost for an address without a limit is one hash lookup that
// misses (BenchmarkBPFCost in bench/).
//
// The rate is enforced as GCRA, the token bucket written as one time: a
// bucket lets a connection through when its theoretical arrival time
// (tat) is at most tau ahead of now, and moves tat one interval on;
// interval = 1 s / rate, tau = (burst - 1) * interval. So up to burst
// connections at once, then one per interval: what virtuald -accept's
// token bucket lets through (a second's worth of burst).

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// From include/uapi/linux/bpf.h, socket.h and in.h (uapi: stable).
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_F_NO_PREALLOC 1
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SK_DROP 0
#define SK_PASS 1

struct bpf_spin_lock {
	__u32 val;
};

// The context, as include/uapi/linux/bpf.h has it: the verifier rewrites
// each access by these offsets, so the layout is the uapi one, not a
// placeholder relocated by CO-RE.
struct bpf_sk_lookup {
	union {
		void *sk;
		__u64 cookie;
	};
	__u32 family;
	__u32 protocol;
	__u32 remote_ip4;
	__u32 remote_ip6[4];
	__be16 remote_port;
	__u16 pad;
	__u32 local_ip4;
	__u32 local_ip6[4];
	__u32 local_port;
	__u32 ingress_ifindex;
};

// shed_key is a local address and port, laid out as connacct's key:
// family AF_INET or AF_INET6; addr in network order (IPv4 in its first 4
// bytes, the rest 0); port in host order.
struct shed_key {
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 pad;
};

// shed_keys: the addresses and ports that have a limit, each to the index
// of its entry's bucket (an entry's addresses share one). A miss is the
// whole cost for every other connection. Not preallocated: it holds the
// limited entries' addresses only.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct shed_key);
	__type(value, __u32);
} shed_keys SEC(".maps");

// shed_bucket is one entry's rate: interval and tau (ns) written by Go,
// tat and the counts by this program, all under lock.
struct shed_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 interval; // ns between connections; 0: the bucket is unused
	__u64 tau;      // ns tat may run ahead of now: (burst - 1) * interval
	__u64 tat;      // the theoretical arrival time (bpf_ktime_get_ns)
	__u64 passed;   // connections let through
	__u64 dropped;  // connections shed
};

#define SHED_BUCKETS 16384

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHED_BUCKETS);
	__type(key, __u32);
	__type(value, struct shed_bucket);
} shed_buckets SEC(".maps");

static __always_inline int is_v4_mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

SEC("sk_lookup")
int shed(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;

	struct shed_key k;
	__builtin_memset(&k, 0, sizeof(k));
	k.port = ctx->local_port;
	if (ctx->family == AF_INET) {
		k.family = AF_INET;
		__u32 a = ctx->local_ip4;
		__builtin_memcpy(k.addr, &a, 4);
	} else if (ctx->family == AF_INET6) {
		__u32 a[4];
		a[0] = ctx->local_ip6[0];
		a[1] = ctx->local_ip6[1];
		a[2] = ctx->local_ip6[2];
		a[3] = ctx->local_ip6[3];
		if (is_v4_mapped(a)) {
			k.family = AF_INET;
			__builtin_memcpy(k.addr, &a[3], 4);
		} else {
			k.family = AF_INET6;
			__builtin_memcpy(k.addr, a, 16);
		}
	} else {
		return SK_PASS;
	}

	__u32 *idx = bpf_map_lookup_elem(&shed_keys, &k);
	if (!idx)
		return SK_PASS;
	struct shed_bucket *b = bpf_map_lookup_elem(&shed_buckets, idx);
	if (!b)
		return SK_PASS;

	__u64 now = bpf_ktime_get_ns();
	int verdict = SK_PASS;
	bpf_spin_lock(&b->lock);
	if (b->interval) {
		__u64 tat = b->tat;
		if (tat < now)
			tat = now;
		if (tat - now > b->tau) {
			b->dropped++;
			verdict = SK_DROP;
		} else {
			b->tat = tat + b->interval;
			b->passed++;
		}
	}
	bpf_spin_unlock(&b->lock);
	return verdict;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
