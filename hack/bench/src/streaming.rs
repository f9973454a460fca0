//! Streaming: exec round trip of `true` through ExecSync and through Exec + its URL (SPDY,
//! remotecommand v4, as kubelet speaks it), and port-forward throughput of one connection
//! to an echo server for a fixed time. Runtime-agnostic: only CRI calls and the URLs.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::runtime_service_client::RuntimeServiceClient;
use kraal_stream_testclient::spdy_client::SpdyClient;
use tonic::transport::Channel;

use crate::print_stats;

const T: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct StreamingArgs {
    /// A busybox image (runs `nc -ll -p PORT -e cat`).
    #[arg(long)]
    image: String,
    /// The pod's linux.cgroup_parent.
    #[arg(long)]
    cgroup_parent: String,
    /// Timed execs of each kind.
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// Seconds of port-forward traffic.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The echo server's port (hostNetwork pod: a free port of the node).
    #[arg(long, default_value_t = 18080)]
    port: u16,
}

pub async fn streaming(channel: Channel, runtime: &str, args: StreamingArgs) -> anyhow::Result<()> {
    let mut rt = RuntimeServiceClient::new(channel.clone());
    let mut images = kraal_api::runtime::v1::image_service_client::ImageServiceClient::new(channel);
    images
        .pull_image(kraal_e2e::pull_request(&args.image))
        .await
        .with_context(|| format!("{runtime}: PullImage"))?;
    let mut pod_cfg = kraal_e2e::pod_config("bench-stream", true);
    pod_cfg
        .linux
        .get_or_insert_with(Default::default)
        .cgroup_parent = args.cgroup_parent.clone();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: String::new(),
        })
        .await
        .with_context(|| format!("{runtime}: RunPodSandbox"))?
        .into_inner()
        .pod_sandbox_id;
    let result = measure(&mut rt, runtime, &args, &pod, &pod_cfg).await;
    let _ = rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await;
    let _ = rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await;
    result
}

async fn measure(
    rt: &mut RuntimeServiceClient<Channel>,
    runtime: &str,
    args: &StreamingArgs,
    pod: &str,
    pod_cfg: &cri::PodSandboxConfig,
) -> anyhow::Result<()> {
    let mut config = kraal_e2e::shell_container(
        "echo",
        &args.image,
        &format!("exec nc -ll -p {} -e cat", args.port),
    );
    config.log_path = String::new();
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await
        .with_context(|| format!("{runtime}: CreateContainer"))?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .with_context(|| format!("{runtime}: StartContainer"))?;

    // ExecSync `true`.
    let mut times = Vec::with_capacity(args.iterations);
    for i in 0..=args.iterations {
        let started = Instant::now();
        let r = rt
            .exec_sync(cri::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .with_context(|| format!("{runtime}: ExecSync"))?
            .into_inner();
        if r.exit_code != 0 {
            bail!("{runtime}: ExecSync true exited {}", r.exit_code);
        }
        if i > 0 {
            times.push(started.elapsed());
        }
    }
    print_stats(runtime, "ExecSync true", &mut times);

    // Exec `true`: the call, the upgrade, the streams, until the status arrives.
    let mut times = Vec::with_capacity(args.iterations);
    for i in 0..=args.iterations {
        let started = Instant::now();
        let url = rt
            .exec(cri::ExecRequest {
                container_id: id.clone(),
                cmd: vec!["true".into()],
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
            })
            .await
            .with_context(|| format!("{runtime}: Exec"))?
            .into_inner()
            .url;
        let (client, _) = SpdyClient::connect(&url, &["v4.channel.k8s.io"], false)
            .await
            .map_err(|r| anyhow::anyhow!("{runtime}: upgrade refused: {r:?}"))?;
        let mut error = client.open(&[("streamtype", "error")]).await;
        let mut stdout = client.open(&[("streamtype", "stdout")]).await;
        let mut stderr = client.open(&[("streamtype", "stderr")]).await;
        let status = error.read_to_end(T).await;
        stdout.read_to_end(T).await;
        stderr.read_to_end(T).await;
        if !status.is_empty() && !String::from_utf8_lossy(&status).contains("Success") {
            bail!("{runtime}: Exec true: {}", String::from_utf8_lossy(&status));
        }
        if i > 0 {
            times.push(started.elapsed());
        }
        client.shutdown().await;
    }
    print_stats(runtime, "Exec true (streaming)", &mut times);

    // Port-forward: one connection, as much as the echo server returns in the time.
    let url = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: pod.to_string(),
            port: vec![args.port.into()],
        })
        .await
        .with_context(|| format!("{runtime}: PortForward"))?
        .into_inner()
        .url;
    let (client, _) = SpdyClient::connect(&url, &["portforward.k8s.io"], false)
        .await
        .map_err(|r| anyhow::anyhow!("{runtime}: upgrade refused: {r:?}"))?;
    let p = args.port.to_string();
    let _error = client
        .open(&[("streamtype", "error"), ("port", &p), ("requestid", "0")])
        .await;
    let mut data = client
        .open(&[("streamtype", "data"), ("port", &p), ("requestid", "0")])
        .await;
    let (writer, sid) = (data.client_handle(), data.id);
    let duration = Duration::from_secs(args.seconds);
    let chunk = vec![0x5au8; 16 * 1024];
    let started = Instant::now();
    let sending = tokio::spawn(async move {
        while started.elapsed() < duration {
            writer.send_data(sid, false, &chunk).await;
        }
        writer.send_data(sid, true, &[]).await;
    });
    let echoed = data.read_to_end(duration + T).await.len();
    let elapsed = started.elapsed();
    sending.await.context("port-forward writer")?;
    client.shutdown().await;
    let line = serde_json::json!({
        "runtime": runtime,
        "call": "PortForward echo throughput",
        "seconds": elapsed.as_secs_f64(),
        "echoed_bytes": echoed,
        "mib_per_s": echoed as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0),
    });
    println!("{line}");
    Ok(())
}
