//! Noticing that a container exited: each running container's monitor is watched through a
//! pidfd; when the monitor exits (it writes the exit file first), the record is updated and
//! a STOPPED event goes out.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Runtime, TrackedProcess};
use crate::state::ContainerState;

pub fn watch(runtime: Arc<Runtime>, id: String) {
    let Some(record) = runtime.state.container(&id) else {
        return;
    };
    let monitor = TrackedProcess {
        pid: record.monitor_pid,
        start_time: record.monitor_start_time,
    };
    tokio::spawn(async move {
        if let Some(fd) = monitor.pidfd() {
            // SAFETY: the AsyncFd owns the pidfd outright; nothing else closes or reuses it
            // while it is registered.
            match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
                // A pidfd becomes readable when the process exits.
                Ok(fd) => {
                    if let Ok(mut ready) = fd.readable().await {
                        ready.retain_ready();
                    }
                }
                Err(err) => {
                    tracing::warn!(container = %id, %err, "cannot watch the monitor; polling");
                    while monitor.is_alive() {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
        }
        let rt = runtime.clone();
        let id2 = id.clone();
        let _ = tokio::task::spawn_blocking(move || record_exit(&rt, &id2)).await;
    });
}

/// Held while an exit is recorded. The watcher and StopContainer (and StartContainer, and
/// recovery) may all notice the same exit at once; the record's read-check-save is not atomic,
/// so without this two of them both saw "running" and both sent a STOPPED event. Exits are
/// rare and recording one is quick, so one lock for all containers is enough.
static RECORDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reads the exit file the monitor left and records the exit. A monitor that died without
/// one (killed) leaves the container's fate unknown: reported as exit 255, reason Unknown.
pub fn record_exit(runtime: &Runtime, id: &str) {
    let _recording = RECORDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(record) = runtime.state.container(id) else {
        return;
    };
    if matches!(record.state, ContainerState::Exited) {
        return;
    }
    let exit = kraal_runtime::monitor::read_exit_file(&runtime.layout.exit_file(id));
    let oom_killed = runtime
        .cgroups
        .oom_kills(&record.cgroups_path)
        .map(|n| n > 0)
        .unwrap_or(false);
    let updated = runtime.state.update_container(id, |c| {
        match &exit {
            Ok(Some(status)) => {
                c.exit_code = status.exit_code;
                c.finished_at_unix_nanos = status.finished_at_unix_nanos as i64;
                c.reason = if oom_killed {
                    "OOMKilled".into()
                } else if status.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                };
            }
            Ok(None) | Err(_) => {
                c.exit_code = 255;
                c.finished_at_unix_nanos = crate::clock::now_nanos();
                c.reason = "Unknown".into();
                c.message = match &exit {
                    Err(err) => format!("cannot read the container's exit status: {err}"),
                    _ => "the container's monitor exited without recording an exit status".into(),
                };
            }
        }
        c.state = ContainerState::Exited;
    });
    match updated {
        Ok(Some(c)) => {
            tracing::info!(container = %id, exit_code = c.exit_code, reason = %c.reason, "container exited");
            runtime.emit(
                id,
                &c.sandbox_id,
                cri::ContainerEventType::ContainerStoppedEvent,
            );
        }
        Ok(None) => {}
        Err(err) => tracing::error!(container = %id, %err, "cannot save the container's exit"),
    }
}
