//! The pod's `/dev/shm`: one tmpfs shared by all of its containers (they share IPC).

use std::fs;
use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

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

/// Lazily unmounts `target` if it is a mount point; a path that is not mounted (or gone) is
/// fine, so teardown can run any number of times.
pub fn unmount(target: &Path) -> Result<(), SandboxError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(SandboxError::io("unmounting", target, io::Error::from(e))),
    }
}
