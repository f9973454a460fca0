//! `PodSandboxStats` and `ListPodSandboxStats`: the pod cgroup's CPU, memory and process
//! count, with the stats of each of its containers.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use super::container_stats::{cgroup_usage, stats_of};
use super::filters::{id_matches, labels_match};
use super::pod_sandbox_status::metadata;
use crate::runtime::Runtime;
use crate::state::{SandboxRecord, SandboxState};

pub fn pod_sandbox_stats(
    runtime: &Arc<Runtime>,
    request: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    let record = runtime.sandbox("PodSandboxStats", &request.pod_sandbox_id)?;
    Ok(cri::PodSandboxStatsResponse {
        stats: Some(stats_of_pod(runtime, &record)),
    })
}

pub fn list_pod_sandbox_stats(
    runtime: &Arc<Runtime>,
    request: cri::ListPodSandboxStatsRequest,
) -> cri::ListPodSandboxStatsResponse {
    let filter = request.filter.unwrap_or_default();
    let stats = runtime
        .state
        .sandboxes()
        .into_iter()
        .filter(|s| s.state == SandboxState::Ready)
        .filter(|s| id_matches(&filter.id, &s.id))
        .filter(|s| labels_match(&filter.label_selector, &s.labels))
        .map(|s| stats_of_pod(runtime, &s))
        .collect();
    cri::ListPodSandboxStatsResponse { stats }
}

fn stats_of_pod(runtime: &Runtime, record: &SandboxRecord) -> cri::PodSandboxStats {
    let now = crate::clock::now_nanos();
    let (cpu, memory) = cgroup_usage(runtime, &record.cgroup_parent, now);
    let processes = runtime
        .cgroups
        .pids(&record.cgroup_parent)
        .map(|p| p.len() as u64)
        .ok();
    let containers = runtime
        .state
        .containers_of(&record.id)
        .iter()
        .filter(|c| c.state.is_live())
        .map(|c| stats_of(runtime, c))
        .collect();
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: record.id.clone(),
            metadata: Some(metadata(record)),
            labels: record.labels.clone().into_iter().collect(),
            annotations: record.annotations.clone().into_iter().collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu,
            memory,
            network: None,
            process: processes.map(|n| cri::ProcessUsage {
                timestamp: now,
                process_count: Some(cri::UInt64Value { value: n }),
            }),
            containers,
            io: None,
        }),
        windows: None,
    }
}
