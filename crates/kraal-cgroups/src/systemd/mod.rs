//! The systemd cgroup driver: pod slices and container scopes made by systemd over D-Bus.
//!
//! With kubelet's systemd driver a pod's cgroup is a slice systemd owns and each container
//! lives in a transient scope, so systemd knows every cgroup on the node and never moves or
//! resets kraal's processes. The pure parts (unit names, slice expansion, kraal's limits as
//! unit properties) are in `names` and `props`; talking to systemd is behind [`Systemd`]
//! so they are tested without a bus, and `dbus` implements it with zbus.

mod dbus;
mod names;
mod props;

use std::path::Path;

pub use dbus::DbusSystemd;
pub use names::{container_scope, default_pod_slice, expand_slice, infra_scope, slice_of_path};
pub use props::{
    CPU_WEIGHT_IDLE, IDLE_WEIGHT_SINCE, INFINITY, Property, Value, cpu_list_mask, major_version,
    quota_per_sec, resource_properties, scope_properties, slice_properties, tasks_max,
};

/// Why a systemd call failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("invalid systemd unit name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// PID 1 is not systemd (no `/run/systemd/system`, the test `sd_booted()` uses).
    #[error(
        "systemd is not running on this node (PID 1 is not systemd: {} does not exist)",
        SYSTEMD_BOOTED
    )]
    NotBooted,

    #[error("connecting to systemd over D-Bus: {0}")]
    Connect(String),

    #[error("systemd {method} {unit}: {reason}")]
    Call {
        method: &'static str,
        unit: String,
        reason: String,
    },

    #[error("systemd unit {unit} did not become {want} within {waited_ms} ms (state: {state})")]
    Timeout {
        unit: String,
        want: &'static str,
        state: String,
        waited_ms: u64,
    },

    /// A limit kraal cannot express as a systemd property.
    #[error("systemd property for {0}")]
    Property(String),
}

/// Exists when systemd is PID 1 (systemd's own `sd_booted()` test).
pub const SYSTEMD_BOOTED: &str = "/run/systemd/system";

/// Whether systemd runs this node.
pub fn booted() -> bool {
    Path::new(SYSTEMD_BOOTED).is_dir()
}

/// The calls kraal makes to systemd's manager.
pub trait Systemd: Send + Sync {
    /// systemd's version string (e.g. `252.38-1~deb12u1`).
    fn version(&self) -> Result<String, SystemdError>;

    /// The unit's ActiveState (`active`, `inactive`, ...), None if systemd has no such unit
    /// loaded.
    fn active_state(&self, unit: &str) -> Result<Option<String>, SystemdError>;

    /// StartTransientUnit, and waits until the unit is active: a scope's process is in
    /// the scope's cgroup, a slice's cgroup exists.
    fn start_transient(&self, unit: &str, props: &[Property]) -> Result<(), SystemdError>;

    /// SetUnitProperties (runtime: gone at reboot, like the unit itself).
    fn set_properties(&self, unit: &str, props: &[Property]) -> Result<(), SystemdError>;

    /// StopUnit, and waits until it is gone; a unit systemd does not know is already
    /// stopped.
    fn stop(&self, unit: &str) -> Result<(), SystemdError>;
}

/// Whether a unit exists and is up (active, activating or reloading).
pub fn is_running(systemd: &dyn Systemd, unit: &str) -> Result<bool, SystemdError> {
    Ok(matches!(
        systemd.active_state(unit)?.as_deref(),
        Some("active" | "activating" | "reloading")
    ))
}
