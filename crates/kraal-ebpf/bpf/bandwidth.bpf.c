// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/*
 * Per-pod bandwidth for kraal: classification into HTB classes and per-pod counters.
 *
 * The shaping itself is done by HTB qdiscs kraal sets up (crates/kraal-net): on this kind of
 * machine HTB held a 50 Mbit/s cap with 0 retransmits, where token buckets that drop in eBPF
 * missed it by up to 90% (TCP backs off for ~200 ms after every local drop). These programs
 * only tell HTB which pod a packet belongs to, and count.
 *
 * Egress, pods in the host netns (hostNetwork): the cgroup_skb/egress program puts the pod's
 * class handle (major:minor) in skb->priority; HTB picks a class whose handle equals the
 * priority before running any filter, so no tc filter is involved at all.
 *
 * Egress, pods with their own netns: the priority set in the pod netns does not survive being
 * forwarded out of it (ip_forward() rewrites it from the TOS byte, and crossing netns scrubs
 * the mark), and tc_index is cleared on the way too (measured). What does survive is
 * skb->skb_iif, the host-side interface the packet came in on, which the pod cannot spoof and
 * which source NAT in POSTROUTING does not change. kb_classify_egress, a cls_bpf filter on the
 * uplink's HTB, maps that interface to the pod's class.
 *
 * Ingress: the uplink's ingress is redirected to an IFB whose HTB holds the node's ingress
 * hierarchy; kb_classify_ingress is the filter there. A packet routed on to a pod interface
 * (found with a FIB lookup, so pod addresses need not be tracked) takes that pod's class; a
 * packet for the host itself takes the class of the pod owning the destination socket. tc
 * programs may not ask a socket for its cgroup (bpf_sk_cgroup_id is refused for them, and
 * aya cannot link the kfuncs that would allow walking it), so the pod's cgroup programs tag
 * each socket they see with the pod id in socket storage (cloned to accepted children), and
 * the classifier reads the tag of the socket it looks up. The FIB lookup comes first because a
 * socket lookup also matches wildcard listeners for packets that are only passing through.
 *
 * Finding the pod in the cgroup programs works as in ports.bpf.c: one loaded program for all
 * pods, and each attachment's cgroup-storage slot holds the pod id userspace wrote there.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "bandwidth.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define BPF_F_CURRENT_NETNS_ID (-1L)

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct kb_pod);
} kb_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct kb_dev);
} kb_devs SEC(".maps");

/* Pod addresses, for pods behind a bridge: a bridged packet comes in on the bridge, not on the
 * pod's own interface, so kb_devs cannot name the pod; its address can, as long as nothing
 * rewrote it before the qdisc (source NAT in POSTROUTING would). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct kb_addr);
	__type(value, struct kb_dev);
} kb_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct kb_stats);
} kb_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct kb_bucket);
} kb_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct kb_sock);
} kb_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct kb_podref);
} kb_podrefs SEC(".maps");

static __always_inline __u32 segments(struct __sk_buff *skb)
{
	/* A GSO packet counts as the wire packets it becomes. */
	return skb->gso_segs ? skb->gso_segs : 1;
}

static __always_inline void count(__u64 id, int dir, struct __sk_buff *skb, int dropped)
{
	struct kb_stats *st = bpf_map_lookup_elem(&kb_stats, &id);

	if (!st)
		return;
	dir &= 1;
	/* Per-CPU values: plain adds are enough. */
	if (dropped) {
		st->dropped_bytes[dir] += skb->len;
		st->dropped_packets[dir] += segments(skb);
	} else {
		st->bytes[dir] += skb->len;
		st->packets[dir] += segments(skb);
	}
}

static __always_inline __u64 attached_pod(void)
{
	struct kb_podref *ref = bpf_get_local_storage(&kb_podrefs, 0);

	/* 0: attached but not yet configured; the pod has no processes yet then. */
	return ref->pod_id;
}

/* Remembers on the socket which pod it belongs to, for the ingress classifier. */
static __always_inline void tag_socket(struct __sk_buff *skb, __u64 id)
{
	struct bpf_sock *sk = skb->sk;
	struct kb_sock *tag;

	if (!sk)
		return;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return;
	tag = bpf_sk_storage_get(&kb_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (tag && tag->pod_id != id)
		tag->pod_id = id;
}

SEC("cgroup_skb/egress")
int kb_egress(struct __sk_buff *skb)
{
	__u64 id = attached_pod();
	struct kb_pod *pod;

	if (!id)
		return 1;
	pod = bpf_map_lookup_elem(&kb_pods, &id);
	if (!pod)
		return 1;
	/* Overrides SO_PRIORITY: a pod cannot pick another class. */
	if (pod->egress_class)
		skb->priority = pod->egress_class;
	tag_socket(skb, id);
	count(id, KB_EGRESS, skb, 0);
	return 1;
}

/* Token bucket for the policing fallback; returns 1 if the packet fits. */
static __always_inline int police(__u64 id, struct kb_pod *pod, __u32 len)
{
	struct kb_bucket *b = bpf_map_lookup_elem(&kb_buckets, &id);
	__u64 now = bpf_ktime_get_ns(), elapsed, fill;
	int pass;

	if (!b || !pod->police_rate)
		return 1;
	bpf_spin_lock(&b->lock);
	elapsed = now - b->last_ns;
	/* Cap the idle time so that elapsed * rate cannot overflow (1 s at up to ~18 EB/s). */
	if (elapsed > 1000000000ULL)
		elapsed = 1000000000ULL;
	fill = elapsed * pod->police_rate / 1000000000ULL;
	b->tokens += fill;
	if (b->tokens > pod->police_burst)
		b->tokens = pod->police_burst;
	b->last_ns = now;
	pass = b->tokens >= len;
	if (pass)
		b->tokens -= len;
	bpf_spin_unlock(&b->lock);
	return pass;
}

SEC("cgroup_skb/ingress")
int kb_ingress(struct __sk_buff *skb)
{
	__u64 id = attached_pod();
	struct kb_pod *pod;

	if (!id)
		return 1;
	pod = bpf_map_lookup_elem(&kb_pods, &id);
	if (!pod)
		return 1;
	if ((pod->flags & KB_F_POLICE_INGRESS) && !police(id, pod, skb->len)) {
		count(id, KB_INGRESS, skb, 1);
		return 0;
	}
	tag_socket(skb, id);
	count(id, KB_INGRESS, skb, 0);
	return 1;
}

/* The minor of a class handle: cls_bpf takes the major from the filter's own classid. */
static __always_inline int classify(struct __sk_buff *skb, __u32 handle)
{
	if (!handle)
		return TC_ACT_UNSPEC;
	skb->tc_classid = handle & 0xffff;
	return TC_ACT_OK;
}


struct flow {
	int family;
	__u8 proto;
	struct bpf_sock_tuple tuple;
};

/* Reads addresses and ports relative to the network header, whatever the link layer. */
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	__u32 l4;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes_relative(skb, 0, &ip, sizeof(ip), BPF_HDR_START_NET))
			return 0;
		f->family = AF_INET;
		f->proto = ip.protocol;
		f->tuple.ipv4.saddr = ip.saddr;
		f->tuple.ipv4.daddr = ip.daddr;
		/* Fragments after the first carry no ports. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return 1;
		l4 = ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes_relative(skb, 0, &ip6, sizeof(ip6), BPF_HDR_START_NET))
			return 0;
		f->family = AF_INET6;
		/* Extension headers are not walked: such packets only miss the socket lookup. */
		f->proto = ip6.nexthdr;
		__builtin_memcpy(f->tuple.ipv6.saddr, &ip6.saddr, 16);
		__builtin_memcpy(f->tuple.ipv6.daddr, &ip6.daddr, 16);
		l4 = sizeof(ip6);
	} else {
		return 0;
	}
	if (f->proto == IPPROTO_TCP || f->proto == IPPROTO_UDP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes_relative(skb, l4, ports, sizeof(ports), BPF_HDR_START_NET))
			return 1;
		if (f->family == AF_INET) {
			f->tuple.ipv4.sport = ports[0];
			f->tuple.ipv4.dport = ports[1];
		} else {
			f->tuple.ipv6.sport = ports[0];
			f->tuple.ipv6.dport = ports[1];
		}
	}
	return 1;
}

/* The interface a packet for another host (a pod) will leave by; 0 if it is for this host. */
static __always_inline __u32 route_out(struct __sk_buff *skb, struct flow *f)
{
	struct bpf_fib_lookup fib = {};
	long rc;

	fib.family = f->family;
	fib.l4_protocol = f->proto;
	/* No tot_len: with it the lookup checks it against the MTU, and a GRO packet is far
	 * longer. Only the route matters here. */
	fib.ifindex = skb->ingress_ifindex;
	if (f->family == AF_INET) {
		fib.ipv4_src = f->tuple.ipv4.saddr;
		fib.ipv4_dst = f->tuple.ipv4.daddr;
	} else {
		__builtin_memcpy(fib.ipv6_src, f->tuple.ipv6.saddr, 16);
		__builtin_memcpy(fib.ipv6_dst, f->tuple.ipv6.daddr, 16);
	}
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	/* These still name the interface: the neighbour gets resolved later, and fragmenting is
	 * the forwarding path's business. */
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH ||
	    rc == BPF_FIB_LKUP_RET_FRAG_NEEDED)
		return fib.ifindex;
	return 0;
}

/* The class of the pod owning the local socket the packet is for; 0 if none. */
static __always_inline __u32 socket_class(struct __sk_buff *skb, struct flow *f)
{
	__u32 size = f->family == AF_INET ? sizeof(f->tuple.ipv4) : sizeof(f->tuple.ipv6);
	struct bpf_sock *sk;
	struct kb_sock *tag;
	struct kb_pod *pod = 0;

	if (f->proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(skb, &f->tuple, size, BPF_F_CURRENT_NETNS_ID, 0);
	else if (f->proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, &f->tuple, size, BPF_F_CURRENT_NETNS_ID, 0);
	else
		return 0;
	if (!sk)
		return 0;
	tag = bpf_sk_storage_get(&kb_socks, sk, 0, 0);
	if (tag)
		pod = bpf_map_lookup_elem(&kb_pods, &tag->pod_id);
	bpf_sk_release(sk);
	return pod ? pod->ingress_class : 0;
}

/* The pod owning address `src` (else the destination) of the flow, from kb_addrs. */
static __always_inline struct kb_dev *by_address(struct flow *f, int src)
{
	struct kb_addr key = {};

	if (f->family == AF_INET) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], src ? &f->tuple.ipv4.saddr : &f->tuple.ipv4.daddr, 4);
	} else {
		__builtin_memcpy(key.addr, src ? f->tuple.ipv6.saddr : f->tuple.ipv6.daddr, 16);
	}
	return bpf_map_lookup_elem(&kb_addrs, &key);
}

SEC("classifier")
int kb_classify_egress(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ingress_ifindex;
	struct flow f = {};
	struct kb_dev *dev;

	/* 0 for packets made on this host: the pod's priority already chose, or nobody did. */
	if (!ifindex)
		return TC_ACT_UNSPEC;
	/* Routed pods (ptp-style CNIs): the interface they came in on names them. */
	dev = bpf_map_lookup_elem(&kb_devs, &ifindex);
	if (dev)
		return classify(skb, dev->egress_class);
	/* Bridged pods: they came in on the bridge; their source address names them. */
	if (!parse(skb, &f))
		return TC_ACT_UNSPEC;
	dev = by_address(&f, 1);
	return dev ? classify(skb, dev->egress_class) : TC_ACT_UNSPEC;
}

SEC("classifier")
int kb_classify_ingress(struct __sk_buff *skb)
{
	struct flow f = {};
	struct kb_dev *dev;
	__u32 out;

	if (!parse(skb, &f))
		return TC_ACT_UNSPEC;
	out = route_out(skb, &f);
	if (out) {
		dev = bpf_map_lookup_elem(&kb_devs, &out);
		if (!dev)
			dev = by_address(&f, 0);
		return dev ? classify(skb, dev->ingress_class) : TC_ACT_UNSPEC;
	}
	return classify(skb, socket_class(skb, &f));
}
