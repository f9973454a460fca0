//! Calling the node's CNI plugins for a pod, as containerd and CRI-O do through libcni:
//! [`config`] picks the network list from the conf dir, [`exec`] runs one plugin binary,
//! [`ops`] chains them for ADD, CHECK and DEL, and [`result`] reads what they answer.
//!
//! Everything here is blocking: a pod's calls run on a thread of their own, so pods being
//! set up at the same time never wait for each other (the plugins do their own locking,
//! e.g. host-local's per-network lock), except the few that race on shared iptables chains,
//! which [`host_lock`] serialises node-wide.

pub mod config;
mod error;
pub mod exec;
mod host_lock;
pub mod ops;
pub mod result;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use config::{NetworkList, PluginConf, load_dir};
pub use error::CniError;
pub use ops::{add, check, del};
pub use result::CniResult;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        })
    }
}

/// Where plugins are and how long one call may take.
#[derive(Debug, Clone)]
pub struct Plugins {
    /// Searched in order for a plugin's binary; also passed as `CNI_PATH` (plugins call
    /// other plugins, e.g. bridge calls its IPAM plugin).
    pub bin_dirs: Vec<PathBuf>,
    /// Per plugin call; a plugin still running then is killed.
    pub timeout: Duration,
}

/// The pod a call is about.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    /// `CNI_CONTAINERID`: kraal passes the sandbox id (containerd does the same).
    pub container_id: &'a str,
    /// `CNI_NETNS`; None for a DEL whose namespace is already gone (the spec lets plugins
    /// clean up what they can without it).
    pub netns: Option<&'a Path>,
    /// `CNI_IFNAME`, `eth0` for pods.
    pub ifname: &'a str,
    /// `CNI_ARGS` pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: Vec<(String, String)>,
    pub runtime_config: RuntimeConfig,
}

/// Runtime values passed as `runtimeConfig` to plugins that declare the capability. Bandwidth
/// is deliberately absent: kraal shapes pods itself, and the bandwidth plugin would shape
/// them a second time.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// `portMappings` (portmap).
    pub port_mappings: Vec<PortMapping>,
    /// `ipRanges` (host-local): the node's pod CIDR from kubelet.
    pub ip_ranges: Vec<Vec<IpRange>>,
}

/// One hostPort, in the portmap plugin's form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpRange {
    pub subnet: String,
}
