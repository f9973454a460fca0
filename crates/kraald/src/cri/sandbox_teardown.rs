//! Taking a sandbox's node-side parts down, shared by StopPodSandbox, RemovePodSandbox and
//! the undo of a failed RunPodSandbox. Every step tolerates having been done already.

use kraal_runtime::sandbox;

use crate::runtime::{Runtime, TrackedProcess};
use crate::state::SandboxRecord;

/// What StopPodSandbox releases: the infra process, the pod's CNI network and its network
/// namespace (the network is gone once a pod is stopped, as with containerd and CRI-O).
///
/// A failed CNI DEL stops here when `strict` (StopPodSandbox: the namespace stays, so
/// kubelet's retry can DEL with it); otherwise (undoing a failed start) it is logged and the
/// rest still goes, since every plugin was asked already and there is no later retry.
pub fn stop_sandbox_parts(
    runtime: &Runtime,
    record: &SandboxRecord,
    strict: bool,
) -> Result<(), String> {
    if let Some((pid, start_time)) = record.infra {
        let infra = TrackedProcess { pid, start_time };
        infra
            .signal(libc::SIGKILL)
            .map_err(|e| format!("killing the pod's infra process {pid}: {e}"))?;
    }
    if let Err(err) = crate::network::teardown(runtime, record) {
        if strict {
            return Err(err);
        }
        tracing::error!(sandbox = %record.id, %err, "pod network teardown left errors");
    }
    if let Err(err) = crate::bandwidth::forget_interface(runtime, record) {
        tracing::warn!(sandbox = %record.id, %err, "forgetting the pod's interface for bandwidth");
    }
    if let Some(net) = &record.net_ns {
        sandbox::unpin_namespace(net).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Everything else: namespaces, /dev/shm, the pod cgroup, the sandbox dir.
pub fn teardown_sandbox(runtime: &Runtime, record: &SandboxRecord) -> Result<(), String> {
    // RemovePodSandbox stops first (strictly), so a network is left here only when undoing a
    // failed RunPodSandbox.
    stop_sandbox_parts(runtime, record, false)?;
    for ns in [&record.ipc_ns, &record.uts_ns].into_iter().flatten() {
        sandbox::unpin_namespace(ns).map_err(|e| e.to_string())?;
    }
    if let Some(shm) = &record.shm {
        sandbox::unmount(shm).map_err(|e| e.to_string())?;
    }
    crate::ports::detach(runtime, record)?;
    crate::bandwidth::detach(runtime, record)?;
    if record.systemd_slice.is_some() {
        // systemd owns slices: one kraal made is stopped (with anything left in it); one
        // kubelet made is kubelet's to remove, and its directory is not kraal's to rmdir.
        runtime
            .driver
            .remove_pod(record.systemd_slice.as_deref(), record.slice_created)
            .map_err(|e| format!("stopping the pod's systemd slice: {e}"))?;
        return remove_sandbox_dir(runtime, record);
    }
    // The infra process may take a moment to be reaped out of its cgroup.
    let mut last = Ok(());
    for _ in 0..50 {
        last = crate::pod_infra::remove_cgroup(&runtime.cgroups, record)
            .map_err(|e| format!("removing the infra process's cgroup: {e}"))
            .and_then(|()| {
                runtime
                    .cgroups
                    .remove(&record.cgroup_parent)
                    .map_err(|e| format!("removing the pod cgroup: {e}"))
            });
        if last.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    last?;
    remove_sandbox_dir(runtime, record)
}

fn remove_sandbox_dir(runtime: &Runtime, record: &SandboxRecord) -> Result<(), String> {
    let dir = runtime.layout.sandbox_dir(&record.id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}
