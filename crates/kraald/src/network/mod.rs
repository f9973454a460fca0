//! A pod's network through the node's CNI plugins (kraal-net's `cni`): ADD when the pod's
//! network namespace is pinned, DEL when the pod stops (and again, harmlessly, on Remove and
//! on the undo of a failed start), CHECK when a restarted kraald re-adopts its pods.
//!
//! No lock is taken here: each pod's calls run on the thread of its own RunPodSandbox or
//! StopPodSandbox, so pods start side by side; the plugins serialise what they share.

mod pod_cidr;
mod ready;
mod udev_link;

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use kraal_net::cni::{self, CniError, NetworkList};
use tonic::Status;

pub use pod_cidr::PodCidr;
pub use ready::network_condition;
pub use udev_link::ensure as ensure_udev_link;

use crate::runtime::Runtime;
use crate::state::{PodNetwork, PortMappingRecord, SandboxRecord};

/// The pod's interface, as kubelet and every CNI runtime name it.
const IFNAME: &str = "eth0";

fn plugins(runtime: &Runtime) -> cni::Plugins {
    cni::Plugins {
        bin_dirs: runtime.config.cni.bin_dirs.clone(),
        timeout: runtime.config.cni.timeout(),
    }
}

/// CRI protocols are an enum; the portmap plugin wants their names.
fn protocol_name(protocol: i32) -> &'static str {
    match protocol {
        1 => "udp",
        2 => "sctp",
        _ => "tcp",
    }
}

/// The sandbox config's hostPorts (a mapping without a host port is only informational).
pub fn port_mappings(config: &cri::PodSandboxConfig) -> Vec<PortMappingRecord> {
    config
        .port_mappings
        .iter()
        .filter_map(|m| {
            Some(PortMappingRecord {
                host_port: u16::try_from(m.host_port).ok().filter(|p| *p > 0)?,
                container_port: u16::try_from(m.container_port).ok().filter(|p| *p > 0)?,
                protocol: protocol_name(m.protocol).to_string(),
                host_ip: m.host_ip.clone(),
            })
        })
        .collect()
}

/// Everything the plugins are told about the pod, owned so the record can change meanwhile.
struct PodArgs {
    id: String,
    netns: Option<std::path::PathBuf>,
    args: Vec<(String, String)>,
    runtime_config: cni::RuntimeConfig,
}

impl PodArgs {
    fn new(runtime: &Runtime, record: &SandboxRecord, net: &PodNetwork) -> PodArgs {
        // A namespace file already gone (a crash between unpinning and saving the record):
        // DEL then runs without one, which plugins accept.
        let netns = record.net_ns.clone().filter(|p| p.exists());
        PodArgs {
            id: record.id.clone(),
            netns,
            // What kubelet's pods are known by in CNI_ARGS (containerd passes the same keys).
            args: vec![
                ("K8S_POD_NAMESPACE".into(), record.namespace.clone()),
                ("K8S_POD_NAME".into(), record.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), record.id.clone()),
                ("K8S_POD_UID".into(), record.uid.clone()),
            ],
            runtime_config: cni::RuntimeConfig {
                port_mappings: net
                    .port_mappings
                    .iter()
                    .map(|m| cni::PortMapping {
                        host_port: m.host_port,
                        container_port: m.container_port,
                        protocol: m.protocol.clone(),
                        host_ip: m.host_ip.clone(),
                    })
                    .collect(),
                ip_ranges: runtime.pod_cidr.ip_ranges(),
            },
        }
    }

    fn attachment<'a>(&'a self, ifname: &'a str) -> cni::Attachment<'a> {
        cni::Attachment {
            container_id: &self.id,
            netns: self.netns.as_deref(),
            ifname,
            args: self.args.clone(),
            runtime_config: self.runtime_config.clone(),
        }
    }
}

/// A CNI failure as the gRPC status of `call`: the node's CNI setup being unusable is a
/// precondition; a plugin that hung is a deadline; anything else a plugin said is internal.
/// The message is the plugin's own, with its name.
pub fn cni_status(call: &str, err: &CniError) -> Status {
    let message = format!("{call}: pod network: {err}");
    if err.is_setup() {
        Status::failed_precondition(message)
    } else if err.is_timeout() {
        Status::deadline_exceeded(message)
    } else {
        Status::internal(message)
    }
}

/// Gives a new pod with its own network namespace its network (CNI ADD). `record.network` is
/// set before the plugins run, so a failure part-way is undone by [`teardown`] like any other
/// step of RunPodSandbox.
pub fn setup(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    port_mappings: Vec<PortMappingRecord>,
) -> Result<(), Status> {
    const CALL: &str = "RunPodSandbox";
    if record.host_network || !runtime.config.cni.enabled || record.net_ns.is_none() {
        return Ok(());
    }
    let list = cni::load_dir(&runtime.config.cni.conf_dir).map_err(|e| cni_status(CALL, &e))?;
    let net = PodNetwork {
        name: list.name.clone(),
        config: list.to_value(),
        ifname: IFNAME.to_string(),
        result: None,
        ips: Vec::new(),
        host_interface: None,
        port_mappings,
    };
    let args = PodArgs::new(runtime, record, &net);
    record.network = Some(net);
    let (raw, result) = cni::add(&plugins(runtime), &list, &args.attachment(IFNAME))
        .map_err(|e| cni_status(CALL, &e))?;
    let ips: Vec<String> = result
        .pod_ips(IFNAME)
        .iter()
        .map(|ip| ip.to_string())
        .collect();
    let host_interface = result.host_interface();
    tracing::info!(sandbox = %record.id, network = %list.name, ?ips, host_interface = ?host_interface, "pod network added");
    if let Some(net) = record.network.as_mut() {
        net.result = Some(raw);
        net.ips = ips;
        net.host_interface = host_interface;
    }
    // A shaped pod's forwarded packets are classified by the interface they arrive on.
    if let Some(host_ifname) = record
        .network
        .as_ref()
        .and_then(|n| n.host_interface.clone())
    {
        let addresses: Vec<std::net::IpAddr> = result.pod_ips(IFNAME);
        crate::bandwidth::pod_interface(runtime, record, &host_ifname, &addresses)?;
    }
    Ok(())
}

/// Takes the pod's network down (CNI DEL with the list and result its ADD used). Nothing to do
/// for a pod without one; safe to repeat. The caller clears `record.network` once this
/// succeeded.
pub fn teardown(runtime: &Runtime, record: &SandboxRecord) -> Result<(), String> {
    let Some(net) = &record.network else {
        return Ok(());
    };
    let list = NetworkList::from_value(net.config.clone(), "kraal's sandbox record")
        .map_err(|e| format!("pod network {:?}: {e}", net.name))?;
    let args = PodArgs::new(runtime, record, net);
    cni::del(
        &plugins(runtime),
        &list,
        &args.attachment(&net.ifname),
        net.result.as_ref(),
    )
    .map_err(|e| format!("pod network: {e}"))?;
    tracing::info!(sandbox = %record.id, network = %net.name, "pod network deleted");
    Ok(())
}

/// After a restart: asks the plugins (CHECK, where the network's version has it) whether each
/// running pod's network is still as ADD left it, and logs what they say. On a thread of its
/// own, so start-up does not wait on plugins.
pub fn check_all(runtime: &Arc<Runtime>) {
    let pods: Vec<SandboxRecord> = runtime
        .state
        .sandboxes()
        .into_iter()
        .filter(|s| s.network.as_ref().is_some_and(|n| n.result.is_some()))
        .collect();
    if pods.is_empty() {
        return;
    }
    let rt = runtime.clone();
    std::thread::spawn(move || {
        for record in pods {
            check_one(&rt, &record);
        }
    });
}

fn check_one(runtime: &Runtime, record: &SandboxRecord) {
    let Some(net) = &record.network else { return };
    let Some(result) = &net.result else { return };
    let list = match NetworkList::from_value(net.config.clone(), "kraal's sandbox record") {
        Ok(list) => list,
        Err(err) => {
            tracing::warn!(sandbox = %record.id, %err, "pod network CHECK skipped");
            return;
        }
    };
    let args = PodArgs::new(runtime, record, net);
    match cni::check(
        &plugins(runtime),
        &list,
        &args.attachment(&net.ifname),
        result,
    ) {
        Ok(true) => {
            tracing::info!(sandbox = %record.id, network = %net.name, "pod network CHECK passed")
        }
        Ok(false) => {
            tracing::debug!(sandbox = %record.id, network = %net.name, version = %list.cni_version, "pod network CHECK not supported by the network's version")
        }
        Err(err) => {
            tracing::warn!(sandbox = %record.id, network = %net.name, %err, "pod network CHECK failed")
        }
    }
}

/// The pod's network for PodSandboxStatus verbose info.
pub fn status_json(record: &SandboxRecord) -> serde_json::Value {
    match &record.network {
        None => serde_json::Value::Null,
        Some(net) => serde_json::json!({
            "name": net.name,
            "interface": net.ifname,
            "ips": net.ips,
            "hostInterface": net.host_interface,
            "portMappings": net.port_mappings.iter().map(|m| serde_json::json!({
                "hostPort": m.host_port, "containerPort": m.container_port,
                "protocol": m.protocol, "hostIP": m.host_ip,
            })).collect::<Vec<_>>(),
            "result": net.result,
        }),
    }
}
