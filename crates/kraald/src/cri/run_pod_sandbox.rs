//! `RunPodSandbox`: validate, reserve the name, then build the pod's node-side parts —
//! cgroup, pinned namespaces, the CNI network, /dev/shm, hosts/resolv.conf/hostname, the infra
//! process when the pod shares one PID namespace — undoing all of it if any step fails.

use std::collections::BTreeMap;
use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use kraal_runtime::sandbox::{self, DnsSettings, NamespaceSet};
use tonic::Status;

use super::sandbox_teardown::teardown_sandbox;
use crate::runtime::{Runtime, internal, io_status, new_id};
use crate::state::{SandboxRecord, SandboxState};

/// CRI NamespaceMode values.
pub const NS_POD: i32 = 0;
pub const NS_NODE: i32 = 2;

pub async fn run_pod_sandbox(
    runtime: &Arc<Runtime>,
    request: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, Status> {
    let config = request
        .config
        .ok_or_else(|| Status::invalid_argument("RunPodSandbox: config is required"))?;
    let metadata = config.metadata.clone().ok_or_else(|| {
        Status::invalid_argument(
            "RunPodSandbox: config.metadata (name, namespace, uid) is required",
        )
    })?;
    for (field, value) in [
        ("name", &metadata.name),
        ("namespace", &metadata.namespace),
        ("uid", &metadata.uid),
    ] {
        if value.is_empty() {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: config.metadata.{field} must not be empty"
            )));
        }
    }
    if !request.runtime_handler.is_empty() && request.runtime_handler != "kraal" {
        return Err(Status::invalid_argument(format!(
            "RunPodSandbox: runtime handler {:?} is not configured; kraal has only the default handler (\"\" or \"kraal\")",
            request.runtime_handler
        )));
    }
    // The pod's kraal policy is checked before anything exists, so a bad annotation leaves
    // nothing to undo.
    let policy =
        kraal_policy::PodPolicy::from_annotations(&config.annotations, &runtime.config.policy)
            .map_err(|e| Status::invalid_argument(format!("RunPodSandbox: {e}")))?;
    let linux = config.linux.clone().unwrap_or_default();
    let security = linux.security_context.clone().unwrap_or_default();
    let ns = security.namespace_options.clone().unwrap_or_default();
    let host_network = ns.network == NS_NODE;
    let host_ipc = ns.ipc == NS_NODE;
    if ns.pid == 3 {
        return Err(Status::invalid_argument(
            "RunPodSandbox: namespace_options.pid TARGET is for containers, not pod sandboxes",
        ));
    }
    if ns
        .userns_options
        .as_ref()
        .is_some_and(|u| u.mode != NS_NODE)
    {
        return Err(Status::invalid_argument(
            "RunPodSandbox: user namespaces (namespace_options.userns_options mode POD) are not supported by kraal yet; use NODE",
        ));
    }
    // Checked before an id exists (the default parent names the id: resolved again below).
    runtime.driver.pod_cgroup(&linux.cgroup_parent, "0")?;
    let hostname = sandbox::pod_hostname(&config.hostname).map_err(sandbox_status)?;

    // The pod's identity is (name, namespace, uid, attempt): kubelet retries with a new
    // attempt, never reuses one.
    let key = format!(
        "pod/{}/{}/{}/{}",
        metadata.namespace, metadata.name, metadata.uid, metadata.attempt
    );
    let wanted = metadata.clone();
    let _reservation = runtime
        .state
        .reserve(key, |view| {
            view.sandboxes
                .values()
                .find(|s| {
                    s.name == wanted.name
                        && s.namespace == wanted.namespace
                        && s.uid == wanted.uid
                        && s.attempt == wanted.attempt
                })
                .map(|s| s.id.clone())
        })
        .map_err(|holder| {
            Status::already_exists(format!(
                "RunPodSandbox: pod {}/{} (uid {}, attempt {}) already exists as sandbox {holder}",
                metadata.namespace, metadata.name, metadata.uid, metadata.attempt
            ))
        })?;

    let id = new_id().map_err(|e| io_status("RunPodSandbox: making an id", e))?;
    let dir = runtime.layout.sandbox_dir(&id);
    let pod_cgroup = runtime.driver.pod_cgroup(&linux.cgroup_parent, &id)?;
    let record = SandboxRecord {
        id: id.clone(),
        name: metadata.name.clone(),
        namespace: metadata.namespace.clone(),
        uid: metadata.uid.clone(),
        attempt: metadata.attempt,
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        created_at_unix_nanos: crate::clock::now_nanos(),
        state: SandboxState::Ready,
        runtime_handler: request.runtime_handler.clone(),
        hostname: hostname.name.clone(),
        log_directory: config.log_directory.clone(),
        cgroup_parent: pod_cgroup.path,
        systemd_slice: pod_cgroup.slice,
        slice_created: false,
        host_network,
        host_ipc,
        pid_mode: ns.pid,
        net_ns: None,
        ipc_ns: None,
        uts_ns: None,
        shm: None,
        etc_hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        etc_hostname: dir.join("hostname"),
        sysctls: linux
            .sysctls
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        privileged: security.privileged,
        infra: None,
        policy_annotations: None,
        saved_cpu_shares: None,
        applied: Vec::new(),
        policy_warnings: Vec::new(),
        frozen: false,
        ports: Default::default(),
        bandwidth: Default::default(),
        network: None,
    };
    check_sysctls(&record)?;
    let mut record = record;
    record.ports = runtime.port_blocks.resolve(
        &runtime.config.ports,
        &runtime.state.sandboxes(),
        crate::ports::PortsRequest {
            call: "RunPodSandbox",
            sandbox_id: &id,
            policy: &policy,
            host_network,
            previous: None,
        },
    )?;
    let dns = config.dns_config.as_ref().map(|d| DnsSettings {
        servers: d.servers.clone(),
        searches: d.searches.clone(),
        options: d.options.clone(),
    });

    let port_mappings = crate::network::port_mappings(&config);

    let rt = runtime.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut record = record;
        let built = build(&rt, &mut record, &policy, &hostname, dns, port_mappings);
        (record, built)
    })
    .await
    .map_err(|e| internal("RunPodSandbox task", e));
    // The block is in the saved record now, or creation failed and frees it.
    runtime.port_blocks.settle(&id);
    let (record, built) = joined?;
    if let Err(status) = built {
        let rt = runtime.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(err) = teardown_sandbox(&rt, &record) {
                tracing::error!(sandbox = %record.id, %err, "undoing a failed RunPodSandbox");
            }
        })
        .await;
        return Err(status);
    }
    tracing::info!(sandbox = %id, pod = %format!("{}/{}", record.namespace, record.name), host_network, "pod sandbox ready");
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
}

/// Builds every node-side part, recording each in `record` as it goes so that a failure
/// can be undone exactly.
fn build(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    policy: &kraal_policy::PodPolicy,
    hostname: &sandbox::PodHostname,
    dns: Option<DnsSettings>,
    port_mappings: Vec<crate::state::PortMappingRecord>,
) -> Result<(), Status> {
    let dir = runtime.layout.sandbox_dir(&record.id);
    std::fs::create_dir_all(&dir)
        .map_err(|e| io_status(format!("creating {}", dir.display()), e))?;
    record.slice_created = runtime
        .driver
        .create_pod(&crate::cgroup_driver::PodCgroup::of(record), &record.id)
        .map_err(|e| Status::internal(format!("creating the pod's systemd slice: {e}")))?;
    runtime
        .cgroups
        .create(&record.cgroup_parent)
        .map_err(|e| Status::internal(format!("creating the pod cgroup: {e}")))?;
    crate::ports::attach(runtime, record)?;
    crate::bandwidth::attach(runtime, record, policy)?;
    crate::policy::apply_pod(runtime, record, policy)
        .map_err(|e| Status::internal(format!("RunPodSandbox: applying the pod's policy: {e}")))?;
    for warning in &record.policy_warnings {
        tracing::warn!(sandbox = %record.id, "{warning}");
    }
    let want = NamespaceSet {
        net: !record.host_network,
        ipc: !record.host_ipc,
        // hostNetwork pods share the node's UTS namespace too, as with containerd.
        uts: !record.host_network,
    };
    let set_hostname = hostname.set_in_uts.then_some(hostname.name.as_str());
    let pinned =
        sandbox::pin_namespaces(&dir.join("ns"), want, set_hostname).map_err(sandbox_status)?;
    // All three are recorded at once, before any later step can fail, so the undo unpins them.
    record.net_ns = pinned.net;
    record.ipc_ns = pinned.ipc;
    record.uts_ns = pinned.uts;
    if let (Some(netns), Some(range)) = (&record.net_ns, crate::ports::netns_range(&record.ports)) {
        crate::ports::set_netns_port_range(netns, range).map_err(|e| {
            io_status(
                format!(
                    "RunPodSandbox: setting net.ipv4.ip_local_port_range {}-{} in the pod's network namespace",
                    range.0, range.1
                ),
                e,
            )
        })?;
        record.ports.netns_range = Some(range);
    }
    // The namespace exists and its sysctls are set: the plugins can give it eth0.
    crate::network::setup(runtime, record, port_mappings)?;
    if !record.host_ipc {
        let shm = dir.join("shm");
        sandbox::mount_shm(&shm).map_err(sandbox_status)?;
        record.shm = Some(shm);
    }
    sandbox::write_hostname(&record.etc_hostname, &record.hostname).map_err(sandbox_status)?;
    sandbox::write_hosts(&record.etc_hosts, &record.hostname, record.host_network)
        .map_err(sandbox_status)?;
    sandbox::write_resolv_conf(&record.resolv_conf, dns.as_ref()).map_err(sandbox_status)?;
    if record.pid_mode == NS_POD {
        let pid = crate::pod_infra::spawn().map_err(|e| {
            Status::internal(format!("starting the pod's shared-PID infra process: {e}"))
        })?;
        let start = crate::runtime::proc_start_time(pid)
            .map_err(|e| io_status("reading the infra process's start time", e))?;
        record.infra = Some((pid, start));
        crate::pod_infra::place(runtime, record, pid)?;
    }
    runtime
        .state
        .save_sandbox(record)
        .map_err(|e| io_status("saving the sandbox record", e))?;
    Ok(())
}

pub fn sandbox_status(err: kraal_runtime::sandbox::SandboxError) -> Status {
    if err.is_invalid_argument() {
        Status::invalid_argument(format!("RunPodSandbox: {err}"))
    } else {
        Status::internal(format!("RunPodSandbox: {err}"))
    }
}

/// Namespaced sysctls only, and net.* only for pods with their own network namespace: a
/// hostNetwork pod setting net.* would change the node.
fn check_sysctls(record: &SandboxRecord) -> Result<(), Status> {
    for key in record.sysctls.keys() {
        let ipc = key.starts_with("kernel.shm")
            || key.starts_with("kernel.msg")
            || key == "kernel.sem"
            || key.starts_with("fs.mqueue.");
        let net = key.starts_with("net.");
        if !(ipc || net) {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: sysctl {key:?} is not namespaced; only net.*, kernel.shm*, kernel.msg*, kernel.sem and fs.mqueue.* can be set per pod"
            )));
        }
        if net && record.host_network {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: sysctl {key:?} needs the pod's own network namespace; a hostNetwork pod would change the node's"
            )));
        }
        if ipc && record.host_ipc {
            return Err(Status::invalid_argument(format!(
                "RunPodSandbox: sysctl {key:?} needs the pod's own IPC namespace; a hostIPC pod would change the node's"
            )));
        }
    }
    Ok(())
}
