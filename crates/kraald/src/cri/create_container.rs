//! `CreateContainer`: resolve the image, mount the rootfs, build the OCI spec, and have a
//! new monitor create the container through libcontainer (created, not started). Any
//! failure undoes every step, so a bad request leaves nothing behind.

use std::path::PathBuf;
use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use kraal_policy::PodPolicy;
use kraal_runtime::monitor::MonitorConfig;
use kraal_runtime::rootfs::{self, WritableLayer};
use kraal_runtime::spec::{self, PidMode, SandboxContext, SpecInput};
use prost::Message;
use tonic::Status;

use super::container_undo::{remove_new_log, undo_create};
use crate::runtime::{Runtime, internal, io_status, new_id};
use crate::state::{ContainerRecord, ContainerState, MountRecord, SandboxRecord, SandboxState};

pub async fn create_container(
    runtime: &Arc<Runtime>,
    request: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, Status> {
    let sandbox_id = runtime
        .state
        .resolve_sandbox(&request.pod_sandbox_id)
        .ok_or_else(|| {
            Status::not_found(format!(
                "CreateContainer: pod sandbox {:?} not found",
                request.pod_sandbox_id
            ))
        })?;
    let sandbox = runtime.state.sandbox(&sandbox_id).ok_or_else(|| {
        Status::not_found(format!(
            "CreateContainer: pod sandbox {sandbox_id} not found"
        ))
    })?;
    if sandbox.state != SandboxState::Ready {
        return Err(Status::failed_precondition(format!(
            "CreateContainer: pod sandbox {sandbox_id} is not ready (it was stopped)"
        )));
    }
    let config = request
        .config
        .ok_or_else(|| Status::invalid_argument("CreateContainer: config is required"))?;
    let metadata = config.metadata.clone().unwrap_or_default();
    if metadata.name.is_empty() {
        return Err(Status::invalid_argument(
            "CreateContainer: config.metadata.name must not be empty",
        ));
    }
    let image_name = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    if image_name.is_empty() {
        return Err(Status::invalid_argument(
            "CreateContainer: config.image.image must name an image",
        ));
    }
    let log_path = log_path(&sandbox, &config.log_path)?;
    crate::policy::refuse_if_frozen(runtime, &sandbox_id, "CreateContainer")?;
    let policy = check_policy(runtime, &sandbox, &config)?;

    let key = format!("ctr/{sandbox_id}/{}/{}", metadata.name, metadata.attempt);
    let (name, attempt) = (metadata.name.clone(), metadata.attempt);
    let sid = sandbox_id.clone();
    let _reservation = runtime
        .state
        .reserve(key, |view| {
            view.containers
                .values()
                .find(|c| c.sandbox_id == sid && c.name == name && c.attempt == attempt)
                .map(|c| c.id.clone())
        })
        .map_err(|holder| {
            Status::already_exists(format!(
                "CreateContainer: name {:?} (attempt {}) is already used by container {holder} in pod sandbox {sandbox_id}",
                metadata.name, metadata.attempt
            ))
        })?;

    let rt = runtime.clone();
    let created = tokio::task::spawn_blocking(move || {
        create_blocking(&rt, &sandbox, &policy, config, image_name, log_path)
    })
    .await
    .map_err(|e| internal("CreateContainer task", e))??;
    runtime.emit(
        &created.id,
        &sandbox_id,
        cri::ContainerEventType::ContainerCreatedEvent,
    );
    runtime.watch_exit(&created.id);
    Ok(cri::CreateContainerResponse {
        container_id: created.id,
    })
}

fn create_blocking(
    runtime: &Runtime,
    sandbox: &SandboxRecord,
    policy: &PodPolicy,
    config: cri::ContainerConfig,
    image_name: String,
    log_path: String,
) -> Result<ContainerRecord, Status> {
    let image = runtime
        .images
        .get(&image_name)
        .map_err(super::error::image_error)?
        .ok_or_else(|| {
            Status::not_found(format!(
                "CreateContainer: image {image_name:?} not found; pull it first"
            ))
        })?;
    let id = new_id().map_err(|e| io_status("CreateContainer: making an id", e))?;
    // The monitor creates the log file before libcontainer can fail; kubelet counts every
    // log file of a container as one of its runs, so a failed create must take it away —
    // but only one this call made (symlink_metadata: a dangling link is still "there").
    let new_log = (!log_path.is_empty()
        && std::fs::symlink_metadata(&log_path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound))
    .then(|| PathBuf::from(&log_path));
    let result = create_steps(
        runtime,
        sandbox,
        policy,
        &config,
        &image,
        &id,
        &image_name,
        log_path,
    );
    if result.is_err() {
        undo_create(
            runtime,
            &id,
            &crate::cgroup_driver::container_path(sandbox, &id),
        );
        if let Some(log) = new_log {
            remove_new_log(&id, &log);
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn create_steps(
    runtime: &Runtime,
    sandbox: &SandboxRecord,
    policy: &PodPolicy,
    config: &cri::ContainerConfig,
    image: &kraal_image::Image,
    id: &str,
    image_name: &str,
    log_path: String,
) -> Result<ContainerRecord, Status> {
    let layout = &runtime.layout;
    let dir = layout.container_dir(id);
    for needed in [layout.bundle(id), layout.state.join("s")] {
        std::fs::create_dir_all(&needed)
            .map_err(|e| io_status(format!("creating {}", needed.display()), e))?;
    }
    let writable = WritableLayer::under(&layout.writable_dir(id));
    let rootfs_dir = layout.rootfs(id);
    rootfs::mount_rootfs(&runtime.images.layer_dirs(image), &writable, &rootfs_dir)
        .map_err(|e| Status::internal(format!("CreateContainer: {e}")))?;

    let cgroups_path = crate::cgroup_driver::container_path(sandbox, id);
    let context = sandbox_context(sandbox);
    let seccomp_root = runtime.config.seccomp_profile_root.clone();
    let metadata = config.metadata.clone().unwrap_or_default();
    let kubelet_resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let spec_config = with_policy_oom_score(config, policy, &metadata.name);
    let built = spec::build_spec(&SpecInput {
        container_id: id,
        config: &spec_config,
        sandbox: &context,
        image_config: &image.config,
        rootfs: &rootfs_dir,
        cgroups_path: &cgroups_path,
        oom_score_adj_floor: runtime.oom_score_adj_floor,
        seccomp_profile_root: &seccomp_root,
        host: runtime.host_facts,
    })
    .map_err(spec_status)?;
    for warning in &built.warnings {
        tracing::warn!(container = %id, "{warning}");
    }
    let bundle_config = layout.bundle(id).join("config.json");
    let json = serde_json::to_vec_pretty(&built.spec)
        .map_err(|e| internal("serialising the OCI spec", e))?;
    std::fs::write(&bundle_config, json)
        .map_err(|e| io_status(format!("writing {}", bundle_config.display()), e))?;

    // On hybrid hosts libcontainer only knows the v1 hierarchies; the monitor also puts the
    // container into the cgroup2 tree, where the pod's eBPF programs see it.
    let unified_cgroup = match runtime.cgroups.hierarchy() {
        kraal_cgroups::Hierarchy::Hybrid => {
            runtime
                .cgroups
                .create(&cgroups_path)
                .map_err(|e| Status::internal(format!("creating the container cgroup: {e}")))?;
            crate::runtime::unified_dir(runtime, &cgroups_path)
        }
        _ => None,
    };
    let monitor_config = MonitorConfig {
        id: id.to_string(),
        bundle: layout.bundle(id),
        libcontainer_root: layout.libcontainer_root(),
        log_path: (!log_path.is_empty()).then(|| PathBuf::from(&log_path)),
        exit_file: layout.exit_file(id),
        control_socket: layout.control_socket(id),
        monitor_log: dir.join("monitor.log"),
        unified_cgroup,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
    };
    let monitor_json = dir.join("monitor.json");
    let json = serde_json::to_vec_pretty(&monitor_config)
        .map_err(|e| internal("serialising the monitor config", e))?;
    std::fs::write(&monitor_json, json)
        .map_err(|e| io_status(format!("writing {}", monitor_json.display()), e))?;
    let created = kraal_runtime::monitor::client::spawn_create(&runtime.monitor_bin, &monitor_json)
        .map_err(|e| {
            Status::failed_precondition(format!(
                "CreateContainer: creating the container failed: {e}"
            ))
        })?;

    // systemd driver: the container's own scope, with kubelet's limits as its properties
    // (systemd writes them when it realises the scope, over what libcontainer wrote).
    let pod = crate::cgroup_driver::PodCgroup::of(sandbox);
    if pod.slice.is_some() {
        let unit = kraal_cgroups::systemd::container_scope(id);
        let limits = crate::cgroup_driver::kubelet_limits(kubelet_resources)
            .map_err(|e| Status::invalid_argument(format!("CreateContainer: {e}")))?;
        runtime
            .driver
            .place(
                &pod,
                &unit,
                format!("kraal container {id} ({})", metadata.name),
                created.pid,
                &limits,
            )
            .map_err(|e| {
                Status::internal(format!(
                    "CreateContainer: placing the container in its systemd scope {unit}: {e}"
                ))
            })?;
    }

    // The container exists but has not run a single instruction of its own: the policy's
    // cgroup values are in place before StartContainer.
    let outcome = crate::policy::apply_container(
        runtime,
        policy,
        &metadata.name,
        &cgroups_path,
        kubelet_resources,
        created.pid,
    )
    .map_err(|e| {
        Status::internal(format!(
            "CreateContainer: applying the pod's policy to container {:?}: {e}",
            metadata.name
        ))
    })?;
    for warning in &outcome.warnings {
        tracing::warn!(container = %id, "{warning}");
    }
    let record = ContainerRecord {
        id: id.to_string(),
        sandbox_id: sandbox.id.clone(),
        name: metadata.name,
        attempt: metadata.attempt,
        labels: config.labels.clone().into_iter().collect(),
        annotations: config.annotations.clone().into_iter().collect(),
        image: image_name.to_string(),
        image_id: image.id.clone(),
        created_at_unix_nanos: crate::clock::now_nanos(),
        started_at_unix_nanos: 0,
        finished_at_unix_nanos: 0,
        state: ContainerState::Created,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        log_path,
        mounts: config
            .mounts
            .iter()
            .map(|m| MountRecord {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                selinux_relabel: m.selinux_relabel,
                propagation: m.propagation,
            })
            .collect(),
        cgroups_path,
        pid: created.pid,
        pid_start_time: created.pid_start_time,
        monitor_pid: created.monitor_pid,
        monitor_start_time: created.monitor_start_time,
        stop_signal: stop_signal(config, &image.config),
        tty: config.tty,
        resources: config
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(|r| r.encode_to_vec())
            .unwrap_or_default(),
        applied: outcome.applied,
        policy_warnings: outcome.warnings,
    };
    runtime
        .state
        .save_container(&record)
        .map_err(|e| io_status("saving the container record", e))?;
    tracing::info!(container = %id, sandbox = %sandbox.id, image = %image_name, "container created");
    Ok(record)
}

pub fn sandbox_context(sandbox: &SandboxRecord) -> SandboxContext {
    SandboxContext {
        id: sandbox.id.clone(),
        hostname: sandbox.hostname.clone(),
        net_ns: sandbox.net_ns.clone(),
        ipc_ns: sandbox.ipc_ns.clone(),
        uts_ns: sandbox.uts_ns.clone(),
        pid: match (sandbox.pid_mode, sandbox.infra) {
            (super::run_pod_sandbox::NS_POD, Some((pid, _))) => {
                PidMode::Pod(PathBuf::from(format!("/proc/{pid}/ns/pid")))
            }
            (super::run_pod_sandbox::NS_NODE, _) => PidMode::Node,
            _ => PidMode::Container,
        },
        etc_hosts: Some(sandbox.etc_hosts.clone()),
        resolv_conf: Some(sandbox.resolv_conf.clone()),
        etc_hostname: Some(sandbox.etc_hostname.clone()),
        shm: sandbox.shm.clone(),
        cgroup_parent: sandbox.cgroup_parent.clone(),
        sysctls: sandbox.sysctls.clone().into_iter().collect(),
        privileged: sandbox.privileged,
    }
}

/// `<log_directory>/<log_path>`; both must be given for a log to be written. The relative
/// part may not climb out of the pod's log directory.
fn log_path(sandbox: &SandboxRecord, relative: &str) -> Result<String, Status> {
    if relative.is_empty() || sandbox.log_directory.is_empty() {
        return Ok(String::new());
    }
    let path = std::path::Path::new(relative);
    if path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(Status::invalid_argument(format!(
            "CreateContainer: config.log_path {relative:?} must be relative to the pod's log directory and must not contain '..'"
        )));
    }
    Ok(std::path::Path::new(&sandbox.log_directory)
        .join(path)
        .to_string_lossy()
        .into_owned())
}

/// The pod's policy, whose per-container settings must fit this container's limits (a CPU
/// burst needs a CPU limit, memory-high must be below the memory limit), checked before
/// anything exists.
fn check_policy(
    runtime: &Runtime,
    sandbox: &SandboxRecord,
    config: &cri::ContainerConfig,
) -> Result<PodPolicy, Status> {
    let policy = crate::policy::pod_policy(runtime, sandbox)
        .map_err(|e| Status::invalid_argument(format!("CreateContainer: pod annotations: {e}")))?;
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    let resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let limits = kraal_policy::ContainerLimits {
        cpu_quota_us: resources.map(|r| r.cpu_quota),
        cpu_period_us: resources.map(|r| r.cpu_period),
        memory_limit_bytes: resources.map(|r| r.memory_limit_in_bytes),
    };
    policy
        .for_container(name)
        .check_limits(&limits)
        .map_err(|e| {
            Status::invalid_argument(format!("CreateContainer: container {name:?}: {e}"))
        })?;
    Ok(policy)
}

/// `config` with the `oom_score_adj` the policy wants (offline containers score highest),
/// so the container's processes start with it.
fn with_policy_oom_score(
    config: &cri::ContainerConfig,
    policy: &PodPolicy,
    name: &str,
) -> cri::ContainerConfig {
    let kubelet = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let plan = policy
        .for_container(name)
        .plan(&crate::policy::cri_resources(kubelet));
    let mut config = config.clone();
    if let Some(oom) = plan.oom_score_adj {
        let linux = config.linux.get_or_insert_with(Default::default);
        linux
            .resources
            .get_or_insert_with(Default::default)
            .oom_score_adj = oom.value;
    }
    config
}

fn stop_signal(config: &cri::ContainerConfig, image_config: &serde_json::Value) -> Option<String> {
    if config.stop_signal != 0
        && let Ok(signal) = cri::Signal::try_from(config.stop_signal)
    {
        return Some(signal.as_str_name().to_string());
    }
    image_config
        .get("config")
        .and_then(|c| c.get("StopSignal"))
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn spec_status(err: spec::SpecError) -> Status {
    let message = format!("CreateContainer: {err}");
    match err.kind() {
        spec::ErrorKind::InvalidArgument => Status::invalid_argument(message),
        spec::ErrorKind::NotFound => Status::not_found(message),
        spec::ErrorKind::FailedPrecondition => Status::failed_precondition(message),
        spec::ErrorKind::Unimplemented => Status::unimplemented(message),
        spec::ErrorKind::Internal => Status::internal(message),
    }
}
