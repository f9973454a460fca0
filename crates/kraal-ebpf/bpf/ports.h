/* Layouts shared between the BPF programs and src/abi.rs. Keep both in sync. */
#ifndef KRAAL_PORTS_H
#define KRAAL_PORTS_H

/* Spans per list: enough for "a block plus a few fixed ports"; bounds every loop. */
#define KP_MAX_SPANS 16
/* One bit per port number: 65536 bits. */
#define KP_HELD_WORDS 1024

#define KP_F_BIND 1u    /* the pod has a bind list: explicit binds are checked, bind(0) steered */
#define KP_F_CONNECT 2u /* the pod has a connect list: connect() autobind is steered */
#define KP_F_RANDOM 4u  /* benchmark baseline: random choice, no tracking, no retry */

enum kp_counter {
	KP_C_BIND_ALLOWED = 0, /* explicit bind inside the bind list */
	KP_C_BIND_DENIED,      /* explicit bind outside the bind list */
	KP_C_EPHEMERAL,        /* ports handed out for bind(0) and connect() */
	KP_C_FAILED,           /* a handed-out port turned out taken, or post_bind saw a stray port */
	KP_C_EXHAUSTED,        /* no free port left in the list */
	KP_C_COUNT = 8,
};

struct kp_span {
	__u16 lo;
	__u16 hi;
};

/* Per-pod ranges, written only by userspace (hash map keyed by pod id). */
struct kp_cfg {
	__u32 flags;
	__u16 n_bind;
	__u16 n_conn;
	__u32 bind_total; /* ports in the bind list */
	__u32 conn_total;
	struct kp_span bind[KP_MAX_SPANS];
	struct kp_span conn[KP_MAX_SPANS];
};

/* Per-pod allocator state, written by the programs (hash map keyed by pod id). */
struct kp_state {
	__u32 cursor[2]; /* next port to consider: [0] bind list, [1] connect list */
	__u64 counters[KP_C_COUNT];
	__u64 held[KP_HELD_WORDS]; /* ports held by the pod's own sockets */
};

/* Per-attachment: which pod this attachment belongs to (cgroup storage). */
struct kp_podref {
	__u64 pod_id;
};

/* Per-socket: the port this socket holds in its pod's bitmap (socket storage). */
struct kp_claim {
	__u64 pod_id;
	__u32 port;
	__u32 bound;      /* 0 while a handed-out port waits for the bind that uses it */
	__u32 connecting; /* a TCP connect started: the socket outlives close() */
	__u32 closed;     /* the TCP socket reached CLOSE (only TIME_WAIT can remain) */
	__u32 released;   /* the application closed it */
	__u32 pad;
};

#endif
