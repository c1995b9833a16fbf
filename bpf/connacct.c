// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)

//go:build ignore

// The constraint above keeps the Go tool from taking this file for cgo
// source (a package with .c files and no cgo does not build); clang
// reads it as a comment. bpf2go compiles it: see gen.go.

// connacct counts, per local address and port, the TCP connections that
// reach ESTABLISHED on the passive side (accepted from a listener) in one
// network namespace. ipwatchd loads it through the Go package beside this
// file; see doc.go there for the pins and the upgrade path.
//
// Attach point: the BTF-typed raw tracepoint sock:inet_sock_set_state
// (tp_btf). It is the kernel's own, stable hook for exactly this event (every
// TCP state change, with the socket), so no kernel function names are relied
// on; it needs kernel BTF and bpffs and nothing else: no tracefs (that only a
// classic tracepoint's perf event needs), no kprobes (this kernel is built
// without them), no cgroup2 mount (which sockops would need, and which sits
// at a different path on every host: /sys/fs/cgroup/unified here, in hybrid
// mode). It runs in the context of the state change, so the socket it reads
// is the one that changed, and its link can be pinned to outlive the daemon.
//
// No vmlinux.h: the few kernel structs read are declared below with
// preserve_access_index, so every field is relocated by name against the
// running kernel's BTF (CO-RE) and the layout here is only a placeholder.
// That keeps the object independent of the kernel it was built on and the
// source free of a multi-megabyte generated header.

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
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

// From include/uapi/linux/bpf.h, socket.h, in.h and include/net/tcp_states.h
// (uapi values: stable).
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_HASH 5
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_SK_STORAGE 24
#define BPF_F_NO_PREALLOC 1
#define BPF_NOEXIST 1
#define BPF_LOCAL_STORAGE_GET_F_CREATE 1
#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define TCP_ESTABLISHED 1
#define TCP_SYN_RECV 3

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct net {
	__u64 net_cookie;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	__be32 skc_rcv_saddr;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
};

#pragma clang attribute pop

// The network namespace to count, as its cookie (SO_NETNS_COOKIE), set at
// load time. The tracepoint fires for every namespace on the host, and one
// ipwatchd serves one namespace (several daemons, or parallel tests, each
// in its own namespace, each load their own copy). A cookie rather than
// the namespace's inode number: cookies are never reused during a boot,
// while an inode number is recycled once its namespace is gone, so a
// program left pinned for a dead namespace can never start counting a new
// one. It is read from the socket (sk->sk_net->net_cookie), the namespace
// the connection belongs to, because a tp_btf program has no
// bpf_get_netns_cookie and the current task is often unrelated (softirq).
volatile const __u64 netns_cookie = 0;

// The key, also read by Go: family is AF_INET or AF_INET6; addr holds the
// local address in network order (IPv4 in its first 4 bytes, the rest 0);
// port is the local port in host order. An IPv4-mapped IPv6 address (a
// connection to a dual-stack listener) is stored as IPv4, so that the
// address is the one the client dialled, as ipwatchd keys everything.
struct key {
	__u8 addr[16];
	__u16 port;
	__u8 family;
	__u8 pad;
};

// counts: connections per key, per CPU (no cache line is shared between
// CPUs on the accept path; Go sums). Not preallocated: memory grows with
// the keys in use (a host with thousands of addresses still uses few
// ports on most of them), and max_entries only bounds it.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct key);
	__type(value, __u64);
} counts SEC(".maps");

// drops: connections that could not be counted because counts was full
// (or the kernel out of memory).
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

// seen marks each socket once it is counted, so that a socket is counted
// once however many copies of this program see its change of state. Two
// copies run side by side only while a new daemon replaces the pinned link
// (attach the new one, then release the old one: see the Go package); the
// mark is what makes that overlap exact. The storage lives and dies with
// the socket.
struct seen_val {
	__u8 counted;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __s32);
	__type(value, struct seen_val);
} seen SEC(".maps");

// meta holds the cookie of the namespace a pin directory counts. Only Go
// reads and writes it: it is how a new daemon tells its own pins from
// another namespace's.
struct pin_meta {
	__u64 netns_cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pin_meta);
} meta SEC(".maps");

static __always_inline int is_v4_mapped(const __be32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

// A passive open is the change SYN_RECV -> ESTABLISHED of the socket that
// a listener cloned for the connection; an active open goes SYN_SENT ->
// ESTABLISHED. (A simultaneous open also passes through SYN_RECV; the
// kernel itself calls that passive, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB, and
// it never happens against a listener.)
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(count_passive, struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_SYN_RECV || newstate != TCP_ESTABLISHED)
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	// A kernel without namespaces (CONFIG_NET_NS=n) has no skc_net.net,
	// and only the one namespace to count.
	if (bpf_core_field_exists(sk->__sk_common.skc_net.net) &&
	    sk->__sk_common.skc_net.net->net_cookie != netns_cookie)
		return 0;

	// Out of memory (s == NULL) counts anyway: only the overlap of an
	// upgrade could then count it twice, while skipping would lose it
	// for sure.
	struct seen_val *s = bpf_sk_storage_get(&seen, sk, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (s) {
		if (s->counted)
			return 0;
		s->counted = 1;
	}

	struct key k;
	__builtin_memset(&k, 0, sizeof(k));
	k.port = sk->__sk_common.skc_num;
	// The field test keeps the program loadable on a kernel without IPv6,
	// which has no skc_v6_rcv_saddr.
	unsigned short family = sk->__sk_common.skc_family;
	if (family == AF_INET) {
		k.family = AF_INET;
		__be32 a = sk->__sk_common.skc_rcv_saddr;
		__builtin_memcpy(k.addr, &a, 4);
	} else if (family == AF_INET6 && bpf_core_field_exists(sk->__sk_common.skc_v6_rcv_saddr)) {
		__be32 a[4];
		a[0] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[0];
		a[1] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[1];
		a[2] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[2];
		a[3] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[3];
		if (is_v4_mapped(a)) {
			k.family = AF_INET;
			__builtin_memcpy(k.addr, &a[3], 4);
		} else {
			k.family = AF_INET6;
			__builtin_memcpy(k.addr, a, 16);
		}
	} else {
		return 0;
	}

	// Atomic although per CPU: cheap (the line is this CPU's), and then
	// correctness does not depend on which contexts the tracepoint can
	// nest in.
	__u64 *v = bpf_map_lookup_elem(&counts, &k);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return 0;
	}
	__u64 one = 1;
	if (bpf_map_update_elem(&counts, &k, &one, BPF_NOEXIST) == 0)
		return 0;
	// Another CPU may have made the key between the lookup and the
	// update (EEXIST): count on this CPU's copy of it.
	v = bpf_map_lookup_elem(&counts, &k);
	if (v) {
		__sync_fetch_and_add(v, 1);
		return 0;
	}
	__u32 zero = 0;
	__u64 *d = bpf_map_lookup_elem(&drops, &zero);
	if (d)
		__sync_fetch_and_add(d, 1);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
