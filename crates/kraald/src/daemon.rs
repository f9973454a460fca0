//! Start-up and shutdown: directories, the single-instance lock, stores, the socket, serving.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kraal_api::kraal::v1::admin_server::AdminServer;
use kraal_api::runtime::v1::image_service_server::ImageServiceServer;
use kraal_api::runtime::v1::runtime_service_server::RuntimeServiceServer;
use kraal_image::ImageStore;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::admin::AdminHandler;
use crate::config::Config;
use crate::cri::{ImageHandler, InUse, RuntimeHandler};
use crate::runtime::Runtime;
use crate::state::StateStore;
use crate::{authority, lock, socket};
use kraal_cgroups::Cgroups;

/// kubelet sends and accepts messages up to 16 MiB; so do we.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long open calls may run on after SIGTERM before kraald exits regardless.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub async fn run(config: Config) -> anyhow::Result<()> {
    make_dir(&config.root, 0o711)?;
    make_dir(&config.state, 0o711)?;
    let _locks = lock::acquire(&[config.root.as_path(), config.state.as_path()])?;

    let images_dir = config.root.join("images");
    let images = ImageStore::open(&images_dir, config.registry.clone())
        .with_context(|| format!("opening the image store in {}", images_dir.display()))?;
    let images = Arc::new(images);

    let (state, problems) = StateStore::open(&config.state)
        .with_context(|| format!("opening the state dir {}", config.state.display()))?;
    for problem in problems {
        tracing::error!("unreadable state record: {problem}");
    }
    let cgroups = Cgroups::detect().context("finding the node's cgroup hierarchies")?;
    let driver = crate::cgroup_driver::Driver::open(config.cgroup_driver)?;
    let monitor_bin = monitor_binary(&config)?;
    let runtime = Runtime::new(
        config.clone(),
        images.clone(),
        Arc::new(state),
        cgroups,
        driver,
        monitor_bin,
    );
    runtime.node.log();
    // Before any CNI ADD (and the CHECKs of re-adopted pods) on systemd nodes.
    crate::network::ensure_udev_link();
    runtime.recover();
    crate::network::check_all(&runtime);

    // Before the socket opens: a client that sees the socket may SIGTERM kraald at once, and
    // a handler installed later (by the task below, whenever it first runs) would leave that
    // signal's default action, death, in place.
    let signals = shutdown_signals();
    let (listener, socket_file) = socket::bind(
        &config.socket,
        &config.socket_group,
        socket::CRI_SOCKET_MODE,
    )?;
    let admin_path = config.admin_socket_path();
    let (admin_listener, admin_socket_file) =
        socket::bind(&admin_path, "", socket::ADMIN_SOCKET_MODE)?;
    let in_use: InUse = {
        let runtime = runtime.clone();
        Arc::new(move |image_id: &str| runtime.container_using_image(image_id))
    };
    let image = ImageHandler::new(images, in_use);
    let admin = AdminHandler::new(runtime.clone());
    let streams = Arc::new(crate::streaming::start(&config.streaming, runtime.clone()).await?);
    let node = runtime.clone();
    let runtime = RuntimeHandler::new(runtime, streams.clone());

    tracing::info!(
        socket = %config.socket.display(),
        admin_socket = %admin_path.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        streaming = %streams.base_url(),
        version = env!("CARGO_PKG_VERSION"),
        "kraald serving CRI v1"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal(signals).await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // authority::incoming: kubelet 1.28-1.30 send the socket path as :authority, which h2
    // alone refuses; both sockets accept any authority a client sends.
    let serving_cri = tonic::transport::Server::builder()
        .trace_fn(|request| tracing::info_span!("cri", call = %request.uri().path()))
        .add_service(
            RuntimeServiceServer::new(runtime)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ImageServiceServer::new(image)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(authority::incoming(listener), stopped(stop_rx.clone()));
    let serving_admin = tonic::transport::Server::builder()
        .trace_fn(|request| tracing::info_span!("admin", call = %request.uri().path()))
        .add_service(AdminServer::new(admin))
        .serve_with_incoming_shutdown(
            authority::incoming(admin_listener),
            stopped(stop_rx.clone()),
        );
    let serving = async {
        tokio::try_join!(
            async { serving_cri.await.context("serving the CRI socket") },
            async { serving_admin.await.context("serving the admin socket") },
        )
        .map(|_| ())
    };
    // Graceful shutdown waits for open calls; a long-lived stream (kubelet keeps one open
    // for events) must not hold kraald forever, so the grace period is bounded.
    let grace = async {
        stopped(stop_rx.clone()).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!("calls still open after {SHUTDOWN_GRACE:?}; stopping anyway");
    };
    let served = tokio::select! {
        served = serving => served,
        () = grace => Ok(()),
    };
    socket_file.remove();
    admin_socket_file.remove();
    // Pins no pod needs go with kraald (left, say, by a kraald that crashed after removing
    // the last pod); those of running pods stay, for the next kraald to re-adopt.
    node.port_programs.release_if_idle(&node.config);
    node.shaper.release_if_idle(&node.config);
    served?;
    tracing::info!("kraald stopped; containers, if any, keep running");
    Ok(())
}

/// The container monitor's binary name (crates/kraal-runtime's `[[bin]]`), found beside
/// kraald unless `monitor_path` says otherwise.
const MONITOR_BIN: &str = "kraal-monitor";

/// The monitor binary: configured, or the one installed beside kraald.
fn monitor_binary(config: &Config) -> anyhow::Result<std::path::PathBuf> {
    let path = if config.monitor_path.as_os_str().is_empty() {
        std::env::current_exe()
            .context("finding kraald's own binary")?
            .with_file_name(MONITOR_BIN)
    } else {
        config.monitor_path.clone()
    };
    if !path.is_file() {
        anyhow::bail!(
            "the container monitor {} does not exist; install kraal-monitor beside kraald or set monitor_path",
            path.display()
        );
    }
    Ok(path)
}

fn make_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

type Signals = (std::io::Result<Signal>, std::io::Result<Signal>);

/// Installs the SIGTERM and SIGINT handlers (tokio installs them when called).
fn shutdown_signals() -> Signals {
    (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    )
}

/// Resolves on SIGTERM or SIGINT. Only serving stops; nothing kraald started is killed.
async fn shutdown_signal((term, int): Signals) {
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; kraald stops only when killed");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MONITOR_BIN;
    use std::path::Path;

    /// hack/run.sh, the README's first command, builds for release and starts kraald from
    /// target/release: it must build the monitor kraald looks for beside itself.
    #[test]
    fn run_sh_builds_the_monitor_kraald_needs() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = std::fs::read_to_string(repo.join("hack/run.sh")).unwrap();
        let build = script
            .lines()
            .find(|line| line.trim_start().starts_with("cargo build"))
            .expect("hack/run.sh runs cargo build");
        let words: Vec<&str> = build.split_whitespace().collect();
        let packages: Vec<&str> = words
            .windows(2)
            .filter(|pair| pair[0] == "-p")
            .map(|pair| pair[1])
            .collect();
        let builds_monitor = packages.iter().any(|package| {
            let manifest = repo.join("crates").join(package).join("Cargo.toml");
            let manifest: toml::Table =
                toml::from_str(&std::fs::read_to_string(manifest).unwrap()).unwrap();
            manifest
                .get("bin")
                .and_then(|bins| bins.as_array())
                .is_some_and(|bins| {
                    bins.iter()
                        .any(|bin| bin.get("name").and_then(|n| n.as_str()) == Some(MONITOR_BIN))
                })
        });
        assert!(
            builds_monitor,
            "hack/run.sh's `{build}` builds none of the packages that have the {MONITOR_BIN} binary"
        );
    }
}
