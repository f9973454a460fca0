//! Streaming: exec round trip of `true` through ExecSync and through Exec + its URL (SPDY,
//! remotecommand v4, as kubelet speaks it), and port-forward throughput of one connection
//! to an echo server for a fixed time. Runtime-agnostic: only CRI calls and the URLs.
//!
//! Several runtimes (`--peer`) are measured in one run, interleaved: the execs in rounds
//! that visit every runtime in turn (the first one rotating), the port-forward runs
//! alternating too, so a slow phase of the machine (another build, page cache churn) lands
//! on all of them instead of biasing whichever ran at that moment.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::image_service_client::ImageServiceClient;
use kraal_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use kraal_stream_testclient::spdy_client::{Event, SpdyClient};
use tonic::transport::Channel;

use crate::print_stats;

const T: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct StreamingArgs {
    /// A busybox image (runs `nc -ll -p PORT -e cat`).
    #[arg(long)]
    image: String,
    /// Parent of the pods' linux.cgroup_parent: each runtime's pod gets `<this>/<name>`.
    #[arg(long)]
    cgroup_parent: String,
    /// Timed execs of each kind, per runtime.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// The execs are split into this many rounds, each visiting every runtime in turn.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds of port-forward traffic per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Port-forward runs per runtime (alternating between the runtimes).
    #[arg(long, default_value_t = 2)]
    forward_runs: usize,
    /// The echo server's port for the first runtime; the peers get the next ports (the pods
    /// use the node's network and run at the same time).
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Another runtime to measure in the same run, as NAME=SOCKET (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Images pulled into every runtime first (containerd's sandbox image).
    #[arg(long)]
    also_pull: Vec<String>,
}

/// One runtime under test, with what the run measured on it.
struct Target {
    name: String,
    rt: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    port: u16,
    pod: Option<String>,
    container: String,
    exec_sync: Vec<Duration>,
    exec: Vec<Duration>,
    /// MiB/s of each port-forward run.
    forward: Vec<f64>,
}

pub async fn streaming(channel: Channel, runtime: &str, args: StreamingArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.iterations < args.rounds {
        bail!("--iterations must be at least --rounds (and --rounds at least 1)");
    }
    let mut targets = vec![Target::new(runtime, channel, args.port)];
    for (i, peer) in args.peers.iter().enumerate() {
        let Some((name, socket)) = peer.split_once('=') else {
            bail!("--peer {peer}: expected NAME=SOCKET");
        };
        let channel = kraal_e2e::connect(Path::new(socket))
            .await
            .with_context(|| format!("connecting to {socket}"))?;
        let port = args
            .port
            .checked_add(i as u16 + 1)
            .context("--port leaves no room for the peers' ports")?;
        targets.push(Target::new(name, channel, port));
    }

    // Every pod that was started is removed again, whatever failed in between: the script
    // around this cleans up too, but only by force.
    let mut result = Ok(());
    for target in &mut targets {
        result = target.setup(&args).await;
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = measure(&mut targets, &args).await;
    }
    for target in &mut targets {
        target.teardown().await;
    }
    result?;

    for target in &mut targets {
        print_stats(&target.name, "ExecSync true", &mut target.exec_sync);
        print_stats(&target.name, "Exec true (streaming)", &mut target.exec);
        let line = serde_json::json!({
            "runtime": target.name,
            "call": "PortForward echo throughput",
            "seconds_per_run": args.seconds,
            "mib_per_s_runs": target.forward,
            "mib_per_s": mean(&target.forward),
        });
        println!("{line}");
    }
    print_table(&targets, &args);
    Ok(())
}

impl Target {
    fn new(name: &str, channel: Channel, port: u16) -> Target {
        Target {
            name: name.to_string(),
            rt: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            port,
            pod: None,
            container: String::new(),
            exec_sync: Vec::new(),
            exec: Vec::new(),
            forward: Vec::new(),
        }
    }

    /// Pulls, starts a hostNetwork pod with the echo server in it, and does one untimed
    /// exec of each kind (the first exec pays for things later ones do not: the streaming
    /// server's first connection, the image's `true` paged in).
    async fn setup(&mut self, args: &StreamingArgs) -> anyhow::Result<()> {
        let name = self.name.clone();
        for image in std::iter::once(&args.image).chain(&args.also_pull) {
            self.images
                .pull_image(kraal_e2e::pull_request(image))
                .await
                .with_context(|| format!("{name}: PullImage {image}"))?;
        }
        let pod_cfg = self.pod_config(args);
        let pod = self
            .rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .with_context(|| format!("{name}: RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id;
        self.pod = Some(pod.clone());
        let mut config = kraal_e2e::shell_container(
            "echo",
            &args.image,
            &format!("exec nc -ll -p {} -e cat", self.port),
        );
        config.log_path = String::new();
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod,
                config: Some(config),
                sandbox_config: Some(pod_cfg),
            })
            .await
            .with_context(|| format!("{name}: CreateContainer"))?
            .into_inner()
            .container_id;
        self.container = id.clone();
        self.rt
            .start_container(cri::StartContainerRequest { container_id: id })
            .await
            .with_context(|| format!("{name}: StartContainer"))?;
        self.exec_sync_once().await?;
        self.exec_once().await?;
        Ok(())
    }

    fn pod_config(&self, args: &StreamingArgs) -> cri::PodSandboxConfig {
        let mut pod_cfg = kraal_e2e::pod_config("bench-stream", true);
        pod_cfg
            .linux
            .get_or_insert_with(Default::default)
            .cgroup_parent = format!("{}/{}", args.cgroup_parent.trim_end_matches('/'), self.name);
        pod_cfg
    }

    async fn teardown(&mut self) {
        let Some(pod) = self.pod.take() else { return };
        let stopped = self
            .rt
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await;
        let removed = self
            .rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await;
        if let Err(e) = stopped.and(removed) {
            eprintln!("bench: {}: removing the pod: {e}", self.name);
        }
    }

    async fn exec_sync_once(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let r = self
            .rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: self.container.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .with_context(|| format!("{}: ExecSync", self.name))?
            .into_inner();
        if r.exit_code != 0 {
            bail!("{}: ExecSync true exited {}", self.name, r.exit_code);
        }
        Ok(started.elapsed())
    }

    /// Exec `true`: the call, the upgrade, the streams, until the status arrives and the
    /// output streams end.
    async fn exec_once(&mut self) -> anyhow::Result<Duration> {
        let name = &self.name;
        let started = Instant::now();
        let url = self
            .rt
            .exec(cri::ExecRequest {
                container_id: self.container.clone(),
                cmd: vec!["true".into()],
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .with_context(|| format!("{name}: Exec"))?
            .into_inner()
            .url;
        let (client, _) = SpdyClient::connect(&url, &["v4.channel.k8s.io"], false)
            .await
            .map_err(|r| anyhow::anyhow!("{name}: upgrade refused: {r:?}"))?;
        let mut error = client.open(&[("streamtype", "error")]).await;
        let mut stdout = client.open(&[("streamtype", "stdout")]).await;
        let mut stderr = client.open(&[("streamtype", "stderr")]).await;
        let status = error.read_to_end(T).await;
        stdout.read_to_end(T).await;
        stderr.read_to_end(T).await;
        let elapsed = started.elapsed();
        client.shutdown().await;
        // v4 sends a Status object; an empty error stream is success in the older versions.
        if !status.is_empty() && !String::from_utf8_lossy(&status).contains("Success") {
            bail!("{name}: Exec true: {}", String::from_utf8_lossy(&status));
        }
        Ok(elapsed)
    }

    /// One connection through PortForward to the echo server, writing as fast as the
    /// connection takes for `seconds`; the rate is what came back over the time until the
    /// last echoed byte.
    async fn forward_once(&mut self, seconds: u64) -> anyhow::Result<f64> {
        let name = self.name.clone();
        let pod = self.pod.clone().context("no pod")?;
        let url = self
            .rt
            .port_forward(cri::PortForwardRequest {
                pod_sandbox_id: pod,
                port: vec![self.port.into()],
            })
            .await
            .with_context(|| format!("{name}: PortForward"))?
            .into_inner()
            .url;
        let (client, _) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
            .await
            .map_err(|r| anyhow::anyhow!("{name}: upgrade refused: {r:?}"))?;
        let p = self.port.to_string();
        let mut error = client
            .open(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])
            .await;
        let mut data = client
            .open(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])
            .await;
        let (writer, sid) = (data.client_handle(), data.id);
        let duration = Duration::from_secs(seconds);
        let chunk = vec![0x5au8; 16 * 1024];
        let started = Instant::now();
        let sending = tokio::spawn(async move {
            while started.elapsed() < duration {
                writer.send_data(sid, false, &chunk).await;
            }
            writer.send_data(sid, true, &[]).await;
        });
        // Counted as it arrives rather than with read_to_end: a runtime that keeps the
        // stream open after the echo server is done must not turn its wait into a low rate.
        let mut echoed = 0usize;
        let mut last = started;
        let deadline = tokio::time::Instant::now() + duration + T;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // After the writer stopped, a second of silence ends the run.
            let wait = if started.elapsed() > duration {
                left.min(Duration::from_secs(1))
            } else {
                left
            };
            match data.next(wait).await {
                Some(Event::Data(d)) => {
                    echoed += d.len();
                    last = Instant::now();
                }
                Some(Event::Reply) => {}
                Some(_) | None => break,
            }
        }
        sending.abort();
        client.shutdown().await;
        if echoed == 0 {
            let err = error
                .read_until(Duration::from_secs(1), |b| !b.is_empty())
                .await;
            bail!(
                "{name}: nothing came back through port-forward: {}",
                String::from_utf8_lossy(&err)
            );
        }
        let elapsed = last.duration_since(started).as_secs_f64();
        Ok(echoed as f64 / elapsed / (1024.0 * 1024.0))
    }
}

async fn measure(targets: &mut [Target], args: &StreamingArgs) -> anyhow::Result<()> {
    let n = targets.len();
    for round in 0..args.rounds {
        // Spread the iterations over the rounds (the first rounds take the remainder).
        let count =
            args.iterations / args.rounds + usize::from(round < args.iterations % args.rounds);
        for k in 0..n {
            let target = &mut targets[(round + k) % n];
            eprintln!(
                "bench: round {}/{}: {}",
                round + 1,
                args.rounds,
                target.name
            );
            for _ in 0..count {
                let d = target.exec_sync_once().await?;
                target.exec_sync.push(d);
            }
            for _ in 0..count {
                let d = target.exec_once().await?;
                target.exec.push(d);
            }
        }
    }
    for run in 0..args.forward_runs {
        for k in 0..n {
            let target = &mut targets[(run + k) % n];
            eprintln!(
                "bench: port-forward run {}/{}: {} ({} s)",
                run + 1,
                args.forward_runs,
                target.name,
                args.seconds
            );
            let rate = target.forward_once(args.seconds).await?;
            target.forward.push(rate);
        }
    }
    Ok(())
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// `q`-quantile of sorted `times`, in ms.
fn quantile_ms(times: &[Duration], q: f64) -> f64 {
    let index = ((times.len() as f64 - 1.0) * q).round() as usize;
    times
        .get(index)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The side-by-side table, after the JSON lines; the ratio column is the first runtime
/// over the first peer.
fn print_table(targets: &[Target], args: &StreamingArgs) {
    let mut header = format!(
        "{:<40}",
        format!("streaming ({} execs each)", args.iterations)
    );
    for t in targets {
        header.push_str(&format!(" {:>12}", t.name));
    }
    if targets.len() > 1 {
        header.push_str(&format!(" {:>8}", "ratio"));
    }
    println!();
    println!("{header}");
    let row = |label: &str, values: Vec<f64>, decimals: usize| {
        let mut line = format!("{label:<40}");
        for v in &values {
            line.push_str(&format!(" {v:>12.decimals$}"));
        }
        if let [a, b, ..] = values[..]
            && b > 0.0
        {
            line.push_str(&format!(" {:>8.2}", a / b));
        }
        println!("{line}");
    };
    let sorted = |f: fn(&Target) -> &Vec<Duration>| -> Vec<Vec<Duration>> {
        targets
            .iter()
            .map(|t| {
                let mut v = f(t).clone();
                v.sort();
                v
            })
            .collect()
    };
    let sync = sorted(|t| &t.exec_sync);
    let exec = sorted(|t| &t.exec);
    for (label, times) in [("ExecSync true", &sync), ("Exec true (SPDY v4)", &exec)] {
        for (q, qname) in [(0.5, "median"), (0.9, "p90")] {
            row(
                &format!("{label} {qname} (ms)"),
                times.iter().map(|v| quantile_ms(v, q)).collect(),
                2,
            );
        }
    }
    row(
        &format!(
            "PortForward echo, {} x {} s (MiB/s)",
            args.forward_runs, args.seconds
        ),
        targets.iter().map(|t| mean(&t.forward)).collect(),
        1,
    );
}
