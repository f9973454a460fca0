//! Per-pod local port ranges enforced by eBPF cgroup programs (kraal issue 5), and the
//! classification and counters of per-pod bandwidth ([`BandwidthPrograms`], kraal issue 6;
//! the HTB shaping itself is in kraal-net).
//!
//! One loaded program per hook (`cgroup/bind4|6`, `connect4|6`, `post_bind4|6`,
//! `sock_release`, `sockops`, `sendmsg4|6`) serves every pod; each pod's cgroup2 directory gets
//! a pinned link per hook, a slot in the allocator state and a record keyed by the pod id (the
//! inode number of its cgroup2 directory). See `bpf/ports.bpf.c` for how a program finds its
//! pod, how ports are chosen and why the maps are laid out as they are.
//!
//! For a pod with a bind list: explicit `bind()` outside it fails with `EACCES`, `bind(0)` gets a
//! port of the list the pod does not hold (`EADDRINUSE` when all are held). With a connect
//! list: `connect()` on an unbound socket is bound to such a port first (`EADDRNOTAVAIL` when
//! none is left). Not steerable on this kernel: UDP `sendto()` autobind; such sends are counted
//! and, with [`PodPorts::deny_unsteered`], refused. Not seen: processes outside the pod binding
//! ports inside its lists; kraal hands each pod an exclusive block.

// Library code of a long-running daemon: unwrap/expect only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod abi;
mod bandwidth;
mod error;
mod fs;
mod hooks;
mod pins;
mod ports;
mod programs;
mod sys;

pub use bandwidth::{
    AttachedBandwidthPod, BandwidthCounters, BandwidthHook, BandwidthPrograms, DirectionCounters,
    PodBandwidth, PodInterface, Police,
};
pub use error::{Error, Result};
pub use fs::ensure_bpffs;
pub use hooks::Hook;
pub use pins::remove_unused_pins;
pub use ports::{Allocator, PodPorts};
pub use programs::{AttachedPod, PortPrograms};

/// A pod as the port programs know it: the inode number of its cgroup2 directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId(pub u64);

impl std::fmt::Display for PodId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A pod's counters since it was attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Explicit binds inside the bind list.
    pub binds_allowed: u64,
    /// Explicit binds refused because the port is outside the bind list.
    pub binds_denied: u64,
    /// Ports handed out for `bind(0)` and `connect()`.
    pub ephemeral: u64,
    /// A handed-out port found taken (by something outside the pod), or a bind that slipped
    /// past the bind hook outside the list.
    pub failures: u64,
    /// `bind(0)` or `connect()` refused because every port of the list was held.
    pub exhausted: u64,
    /// UDP sends (`sendto()`/`sendmsg()` with an address) from a socket the kernel autobound
    /// outside the lists, refused if [`PodPorts::deny_unsteered`] is set.
    pub unsteered_udp: u64,
}
