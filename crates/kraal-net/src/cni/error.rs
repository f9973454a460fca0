//! What can go wrong talking to CNI: no usable network config, a plugin that is missing,
//! fails, hangs or answers nonsense. Every variant names the plugin and the command, because
//! that is what a person reading kubelet's events needs to find the culprit.

use std::path::PathBuf;
use std::time::Duration;

use super::Command;

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The conf dir holds no file kraal could use; `why` lists what was wrong with each.
    #[error("no valid CNI network config in {dir}: {why}")]
    NoConfig { dir: PathBuf, why: String },
    /// One config file (or a stored config) is not a usable network list.
    #[error("CNI config {origin}: {reason}")]
    InvalidConfig { origin: String, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs}", dirs = display_dirs(.dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("CNI plugin {plugin:?} ({command} in network {network:?}): starting {path}: {source}")]
    Spawn {
        plugin: String,
        command: Command,
        network: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The plugin exited non-zero; `msg`/`details`/`code` are its own JSON error when it wrote
    /// one, otherwise what it printed.
    #[error("CNI plugin {plugin:?} ({command} in network {network:?}) failed: {message}")]
    Plugin {
        plugin: String,
        command: Command,
        network: String,
        code: Option<u32>,
        message: String,
    },
    #[error(
        "CNI plugin {plugin:?} ({command} in network {network:?}) did not finish within {timeout:?} and was killed"
    )]
    Timeout {
        plugin: String,
        command: Command,
        network: String,
        timeout: Duration,
    },
    #[error(
        "CNI plugin {plugin:?} ({command} in network {network:?}): unreadable result: {reason}"
    )]
    BadResult {
        plugin: String,
        command: Command,
        network: String,
        reason: String,
    },
    /// The node-wide lock around plugins that race on shared iptables chains (see
    /// `host_lock`) could not be taken.
    #[error("taking the CNI lock {path}: {source}")]
    HostLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Several DEL calls failed; every plugin was still asked (see `ops::del`).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CniError>),
}

impl CniError {
    /// True for a plugin that was killed for taking too long.
    pub fn is_timeout(&self) -> bool {
        match self {
            CniError::Timeout { .. } => true,
            CniError::Several(all) => all.iter().any(CniError::is_timeout),
            _ => false,
        }
    }

    /// True when the cause is the node's CNI setup (config or binaries), not a plugin run.
    pub fn is_setup(&self) -> bool {
        matches!(
            self,
            CniError::NoConfig { .. }
                | CniError::InvalidConfig { .. }
                | CniError::PluginNotFound { .. }
        )
    }
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    shown.join(", ")
}
