//! kraald start-up after a restart or a crash: every container in the state dir is
//! re-adopted. Running ones are watched again; ones whose monitor is gone get their exit
//! recorded from the monitor's exit file.

use std::sync::Arc;

use super::{Runtime, TrackedProcess};

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
            runtime.watch_exit(&c.id);
            running += 1;
        } else {
            runtime.record_exit(&c.id);
            exited += 1;
        }
    }
    tracing::info!(
        sandboxes = runtime.state.sandboxes().len(),
        running,
        exited_while_down = exited,
        "re-adopted containers from the state dir"
    );
}
