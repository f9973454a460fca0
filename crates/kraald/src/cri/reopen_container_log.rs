//! `ReopenContainerLog`: kubelet rotated the log file; the monitor reopens it.

use std::sync::Arc;
use std::time::Duration;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use crate::runtime::{Runtime, internal};
use crate::state::ContainerState;

pub async fn reopen_container_log(
    runtime: &Arc<Runtime>,
    request: cri::ReopenContainerLogRequest,
) -> Result<cri::ReopenContainerLogResponse, Status> {
    let id = runtime.container_id("ReopenContainerLog", &request.container_id)?;
    let running = runtime
        .state
        .container(&id)
        .is_some_and(|c| c.state == ContainerState::Running);
    if !running {
        return Err(Status::failed_precondition(format!(
            "ReopenContainerLog: container {id} is not running"
        )));
    }
    let socket = runtime.layout.control_socket(&id);
    tokio::task::spawn_blocking(move || {
        kraal_runtime::monitor::client::control(&socket, "reopen-log", Duration::from_secs(10))
    })
    .await
    .map_err(|e| internal("ReopenContainerLog task", e))?
    .map_err(|e| Status::internal(format!("ReopenContainerLog: container {id}: {e}")))?;
    Ok(cri::ReopenContainerLogResponse {})
}
