//! kraald start-up after a restart or a crash: every container in the state dir is
//! re-adopted. Running ones are watched again; ones whose monitor is gone get their exit
//! recorded from the monitor's exit file.

use std::sync::Arc;

use std::time::Duration;

use kraal_runtime::monitor::MonitorState;

use super::{Runtime, TrackedProcess};
use crate::state::ContainerState;

/// How long a live monitor may take to say whether its container was started.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn recover(runtime: &Arc<Runtime>) {
    let containers = runtime.state.containers();
    let mut running = 0;
    let mut exited = 0;
    for c in containers {
        if !c.state.is_live() {
            continue;
        }
        let monitor = TrackedProcess {
            pid: c.monitor_pid,
            start_time: c.monitor_start_time,
        };
        if monitor.is_alive() {
            if c.state == ContainerState::Created {
                adopt_start(runtime, &c.id);
            }
            runtime.watch_exit(&c.id);
            crate::cgroup_driver::check_recovered_scope(runtime, &c.id, &c.cgroups_path);
            running += 1;
        } else {
            runtime.record_exit(&c.id);
            exited += 1;
        }
    }
    for s in runtime.state.sandboxes() {
        crate::cgroup_driver::check_recovered_pod(runtime, &s);
    }
    tracing::info!(
        sandboxes = runtime.state.sandboxes().len(),
        running,
        exited_while_down = exited,
        "re-adopted containers from the state dir"
    );
}

/// A container still Created on disk may have been started by a kraald that stopped before
/// it saved the start: its monitor knows. Marked Running then, so that a second
/// StartContainer is not tried (and failed) on a running container. The start time is
/// unknown; now is the closest kraald can tell.
fn adopt_start(runtime: &Runtime, id: &str) {
    let socket = runtime.layout.control_socket(id);
    let state = kraal_runtime::monitor::client::control(&socket, "state", STATE_TIMEOUT)
        .map_err(|e| e.to_string())
        .and_then(|reply| serde_json::from_str::<MonitorState>(&reply).map_err(|e| e.to_string()));
    match state {
        Ok(state) if state.started => {
            let now = crate::clock::now_nanos();
            let saved = runtime.state.update_container(id, |c| {
                if c.state == ContainerState::Created {
                    c.state = ContainerState::Running;
                    c.started_at_unix_nanos = now;
                }
            });
            match saved {
                Ok(_) => {
                    tracing::info!(container = %id, "started while kraald was down; now running")
                }
                Err(err) => {
                    tracing::error!(container = %id, %err, "cannot save the container's start")
                }
            }
        }
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(container = %id, %err, "cannot ask the monitor whether the container started")
        }
    }
}
