//! `ContainerStats` and `ListContainerStats`: CPU, memory (with working set = usage −
//! inactive_file) and writable layer usage, read from the container's cgroup.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use kraal_runtime::rootfs::{WritableLayer, writable_usage};
use tonic::Status;

use super::container_status::metadata;
use super::filters::{id_matches, labels_match};
use crate::runtime::Runtime;
use crate::state::ContainerRecord;

pub fn container_stats(
    runtime: &Arc<Runtime>,
    request: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Status> {
    let record = runtime.container("ContainerStats", &request.container_id)?;
    Ok(cri::ContainerStatsResponse {
        stats: Some(stats_of(runtime, &record)),
    })
}

pub fn list_container_stats(
    runtime: &Arc<Runtime>,
    request: cri::ListContainerStatsRequest,
) -> cri::ListContainerStatsResponse {
    let filter = request.filter.unwrap_or_default();
    let stats = runtime
        .state
        .containers()
        .into_iter()
        // Like containerd: stats are of containers that exist as processes.
        .filter(|c| c.state.is_live())
        .filter(|c| id_matches(&filter.id, &c.id))
        .filter(|c| id_matches(&filter.pod_sandbox_id, &c.sandbox_id))
        .filter(|c| labels_match(&filter.label_selector, &c.labels))
        .map(|c| stats_of(runtime, &c))
        .collect();
    cri::ListContainerStatsResponse { stats }
}

pub fn stats_of(runtime: &Runtime, record: &ContainerRecord) -> cri::ContainerStats {
    let now = crate::clock::now_nanos();
    let attributes = Some(cri::ContainerAttributes {
        id: record.id.clone(),
        metadata: Some(metadata(record)),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
    });
    let (cpu, memory) = cgroup_usage(runtime, &record.cgroups_path, now);
    let (bytes, inodes) = writable_usage(&WritableLayer::under(
        &runtime.layout.writable_dir(&record.id),
    ));
    cri::ContainerStats {
        attributes,
        cpu,
        memory,
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: runtime
                    .layout
                    .root
                    .join("containers")
                    .to_string_lossy()
                    .into_owned(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        }),
        swap: None,
        io: None,
    }
}

/// CPU and memory of one cgroup; None where the cgroup cannot be read (gone already).
pub fn cgroup_usage(
    runtime: &Runtime,
    cgroup: &str,
    now: i64,
) -> (Option<cri::CpuUsage>, Option<cri::MemoryUsage>) {
    let stats = match runtime.cgroups.stats(cgroup) {
        Ok(stats) => stats,
        Err(err) => {
            tracing::debug!(cgroup, %err, "no stats");
            return (None, None);
        }
    };
    let value = |v: u64| Some(cri::UInt64Value { value: v });
    (
        Some(cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(stats.cpu_usage_ns),
            usage_nano_cores: None,
            psi: None,
        }),
        Some(cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: value(stats.memory_working_set_bytes),
            available_bytes: None,
            usage_bytes: value(stats.memory_usage_bytes),
            rss_bytes: value(stats.memory_rss_bytes),
            page_faults: value(stats.page_faults),
            major_page_faults: value(stats.major_page_faults),
            psi: None,
        }),
    )
}
