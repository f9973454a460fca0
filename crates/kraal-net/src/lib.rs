//! Pod networking on the node.
//!
//! Today: [`shaping`], per-pod bandwidth with HTB (kraal issue 6) — the node's egress hierarchy
//! on each uplink, its ingress hierarchy on an IFB that the uplink's ingress is redirected to,
//! one class per pod and direction. The eBPF programs that put packets into those classes
//! live in kraal-ebpf. [`cni`]: calling the node's CNI plugins for a pod (kraal issue 7).
//!
//! Everything here acts in a network namespace given as a [`Netns`]: the daemon's own for
//! the node's devices, a pinned namespace file for anything inside a pod, or a test's.

// Library code of a long-running daemon: unwrap/expect only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cni;
mod error;
pub mod link;
mod netlink;
mod netns;
pub mod shaping;
mod tc;

pub use error::{Error, Result};
pub use netns::Netns;
