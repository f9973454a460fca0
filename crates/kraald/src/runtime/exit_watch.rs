//! Noticing that a container exited: each running container's monitor is watched through a
//! pidfd; when the monitor exits (it writes the exit file first), the record is updated and
//! a STOPPED event goes out.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Runtime, TrackedProcess};
use crate::state::{ContainerRecord, ContainerState};
use kraal_runtime::monitor::{ExitStatus, MonitorError};

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

/// Records the exit of a container whose monitor is gone, from the exit file the monitor
/// left. A monitor that died without one (killed) leaves the container's fate unknown:
/// reported as exit 255, reason Unknown.
///
/// Safe to call any number of times, from anywhere (the watcher, StopContainer,
/// StartContainer, recovery): while the monitor still runs the exit is not final and nothing
/// is recorded (the watcher records it when the monitor ends); the first call after records
/// it and sends the one STOPPED event; later calls find it recorded. The check and the change
/// are one atomic update of the record, so no other writer can slip in between.
pub fn record_exit(runtime: &Runtime, id: &str) {
    let Some(record) = runtime.state.container(id) else {
        return;
    };
    if !record.state.is_live() {
        return;
    }
    let monitor = TrackedProcess {
        pid: record.monitor_pid,
        start_time: record.monitor_start_time,
    };
    if monitor.is_alive() {
        tracing::debug!(container = %id, "monitor still running: the exit is not final yet");
        return;
    }
    // The monitor writes the exit file before it exits, so what is read now is final.
    let exit = kraal_runtime::monitor::read_exit_file(&runtime.layout.exit_file(id));
    let oom_killed = runtime
        .cgroups
        .oom_kills(&record.cgroups_path)
        .map(|n| n > 0)
        .unwrap_or(false);
    let mut recorded_now = false;
    let updated = runtime.state.update_container(id, |c| {
        if !c.state.is_live() {
            return; // another caller recorded it first
        }
        recorded_now = true;
        set_exit(c, &exit, oom_killed);
    });
    match updated {
        Ok(Some(c)) if recorded_now => {
            tracing::info!(container = %id, exit_code = c.exit_code, reason = %c.reason, "container exited");
            runtime.emit(
                id,
                &c.sandbox_id,
                cri::ContainerEventType::ContainerStoppedEvent,
            );
        }
        Ok(_) => {}
        Err(err) => tracing::error!(container = %id, %err, "cannot save the container's exit"),
    }
}

/// What containerd reports for a container whose start failed.
const START_ERROR_CODE: i32 = 128;

/// Records that starting the container failed, unless its exit was recorded already: exit
/// 128, reason StartError, as containerd reports it, so kubelet restarts it by its policy.
pub fn record_start_failure(runtime: &Runtime, id: &str, message: &str) {
    let mut recorded_now = false;
    let updated = runtime.state.update_container(id, |c| {
        if !c.state.is_live() {
            return;
        }
        recorded_now = true;
        c.state = ContainerState::Exited;
        c.exit_code = START_ERROR_CODE;
        c.reason = "StartError".into();
        c.message = message.to_string();
        c.finished_at_unix_nanos = crate::clock::now_nanos();
    });
    match updated {
        Ok(Some(c)) if recorded_now => {
            tracing::warn!(container = %id, "{message}");
            runtime.emit(
                id,
                &c.sandbox_id,
                cri::ContainerEventType::ContainerStoppedEvent,
            );
        }
        Ok(_) => {}
        Err(err) => tracing::error!(container = %id, %err, "cannot save the failed start"),
    }
}

fn set_exit(
    c: &mut ContainerRecord,
    exit: &Result<Option<ExitStatus>, MonitorError>,
    oom_killed: bool,
) {
    match exit {
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
            c.message = match exit {
                Err(err) => format!("cannot read the container's exit status: {err}"),
                _ => "the container's monitor exited without recording an exit status".into(),
            };
        }
    }
    c.state = ContainerState::Exited;
}
