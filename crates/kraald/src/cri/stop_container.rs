//! `StopContainer`: the stop signal (SIGTERM unless the image says otherwise), then SIGKILL
//! once the timeout has passed. Stopping a stopped or unknown container is fine.

use std::sync::Arc;
use std::time::Duration;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use crate::runtime::{Runtime, TrackedProcess, internal, parse_signal};
use crate::state::ContainerState;

/// How long to wait for the exit to be recorded after SIGKILL before giving up.
const KILL_WAIT: Duration = Duration::from_secs(10);

pub async fn stop_container(
    runtime: &Arc<Runtime>,
    request: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, Status> {
    let Some(id) = runtime.state.resolve_container(&request.container_id) else {
        return Ok(cri::StopContainerResponse {});
    };
    let _guard = runtime.locks.lock(&id).await;
    let rt = runtime.clone();
    let timeout = request.timeout.max(0);
    tokio::task::spawn_blocking(move || stop_container_blocking(&rt, &id, timeout))
        .await
        .map_err(|e| internal("StopContainer task", e))??;
    Ok(cri::StopContainerResponse {})
}

pub fn stop_container_blocking(
    runtime: &Arc<Runtime>,
    id: &str,
    timeout_secs: i64,
) -> Result<(), Status> {
    let Some(record) = runtime.state.container(id) else {
        return Ok(());
    };
    if !record.state.is_live() {
        return Ok(());
    }
    let init = TrackedProcess {
        pid: record.pid,
        start_time: record.pid_start_time,
    };
    let monitor = TrackedProcess {
        pid: record.monitor_pid,
        start_time: record.monitor_start_time,
    };
    if timeout_secs > 0 && record.state == ContainerState::Running {
        let signal = record
            .stop_signal
            .as_deref()
            .and_then(parse_signal)
            .unwrap_or(libc::SIGTERM);
        send(&init, signal, id)?;
        // In a frozen pod the signal waits until the container runs again.
        crate::policy::thaw_for_stop(runtime, &record);
        // The monitor exits right after writing the exit file: its end means the exit is on disk.
        if monitor.wait_exit(Duration::from_secs(timeout_secs as u64)) {
            runtime.record_exit(id);
            return Ok(());
        }
        tracing::info!(container = %id, timeout_secs, "stop signal ignored; sending SIGKILL");
    }
    send(&init, libc::SIGKILL, id)?;
    crate::policy::thaw_for_stop(runtime, &record);
    if !monitor.wait_exit(KILL_WAIT) {
        return Err(Status::deadline_exceeded(format!(
            "StopContainer: container {id} did not exit within {KILL_WAIT:?} of SIGKILL"
        )));
    }
    runtime.record_exit(id);
    Ok(())
}

fn send(process: &TrackedProcess, signal: i32, id: &str) -> Result<(), Status> {
    process.signal(signal).map(|_| ()).map_err(|e| {
        Status::internal(format!(
            "StopContainer: signalling container {id} (pid {}): {e}",
            process.pid
        ))
    })
}
