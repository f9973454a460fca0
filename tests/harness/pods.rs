//! Pods and containers driven through the CRI socket, as kubelet creates them.

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::Code;

use crate::{Kraald, cri};

/// A pod sandbox config like kubelet's, with a unique name.
pub fn pod_config(name: &str, host_network: bool) -> cri::PodSandboxConfig {
    let mode = if host_network { 2 } else { 0 };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "kraal-e2e".to_string(),
            attempt: 0,
        }),
        hostname: if host_network {
            String::new()
        } else {
            name.to_string()
        },
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kraal-e2e/pod-{name}-{}", std::process::id()),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: mode,
                    // kubelet's default: each container its own PID namespace.
                    pid: 1,
                    ipc: mode,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config running `sh -c script` in `image`.
pub fn shell_container(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.to_string()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// Read-only mounts that let a busybox container run dynamically linked host binaries: each
/// `(host path, container path)` of `binaries`, plus the host's library directory and its
/// dynamic loader where the binaries look for them. The image has no glibc of its own, so
/// nothing of the image is shadowed.
pub fn host_binary_mounts(binaries: &[(&str, &str)]) -> Vec<cri::Mount> {
    let arch = std::env::consts::ARCH;
    let mut mounts: Vec<(String, String)> = binaries
        .iter()
        .map(|(host, container)| (host.to_string(), container.to_string()))
        .collect();
    mounts.push((
        format!("/usr/lib/{arch}-linux-gnu"),
        format!("/lib/{arch}-linux-gnu"),
    ));
    if Path::new("/usr/lib64").exists() {
        mounts.push(("/usr/lib64".into(), "/lib64".into()));
    }
    mounts
        .into_iter()
        .map(|(host_path, container_path)| cri::Mount {
            container_path,
            host_path,
            readonly: true,
            ..Default::default()
        })
        .collect()
}

impl Kraald {
    pub async fn run_pod(&self, config: cri::PodSandboxConfig) -> Result<String, tonic::Status> {
        self.runtime()
            .await
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    pub async fn create(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.runtime()
            .await
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.to_string(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), tonic::Status> {
        self.runtime()
            .await
            .start_container(cri::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(|_| ())
    }

    /// Create and start; panics with kraald's log on failure.
    pub async fn run_container(
        &self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        config: cri::ContainerConfig,
    ) -> String {
        let id = match self.create(pod, pod_config, config).await {
            Ok(id) => id,
            Err(status) => panic!("CreateContainer: {status:?}\n{}", self.log()),
        };
        if let Err(status) = self.start_container(&id).await {
            panic!("StartContainer: {status:?}\n{}", self.log());
        }
        id
    }

    pub async fn container_status(&self, id: &str) -> cri::ContainerStatus {
        self.runtime()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .expect("status")
    }

    /// Waits until the container has exited; returns its status.
    pub async fn wait_exited(&self, id: &str, timeout: Duration) -> cri::ContainerStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(id).await;
            if status.state == cri::ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {:?} after {timeout:?}\n{}",
                status.state,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, tonic::Status> {
        self.runtime()
            .await
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// stdout of a command that must succeed.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let out = self
            .exec(id, cmd, 10)
            .await
            .unwrap_or_else(|s| panic!("ExecSync {cmd:?}: {s:?}\n{}", self.log()));
        assert_eq!(
            out.exit_code,
            0,
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// PodSandboxStatus with `verbose`, and its `info` JSON parsed.
    pub async fn pod_status_verbose(
        &self,
        id: &str,
    ) -> (cri::PodSandboxStatusResponse, serde_json::Value) {
        let response = self
            .runtime()
            .await
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: true,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner();
        let info = serde_json::from_str(&response.info["info"]).expect("info is JSON");
        (response, info)
    }

    pub async fn remove_pod(&self, id: &str) {
        let mut client = self.runtime().await;
        client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .expect("StopPodSandbox");
        client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .expect("RemovePodSandbox");
    }

    pub async fn pull_busybox(&self) -> String {
        let registry = crate::Registry::from_env();
        let image = registry.image("kraal-test/busybox:latest");
        self.images()
            .await
            .pull_image(crate::pull_request(&image))
            .await
            .expect("pull busybox");
        image
    }
}

/// Stops and removes every pod of the kraald on `socket`, from a thread of its own so it can
/// run in Drop (even while a test panics).
pub fn remove_all_pods(socket: &Path) {
    let socket = socket.to_path_buf();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(channel) = crate::connect(&socket).await else {
                return;
            };
            let mut client = cri::runtime_service_client::RuntimeServiceClient::new(channel);
            let Ok(pods) = client
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
            else {
                return;
            };
            for pod in pods.into_inner().items {
                let _ = client
                    .stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await;
                if let Err(status) = client
                    .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await
                {
                    eprintln!("cleanup: RemovePodSandbox {}: {status:?}", pod.id);
                }
            }
        });
    })
    .join();
    // The tests' common cgroup parent, in every hierarchy kraal uses, once no test's pod is
    // left in it (rmdir fails while it has children).
    for dir in crate::CgroupDirs::of("/kraal-e2e").all() {
        let _ = std::fs::remove_dir(dir);
    }
}

pub fn assert_code(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    match result {
        Ok(v) => panic!("expected {code:?} mentioning {needle:?}, got Ok({v:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{status:?}");
            assert!(
                status.message().contains(needle),
                "{:?} does not mention {needle:?}",
                status.message()
            );
        }
    }
}
