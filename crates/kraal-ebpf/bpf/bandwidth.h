/* Layouts shared between bandwidth.bpf.c and src/bandwidth.rs. Keep both in sync. */
#ifndef KRAAL_BANDWIDTH_H
#define KRAAL_BANDWIDTH_H

#define KB_EGRESS 0
#define KB_INGRESS 1

#define KB_F_POLICE_INGRESS 1u /* drop ingress above police_rate (fallback without IFB) */

/* Per-attachment: which pod this attachment belongs to (cgroup storage). */
struct kb_podref {
	__u64 pod_id;
};

/* Per-pod settings, written only by userspace (hash map keyed by pod id = cgroup id). */
struct kb_pod {
	__u32 egress_class;  /* HTB class major:minor put in skb->priority; 0: leave it */
	__u32 ingress_class; /* class of the node's ingress (IFB) hierarchy; 0: unclassified */
	__u32 flags;
	__u32 pad;
	__u64 police_rate;   /* bytes per second, with KB_F_POLICE_INGRESS */
	__u64 police_burst;  /* bytes */
};

/* The host-side interface of a pod with its own netns (hash map keyed by ifindex). */
struct kb_dev {
	__u64 pod_id;
	__u32 egress_class;
	__u32 ingress_class;
};

/* Per-pod counters, per CPU; index KB_EGRESS / KB_INGRESS. */
/* A pod address, IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d). */
struct kb_addr {
	__u8 addr[16];
};

struct kb_stats {
	__u64 bytes[2];
	__u64 packets[2];
	__u64 dropped_bytes[2];
	__u64 dropped_packets[2];
};

/* Ingress policing state of a pod (hash map keyed by pod id). */
struct kb_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tokens;  /* bytes */
	__u64 last_ns;
};

/* Per-socket: the pod whose cgroup programs saw the socket's packets (socket storage). */
struct kb_sock {
	__u64 pod_id;
};

#endif
