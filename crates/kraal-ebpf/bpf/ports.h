/* Layouts shared between the BPF programs and src/abi.rs. Keep both in sync. */
#ifndef KRAAL_PORTS_H
#define KRAAL_PORTS_H

/* Spans per list: enough for "a block plus a few fixed ports"; bounds every loop. */
#define KP_MAX_SPANS 16
/* One bit per port number: 65536 bits. */
#define KP_HELD_WORDS 1024
/* Pods attached at once: slots of kp_pod_states. */
#define KP_MAX_PODS 4096
/* Entries of the direct-mapped claims table (a power of two), indexed by socket cookie. */
#define KP_CLAIM_SLOTS 65536
/* Claims whose entry was taken by another live socket. */
#define KP_MAX_OVERFLOW 8192

#define KP_F_BIND 1u    /* the pod has a bind list: explicit binds are checked, bind(0) steered */
#define KP_F_CONNECT 2u /* the pod has a connect list: connect() autobind is steered */
#define KP_F_RANDOM 4u  /* benchmark baseline: random choice, no tracking, no retry */
#define KP_F_DENY_UNSTEERED 8u /* refuse (EPERM) UDP sends from a socket the kernel autobound */
#define KP_F_COUNT_UNSTEERED 16u /* userspace only: the sendmsg hooks are attached to count them */

enum kp_counter {
	KP_C_BIND_ALLOWED = 0, /* explicit bind inside the bind list */
	KP_C_BIND_DENIED,      /* explicit bind outside the bind list */
	KP_C_EPHEMERAL,        /* ports handed out for bind(0) and connect() */
	KP_C_FAILED,           /* a handed-out port turned out taken, or post_bind saw a stray port */
	KP_C_EXHAUSTED,        /* no free port left in the list */
	KP_C_UNSTEERED,        /* UDP sends from a socket the kernel autobound outside the lists */
	KP_C_COUNT = 8,
};

struct kp_span {
	__u16 lo;
	__u16 hi;
};

/* A pod's lists. */
struct kp_cfg {
	__u32 flags;
	__u16 n_bind;
	__u16 n_conn;
	__u32 bind_total; /* ports in the bind list */
	__u32 conn_total;
	struct kp_span bind[KP_MAX_SPANS];
	struct kp_span conn[KP_MAX_SPANS];
};

/*
 * A pod: its slot in kp_pod_states, the generation of that slot, and its lists. Kept per pod
 * id by userspace (kp_pods) and copied into the cgroup-storage entry of each of its
 * attachments (kp_hook_cfgs), which is where the programs read it.
 */
struct kp_pod {
	__u32 slot;
	__u32 gen; /* 0 in a storage entry: attached, not configured yet */
	struct kp_cfg cfg;
};

/* Per-pod allocator state, written by the programs: kp_pod_states[slot]. */
struct kp_state {
	__u32 gen;       /* the pod that owns the slot; claims of an older generation are dead */
	__u32 cursor[2]; /* next port to consider: [0] bind list, [1] connect list */
	__u32 pad;
	__u64 counters[KP_C_COUNT];
	__u64 held[KP_HELD_WORDS]; /* ports held by the pod's own sockets */
};

/* kp_claim.flags */
#define KP_CL_BOUND 1u      /* the socket is bound to the port (not a hand-out whose bind failed) */
#define KP_CL_CONNECTING 2u /* a TCP connect started: the socket may outlive close() */
#define KP_CL_CLOSED 4u     /* the TCP socket reached CLOSE (only TIME_WAIT can remain) */
#define KP_CL_RELEASED 8u   /* the application closed it */
#define KP_CL_UNLISTED 16u  /* bound outside the lists (no bind list): nothing marked, see on_sendmsg */

/*
 * Per socket that holds a port: kp_sock_claims[cookie % KP_CLAIM_SLOTS], or kp_claims_over
 * keyed by cookie when that entry belongs to another live socket. The owner word is what is
 * compare-and-swapped to take an entry, so that whoever reads it sees a consistent generation,
 * slot and port.
 */
struct kp_claim {
	__u64 cookie; /* the socket's cookie; meaningful while owner is not 0 */
	__u64 owner;  /* 0: free; KP_OWNER_BUSY: being filled; else KP_OWNER(gen, slot, port) */
	__u32 flags;
	__u32 n_over; /* claims in kp_claims_over whose cookie maps to this entry */
};

#define KP_OWNER(gen, slot, port) (((__u64)(gen) << 32) | ((__u64)(slot) << 16) | (port))
#define KP_OWNER_BUSY (~0ULL)
#define KP_OWNER_GEN(o) ((__u32)((o) >> 32))
#define KP_OWNER_SLOT(o) ((__u32)((o) >> 16) & 0xffff)
#define KP_OWNER_PORT(o) ((__u32)(o) & 0xffff)

#endif
