//! `ContainerStatus`: state, exit code and reason, times, image, mounts, log path.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use prost::Message;
use tonic::Status;

use crate::runtime::Runtime;
use crate::state::{ContainerRecord, ContainerState};

pub fn container_status(
    runtime: &Arc<Runtime>,
    request: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, Status> {
    let record = runtime.container("ContainerStatus", &request.container_id)?;
    let mut info = std::collections::HashMap::new();
    if request.verbose {
        let value = serde_json::json!({
            "id": record.id,
            "sandboxID": record.sandbox_id,
            "pid": record.pid,
            "monitorPid": record.monitor_pid,
            "cgroupsPath": record.cgroups_path,
            "unifiedCgroup": crate::runtime::unified_dir(runtime, &record.cgroups_path),
            // Where kraal reads and writes this container's cgroup files, per hierarchy
            // (v1 controllers by name, cgroup2 as "unified"; on v2 hosts only "unified").
            "cgroupDirs": runtime.cgroups.dirs(&record.cgroups_path).ok(),
            "bundle": runtime.layout.bundle(&record.id),
            "rootfs": runtime.layout.rootfs(&record.id),
            "writableLayer": runtime.layout.writable_dir(&record.id),
        });
        info.insert("info".to_string(), value.to_string());
    }
    Ok(cri::ContainerStatusResponse {
        status: Some(container_status_message(&record)),
        info,
    })
}

pub fn state_value(state: ContainerState) -> cri::ContainerState {
    match state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }
}

pub fn metadata(record: &ContainerRecord) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: record.name.clone(),
        attempt: record.attempt,
    }
}

pub fn image_spec(record: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: record.image.clone(),
        ..Default::default()
    }
}

pub fn container_status_message(record: &ContainerRecord) -> cri::ContainerStatus {
    let resources = (!record.resources.is_empty())
        .then(|| cri::LinuxContainerResources::decode(record.resources.as_slice()).ok())
        .flatten()
        .map(|linux| cri::ContainerResources {
            linux: Some(linux),
            windows: None,
        });
    cri::ContainerStatus {
        id: record.id.clone(),
        metadata: Some(metadata(record)),
        state: state_value(record.state) as i32,
        created_at: record.created_at_unix_nanos,
        started_at: record.started_at_unix_nanos,
        finished_at: record.finished_at_unix_nanos,
        exit_code: record.exit_code,
        image: Some(image_spec(record)),
        image_ref: record.image_id.clone(),
        reason: record.reason.clone(),
        message: record.message.clone(),
        labels: record.labels.clone().into_iter().collect(),
        annotations: record.annotations.clone().into_iter().collect(),
        mounts: record
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                selinux_relabel: m.selinux_relabel,
                propagation: m.propagation,
                ..Default::default()
            })
            .collect(),
        log_path: record.log_path.clone(),
        resources,
        image_id: record.image_id.clone(),
        user: None,
        stop_signal: 0,
    }
}
