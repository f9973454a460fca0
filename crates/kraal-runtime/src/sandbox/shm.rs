//! The pod's `/dev/shm`: one tmpfs shared by all of its containers (they share IPC).

use std::fs;
use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::SandboxError;

/// 64 MiB, the size Docker, containerd and CRI-O give a pod's /dev/shm.
const SHM_SIZE: &str = "size=65536k,mode=1777";

pub fn mount_shm(target: &Path) -> Result<(), SandboxError> {
    fs::create_dir_all(target).map_err(|e| SandboxError::io("creating", target, e))?;
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SHM_SIZE),
    )
    .map_err(|e| SandboxError::io("mounting tmpfs on", target, e.into()))
}

/// Unmounts the pod's /dev/shm; repeatable.
pub fn unmount(target: &Path) -> Result<(), SandboxError> {
    crate::fsutil::detach_mount(target).map_err(|e| SandboxError::io("unmounting", target, e))
}
