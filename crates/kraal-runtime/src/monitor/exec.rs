//! `kraal-monitor exec`: the exec helper of ExecSync and the streaming Exec. Runs one
//! process in a running container on this helper's own stdin/stdout/stderr (kraald passes
//! pipes, or a pty's slave that the process then takes as its controlling terminal), waits
//! for it with an optional timeout, and writes the result file.
//!
//! Diagnostics go to stderr only when the helper fails (exit 1); once the process runs,
//! stderr belongs to it.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};

use super::config::{ExecConfig, ExecResult, write_json};
use super::create::exit_code_of;
use super::exec_executor::ExecExecutor;
use super::{libcontainer_error, sys};

/// Entry point of `kraal-monitor exec --config <path>`.
pub(crate) fn run(config_path: &Path) -> i32 {
    match exec(config_path) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kraal-monitor exec: {e}");
            1
        }
    }
}

fn exec(config_path: &Path) -> Result<(), String> {
    let cfg = ExecConfig::load(config_path).map_err(|e| e.to_string())?;
    // Children must start with default signal dispositions and an empty mask.
    sys::reset_signals_for_children().map_err(|e| format!("resetting signals: {e}"))?;

    let dir = cfg.libcontainer_root.join(&cfg.id);
    if !dir.join("state.json").exists() {
        return Err(format!(
            "container {:?} not found in {}",
            cfg.id,
            cfg.libcontainer_root.display()
        ));
    }
    let container = Container::load(dir)
        .map_err(|e| format!("loading container {:?}: {}", cfg.id, libcontainer_error(&e)))?;
    match container.status() {
        ContainerStatus::Running => {}
        ContainerStatus::Paused => {
            return Err(format!("container {:?} is paused (frozen)", cfg.id));
        }
        other => {
            return Err(format!(
                "container {:?} is not running (status: {other})",
                cfg.id
            ));
        }
    }
    check_process(&cfg.process)?;

    if let Some(unified) = &cfg.unified_cgroup {
        let procs = unified.join("cgroup.procs");
        fs::write(&procs, std::process::id().to_string())
            .map_err(|e| format!("joining the unified cgroup {}: {e}", procs.display()))?;
    }
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;

    let deadline =
        (cfg.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(cfg.timeout_ms));
    let seccomp = container_seccomp(&container)?;
    let pid = ContainerBuilder::new(cfg.id.clone(), SyscallType::Linux)
        .with_root_path(&cfg.libcontainer_root)
        .map(|b| b.with_executor(ExecExecutor::new(seccomp, cfg.terminal)))
        .and_then(|b| {
            b.as_tenant()
                .with_process(Some(&cfg.process))
                .with_detach(false)
                .build()
        })
        .map_err(|e| format!("exec in container {:?}: {}", cfg.id, libcontainer_error(&e)))?;

    // libcontainer speaks nix 0.29; this crate nix 0.30.
    let pid = Pid::from_raw(pid.as_raw());
    let (status, timed_out) = wait_with_deadline(pid, deadline)?;
    reap_others();
    let exit_code = exit_code_of(&status).map(|(code, _)| code).unwrap_or(-1);
    let result = ExecResult {
        exit_code,
        timed_out,
    };
    write_json(&cfg.result_file, &result).map_err(|e| format!("writing the result: {e}"))
}

/// The container's seccomp filter, from its bundle's config.json (never silently dropped:
/// a spec that cannot be read fails the exec).
fn container_seccomp(container: &Container) -> Result<Option<LinuxSeccomp>, String> {
    let path = container.bundle().join("config.json");
    let spec = Spec::load(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(spec.linux().as_ref().and_then(|l| l.seccomp().clone()))
}

/// `terminal` in the process would have libcontainer make a console (through a console
/// socket nobody serves here); a tty exec comes with its terminal on stdio instead.
fn check_process(path: &Path) -> Result<(), String> {
    let data = fs::read(path).map_err(|e| format!("process file {}: {e}", path.display()))?;
    let process: oci_spec::runtime::Process = serde_json::from_slice(&data)
        .map_err(|e| format!("process file {}: {e}", path.display()))?;
    if process.terminal() == Some(true) {
        return Err(
            "the exec process has terminal: true; a tty exec passes its pty on stdio".into(),
        );
    }
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(format!("process file {}: no args", path.display()));
    }
    Ok(())
}

/// Waits for `pid` (our child) until `deadline`; on timeout kills it and what it started.
fn wait_with_deadline(pid: Pid, deadline: Option<Instant>) -> Result<(WaitStatus, bool), String> {
    let pidfd = sys::pidfd_open(pid.as_raw()).map_err(|e| format!("pidfd_open({pid}): {e}"))?;
    let mut timed_out = false;
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    timed_out = true;
                    break;
                }
                ((d - now).as_millis().min(i32::MAX as u128) as i32).max(1)
            }
        };
        let mut fds = [sys::pollin(pidfd.as_raw_fd())];
        match sys::poll(&mut fds, timeout) {
            Ok(0) => {}
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
    }
    if timed_out {
        // Descendants first, so none is orphaned (and re-parented out of reach) before
        // it is killed. `pid` is our unreaped child, so its pid cannot have been reused.
        for child in sys::descendants(pid.as_raw()) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    loop {
        match waitpid(pid, None) {
            Ok(status) if exit_code_of(&status).is_some() => return Ok((status, timed_out)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("waitpid({pid}): {e}")),
        }
    }
}

/// Reaps processes re-parented to this helper (it is a subreaper).
fn reap_others() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
