//! `ExecSync`: run a command in a running container and return its stdout, stderr and exit
//! code. The exec is done by a short-lived `kraal-monitor exec` (libcontainer forks from its
//! caller; kraald's threads must not be forked), which also enforces the timeout by killing
//! the command.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kraal_api::runtime::v1 as cri;
use tokio::io::AsyncReadExt;
use tonic::Status;

use crate::runtime::{ExecFiles, Runtime, io_status};
use crate::state::ContainerState;

/// kubelet caps exec output at 16 MiB; past that the output is truncated, not buffered.
const MAX_OUTPUT: u64 = 16 * 1024 * 1024;
/// Time the helper gets beyond the command's own timeout to kill it and report.
const HELPER_GRACE: Duration = Duration::from_secs(10);
/// How long output may still arrive after the command exited.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

pub async fn exec_sync(
    runtime: &Arc<Runtime>,
    request: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    let id = runtime.container_id("ExecSync", &request.container_id)?;
    let record = runtime
        .state
        .container(&id)
        .ok_or_else(|| Status::not_found(format!("ExecSync: container {id} not found")))?;
    if record.state != ContainerState::Running {
        return Err(Status::failed_precondition(format!(
            "ExecSync: container {id} is not running ({:?})",
            record.state
        )));
    }
    if request.cmd.is_empty() {
        return Err(Status::invalid_argument("ExecSync: cmd must not be empty"));
    }
    // Joining a frozen cgroup would hang the exec until someone thaws the pod.
    crate::policy::refuse_if_frozen(runtime, &record.sandbox_id, "ExecSync")?;
    let files = ExecFiles::write(
        runtime,
        "ExecSync",
        &record,
        &request.cmd,
        (request.timeout.max(0) as u64) * 1000,
        false,
    )?;

    let mut child = tokio::process::Command::new(&runtime.monitor_bin)
        .arg("exec")
        .arg("--config")
        .arg(&files.config_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            io_status(
                format!("ExecSync: running {}", runtime.monitor_bin.display()),
                e,
            )
        })?;
    let stdout = Captured::spawn(child.stdout.take());
    let stderr = Captured::spawn(child.stderr.take());
    let limit = if request.timeout > 0 {
        Duration::from_secs(request.timeout as u64) + HELPER_GRACE
    } else {
        Duration::from_secs(24 * 3600)
    };
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!("ExecSync: the exec helper for {id} did not finish"))
        })?;
    // The command has exited. A process it left in the background may still hold the
    // pipes open; take what is there after a short grace instead of waiting for it.
    let stdout = stdout.finish().await;
    let stderr = stderr.finish().await;
    let status = status.map_err(|e| io_status("ExecSync: waiting for the exec helper", e))?;
    let Some(result) = files.result() else {
        // The helper failed before running the command; what it said is on its stderr.
        return Err(Status::failed_precondition(format!(
            "ExecSync: exec in container {id} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        )));
    };
    if result.timed_out {
        return Err(Status::deadline_exceeded(format!(
            "ExecSync: command {:?} timed out after {} s and was killed",
            request.cmd, request.timeout
        )));
    }
    Ok(cri::ExecSyncResponse {
        stdout,
        stderr,
        exit_code: result.exit_code,
    })
}

/// One output pipe read into a buffer (at most MAX_OUTPUT bytes kept; the rest drained so
/// the writer never blocks on a full pipe).
struct Captured {
    buffer: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Captured {
    fn spawn<R: tokio::io::AsyncRead + Unpin + Send + 'static>(reader: Option<R>) -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let task = tokio::spawn(async move {
            let Some(mut reader) = reader else { return };
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
                        let room = (MAX_OUTPUT as usize).saturating_sub(out.len());
                        out.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
            }
        });
        Captured { buffer, task }
    }

    async fn finish(self) -> Vec<u8> {
        let mut task = self.task;
        if tokio::time::timeout(DRAIN_GRACE, &mut task).await.is_err() {
            task.abort();
        }
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()))
    }
}
