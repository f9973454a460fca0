//! Freezing and thawing a pod (admin API), and what the CRI calls do about a frozen pod.
//!
//! Each container's cgroup is frozen, not the pod cgroup: the freezer is recursive within a
//! container either way, and a single container of a frozen pod can then be thawed to stop
//! cleanly (a v1-frozen task cannot even die of SIGKILL until thawed) while the rest stay
//! frozen.

use std::time::Duration;

use kraal_cgroups::CgroupError;
use tonic::Status;

use crate::runtime::{Runtime, io_status};
use crate::state::{ContainerRecord, SandboxRecord, SandboxState};

/// How long a freeze may take to settle when the caller gives no timeout.
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

fn pod_name(record: &SandboxRecord) -> String {
    format!("{}/{}", record.namespace, record.name)
}

fn live(runtime: &Runtime, sandbox_id: &str) -> Vec<ContainerRecord> {
    let mut containers: Vec<_> = runtime
        .state
        .containers_of(sandbox_id)
        .into_iter()
        .filter(|c| c.state.is_live())
        .collect();
    containers.sort_by(|a, b| a.name.cmp(&b.name));
    containers
}

/// Freezes every live container of the pod and waits until all are frozen. Either all are
/// frozen or none is: a container that does not settle in time thaws the others again.
/// Returns the frozen containers' names, and whether the pod was frozen already.
pub fn freeze_pod(
    runtime: &Runtime,
    sandbox_id: &str,
    timeout: Duration,
) -> Result<(Vec<String>, bool), Status> {
    let record = runtime.state.sandbox(sandbox_id).ok_or_else(|| {
        Status::not_found(format!("FreezePod: pod sandbox {sandbox_id} not found"))
    })?;
    if record.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "FreezePod: pod {} is stopped; only a ready pod can be frozen",
            pod_name(&record)
        )));
    }
    let containers = live(runtime, sandbox_id);
    let names = containers.iter().map(|c| c.name.clone()).collect();
    if record.frozen {
        return Ok((names, true));
    }
    let mut done: Vec<&ContainerRecord> = Vec::new();
    for container in &containers {
        if let Err(err) = runtime.cgroups.freeze(&container.cgroups_path, timeout) {
            for frozen in &done {
                if let Err(e) = runtime.cgroups.thaw(&frozen.cgroups_path) {
                    tracing::error!(container = %frozen.id, %e, "thawing after a failed pod freeze");
                }
            }
            let message = format!(
                "FreezePod: pod {}: container {:?}: {err}",
                pod_name(&record),
                container.name
            );
            return Err(match err {
                CgroupError::FreezeTimeout { .. } => Status::deadline_exceeded(message),
                _ => Status::internal(message),
            });
        }
        done.push(container);
    }
    runtime
        .state
        .update_sandbox(sandbox_id, |s| s.frozen = true)
        .map_err(|e| io_status("FreezePod: saving the sandbox record", e))?;
    tracing::info!(sandbox = %sandbox_id, pod = %pod_name(&record), containers = containers.len(), "pod frozen");
    Ok((names, false))
}

/// Thaws every container of the pod. Returns the names of the containers thawed and
/// whether the pod was frozen.
pub fn thaw_pod(runtime: &Runtime, sandbox_id: &str) -> Result<(Vec<String>, bool), Status> {
    let record = runtime
        .state
        .sandbox(sandbox_id)
        .ok_or_else(|| Status::not_found(format!("ThawPod: pod sandbox {sandbox_id} not found")))?;
    let mut names = Vec::new();
    for container in runtime.state.containers_of(sandbox_id) {
        match runtime.cgroups.thaw(&container.cgroups_path) {
            Ok(_) => names.push(container.name.clone()),
            // An exited container's cgroup may be gone already.
            Err(CgroupError::NotFound { .. }) => {}
            Err(err) => {
                return Err(Status::internal(format!(
                    "ThawPod: pod {}: container {:?}: {err}",
                    pod_name(&record),
                    container.name
                )));
            }
        }
    }
    names.sort();
    runtime
        .state
        .update_sandbox(sandbox_id, |s| s.frozen = false)
        .map_err(|e| io_status("ThawPod: saving the sandbox record", e))?;
    if record.frozen {
        tracing::info!(sandbox = %sandbox_id, pod = %pod_name(&record), "pod thawed");
    }
    Ok((names, record.frozen))
}

/// FailedPrecondition when the pod is frozen: an exec would join a frozen cgroup and hang,
/// a start would start a container nobody can run.
pub fn refuse_if_frozen(runtime: &Runtime, sandbox_id: &str, call: &str) -> Result<(), Status> {
    match runtime.state.sandbox(sandbox_id) {
        Some(record) if record.frozen => Err(Status::failed_precondition(format!(
            "{call}: pod {} (sandbox {sandbox_id}) is frozen; thaw it first (kraalctl pod thaw {sandbox_id})",
            pod_name(&record)
        ))),
        _ => Ok(()),
    }
}

/// Lets a container of a frozen pod run again just long enough to act on the stop signal
/// it was sent; the pod's other containers stay frozen.
pub fn thaw_for_stop(runtime: &Runtime, container: &ContainerRecord) {
    let frozen = runtime
        .state
        .sandbox(&container.sandbox_id)
        .is_some_and(|s| s.frozen);
    if !frozen {
        return;
    }
    match runtime.cgroups.thaw(&container.cgroups_path) {
        Ok(_) => {
            tracing::info!(container = %container.id, "thawed a container of a frozen pod to stop it")
        }
        Err(e) => tracing::error!(container = %container.id, %e, "thawing a container to stop it"),
    }
}
