//! Undoing a container's node-side parts, for a failed CreateContainer and for
//! RemoveContainer. Every step tolerates having been done (or never done).

use crate::runtime::Runtime;

pub fn undo_create(runtime: &Runtime, id: &str, cgroups_path: &str) {
    let layout = &runtime.layout;
    // libcontainer's delete removes the v1 cgroups without reclaiming: their page cache
    // would move to the pod's cgroup and stay charged there. Reclaim it first (this works
    // once the container's processes are gone, which they are after StopContainer).
    if let Err(err) = runtime.cgroups.reclaim(cgroups_path) {
        tracing::debug!(container = %id, %err, "page cache not reclaimed before delete");
    }
    // Gone already when the container's processes exited (systemd stops an empty scope);
    // left when a create failed between placing the container and starting it.
    if let Err(err) = runtime.driver.remove_scope(cgroups_path) {
        tracing::warn!(container = %id, %err, "stopping the container's systemd scope");
    }
    if let Err(err) = kraal_runtime::monitor::client::delete(
        &runtime.monitor_bin,
        &layout.libcontainer_root(),
        id,
    ) {
        tracing::warn!(container = %id, %err, "libcontainer delete");
    }
    if let Err(err) = kraal_runtime::rootfs::unmount_rootfs(&layout.rootfs(id)) {
        tracing::warn!(container = %id, %err, "unmounting the rootfs");
    }
    if let Err(err) = runtime.cgroups.remove(cgroups_path) {
        tracing::warn!(container = %id, %err, "removing the container cgroup");
    }
    // The monitor removes its socket when it exits; one that was killed leaves it.
    let _ = std::fs::remove_file(layout.control_socket(id));
    for dir in [layout.container_dir(id), layout.writable_dir(id)] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(container = %id, %err, dir = %dir.display(), "removing"),
        }
    }
}

/// A failed CreateContainer's log file, which that call created (the caller checked): gone,
/// or kubelet would count the failure as a run of the container (a restart).
pub fn remove_new_log(id: &str, log: &std::path::Path) {
    match std::fs::remove_file(log) {
        Ok(()) => {
            tracing::debug!(container = %id, log = %log.display(), "removed the failed create's log file")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(container = %id, %err, log = %log.display(), "removing the failed create's log file")
        }
    }
}
