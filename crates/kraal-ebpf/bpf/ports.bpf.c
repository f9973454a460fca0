// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/*
 * Per-pod local port ranges for kraal.
 *
 * One loaded program per hook serves every pod; each pod cgroup2 directory gets its own link.
 *
 * Cost model. These programs run inside bind(), connect(), close() and UDP sendto() of every
 * socket in a pod, and what they cost is mostly cache and TLB misses, not instructions: a
 * hash-map lookup whose bucket is cold costs 60-200 ns (measured on a VM), an array lookup is
 * a few instructions on memory that is usually warm. So the hot paths use no hash map and
 * allocate nothing; hash maps are left to rare paths and to userspace. What the kernel itself
 * charges for running a cgroup hook (socket lock, run-array setup: 50-150 ns per call) is not
 * ours to cut, except by attaching only the hooks a pod's lists need (src/hooks.rs).
 *
 * Finding the pod. Each attachment owns a cgroup-storage entry (keyed by the cgroup it is
 * attached to and the attach type) into which userspace writes the pod's slot and a copy of
 * its lists. bpf_get_local_storage() returns the entry of the attachment that is running, so
 * the program knows its pod exactly as the kernel does: by the cgroup the *socket* belongs to
 * (set when the socket was created), not by the task that happens to call bind() or close().
 * That is why sockets made before a process joined the pod are not the pod's, and why an fd
 * passed to another process still counts against the pod that created it. Copying the lists
 * into every attachment's entry saves a lookup per call; userspace rewrites an entry by
 * swapping it whole, so a program always sees one consistent version of the lists. The
 * allocator state lives in an array indexed by the slot (kp_pod_states), its generation
 * telling a slot's current pod from an earlier one.
 *
 * The allocator. A per-pod bitmap marks ports the pod's sockets hold: set when a port is handed
 * out (bind(0), connect autobind) or explicitly bound (post_bind), cleared when the socket is
 * released. The choice scans from a rotating cursor for the next port not held, so a
 * just-released port (likely in TIME_WAIT) is reused only after the whole list has gone round.
 * Processes outside the pod that bind ports in its list are invisible here; kraal gives each
 * pod an exclusive block, and such collisions are counted as failures.
 *
 * Claims. A socket that set a bit remembers it in a claim, because accepted children share
 * the listener's port and must not clear it, and neither must the other members of an
 * SO_REUSEPORT group. sock_release cannot read the socket's port, so the claim is found by
 * the socket cookie. Socket storage (SK_STORAGE) would be the natural home, but each socket's
 * first use allocates two objects, charges them to a memory cgroup and frees them through RCU
 * (~0.8 us per socket, measured); a cookie-keyed hash map costs a cold bucket per lookup (a
 * 65536-entry one added ~180 ns to every close, measured). The claims therefore live in a
 * direct-mapped array indexed by the low bits of the cookie: cookies are handed out in
 * increasing runs per CPU, so a socket's entry sits next to those of the sockets made just
 * before it, memory that is warm. A socket whose entry holds another live socket's claim (a
 * long-lived one, 65536 cookies older) goes to a small hash map, and the entry counts such
 * overflow claims so that a socket without a claim finds that out from its entry alone. A
 * claim also carries the generation of its pod's slot: one left by a pod that was detached
 * while the socket lived is dead, and its entry is reused.
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
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct kp_pod);
} kp_hook_cfgs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KP_MAX_PODS);
	__type(key, __u32);
	__type(value, struct kp_state);
} kp_pod_states SEC(".maps");

/* Userspace's record of the attached pods, keyed by pod id; no program reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KP_MAX_PODS);
	__type(key, __u64);
	__type(value, struct kp_pod);
} kp_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KP_CLAIM_SLOTS);
	__type(key, __u32);
	__type(value, struct kp_claim);
} kp_sock_claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, KP_MAX_OVERFLOW);
	__type(key, __u64);
	__type(value, struct kp_claim);
} kp_claims_over SEC(".maps");

struct pod {
	struct kp_cfg *cfg;
	struct kp_state *st;
	__u32 slot;
	__u32 gen;
};

/* The pod of the running attachment; 0 if the pod has no lists (nothing to do). */
static __always_inline int find_pod(struct pod *pod)
{
	struct kp_pod *ref = bpf_get_local_storage(&kp_hook_cfgs, 0);
	__u32 slot = ref->slot;

	/* gen 0: attached but not yet configured; the pod has no processes then, so allow. */
	if (!ref->gen || !(ref->cfg.flags & (KP_F_BIND | KP_F_CONNECT)))
		return 0;
	pod->st = bpf_map_lookup_elem(&kp_pod_states, &slot);
	if (!pod->st)
		return 0;
	pod->cfg = &ref->cfg;
	pod->slot = slot;
	pod->gen = ref->gen;
	return 1;
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

static __always_inline struct kp_claim *claim_entry(__u64 cookie)
{
	__u32 i = cookie & (KP_CLAIM_SLOTS - 1);

	return bpf_map_lookup_elem(&kp_sock_claims, &i);
}

/* The socket's claim, in its entry or in the overflow map; NULL if it holds no port. */
static __always_inline struct kp_claim *find_claim(struct kp_claim *entry, __u64 *cookie)
{
	__u64 owner = entry->owner;

	/* While an entry is being filled its cookie may still be that of its previous owner. */
	if (entry->cookie == *cookie && owner && owner != KP_OWNER_BUSY)
		return entry;
	if (!*(volatile __u32 *)&entry->n_over)
		return 0;
	return bpf_map_lookup_elem(&kp_claims_over, cookie);
}

/* Whether an entry may be taken: free, or its claim's pod has been detached since. */
static __always_inline int owner_gone(__u64 owner)
{
	__u32 slot = KP_OWNER_SLOT(owner);
	struct kp_state *st;

	if (!owner)
		return 1;
	if (owner == KP_OWNER_BUSY)
		return 0;
	st = bpf_map_lookup_elem(&kp_pod_states, &slot);
	return !st || st->gen != KP_OWNER_GEN(owner);
}

/*
 * Records that the socket (ctx: any program context whose socket has a cookie) holds `port`.
 * 0 on success. A claim the socket already has is one whose bind failed (the kernel cannot
 * bind a bound socket again, and the hooks do not steer bound sockets): its port is released.
 */
static __always_inline int claim_port(void *ctx, struct pod *pod, __u32 port, __u32 flags)
{
	__u64 cookie = bpf_get_socket_cookie(ctx), mine = KP_OWNER(pod->gen, pod->slot, port);
	struct kp_claim *e = claim_entry(cookie), *old, c = {};
	__u64 owner;

	if (!e)
		return -1;
	old = find_claim(e, &cookie);
	if (old) {
		/*
		 * Bound outside the lists as post_bind sees them, yet a hook that saw newer lists
		 * (update() in progress) handed the port out: that claim stands.
		 */
		if (flags & KP_CL_UNLISTED)
			return 0;
		/* Only this socket's programs touch its claim: plain stores suffice. */
		owner = old->owner;
		if (KP_OWNER_PORT(owner) != port && !(old->flags & KP_CL_UNLISTED) &&
		    KP_OWNER_GEN(owner) == pod->gen && KP_OWNER_SLOT(owner) == pod->slot) {
			unmark(pod->st, KP_OWNER_PORT(owner));
			if (!(old->flags & KP_CL_BOUND))
				count(pod->st, KP_C_FAILED);
		}
		old->owner = mine;
		old->flags = flags;
		return 0;
	}
	owner = e->owner;
	if (owner_gone(owner) &&
	    __sync_val_compare_and_swap(&e->owner, owner, KP_OWNER_BUSY) == owner) {
		e->cookie = cookie;
		e->flags = flags;
		__sync_lock_test_and_set(&e->owner, mine);
		return 0;
	}
	c.cookie = cookie;
	c.owner = mine;
	c.flags = flags;
	if (bpf_map_update_elem(&kp_claims_over, &cookie, &c, BPF_NOEXIST))
		return -1; /* full */
	__sync_fetch_and_add(&e->n_over, 1);
	return 0;
}

/* Frees the port and the claim (which must not be touched afterwards). */
static __always_inline void free_claim(struct kp_claim *entry, struct kp_claim *claim,
				       __u64 *cookie, __u32 old_flags)
{
	__u64 owner = claim->owner;
	__u32 slot = KP_OWNER_SLOT(owner);
	struct kp_state *st = bpf_map_lookup_elem(&kp_pod_states, &slot);

	if (st && st->gen == KP_OWNER_GEN(owner) && !(old_flags & KP_CL_UNLISTED)) {
		unmark(st, KP_OWNER_PORT(owner));
		/* Handed out but never bound: the port was taken by someone else. */
		if (!(old_flags & KP_CL_BOUND))
			count(st, KP_C_FAILED);
	}
	if (claim == entry) {
		/* n_over stays: it counts other sockets' claims. */
		__sync_lock_test_and_set(&entry->owner, 0);
	} else if (!bpf_map_delete_elem(&kp_claims_over, cookie)) {
		__sync_fetch_and_add(&entry->n_over, -1);
	}
}

static __always_inline int deny(int err)
{
	bpf_set_retval(-err);
	return 0;
}

static __always_inline int on_bind(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct pod pod;
	__u32 port;
	int one = 1;

	if (!sk || !ported_protocol(ctx->protocol) || !find_pod(&pod))
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
	/* Binding a bound socket fails in the kernel (EINVAL); nothing to hand out. */
	if (sk->src_port)
		return 1;

	/* bind(0): choose inside the list; the kernel cannot retry, so the choice must be free. */
	port = pick(&pod, 0);
	if (!port) {
		count(pod.st, KP_C_EXHAUSTED);
		return deny(EADDRINUSE);
	}
	/* Not bound yet: post_bind sets KP_CL_BOUND once the bind has succeeded. */
	if (claim_port(ctx, &pod, port, 0)) {
		unmark(pod.st, port);
		count(pod.st, KP_C_FAILED);
		return deny(ENOMEM);
	}
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
	struct pod pod;
	int one = 1;

	if (!sk || !ported_protocol(ctx->protocol) || !find_pod(&pod))
		return 1;
	/* Only autobind is steered: an already bound socket keeps its port. */
	if (!(pod.cfg->flags & KP_F_CONNECT) || sk->src_port)
		return 1;
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
			/* Bound either way; untracked if the claims are full. */
			if (claim_port(ctx, &pod, port, KP_CL_BOUND)) {
				unmark(pod.st, port);
				count(pod.st, KP_C_FAILED);
			} else {
				count(pod.st, KP_C_EPHEMERAL);
			}
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
	struct kp_claim *entry, *claim;
	struct pod pod;
	__u32 port = sk->src_port;
	__u64 cookie;

	if (!ported_protocol(sk->protocol) || !find_pod(&pod))
		return 1;
	if (!in_spans(pod.cfg->bind, pod.cfg->n_bind, port)) {
		if (pod.cfg->flags & KP_F_BIND) {
			count(pod.st, KP_C_FAILED);
			return deny(EACCES);
		}
		/*
		 * Without a bind list binds are free. A UDP socket bound outside the lists is
		 * remembered, or on_sendmsg would take it for one the kernel autobound.
		 */
		if (!in_spans(pod.cfg->conn, pod.cfg->n_conn, port)) {
			if (sk->protocol == IPPROTO_UDP)
				claim_port(sk, &pod, port, KP_CL_BOUND | KP_CL_UNLISTED);
			return 1;
		}
	}
	if (mark(pod.st, port)) {
		/* An explicit bind of a port no socket of the pod held: this one holds it now. */
		if (claim_port(sk, &pod, port, KP_CL_BOUND)) {
			unmark(pod.st, port);
			count(pod.st, KP_C_FAILED);
		}
		return 1;
	}
	/*
	 * Held already: handed out to this socket by on_bind, which is now known to be bound, or
	 * held by another socket of the pod (SO_REUSEPORT groups: their first holder keeps it).
	 */
	cookie = bpf_get_socket_cookie(sk);
	entry = claim_entry(cookie);
	if (!entry)
		return 1;
	claim = find_claim(entry, &cookie);
	if (claim && claim->owner == KP_OWNER(pod.gen, pod.slot, port))
		__sync_fetch_and_or(&claim->flags, KP_CL_BOUND);
	return 1;
}

/*
 * A UDP socket that sends before bind() or connect() is autobound by the kernel to a port of
 * the host's ephemeral range, and no hook can steer that: the port is chosen before this hook
 * runs (inet_send_prepare), so the socket is never seen unbound here. It is recognised by what
 * it lacks: its port is outside the lists (every bind inside them was checked and every steered
 * port is inside), it is not connected, and it was never bound (a pod without a bind list may
 * bind outside the lists; post_bind leaves those sockets a claim). Every send from such a
 * socket is counted. Bound sockets, the common case, return after the span check.
 */
static __always_inline int on_sendmsg(struct bpf_sock_addr *ctx)
{
	struct kp_pod *ref = bpf_get_local_storage(&kp_hook_cfgs, 0);
	struct kp_claim *entry;
	struct bpf_sock *sk;
	struct kp_state *st;
	__u32 slot, port;
	__u64 cookie;

	if (!ref->gen || !(ref->cfg.flags & (KP_F_BIND | KP_F_CONNECT)))
		return 1;
	sk = ctx->sk;
	if (!sk || sk->dst_port)
		return 1;
	port = sk->src_port;
	if (in_spans(ref->cfg.bind, ref->cfg.n_bind, port) ||
	    in_spans(ref->cfg.conn, ref->cfg.n_conn, port))
		return 1;
	if (!(ref->cfg.flags & KP_F_BIND)) {
		cookie = bpf_get_socket_cookie(ctx);
		entry = claim_entry(cookie);
		if (!entry || find_claim(entry, &cookie))
			return 1;
	}
	slot = ref->slot;
	st = bpf_map_lookup_elem(&kp_pod_states, &slot);
	if (st)
		count(st, KP_C_UNSTEERED);
	/* 0: the kernel refuses the send with EPERM. */
	return !(ref->cfg.flags & KP_F_DENY_UNSTEERED);
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

SEC("cgroup/sendmsg4")
int kp_sendmsg4(struct bpf_sock_addr *ctx)
{
	return on_sendmsg(ctx);
}

SEC("cgroup/sendmsg6")
int kp_sendmsg6(struct bpf_sock_addr *ctx)
{
	return on_sendmsg(ctx);
}

/*
 * A closed TCP connection keeps its 4-tuple in FIN_WAIT/LAST_ACK for a while, and the kernel
 * refuses to connect() from a port whose 4-tuple is still a full socket (EADDRNOTAVAIL, after
 * our bpf_bind(), too late to pick another port). So a port used by a TCP connection is only
 * freed once the application has closed it *and* the socket has reached CLOSE (sockops state
 * callback); what may remain then is TIME_WAIT, which a bound connect() may reuse. Each event
 * sets its flag with one atomic OR and reads the other's in the old value, so exactly the later
 * of the two frees the port and the claim.
 */
SEC("cgroup/sock_release")
int kp_sock_release(struct bpf_sock *sk)
{
	struct kp_claim *entry, *claim;
	__u64 cookie;
	__u32 old;

	if (!ported_protocol(sk->protocol))
		return 1;
	cookie = bpf_get_socket_cookie(sk);
	entry = claim_entry(cookie);
	if (!entry)
		return 1;
	claim = find_claim(entry, &cookie);
	if (!claim)
		return 1;
	old = __sync_fetch_and_or(&claim->flags, KP_CL_RELEASED);
	if ((old & KP_CL_CONNECTING) && !(old & KP_CL_CLOSED))
		return 1; /* the state callback frees it */
	free_claim(entry, claim, &cookie, old);
	return 1;
}

SEC("sockops")
int kp_sockops(struct bpf_sock_ops *skops)
{
	struct kp_claim *entry, *claim;
	__u64 cookie;
	__u32 op = skops->op, old;

	/* Called for a dozen events per connection; only two matter. */
	if (op != BPF_SOCK_OPS_TCP_CONNECT_CB &&
	    (op != BPF_SOCK_OPS_STATE_CB || skops->args[1] != BPF_TCP_CLOSE))
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	entry = claim_entry(cookie);
	if (!entry)
		return 1;
	claim = find_claim(entry, &cookie);
	if (!claim)
		return 1;
	if (op == BPF_SOCK_OPS_TCP_CONNECT_CB) {
		/* A socket may connect again after an earlier connection reached CLOSE. */
		__sync_fetch_and_and(&claim->flags, ~KP_CL_CLOSED);
		__sync_fetch_and_or(&claim->flags, KP_CL_CONNECTING);
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		return 1;
	}
	old = __sync_fetch_and_or(&claim->flags, KP_CL_CLOSED);
	if (old & KP_CL_RELEASED)
		free_claim(entry, claim, &cookie, old | KP_CL_BOUND);
	return 1;
}
