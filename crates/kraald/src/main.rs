//! kraald: kraal's CRI daemon. kubelet talks to it over a unix socket, as to containerd.
// A request must never panic the daemon: unwrap/expect only in tests (clippy enforces it).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod admin;
mod authority;
mod bandwidth;
mod cgroup_driver;
mod clock;
mod config;
mod cri;
mod daemon;
mod lock;
mod logging;
mod network;
mod node_facts;
mod pod_infra;
mod policy;
mod ports;
mod runtime;
mod socket;
mod state;
mod streaming;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(name = "kraald", version, about = "kraal's CRI runtime daemon")]
struct Cli {
    /// Config file (TOML). Default: /etc/kraal/config.toml, if it exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// CRI socket path (overrides `socket`).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Persistent data directory: images and metadata (overrides `root`).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state directory (overrides `state`).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Log level or tracing filter (overrides `log.level`).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Print the embedded default config and exit.
    #[arg(long)]
    print_default_config: bool,
}

fn main() -> ExitCode {
    // A shared-PID pod's infra process is this binary; it must not parse kraald's flags.
    if std::env::args().nth(1).as_deref() == Some(pod_infra::ARG) {
        pod_infra::main();
    }
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        socket: cli.socket,
        root: cli.root,
        state: cli.state,
        log_level: cli.log_level,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("kraald: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = logging::init(&config.log) {
        eprintln!("kraald: {err:#}");
        return ExitCode::from(2);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("kraald: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    // Two workers are plenty for a node agent and keep the idle footprint small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(config))
}
