//! `StopPodSandbox`: kill every container of the pod, release its network and infra process,
//! and mark it NotReady. Unknown ids and stopped pods are fine (kubelet retries).

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use super::sandbox_teardown::stop_sandbox_parts;
use super::stop_container::stop_container_blocking;
use crate::runtime::{Runtime, internal, io_status};
use crate::state::SandboxState;

pub async fn stop_pod_sandbox(
    runtime: &Arc<Runtime>,
    request: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, Status> {
    let Some(id) = runtime.state.resolve_sandbox(&request.pod_sandbox_id) else {
        return Ok(cri::StopPodSandboxResponse {});
    };
    let _guard = runtime.locks.lock(&id).await;
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || stop_blocking(&rt, &id))
        .await
        .map_err(|e| internal("StopPodSandbox task", e))??;
    Ok(cri::StopPodSandboxResponse {})
}

pub fn stop_blocking(runtime: &Arc<Runtime>, id: &str) -> Result<(), Status> {
    let Some(record) = runtime.state.sandbox(id) else {
        return Ok(());
    };
    for container in runtime.state.containers_of(id) {
        // containerd stops a pod's containers without a grace period: kubelet has already
        // given each its own before it stops the sandbox.
        stop_container_blocking(runtime, &container.id, 0)?;
    }
    stop_sandbox_parts(runtime, &record, true)
        .map_err(|e| Status::internal(format!("StopPodSandbox {id}: {e}")))?;
    runtime
        .state
        .update_sandbox(id, |s| {
            s.state = SandboxState::NotReady;
            s.net_ns = None;
            s.network = None;
            s.infra = None;
            // Every container was thawed to stop; nothing is left frozen.
            s.frozen = false;
        })
        .map_err(|e| io_status("saving the sandbox record", e))?;
    tracing::info!(sandbox = %id, "pod sandbox stopped");
    Ok(())
}
