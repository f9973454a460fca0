//! `UpdatePodPolicy`: change a running pod's policy annotations. The new set is validated
//! exactly as RunPodSandbox and CreateContainer validate annotations (parse, then every live
//! container's limits) before anything is written; then the pod cgroup and every container
//! get the new plan, with no restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use kraal_api::kraal::v1 as admin;
use kraal_api::runtime::v1 as cri;
use kraal_policy::{ContainerLimits, PodPolicy};
use prost::Message;
use tonic::Status;

use super::{policy_status, resolve_pod};
use crate::runtime::{Runtime, internal};
use crate::state::{PodPorts, SandboxRecord, SandboxState};

const CALL: &str = "UpdatePodPolicy";

pub async fn update_pod_policy(
    runtime: &Arc<Runtime>,
    request: admin::UpdatePodPolicyRequest,
) -> Result<admin::PodPolicyStatus, Status> {
    let found = resolve_pod(runtime, CALL, &request.pod)?;
    if request.set.is_empty() && request.remove.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{CALL}: nothing to change; expected annotations to set and/or keys to remove"
        )));
    }
    let _guard = runtime.locks.lock(&found.id).await;
    // Read again under the lock: the pod may have changed while we waited.
    let record = runtime
        .state
        .sandbox(&found.id)
        .ok_or_else(|| Status::not_found(format!("{CALL}: pod sandbox {} is gone", found.id)))?;
    if record.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "{CALL}: pod {}/{} is stopped; only a ready pod's policy can change",
            record.namespace, record.name
        )));
    }
    let annotations = changed_annotations(runtime, &record, &request)?;
    let policy = PodPolicy::from_annotations(&annotations, &runtime.config.policy)
        .map_err(|e| Status::invalid_argument(format!("{CALL}: {e}")))?;
    check_containers(runtime, &record, &policy)?;
    crate::bandwidth::refuse_if_disabled(runtime, CALL, &policy)?;
    let old_policy = crate::policy::pod_policy(runtime, &record).map_err(|e| {
        Status::failed_precondition(format!(
            "{CALL}: the pod's current policy no longer parses: {e}"
        ))
    })?;
    let ports = runtime.port_blocks.resolve(
        &runtime.config.ports,
        &runtime.state.sandboxes(),
        crate::ports::PortsRequest {
            call: CALL,
            sandbox_id: &record.id,
            policy: &policy,
            host_network: record.host_network,
            previous: Some((&old_policy, &record.ports)),
        },
    )?;
    if request.dry_run {
        runtime.port_blocks.settle(&record.id);
        let mut preview = record.clone();
        preview.policy_annotations = Some(annotations);
        preview.ports = ports;
        return Ok(policy_status(runtime, &preview));
    }

    let rt = runtime.clone();
    let id = record.id.clone();
    let change = Change {
        annotations,
        policy,
        ports,
    };
    let applied = tokio::task::spawn_blocking(move || apply(&rt, record, change)).await;
    // The pod's record holds its new blocks now, or the change failed and frees them.
    runtime.port_blocks.settle(&id);
    applied.map_err(|e| internal("UpdatePodPolicy task", e))??;
    let record = runtime
        .state
        .sandbox(&id)
        .ok_or_else(|| Status::not_found(format!("{CALL}: pod sandbox {id} is gone")))?;
    tracing::info!(sandbox = %id, "pod policy changed live");
    Ok(policy_status(runtime, &record))
}

/// The annotations in effect, with the request's changes. Only policy keys may change: the
/// admin API is not a way to rewrite a pod's other metadata.
fn changed_annotations(
    runtime: &Runtime,
    record: &SandboxRecord,
    request: &admin::UpdatePodPolicyRequest,
) -> Result<BTreeMap<String, String>, Status> {
    let options = &runtime.config.policy;
    for key in request.set.keys().chain(request.remove.iter()) {
        if !options.is_policy_key(key) {
            return Err(Status::invalid_argument(format!(
                "{CALL}: {key:?} is not a policy annotation; expected a key under {:?} or kubernetes.io/egress-bandwidth / kubernetes.io/ingress-bandwidth",
                options.prefix
            )));
        }
    }
    let mut annotations = crate::policy::annotations_in_effect(runtime, record);
    for key in &request.remove {
        annotations.remove(key);
    }
    for (key, value) in &request.set {
        annotations.insert(key.clone(), value.clone());
    }
    Ok(annotations)
}

/// Every live container's limits must fit the new policy, as CreateContainer demands.
fn check_containers(
    runtime: &Runtime,
    record: &SandboxRecord,
    policy: &PodPolicy,
) -> Result<(), Status> {
    for container in runtime.state.containers_of(&record.id) {
        if !container.state.is_live() {
            continue;
        }
        let resources = cri::LinuxContainerResources::decode(container.resources.as_slice())
            .unwrap_or_default();
        policy
            .for_container(&container.name)
            .check_limits(&ContainerLimits {
                cpu_quota_us: Some(resources.cpu_quota),
                cpu_period_us: Some(resources.cpu_period),
                memory_limit_bytes: Some(resources.memory_limit_in_bytes),
            })
            .map_err(|e| {
                Status::invalid_argument(format!("{CALL}: container {:?}: {e}", container.name))
            })?;
    }
    Ok(())
}

/// What a validated update changes.
struct Change {
    annotations: BTreeMap<String, String>,
    policy: PodPolicy,
    ports: PodPorts,
}

/// Writes the new plan everywhere. If a write fails half-way, the old policy is written
/// back, so the pod is never left with a mix of both.
fn apply(runtime: &Runtime, record: SandboxRecord, change: Change) -> Result<(), Status> {
    let old = record.clone();
    let mut record = record;
    record.policy_annotations = Some(change.annotations);
    let result = apply_all(runtime, &mut record, &change.policy, change.ports);
    if let Err(err) = result {
        tracing::error!(sandbox = %record.id, %err, "live policy change failed; restoring the old policy");
        let mut restored = old;
        // Links attached by the failed attempt are the pod's now: the old (maybe empty)
        // lists go on them rather than leaving the new ones enforced.
        restored.ports.ebpf_pod = record.ports.ebpf_pod;
        // Likewise the classes it holds now: the old rates go back on them.
        restored.bandwidth = record.bandwidth.clone();
        let old_ports = restored.ports.clone();
        if let Ok(old_policy) = crate::policy::pod_policy(runtime, &restored)
            && let Err(again) = apply_all(runtime, &mut restored, &old_policy, old_ports)
        {
            tracing::error!(sandbox = %restored.id, %again, "restoring the old policy failed too");
        }
        return Err(Status::internal(format!("{CALL}: {err}")));
    }
    Ok(())
}

fn apply_all(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    policy: &PodPolicy,
    ports: PodPorts,
) -> Result<(), String> {
    crate::ports::apply_live(runtime, record, ports)
        .map_err(|e| format!("the pod's ports: {e}"))?;
    crate::bandwidth::apply_live(runtime, record, policy)
        .map_err(|e| format!("the pod's bandwidth: {e}"))?;
    crate::policy::apply_pod(runtime, record, policy)
        .map_err(|e| format!("the pod cgroup: {e}"))?;
    let mut warnings = crate::policy::reapply_containers(runtime, record, policy)?;
    for warning in warnings.drain(..) {
        tracing::warn!(sandbox = %record.id, "{warning}");
    }
    runtime
        .state
        .save_sandbox(record)
        .map_err(|e| format!("saving the sandbox record: {e}"))
}
