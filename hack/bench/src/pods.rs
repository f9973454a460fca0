//! Pod and container lifecycle, timed through the CRI socket the way kubelet drives it:
//! RunPodSandbox, CreateContainer + StartContainer, StopContainer + RemoveContainer,
//! StopPodSandbox + RemovePodSandbox. `fill` leaves pods running so the caller can measure
//! memory; `clean` removes every pod (and container) of the runtime. `sandboxes` times pod
//! sandboxes alone (no container), by default with a network of their own, so the runtime's
//! CNI ADD and DEL are what is measured.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::image_service_client::ImageServiceClient;
use kraal_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::{print_stats, stats};

/// No single CRI call the benchmark makes should take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Grace period for StopContainer (the container exits on SIGTERM at once).
const STOP_TIMEOUT_S: i64 = 10;
/// Pods' metadata.namespace: marks what the benchmark created.
const NAMESPACE: &str = "kraal-bench";
/// A long-running container that exits 0 on SIGTERM right away: as PID 1 of its PID
/// namespace the shell only sees signals it traps, and `wait` returns on a trapped signal.
const SCRIPT: &str = "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done";

#[derive(clap::Args)]
pub struct Common {
    /// The container image (pulled first, untimed).
    #[arg(long)]
    image: String,
    /// Further images to pull first (e.g. containerd's sandbox image).
    #[arg(long = "also-pull")]
    also_pull: Vec<String>,
    /// Each pod's linux.cgroup_parent is <cgroup-root>/<pod name>.
    #[arg(long)]
    cgroup_root: String,
    /// Each pod's log_directory is <log-dir>/<pod name> (created here, as kubelet does).
    #[arg(long)]
    log_dir: PathBuf,
}

#[derive(clap::Args)]
pub struct PodsArgs {
    #[command(flatten)]
    common: Common,
    /// Timed pod lifecycles (after one untimed warm-up).
    #[arg(long, default_value_t = 20)]
    iterations: usize,
}

#[derive(clap::Args)]
pub struct FillArgs {
    #[command(flatten)]
    common: Common,
    /// Pods to leave running.
    #[arg(long, default_value_t = 10)]
    pods: usize,
    /// Running containers in each pod.
    #[arg(long, default_value_t = 5)]
    containers: usize,
}

#[derive(clap::Args)]
pub struct SandboxesArgs {
    /// Images to pull first, untimed (e.g. containerd's sandbox image).
    #[arg(long = "pull")]
    pull: Vec<String>,
    /// Each pod's linux.cgroup_parent is <cgroup-root>/<pod name>.
    #[arg(long)]
    cgroup_root: String,
    /// Each pod's log_directory is <log-dir>/<pod name> (created here, as kubelet does).
    #[arg(long)]
    log_dir: PathBuf,
    /// Timed sandbox lifecycles.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// Untimed lifecycles before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Pod names are <name-prefix>-<i> (unique across the calls of one run).
    #[arg(long, default_value = "sandbox")]
    name_prefix: String,
    /// hostNetwork pods (no CNI) instead of pods with a network namespace of their own.
    #[arg(long)]
    host_network: bool,
    /// Every pod's IP (PodSandboxStatus, untimed) must start with this, e.g. `10.232.0.`:
    /// proves the CNI ADD ran. Ignored for hostNetwork pods.
    #[arg(long)]
    expect_ip_prefix: Option<String>,
}

struct Cri {
    runtime: String,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// One CRI call with a time limit; errors name the runtime and the call.
async fn call<T>(
    runtime: &str,
    what: &str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => bail!("{runtime}: {what}: no answer within {CALL_TIMEOUT:?}"),
        Ok(Err(status)) => bail!(
            "{runtime}: {what} failed: {:?}: {}",
            status.code(),
            status.message()
        ),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

impl Cri {
    fn new(channel: Channel, runtime: &str) -> Cri {
        Cri {
            runtime: runtime.to_string(),
            rt: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    async fn pull<'a>(
        &mut self,
        images: impl IntoIterator<Item = &'a String>,
    ) -> anyhow::Result<()> {
        for image in images {
            let request = kraal_e2e::pull_request(image);
            call(
                &self.runtime,
                &format!("PullImage {image}"),
                self.images.pull_image(request),
            )
            .await?;
        }
        Ok(())
    }

    async fn run_pod(&mut self, config: &cri::PodSandboxConfig) -> anyhow::Result<String> {
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let response = call(
            &self.runtime,
            "RunPodSandbox",
            self.rt.run_pod_sandbox(request),
        )
        .await?;
        Ok(response.pod_sandbox_id)
    }

    async fn create(
        &mut self,
        pod: &str,
        pod_config: &cri::PodSandboxConfig,
        name: &str,
        image: &str,
    ) -> anyhow::Result<String> {
        let mut config = kraal_e2e::shell_container(name, image, SCRIPT);
        // kubelet gives each container the pod's namespace modes (PID: CONTAINER).
        let namespace_options = pod_config
            .linux
            .as_ref()
            .and_then(|linux| linux.security_context.as_ref())
            .and_then(|security| security.namespace_options.clone());
        config.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options,
                ..Default::default()
            }),
            ..Default::default()
        });
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        };
        let response = call(
            &self.runtime,
            &format!("CreateContainer {name}"),
            self.rt.create_container(request),
        )
        .await?;
        Ok(response.container_id)
    }

    async fn start(&mut self, id: &str) -> anyhow::Result<()> {
        let request = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        call(
            &self.runtime,
            &format!("StartContainer {id}"),
            self.rt.start_container(request),
        )
        .await?;
        Ok(())
    }

    async fn stop_remove_container(&mut self, id: &str) -> anyhow::Result<()> {
        self.stop_container(id).await?;
        self.remove_container(id).await
    }

    async fn stop_container(&mut self, id: &str) -> anyhow::Result<()> {
        let stop = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: STOP_TIMEOUT_S,
        };
        call(
            &self.runtime,
            &format!("StopContainer {id}"),
            self.rt.stop_container(stop),
        )
        .await?;
        Ok(())
    }

    async fn remove_container(&mut self, id: &str) -> anyhow::Result<()> {
        let remove = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        call(
            &self.runtime,
            &format!("RemoveContainer {id}"),
            self.rt.remove_container(remove),
        )
        .await?;
        Ok(())
    }

    async fn stop_remove_pod(&mut self, id: &str) -> anyhow::Result<()> {
        self.stop_pod(id).await?;
        self.remove_pod(id).await
    }

    async fn stop_pod(&mut self, id: &str) -> anyhow::Result<()> {
        let stop = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        call(
            &self.runtime,
            &format!("StopPodSandbox {id}"),
            self.rt.stop_pod_sandbox(stop),
        )
        .await?;
        Ok(())
    }

    async fn remove_pod(&mut self, id: &str) -> anyhow::Result<()> {
        let remove = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        call(
            &self.runtime,
            &format!("RemovePodSandbox {id}"),
            self.rt.remove_pod_sandbox(remove),
        )
        .await?;
        Ok(())
    }

    /// The pod's IPs from PodSandboxStatus (`ip` first, then `additional_ips`).
    async fn pod_ips(&mut self, id: &str) -> anyhow::Result<Vec<String>> {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let response = call(
            &self.runtime,
            &format!("PodSandboxStatus {id}"),
            self.rt.pod_sandbox_status(request),
        )
        .await?;
        let network = response
            .status
            .and_then(|status| status.network)
            .unwrap_or_default();
        Ok(std::iter::once(network.ip)
            .chain(network.additional_ips.into_iter().map(|ip| ip.ip))
            .filter(|ip| !ip.is_empty())
            .collect())
    }

    async fn container_state(&mut self, id: &str) -> anyhow::Result<i32> {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let response = call(
            &self.runtime,
            &format!("ContainerStatus {id}"),
            self.rt.container_status(request),
        )
        .await?;
        let status = response
            .status
            .with_context(|| format!("{}: ContainerStatus {id}: no status", self.runtime))?;
        Ok(status.state)
    }

    async fn containers(&mut self, filter: cri::ContainerFilter) -> anyhow::Result<Vec<String>> {
        let request = cri::ListContainersRequest {
            filter: Some(filter),
        };
        let response = call(
            &self.runtime,
            "ListContainers",
            self.rt.list_containers(request),
        )
        .await?;
        Ok(response.containers.into_iter().map(|c| c.id).collect())
    }
}

impl Common {
    fn images(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.image).chain(&self.also_pull)
    }
}

/// kraal_e2e's pod (PID namespace per container, as kubelet's default), hostNetwork or with
/// a network namespace of its own, under the benchmark's cgroup root and log directory.
fn bench_pod(
    name: &str,
    host_network: bool,
    cgroup_root: &str,
    log_dir: &Path,
) -> anyhow::Result<cri::PodSandboxConfig> {
    let mut config = kraal_e2e::pod_config(name, host_network);
    if let Some(metadata) = config.metadata.as_mut() {
        metadata.namespace = NAMESPACE.to_string();
    }
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.cgroup_parent = format!("{}/{name}", cgroup_root.trim_end_matches('/'));
    let log_dir = log_dir.join(name);
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating the pod log directory {}", log_dir.display()))?;
    config.log_directory = path_string(&log_dir)?;
    Ok(config)
}

fn path_string(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[derive(Default)]
struct Times {
    run_pod: Vec<Duration>,
    create: Vec<Duration>,
    start: Vec<Duration>,
    create_start: Vec<Duration>,
    stop_container: Vec<Duration>,
    remove_container: Vec<Duration>,
    stop_remove_container: Vec<Duration>,
    stop_remove_pod: Vec<Duration>,
}

/// One pod lifecycle with one container; records its timings in `times` if given.
async fn lifecycle(
    cri: &mut Cri,
    common: &Common,
    name: &str,
    times: Option<&mut Times>,
) -> anyhow::Result<()> {
    let config = bench_pod(name, true, &common.cgroup_root, &common.log_dir)?;
    let t0 = Instant::now();
    let pod = cri.run_pod(&config).await?;
    let t1 = Instant::now();
    let container = cri.create(&pod, &config, "work", &common.image).await?;
    let t2 = Instant::now();
    cri.start(&container).await?;
    let t3 = Instant::now();
    if times.is_none() {
        // The warm-up checks that the container really runs (outside any timing).
        let state = cri.container_state(&container).await?;
        if state != cri::ContainerState::ContainerRunning as i32 {
            bail!(
                "{}: container {container} of pod {name} is in state {state} right after StartContainer, not RUNNING",
                cri.runtime
            );
        }
    }
    let t4 = Instant::now();
    cri.stop_container(&container).await?;
    let t4b = Instant::now();
    cri.remove_container(&container).await?;
    let t5 = Instant::now();
    cri.stop_remove_pod(&pod).await?;
    let t6 = Instant::now();
    if let Some(times) = times {
        times.run_pod.push(t1 - t0);
        times.create.push(t2 - t1);
        times.start.push(t3 - t2);
        times.create_start.push(t3 - t1);
        times.stop_container.push(t4b - t4);
        times.remove_container.push(t5 - t4b);
        times.stop_remove_container.push(t5 - t4);
        times.stop_remove_pod.push(t6 - t5);
    }
    Ok(())
}

/// `pods`: pull, one untimed warm-up lifecycle, then `iterations` timed ones.
pub async fn pods(channel: Channel, runtime: &str, args: PodsArgs) -> anyhow::Result<()> {
    let mut cri = Cri::new(channel, runtime);
    cri.pull(args.common.images()).await?;
    lifecycle(&mut cri, &args.common, "warmup", None)
        .await
        .context("warm-up pod lifecycle")?;
    let mut times = Times::default();
    for i in 0..args.iterations {
        lifecycle(
            &mut cri,
            &args.common,
            &format!("pod-{i}"),
            Some(&mut times),
        )
        .await
        .with_context(|| format!("pod lifecycle {i}"))?;
    }
    print_stats(runtime, "RunPodSandbox", &mut times.run_pod);
    print_stats(runtime, "CreateContainer", &mut times.create);
    print_stats(runtime, "StartContainer", &mut times.start);
    print_stats(
        runtime,
        "CreateContainer+StartContainer",
        &mut times.create_start,
    );
    print_stats(runtime, "StopContainer", &mut times.stop_container);
    print_stats(runtime, "RemoveContainer", &mut times.remove_container);
    print_stats(
        runtime,
        "StopContainer+RemoveContainer",
        &mut times.stop_remove_container,
    );
    print_stats(
        runtime,
        "StopPodSandbox+RemovePodSandbox",
        &mut times.stop_remove_pod,
    );
    Ok(())
}

/// `sandboxes`: pull, `warmup` untimed sandbox lifecycles, then `iterations` timed ones:
/// RunPodSandbox, then (untimed) PodSandboxStatus to check the pod's IP, then StopPodSandbox
/// and RemovePodSandbox. Prints the statistics and every sample of each call.
pub async fn sandboxes(channel: Channel, runtime: &str, args: SandboxesArgs) -> anyhow::Result<()> {
    let mut cri = Cri::new(channel, runtime);
    cri.pull(&args.pull).await?;
    let mut run = Vec::with_capacity(args.iterations);
    let mut stop = Vec::with_capacity(args.iterations);
    let mut remove = Vec::with_capacity(args.iterations);
    let mut stop_remove = Vec::with_capacity(args.iterations);
    for i in 0..args.warmup + args.iterations {
        let timed = i >= args.warmup;
        let name = if timed {
            format!("{}-{}", args.name_prefix, i - args.warmup)
        } else {
            format!("{}-warmup-{i}", args.name_prefix)
        };
        let config = bench_pod(&name, args.host_network, &args.cgroup_root, &args.log_dir)?;
        let t0 = Instant::now();
        let pod = cri.run_pod(&config).await?;
        let t1 = Instant::now();
        if !args.host_network {
            let ips = cri.pod_ips(&pod).await?;
            let good = match &args.expect_ip_prefix {
                Some(prefix) => ips.iter().any(|ip| ip.starts_with(prefix.as_str())),
                None => !ips.is_empty(),
            };
            if !good {
                // Removed before failing, so the caller's cleanup has nothing of ours to undo.
                let _ = cri.stop_remove_pod(&pod).await;
                bail!(
                    "{runtime}: pod {name} has IPs {ips:?} after RunPodSandbox, expected one{}",
                    match &args.expect_ip_prefix {
                        Some(prefix) => format!(" starting with {prefix}"),
                        None => String::new(),
                    }
                );
            }
        }
        let t2 = Instant::now();
        cri.stop_pod(&pod).await?;
        let t3 = Instant::now();
        cri.remove_pod(&pod).await?;
        let t4 = Instant::now();
        if timed {
            run.push(t1 - t0);
            stop.push(t3 - t2);
            remove.push(t4 - t3);
            stop_remove.push(t4 - t2);
        }
    }
    for (call, times) in [
        ("RunPodSandbox", &mut run),
        ("StopPodSandbox", &mut stop),
        ("RemovePodSandbox", &mut remove),
        ("StopPodSandbox+RemovePodSandbox", &mut stop_remove),
    ] {
        print_samples(runtime, call, times);
    }
    Ok(())
}

/// One JSON line like `print_stats`', plus every sample in the order taken (ms), so a caller
/// can pool the samples of several runs.
fn print_samples(runtime: &str, call: &str, times: &mut [Duration]) {
    let samples: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let mut line = stats(runtime, call, times);
    line["samples_ms"] = serde_json::json!(samples);
    println!("{line}");
}

/// `fill`: `pods` pods of `containers` running containers each, left running; checks they
/// are all RUNNING a second later.
pub async fn fill(channel: Channel, runtime: &str, args: FillArgs) -> anyhow::Result<()> {
    let mut cri = Cri::new(channel, runtime);
    cri.pull(args.common.images()).await?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for p in 0..args.pods {
        let name = format!("fill-{p}");
        let config = bench_pod(&name, true, &args.common.cgroup_root, &args.common.log_dir)?;
        let pod = cri.run_pod(&config).await?;
        for c in 0..args.containers {
            let id = cri
                .create(&pod, &config, &format!("work-{c}"), &args.common.image)
                .await?;
            cri.start(&id).await?;
            ids.push(id);
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running = cri
        .containers(cri::ContainerFilter {
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        })
        .await?;
    let missing: Vec<&String> = ids.iter().filter(|id| !running.contains(id)).collect();
    if !missing.is_empty() {
        bail!(
            "{runtime}: {} of {} containers are not RUNNING a second after StartContainer: {missing:?}",
            missing.len(),
            ids.len()
        );
    }
    let line = serde_json::json!({
        "runtime": runtime,
        "call": "fill",
        "pods": args.pods,
        "containers": ids.len(),
        "total_ms": elapsed.as_secs_f64() * 1000.0,
    });
    println!("{line}");
    Ok(())
}

/// `clean`: stops and removes every container and pod of the runtime, as kubelet tears a
/// pod down. Keeps going past failures and reports them all at the end.
pub async fn clean(channel: Channel, runtime: &str) -> anyhow::Result<()> {
    let mut cri = Cri::new(channel, runtime);
    let started = Instant::now();
    let pods = call(
        runtime,
        "ListPodSandbox",
        cri.rt
            .list_pod_sandbox(cri::ListPodSandboxRequest::default()),
    )
    .await?
    .items;
    let mut failures = Vec::new();
    let mut containers = 0;
    for pod in &pods {
        let ids = match cri
            .containers(cri::ContainerFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(ids) => ids,
            Err(err) => {
                failures.push(format!("{err:#}"));
                Vec::new()
            }
        };
        for id in ids {
            containers += 1;
            if let Err(err) = cri.stop_remove_container(&id).await {
                failures.push(format!("{err:#}"));
            }
        }
        if let Err(err) = cri.stop_remove_pod(&pod.id).await {
            failures.push(format!("{err:#}"));
        }
    }
    let line = serde_json::json!({
        "runtime": runtime,
        "call": "clean",
        "pods": pods.len(),
        "containers": containers,
        "total_ms": started.elapsed().as_secs_f64() * 1000.0,
    });
    println!("{line}");
    if !failures.is_empty() {
        bail!(
            "{runtime}: cleaning up failed {} time(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
