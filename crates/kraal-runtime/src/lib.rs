//! Sandboxes and containers: the OCI spec built from a CRI request, the per-container
//! monitor process that runs libcontainer, and the CRI log format.

pub mod fsutil;
pub mod log;
pub mod monitor;
pub mod rootfs;
pub mod sandbox;
pub mod spec;
