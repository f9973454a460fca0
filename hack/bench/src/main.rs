//! kraal-bench: times CRI calls against any CRI socket, so kraald and containerd are measured
//! by the same client in the same run. Prints one JSON object per measurement.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::image_service_client::ImageServiceClient;

mod pods;
mod streaming;

#[derive(Parser)]
struct Cli {
    /// The runtime's CRI socket.
    #[arg(long)]
    socket: PathBuf,
    /// A label for the output (e.g. kraal, containerd).
    #[arg(long)]
    runtime: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// PullImage then RemoveImage, N times; reports the pull times.
    Pull {
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 20)]
        iterations: usize,
    },
    /// Pod lifecycles (RunPodSandbox, CreateContainer+StartContainer, StopContainer+
    /// RemoveContainer, StopPodSandbox+RemovePodSandbox), N times; reports each step.
    Pods(pods::PodsArgs),
    /// Pod sandboxes alone (RunPodSandbox, StopPodSandbox, RemovePodSandbox), by default
    /// with a network namespace of their own so the runtime's CNI plugins run; prints every
    /// sample too.
    Sandboxes(pods::SandboxesArgs),
    /// Starts pods with running containers and leaves them running (for RSS figures).
    Fill(pods::FillArgs),
    /// Stops and removes every container and pod of the runtime.
    Clean,
    /// Exec round trip (ExecSync and streaming Exec of `true`) and port-forward throughput.
    Streaming(streaming::StreamingArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let channel = kraal_e2e::connect(&cli.socket)
        .await
        .with_context(|| format!("connecting to {}", cli.socket.display()))?;
    match cli.command {
        Command::Pull { image, iterations } => {
            let mut client = ImageServiceClient::new(channel);
            let mut times = Vec::with_capacity(iterations);
            for _ in 0..iterations {
                let started = Instant::now();
                let pulled = client
                    .pull_image(kraal_e2e::pull_request(&image))
                    .await
                    .with_context(|| format!("{}: PullImage {image}", cli.runtime))?
                    .into_inner();
                times.push(started.elapsed());
                client
                    .remove_image(cri::RemoveImageRequest {
                        image: kraal_e2e::image_spec(&pulled.image_ref),
                    })
                    .await
                    .with_context(|| format!("{}: RemoveImage", cli.runtime))?;
                let left = client
                    .image_status(cri::ImageStatusRequest {
                        image: kraal_e2e::image_spec(&pulled.image_ref),
                        verbose: false,
                    })
                    .await?
                    .into_inner();
                if left.image.is_some() {
                    bail!("{}: image still present after RemoveImage", cli.runtime);
                }
            }
            print_stats(&cli.runtime, "PullImage", &mut times);
        }
        Command::Pods(args) => pods::pods(channel, &cli.runtime, args).await?,
        Command::Sandboxes(args) => pods::sandboxes(channel, &cli.runtime, args).await?,
        Command::Fill(args) => pods::fill(channel, &cli.runtime, args).await?,
        Command::Clean => pods::clean(channel, &cli.runtime).await?,
        Command::Streaming(args) => streaming::streaming(channel, &cli.runtime, args).await?,
    }
    Ok(())
}

fn print_stats(runtime: &str, call: &str, times: &mut [Duration]) {
    println!("{}", stats(runtime, call, times));
}

/// The statistics of one call's times (sorts them): count, median, p90 and min in ms.
fn stats(runtime: &str, call: &str, times: &mut [Duration]) -> serde_json::Value {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pick = |q: f64| {
        let index = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(index).copied().map(ms).unwrap_or(0.0)
    };
    serde_json::json!({
        "runtime": runtime,
        "call": call,
        "n": times.len(),
        "median_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "min_ms": times.first().copied().map(ms).unwrap_or(0.0),
    })
}
