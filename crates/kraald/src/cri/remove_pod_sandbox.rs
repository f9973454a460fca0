//! `RemovePodSandbox`: stop it if needed, remove its containers, then everything the pod
//! had on the node. Unknown ids are fine.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use super::remove_container::remove_container_blocking;
use super::sandbox_teardown::teardown_sandbox;
use super::stop_pod_sandbox::stop_blocking;
use crate::runtime::{Runtime, internal, io_status};

pub async fn remove_pod_sandbox(
    runtime: &Arc<Runtime>,
    request: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, Status> {
    let Some(id) = runtime.state.resolve_sandbox(&request.pod_sandbox_id) else {
        return Ok(cri::RemovePodSandboxResponse {});
    };
    let _guard = runtime.locks.lock(&id).await;
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || -> Result<(), Status> {
        stop_blocking(&rt, &id)?;
        for container in rt.state.containers_of(&id) {
            remove_container_blocking(&rt, &container.id)?;
        }
        let Some(record) = rt.state.sandbox(&id) else {
            return Ok(());
        };
        teardown_sandbox(&rt, &record)
            .map_err(|e| Status::internal(format!("RemovePodSandbox {id}: {e}")))?;
        rt.state
            .delete_sandbox(&id)
            .map_err(|e| io_status("deleting the sandbox record", e))?;
        tracing::info!(sandbox = %id, "pod sandbox removed");
        Ok(())
    })
    .await
    .map_err(|e| internal("RemovePodSandbox task", e))??;
    Ok(cri::RemovePodSandboxResponse {})
}
