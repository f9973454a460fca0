//! What an exec'd process does last, inside the container, right before it execs the
//! command: take its terminal, and load the container's seccomp filter.
//!
//! **Terminal.** A tty exec's stdio is a pty kraald holds the master of (sized before the
//! command starts). The process makes it its controlling terminal as the leader of a session
//! of its own, as runc's console setup does: ^C then sends SIGINT to the command's
//! foreground process group only, never to the exec helper, SIGWINCH follows resizes, and
//! an interactive shell gets job control.
//!
//! **Seccomp.** libcontainer 0.7's tenant builder rebuilds the process's
//! `linux` section from namespaces and cgroups only, so a process exec'd into a container
//! would run without the container's seccomp filter — an escape from a Localhost or
//! RuntimeDefault profile. This executor loads the container's filter in the exec'd process
//! itself, right before it execs the command.
//!
//! By then libcontainer has dropped the process's capabilities, and loading a filter
//! without CAP_SYS_ADMIN needs no_new_privs: exec'd processes in a filtered container
//! therefore always run with no_new_privs (setuid binaries do not elevate in them). That is
//! the safe side of the trade; the container's own process keeps the spec's setting.

use libcontainer::oci_spec::runtime::{LinuxSeccomp, Spec};
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

#[derive(Clone)]
pub(crate) struct ExecExecutor {
    seccomp: Option<LinuxSeccomp>,
    /// stdin is a terminal to take as the controlling one.
    terminal: bool,
}

impl ExecExecutor {
    pub(crate) fn new(seccomp: Option<LinuxSeccomp>, terminal: bool) -> Self {
        ExecExecutor { seccomp, terminal }
    }
}

/// Leads a new session with stdin as its controlling terminal (the terminal's foreground
/// process group is then this process's).
fn take_terminal() -> Result<(), ExecutorError> {
    let me = nix::unistd::getpid();
    let session = nix::unistd::getsid(None)
        .map_err(|e| ExecutorError::Other(format!("getsid for the exec's terminal: {e}")))?;
    if session != me {
        nix::unistd::setsid().map_err(|e| {
            ExecutorError::Other(format!(
                "setsid for the exec's terminal (pid {me}, pgid {}, sid {session}): {e}",
                nix::unistd::getpgrp()
            ))
        })?;
    }
    // SAFETY: TIOCSCTTY on fd 0 with argument 0 (never steal a terminal another session
    // holds); no memory is passed.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(ExecutorError::Other(format!(
            "making stdin the exec's controlling terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

impl Executor for ExecExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if self.terminal {
            take_terminal()?;
        }
        if let Some(seccomp) = &self.seccomp {
            nix::sys::prctl::set_no_new_privs().map_err(|e| {
                ExecutorError::Other(format!("setting no_new_privs for seccomp: {e}"))
            })?;
            let notify = libcontainer::seccomp::initialize_seccomp(seccomp).map_err(|e| {
                ExecutorError::Other(format!("loading the container's seccomp filter: {e}"))
            })?;
            if notify.is_some() {
                return Err(ExecutorError::Other(
                    "seccomp profiles with SCMP_ACT_NOTIFY are not supported for exec".into(),
                ));
            }
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}
