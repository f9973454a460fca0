//! The records kraald keeps per sandbox and container, as written to the state dir.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub created_at_unix_nanos: i64,
    pub state: SandboxState,
    pub runtime_handler: String,
    pub hostname: String,
    pub log_directory: String,
    /// cgroupfs form, e.g. `/kubepods/besteffort/pod<uid>`.
    pub cgroup_parent: String,
    /// With the systemd driver: the pod slice's unit name (`cgroup_parent` is its path).
    #[serde(default)]
    pub systemd_slice: Option<String>,
    /// kraal made that slice (kubelet had not), so kraal stops it with the pod.
    #[serde(default)]
    pub slice_created: bool,
    pub host_network: bool,
    pub host_ipc: bool,
    /// CRI NamespaceMode of the PID namespace: 0 POD, 1 CONTAINER, 2 NODE.
    pub pid_mode: i32,
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    pub shm: Option<PathBuf>,
    pub etc_hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub etc_hostname: PathBuf,
    pub sysctls: BTreeMap<String, String>,
    pub privileged: bool,
    /// The pod's shared-PID infra process, when it has one: (pid, start time).
    pub infra: Option<(i32, u64)>,
    /// The policy annotations in effect once the policy was changed live (admin
    /// UpdatePodPolicy); `None`: the pod's own annotations.
    #[serde(default)]
    pub policy_annotations: Option<BTreeMap<String, String>>,
    /// The pod cgroup's `cpu.shares` before kraal made the pod offline, restored if it is
    /// made online again.
    #[serde(default)]
    pub saved_cpu_shares: Option<u64>,
    /// The cgroup files written for the pod-level policy.
    #[serde(default)]
    pub applied: Vec<AppliedSetting>,
    /// What the pod-level policy could not apply exactly as asked.
    #[serde(default)]
    pub policy_warnings: Vec<String>,
    /// Frozen by the admin API (FreezePod) and not thawed since.
    #[serde(default)]
    pub frozen: bool,
    /// The pod's local port ranges, `auto:` blocks resolved.
    #[serde(default)]
    pub ports: PodPorts,
    /// The pod's bandwidth classes and programs.
    #[serde(default)]
    pub bandwidth: PodBandwidth,
    /// The pod's CNI network while it has one (set before ADD starts, cleared after DEL).
    #[serde(default)]
    pub network: Option<PodNetwork>,
}

/// What kraal keeps of a pod's CNI ADD, so that a DEL — perhaps by a restarted kraald, perhaps
/// after the conf dir changed — undoes exactly what was done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The network's name (the list's `name`).
    pub name: String,
    /// The network list the ADD ran, in conflist form: DEL runs the same plugins.
    pub config: serde_json::Value,
    /// `CNI_IFNAME` inside the pod.
    pub ifname: String,
    /// The final ADD result as the plugins wrote it (DEL's and CHECK's `prevResult`); None
    /// when ADD did not complete.
    pub result: Option<serde_json::Value>,
    /// The pod's addresses, IPv4 first.
    pub ips: Vec<String>,
    /// The node-side end of the pod's link (a veth), when the result names one.
    pub host_interface: Option<String>,
    /// The hostPorts ADD was given, given again to DEL.
    pub port_mappings: Vec<PortMappingRecord>,
}

/// One hostPort as passed to the plugins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMappingRecord {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
}

/// A pod's port ranges as kraal enforces them: lists as written, `auto:<count>` blocks as
/// allocated from the node's pool. `None`: unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPorts {
    pub bind: Option<Vec<(u16, u16)>>,
    pub connect: Option<Vec<(u16, u16)>>,
    /// What the pod's own network namespace got as `net.ipv4.ip_local_port_range`.
    pub netns_range: Option<(u16, u16)>,
    /// The pod's id in the port programs (its cgroup2 inode) while they are attached.
    #[serde(default)]
    pub ebpf_pod: Option<u64>,
}

/// A pod's bandwidth as kraal enforces it: one HTB class per limited direction (the same minor
/// on every device of that direction) and the eBPF programs that put its packets there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodBandwidth {
    pub egress: Option<PodClass>,
    pub ingress: Option<PodClass>,
    /// The pod's id in the bandwidth programs (its cgroup2 inode) while they are attached.
    pub ebpf_pod: Option<u64>,
    /// The host-side interface (ifindex) of a pod with its own netns while its network is
    /// up: what its forwarded packets are classified by.
    #[serde(default)]
    pub interface: Option<u32>,
    /// Its addresses, for pods behind a bridge (their packets arrive on the bridge).
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
}

/// One of a pod's HTB classes: its minor and the rates it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodClass {
    pub minor: u16,
    pub rate_bps: u64,
    pub ceil_bps: u64,
    pub burst_bytes: u64,
    pub prio: u8,
}

/// One file kraal wrote to enforce a pod's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedSetting {
    /// `pod`, or the container's name.
    pub scope: String,
    pub file: PathBuf,
    pub value: String,
    /// The annotation key that asked for it.
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    /// Created or running: the container has processes (or an init waiting to start).
    pub fn is_live(self) -> bool {
        matches!(self, ContainerState::Created | ContainerState::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub selinux_relabel: bool,
    pub propagation: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The image as the request named it, and the image id it resolved to.
    pub image: String,
    pub image_id: String,
    pub created_at_unix_nanos: i64,
    pub started_at_unix_nanos: i64,
    pub finished_at_unix_nanos: i64,
    pub state: ContainerState,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// Full path of the CRI log file; empty when kubelet asked for none.
    pub log_path: String,
    pub mounts: Vec<MountRecord>,
    /// cgroupfs form: `<cgroup_parent>/kraal-<id>`.
    pub cgroups_path: String,
    /// The container's init and its monitor, each as (pid, start time): a pid alone could
    /// be reused by an unrelated process after a restart.
    pub pid: i32,
    pub pid_start_time: u64,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    pub stop_signal: Option<String>,
    pub tty: bool,
    /// The CRI LinuxContainerResources as last applied, protobuf-encoded (for status).
    #[serde(default)]
    pub resources: Vec<u8>,
    /// The cgroup (and oom_score_adj) files written for the pod's policy.
    #[serde(default)]
    pub applied: Vec<AppliedSetting>,
    /// What the policy could not apply exactly as asked.
    #[serde(default)]
    pub policy_warnings: Vec<String>,
}
