//! Seccomp for exec'd processes. libcontainer 0.7's tenant builder rebuilds the process's
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
pub(crate) struct SeccompExecutor {
    seccomp: Option<LinuxSeccomp>,
}

impl SeccompExecutor {
    pub(crate) fn new(seccomp: Option<LinuxSeccomp>) -> Self {
        SeccompExecutor { seccomp }
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
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
