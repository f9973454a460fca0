// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/*
 * Per-pod local port ranges for kraal.
 *
 * One loaded program per hook serves every pod; each pod cgroup2 directory gets its own link.
 *
 * Finding the pod. Each attachment owns a cgroup-storage slot (keyed by the cgroup it is
 * attached to and the attach type) into which userspace writes the pod id once, right after
 * attaching. bpf_get_local_storage() returns the slot of the attachment that is running, so the
 * program knows its pod in O(1) and exactly as the kernel does: by the cgroup the *socket*
 * belongs to (set when the socket was created), not by the task that happens to call bind()
 * or close(). That is why sockets made before a process joined the pod are not the pod's, and
 * why an fd passed to another process still counts against the pod that created it. Walking
 * bpf_get_current_ancestor_cgroup_id() levels would be slower and would judge by the caller.
 * The pod id keys two hash maps: the ranges (written only by userspace, so a range update is
 * one atomic map update and never touches the allocator state) and the allocator state.
 *
 * The allocator. A per-pod bitmap marks ports the pod's sockets hold: set when a port is handed
 * out (bind(0), connect autobind) or explicitly bound (post_bind), cleared at sock_release. Each
 * socket remembers what it set in socket storage, because accepted children share the
 * listener's port and must not clear it. The choice scans from a rotating cursor for the next
 * port not held, so a just-released port (likely in TIME_WAIT) is reused only after the whole
 * list has gone round. Processes outside the pod that bind ports in its list are invisible
 * here; kraal gives each pod an exclusive block, and such collisions are counted as failures.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ports.h"

#define AF_INET 2
#define AF_INET6 10
#define SOL_SOCKET 1
#define SO_REUSEADDR 2
#define ENOMEM 12
#define EACCES 13
#define EADDRINUSE 98
#define EADDRNOTAVAIL 99

/* connect() may meet a port taken by a process outside the pod; try a few more. */
#define KP_CONNECT_ATTEMPTS 4
/* Chunks of at most 64 ports per loop step, plus span edges and lost races. */
#define KP_SCAN_STEPS (KP_HELD_WORDS + 2 * KP_MAX_SPANS + 64)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct kp_cfg);
} kp_cfgs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct kp_state);
} kp_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct kp_podref);
} kp_podrefs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct kp_claim);
} kp_claims SEC(".maps");

struct pod {
	__u64 id;
	struct kp_cfg *cfg;
	struct kp_state *st;
};

static __always_inline int find_pod(struct pod *pod)
{
	struct kp_podref *ref = bpf_get_local_storage(&kp_podrefs, 0);

	/* 0: attached but not yet configured; the pod has no processes then, so allow. */
	pod->id = ref->pod_id;
	if (!pod->id)
		return 0;
	pod->cfg = bpf_map_lookup_elem(&kp_cfgs, &pod->id);
	pod->st = bpf_map_lookup_elem(&kp_states, &pod->id);
	return pod->cfg && pod->st;
}

static __always_inline void count(struct kp_state *st, int which)
{
	__sync_fetch_and_add(&st->counters[which & (KP_C_COUNT - 1)], 1);
}

static __always_inline int ported_protocol(__u32 protocol)
{
	return protocol == IPPROTO_TCP || protocol == IPPROTO_UDP;
}

static __always_inline int in_spans(const struct kp_span *spans, __u32 n, __u32 port)
{
	for (int i = 0; i < KP_MAX_SPANS; i++) {
		if (i >= n)
			break;
		if (port >= spans[i].lo && port <= spans[i].hi)
			return 1;
	}
	return 0;
}

static __always_inline __u64 port_bit(__u32 port)
{
	return 1ULL << (port & 63);
}

static __always_inline __u64 *held_word(struct kp_state *st, __u32 port)
{
	return &st->held[(port >> 6) & (KP_HELD_WORDS - 1)];
}

/* Marks a port held; returns 1 if it was free (this caller now owns the mark). */
static __always_inline int mark(struct kp_state *st, __u32 port)
{
	__u64 bit = port_bit(port);

	return !(__sync_fetch_and_or(held_word(st, port), bit) & bit);
}

static __always_inline void unmark(struct kp_state *st, __u32 port)
{
	__sync_fetch_and_and(held_word(st, port), ~port_bit(port));
}

/* Index of the only set bit (BPF has no count-trailing-zeros instruction). */
static __always_inline __u32 bit_index(__u64 bit)
{
	__u32 n = 0;

	if (bit >> 32) { n += 32; bit >>= 32; }
	if (bit >> 16) { n += 16; bit >>= 16; }
	if (bit >> 8) { n += 8; bit >>= 8; }
	if (bit >> 4) { n += 4; bit >>= 4; }
	if (bit >> 2) { n += 2; bit >>= 2; }
	if (bit >> 1) { n += 1; }
	return n;
}

struct scan {
	struct kp_state *st;
	struct kp_span *spans;
	__u32 n;
	__u32 total;
	__u32 idx;     /* current span */
	__u32 port;    /* next port to look at, inside spans[idx] */
	__u32 scanned; /* ports looked at so far; a full lap ends the scan */
	__u32 found;
};

/* One bpf_loop step: look at the ports from scan->port up to the end of its 64-bit word. */
static long scan_step(__u64 i, void *arg)
{
	struct scan *s = arg;
	__u32 idx = s->idx & (KP_MAX_SPANS - 1);
	__u32 lo = s->spans[idx].lo, hi = s->spans[idx].hi;
	__u32 p = s->port, end;
	__u64 *word, mask, free;

	if (s->scanned >= s->total)
		return 1;
	if (p < lo || p > hi)
		p = lo;
	end = p | 63;
	if (end > hi)
		end = hi;
	mask = (~0ULL << (p & 63)) & (~0ULL >> (63 - (end & 63)));
	word = held_word(s->st, p);
	free = ~*(volatile __u64 *)word & mask;
	if (free) {
		__u64 bit = free & -free;

		if (!(__sync_fetch_and_or(word, bit) & bit)) {
			s->found = (p & ~63u) + bit_index(bit);
			return 1;
		}
		/* Another CPU took it first: look at the same word again. */
		return 0;
	}
	s->scanned += end - p + 1;
	if (end >= hi) {
		idx = s->idx + 1;
		if (idx >= s->n)
			idx = 0;
		s->idx = idx;
		s->port = s->spans[idx & (KP_MAX_SPANS - 1)].lo;
	} else {
		s->port = end + 1;
	}
	return 0;
}

/* Baseline for the benchmark: a uniformly random port of the list, whether held or not. */
static __always_inline __u32 pick_random(struct kp_state *st, struct kp_span *spans, __u32 n,
					 __u32 total)
{
	__u32 r = bpf_get_prandom_u32() % total;

	for (int i = 0; i < KP_MAX_SPANS; i++) {
		__u32 len;

		if (i >= n)
			break;
		len = spans[i].hi - spans[i].lo + 1;
		if (r < len) {
			__u32 port = spans[i].lo + r;

			mark(st, port);
			return port;
		}
		r -= len;
	}
	return 0;
}

/*
 * Hands out a port of the list that the pod does not hold and marks it held; 0 when every port
 * is held. which: 0 bind list, 1 connect list.
 */
static __always_inline __u32 pick(struct pod *pod, int which)
{
	struct kp_cfg *cfg = pod->cfg;
	struct kp_span *spans = which ? cfg->conn : cfg->bind;
	__u32 n = which ? cfg->n_conn : cfg->n_bind;
	__u32 total = which ? cfg->conn_total : cfg->bind_total;
	__u32 cursor = pod->st->cursor[which & 1];
	struct scan s = {};

	if (!n || n > KP_MAX_SPANS || !total)
		return 0;
	if (cfg->flags & KP_F_RANDOM)
		return pick_random(pod->st, spans, n, total);

	/* Start in the span holding the cursor, or the next one after it (wrapping). */
	s.idx = 0;
	s.port = spans[0].lo;
	for (int i = 0; i < KP_MAX_SPANS; i++) {
		if (i >= n)
			break;
		if (cursor <= spans[i].hi) {
			s.idx = i;
			s.port = cursor < spans[i].lo ? spans[i].lo : cursor;
			break;
		}
	}
	s.st = pod->st;
	s.spans = spans;
	s.n = n;
	s.total = total;
	bpf_loop(KP_SCAN_STEPS, scan_step, &s, 0);
	if (s.found)
		pod->st->cursor[which & 1] = s.found + 1;
	return s.found;
}

/* A claim left by a handed-out port the socket never got bound to (the bind failed). */
static __always_inline void drop_stale_claim(struct pod *pod, struct kp_claim *claim)
{
	if (claim->port && claim->pod_id == pod->id) {
		unmark(pod->st, claim->port);
		count(pod->st, KP_C_FAILED);
	}
	claim->port = 0;
	claim->bound = 0;
}

static __always_inline int deny(int err)
{
	bpf_set_retval(-err);
	return 0;
}

static __always_inline int on_bind(struct bpf_sock_addr *ctx)
{
	struct kp_claim *claim;
	struct pod pod;
	__u32 port;
	int one = 1;

	if (!ported_protocol(ctx->protocol) || !find_pod(&pod))
		return 1;
	if (!(pod.cfg->flags & KP_F_BIND))
		return 1;
	port = bpf_ntohs(ctx->user_port);
	if (port) {
		if (in_spans(pod.cfg->bind, pod.cfg->n_bind, port)) {
			count(pod.st, KP_C_BIND_ALLOWED);
			return 1;
		}
		count(pod.st, KP_C_BIND_DENIED);
		return deny(EACCES);
	}

	/* bind(0): choose inside the list; the kernel cannot retry, so the choice must be free. */
	claim = bpf_sk_storage_get(&kp_claims, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!claim) {
		count(pod.st, KP_C_FAILED);
		return deny(ENOMEM);
	}
	drop_stale_claim(&pod, claim);
	port = pick(&pod, 0);
	if (!port) {
		count(pod.st, KP_C_EXHAUSTED);
		return deny(EADDRINUSE);
	}
	claim->pod_id = pod.id;
	claim->port = port;
	claim->bound = 0; /* until post_bind sees the bind succeed */
	/* The pod's own earlier connections on this port may linger in TIME_WAIT. */
	if (ctx->protocol == IPPROTO_TCP)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ctx->user_port = bpf_htons(port);
	count(pod.st, KP_C_EPHEMERAL);
	return 1;
}

static __always_inline long bind_local(struct bpf_sock_addr *ctx, struct bpf_sock *sk, int v6,
				       __u32 port)
{
	if (v6) {
		struct sockaddr_in6 sa = {};

		sa.sin6_family = AF_INET6;
		sa.sin6_port = bpf_htons(port);
		/* Keep a source address chosen with IP_BIND_ADDRESS_NO_PORT. */
		sa.sin6_addr.in6_u.u6_addr32[0] = sk->src_ip6[0];
		sa.sin6_addr.in6_u.u6_addr32[1] = sk->src_ip6[1];
		sa.sin6_addr.in6_u.u6_addr32[2] = sk->src_ip6[2];
		sa.sin6_addr.in6_u.u6_addr32[3] = sk->src_ip6[3];
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	} else {
		struct sockaddr_in sa = {};

		sa.sin_family = AF_INET;
		sa.sin_port = bpf_htons(port);
		sa.sin_addr.s_addr = sk->src_ip4;
		return bpf_bind(ctx, (struct sockaddr *)&sa, sizeof(sa));
	}
}

static __always_inline int on_connect(struct bpf_sock_addr *ctx, int v6)
{
	struct bpf_sock *sk = ctx->sk;
	struct kp_claim *claim;
	struct pod pod;
	int one = 1;

	if (!sk || !ported_protocol(ctx->protocol) || !find_pod(&pod))
		return 1;
	/* Only autobind is steered: an already bound socket keeps its port. */
	if (!(pod.cfg->flags & KP_F_CONNECT) || sk->src_port)
		return 1;
	claim = bpf_sk_storage_get(&kp_claims, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!claim) {
		count(pod.st, KP_C_FAILED);
		return deny(ENOMEM);
	}
	drop_stale_claim(&pod, claim);
	/* Without it a port whose earlier connection sits in TIME_WAIT cannot be bound again. */
	if (ctx->protocol == IPPROTO_TCP)
		bpf_setsockopt(ctx, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	for (int attempt = 0; attempt < KP_CONNECT_ATTEMPTS; attempt++) {
		__u32 port = pick(&pod, 1);

		if (!port) {
			count(pod.st, KP_C_EXHAUSTED);
			return deny(EADDRNOTAVAIL);
		}
		if (bind_local(ctx, sk, v6, port) == 0) {
			claim->pod_id = pod.id;
			claim->port = port;
			claim->bound = 1;
			count(pod.st, KP_C_EPHEMERAL);
			return 1;
		}
		/* Taken by someone the pod does not know about; the cursor has moved past it. */
		unmark(pod.st, port);
		count(pod.st, KP_C_FAILED);
	}
	return deny(EADDRNOTAVAIL);
}

/* Safety net after every successful bind, and where explicit binds are marked held. */
static __always_inline int on_post_bind(struct bpf_sock *sk)
{
	struct kp_claim *claim;
	struct pod pod;
	__u32 port = sk->src_port;

	if (!ported_protocol(sk->protocol) || !find_pod(&pod))
		return 1;
	if ((pod.cfg->flags & KP_F_BIND) && !in_spans(pod.cfg->bind, pod.cfg->n_bind, port)) {
		count(pod.st, KP_C_FAILED);
		return deny(EACCES);
	}
	if (!in_spans(pod.cfg->bind, pod.cfg->n_bind, port) &&
	    !in_spans(pod.cfg->conn, pod.cfg->n_conn, port))
		return 1;
	claim = bpf_sk_storage_get(&kp_claims, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!claim)
		return 1;
	if (claim->port == port && claim->pod_id == pod.id) {
		claim->bound = 1; /* handed out by on_bind: already marked */
		return 1;
	}
	drop_stale_claim(&pod, claim);
	/* Shared ports (SO_REUSEPORT groups) stay marked by their first holder only. */
	if (mark(pod.st, port)) {
		claim->pod_id = pod.id;
		claim->port = port;
		claim->bound = 1;
	}
	return 1;
}

SEC("cgroup/bind4")
int kp_bind4(struct bpf_sock_addr *ctx)
{
	return on_bind(ctx);
}

SEC("cgroup/bind6")
int kp_bind6(struct bpf_sock_addr *ctx)
{
	return on_bind(ctx);
}

SEC("cgroup/connect4")
int kp_connect4(struct bpf_sock_addr *ctx)
{
	return on_connect(ctx, 0);
}

SEC("cgroup/connect6")
int kp_connect6(struct bpf_sock_addr *ctx)
{
	return on_connect(ctx, 1);
}

SEC("cgroup/post_bind4")
int kp_post_bind4(struct bpf_sock *sk)
{
	return on_post_bind(sk);
}

SEC("cgroup/post_bind6")
int kp_post_bind6(struct bpf_sock *sk)
{
	return on_post_bind(sk);
}

/*
 * A closed TCP connection keeps its 4-tuple in FIN_WAIT/LAST_ACK for a while, and the kernel
 * refuses to connect() from a port whose 4-tuple is still a full socket (EADDRNOTAVAIL, after
 * our bpf_bind(), too late to pick another port). So a port used by a TCP connection is only
 * freed once the application has closed it *and* the socket has reached CLOSE (sockops state
 * callback); what may remain then is TIME_WAIT, which a bound connect() may reuse. Whichever
 * of the two events comes last frees the port, exactly once (the xchg on the port).
 */
static __always_inline void release_claim(struct kp_claim *claim)
{
	__u32 port = __sync_lock_test_and_set(&claim->port, 0);
	struct kp_state *st;

	if (!port)
		return;
	st = bpf_map_lookup_elem(&kp_states, &claim->pod_id);
	if (!st)
		return;
	unmark(st, port);
	/* Handed out but never bound: the port was taken by someone else. (sock_release
	 * may not read src_port, hence the flag.) */
	if (!claim->bound)
		count(st, KP_C_FAILED);
}

SEC("cgroup/sock_release")
int kp_sock_release(struct bpf_sock *sk)
{
	struct kp_claim *claim = bpf_sk_storage_get(&kp_claims, sk, 0, 0);

	if (!claim || !claim->port)
		return 1;
	__sync_lock_test_and_set(&claim->released, 1);
	if (!claim->connecting || claim->closed)
		release_claim(claim);
	return 1;
}

SEC("sockops")
int kp_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct kp_claim *claim;

	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		claim = bpf_sk_storage_get(&kp_claims, sk, 0, 0);
		if (!claim || !claim->port)
			return 1;
		__sync_lock_test_and_set(&claim->connecting, 1);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			return 1;
		claim = bpf_sk_storage_get(&kp_claims, sk, 0, 0);
		if (!claim || !claim->port)
			return 1;
		__sync_lock_test_and_set(&claim->closed, 1);
		if (claim->released)
			release_claim(claim);
		return 1;
	}
	return 1;
}
