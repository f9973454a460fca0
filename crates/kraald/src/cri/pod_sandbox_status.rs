//! `PodSandboxStatus` (and the sandbox half of container events): state, namespaces, and
//! with `verbose` an `info` JSON of where the pod lives on the node.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use super::container_status::container_status_message;
use crate::runtime::Runtime;
use crate::state::{SandboxRecord, SandboxState};

pub fn pod_sandbox_status(
    runtime: &Arc<Runtime>,
    request: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    let record = runtime.sandbox("PodSandboxStatus", &request.pod_sandbox_id)?;
    let mut info = std::collections::HashMap::new();
    if request.verbose {
        info.insert(
            "info".to_string(),
            verbose_info(runtime, &record).to_string(),
        );
    }
    Ok(cri::PodSandboxStatusResponse {
        status: Some(sandbox_status_message(runtime, &record)),
        info,
        containers_statuses: runtime
            .state
            .containers_of(&record.id)
            .iter()
            .map(container_status_message)
            .collect(),
        timestamp: crate::clock::now_nanos(),
    })
}

pub fn metadata(record: &SandboxRecord) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: record.name.clone(),
        uid: record.uid.clone(),
        namespace: record.namespace.clone(),
        attempt: record.attempt,
    }
}

pub fn state_value(state: SandboxState) -> cri::PodSandboxState {
    match state {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady,
        SandboxState::NotReady => cri::PodSandboxState::SandboxNotready,
    }
}

pub fn sandbox_status_message(_runtime: &Runtime, record: &SandboxRecord) -> cri::PodSandboxStatus {
    let mode = |host: bool| if host { 2 } else { 0 };
    cri::PodSandboxStatus {
        id: record.id.clone(),
        metadata: Some(metadata(record)),
        state: state_value(record.state) as i32,
        created_at: record.created_at_unix_nanos,
        network: Some(network_status(record)),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: mode(record.host_network),
                    pid: record.pid_mode,
                    ipc: mode(record.host_ipc),
                    target_id: String::new(),
                    userns_options: None,
                }),
            }),
        }),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

/// The pod's IPs from its CNI result: the first (IPv4 when it has one) is the pod IP, the
/// rest (the IPv6 one on a dual-stack node) additional. hostNetwork pods and pods without a
/// network report none; kubelet fills in the node's address for the former.
fn network_status(record: &SandboxRecord) -> cri::PodSandboxNetworkStatus {
    let ips = record
        .network
        .as_ref()
        .map(|n| n.ips.as_slice())
        .unwrap_or_default();
    cri::PodSandboxNetworkStatus {
        ip: ips.first().cloned().unwrap_or_default(),
        additional_ips: ips
            .iter()
            .skip(1)
            .map(|ip| cri::PodIp { ip: ip.clone() })
            .collect(),
    }
}

fn verbose_info(runtime: &Runtime, record: &SandboxRecord) -> serde_json::Value {
    // Validated at RunPodSandbox; re-parsed here so the info shows what kraal understood.
    let policy = crate::policy::pod_policy(runtime, record)
        .ok()
        .and_then(|p| serde_json::to_value(&p).ok());
    let (applied, warnings) = crate::policy::applied_settings(runtime, record);
    serde_json::json!({
        "policy": policy,
        "policyAnnotations": crate::policy::annotations_in_effect(runtime, record),
        "applied": applied,
        "policyWarnings": warnings,
        "frozen": record.frozen,
        "ports": record.ports,
        "portCounters": crate::ports::counters(runtime, record),
        "bandwidth": crate::bandwidth::status_json(runtime, record),
        "network": crate::network::status_json(record),
        "id": record.id,
        "hostname": record.hostname,
        "hostNetwork": record.host_network,
        "hostIPC": record.host_ipc,
        "pid": record.infra.map(|(pid, _)| pid),
        "cgroupParent": record.cgroup_parent,
        "cgroupHierarchy": format!("{:?}", runtime.cgroups.hierarchy()),
        "unifiedCgroup": crate::runtime::unified_dir(runtime, &record.cgroup_parent),
        // The pod cgroup's directory in each hierarchy kraal uses (see ContainerStatus).
        "cgroupDirs": runtime.cgroups.dirs(&record.cgroup_parent).ok(),
        "infraCgroup": record.infra.map(|_| crate::pod_infra::cgroup(record)),
        "namespaces": {
            "network": record.net_ns,
            "ipc": record.ipc_ns,
            "uts": record.uts_ns,
        },
        "shm": record.shm,
        "hostsFile": record.etc_hosts,
        "resolvConf": record.resolv_conf,
        "sysctls": record.sysctls,
    })
}
