//! `StartContainer`: tell the container's monitor to start it (libcontainer releases the
//! init that CreateContainer left waiting).

use std::sync::Arc;
use std::time::Duration;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use crate::runtime::{Runtime, internal, io_status};
use crate::state::ContainerState;

/// How long libcontainer's start (hooks included) may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn start_container(
    runtime: &Arc<Runtime>,
    request: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, Status> {
    let id = runtime.container_id("StartContainer", &request.container_id)?;
    let _guard = runtime.locks.lock(&id).await;
    let record = runtime
        .state
        .container(&id)
        .ok_or_else(|| Status::not_found(format!("StartContainer: container {id} not found")))?;
    if record.state != ContainerState::Created {
        return Err(Status::failed_precondition(format!(
            "StartContainer: container {id} is {:?}, only a created container can be started",
            record.state
        )));
    }
    crate::policy::refuse_if_frozen(runtime, &record.sandbox_id, "StartContainer")?;
    // Taken before the start: a container that exits at once may have its exit recorded
    // before the reply arrives, and must not look as if it started after it finished.
    let started_at = crate::clock::now_nanos();
    let socket = runtime.layout.control_socket(&id);
    let reply = tokio::task::spawn_blocking(move || {
        kraal_runtime::monitor::client::control(&socket, "start", START_TIMEOUT)
    })
    .await
    .map_err(|e| internal("StartContainer task", e))?;
    if let Err(err) = reply {
        let message = format!("StartContainer: starting container {id} failed: {err}");
        // The container may have exited (or its monitor died) in the meantime: then its real
        // exit is recorded; else the failed start is, as containerd does.
        runtime.record_exit(&id);
        runtime.record_start_failure(&id, &message);
        return Err(Status::failed_precondition(message));
    }
    // One atomic update: if the exit was recorded already (a container that exits at once),
    // it stays Exited; only the start time it lacks is filled in.
    let mut started_now = false;
    let updated = runtime
        .state
        .update_container(&id, |c| {
            if c.state == ContainerState::Created {
                c.state = ContainerState::Running;
                started_now = true;
            }
            if started_now || c.started_at_unix_nanos == 0 {
                c.started_at_unix_nanos = started_at;
            }
        })
        .map_err(|e| io_status("saving the container record", e))?;
    if let Some(c) = updated {
        // Sent even when the exit came first: the event carries the current status (exited),
        // and kubelet learns that the container did start.
        runtime.emit(
            &id,
            &c.sandbox_id,
            cri::ContainerEventType::ContainerStartedEvent,
        );
    }
    if !started_now {
        tracing::info!(container = %id, "container started and had already exited");
    }
    tracing::info!(container = %id, "container started");
    Ok(cri::StartContainerResponse {})
}
