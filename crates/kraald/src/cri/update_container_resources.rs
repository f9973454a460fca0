//! `UpdateContainerResources`: new CPU and memory limits for a running container, written
//! to its cgroup, and reported by ContainerStatus from then on. The pod's policy still
//! applies on top: an offline container keeps its minimal weight, a `cpu-period` rescales
//! the new quota, a burst is recomputed for it.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use kraal_cgroups::Resources;
use prost::Message;
use tonic::Status;

use crate::runtime::{Runtime, internal, io_status};

pub async fn update_container_resources(
    runtime: &Arc<Runtime>,
    request: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, Status> {
    let id = runtime.container_id("UpdateContainerResources", &request.container_id)?;
    let _guard = runtime.locks.lock(&id).await;
    let record = runtime.state.container(&id).ok_or_else(|| {
        Status::not_found(format!(
            "UpdateContainerResources: container {id} not found"
        ))
    })?;
    if !record.state.is_live() {
        return Err(Status::failed_precondition(format!(
            "UpdateContainerResources: container {id} has exited"
        )));
    }
    let Some(linux) = request.linux else {
        return Ok(cri::UpdateContainerResourcesResponse {});
    };
    let resources = to_resources(&linux)?;
    let previous =
        cri::LinuxContainerResources::decode(record.resources.as_slice()).unwrap_or_default();
    let merged = merge(&previous, &linux);
    let sandbox = runtime.sandbox("UpdateContainerResources", &record.sandbox_id)?;
    let policy = crate::policy::pod_policy(runtime, &sandbox).map_err(|e| {
        Status::failed_precondition(format!("UpdateContainerResources: pod policy: {e}"))
    })?;
    policy
        .for_container(&record.name)
        .check_limits(&kraal_policy::ContainerLimits {
            cpu_quota_us: Some(merged.cpu_quota),
            cpu_period_us: Some(merged.cpu_period),
            memory_limit_bytes: Some(merged.memory_limit_in_bytes),
        })
        .map_err(|e| {
            Status::invalid_argument(format!(
                "UpdateContainerResources: the new limits contradict the pod's policy: container {:?}: {e}",
                record.name
            ))
        })?;
    let rt = runtime.clone();
    let path = record.cgroups_path.clone();
    let (name, pid) = (record.name.clone(), record.pid);
    let merged_for_task = merged.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        // cpuset and memory limit as kubelet asks; the CPU values through the policy plan.
        let cpu_free = Resources {
            cpu_shares: None,
            cpu_quota_us: None,
            cpu_period_us: None,
            ..resources
        };
        rt.cgroups.apply_resources(&path, &cpu_free)?;
        if let Err(err) = rt.driver.mirror(&path, &cpu_free) {
            tracing::warn!(cgroup = %path, %err, "telling systemd the new limits");
        }
        crate::policy::apply_container(&rt, &policy, &name, &path, Some(&merged_for_task), pid)
    })
    .await
    .map_err(|e| internal("UpdateContainerResources task", e))?
    .map_err(|e| Status::internal(format!("UpdateContainerResources: {e}")))?;
    runtime
        .state
        .update_container(&id, |c| {
            c.resources = merged.encode_to_vec();
            c.applied = outcome.applied;
            c.policy_warnings = outcome.warnings;
        })
        .map_err(|e| io_status("saving the container record", e))?;
    tracing::info!(container = %id, "container resources updated");
    Ok(cri::UpdateContainerResourcesResponse {})
}

/// `update` over `previous`: CRI's 0 or empty means "unchanged".
fn merge(
    previous: &cri::LinuxContainerResources,
    update: &cri::LinuxContainerResources,
) -> cri::LinuxContainerResources {
    let pick = |new: i64, old: i64| if new != 0 { new } else { old };
    let text = |new: &String, old: &String| {
        if new.is_empty() {
            old.clone()
        } else {
            new.clone()
        }
    };
    cri::LinuxContainerResources {
        cpu_period: pick(update.cpu_period, previous.cpu_period),
        cpu_quota: pick(update.cpu_quota, previous.cpu_quota),
        cpu_shares: pick(update.cpu_shares, previous.cpu_shares),
        memory_limit_in_bytes: pick(update.memory_limit_in_bytes, previous.memory_limit_in_bytes),
        oom_score_adj: previous.oom_score_adj,
        cpuset_cpus: text(&update.cpuset_cpus, &previous.cpuset_cpus),
        cpuset_mems: text(&update.cpuset_mems, &previous.cpuset_mems),
        ..update.clone()
    }
}

fn to_resources(linux: &cri::LinuxContainerResources) -> Result<Resources, Status> {
    let bad = |field: &str, value: i64, expected: &str| {
        Status::invalid_argument(format!(
            "UpdateContainerResources: linux.{field} {value} is invalid; expected {expected}"
        ))
    };
    if linux.cpu_shares < 0 {
        return Err(bad(
            "cpu_shares",
            linux.cpu_shares,
            "0 (unchanged) or 2..262144",
        ));
    }
    if linux.cpu_period != 0 && !(1000..=1_000_000).contains(&linux.cpu_period) {
        return Err(bad(
            "cpu_period",
            linux.cpu_period,
            "0 (unchanged) or 1000..1000000 µs",
        ));
    }
    if linux.cpu_quota != 0 && linux.cpu_quota != -1 && linux.cpu_quota < 1000 {
        return Err(bad(
            "cpu_quota",
            linux.cpu_quota,
            "0 (unchanged), -1 (no limit) or ≥ 1000 µs",
        ));
    }
    if linux.memory_limit_in_bytes < 0 {
        return Err(bad(
            "memory_limit_in_bytes",
            linux.memory_limit_in_bytes,
            "0 (unchanged) or a byte count",
        ));
    }
    let set = |v: i64| (v != 0).then_some(v);
    let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(Resources {
        cpu_shares: set(linux.cpu_shares).map(|v| v as u64),
        cpu_quota_us: set(linux.cpu_quota),
        cpu_period_us: set(linux.cpu_period).map(|v| v as u64),
        cpuset_cpus: text(&linux.cpuset_cpus),
        cpuset_mems: text(&linux.cpuset_mems),
        memory_limit_bytes: set(linux.memory_limit_in_bytes),
        ..Default::default()
    })
}
