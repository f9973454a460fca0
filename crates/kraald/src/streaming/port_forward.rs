//! Port-forward: one TCP connection to 127.0.0.1:<port> inside the pod's network namespace
//! per forwarded stream. The socket is created by a short-lived thread that joins the
//! namespace, connects, and hands the connected socket back: a socket keeps the namespace
//! it was made in, and no thread of kraald's runtime is ever left inside a pod's namespace.

use std::net::{Ipv4Addr, SocketAddr, TcpStream as StdTcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kraal_stream::{PortForwardTarget, PortStream, StreamError};
use tokio::net::TcpStream;
use tracing::debug;

use super::stream_error;
use crate::runtime::Runtime;
use crate::state::SandboxState;

/// How long a connect inside the pod may take (a SYN to a loopback port is answered at
/// once; this only bounds a pathological namespace).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn port_forward(
    runtime: &Arc<Runtime>,
    target: PortForwardTarget,
    stream: PortStream,
) -> Result<(), StreamError> {
    let netns = pod_netns(runtime, &target.pod_sandbox_id).map_err(stream_error)?;
    let port = target.port;
    let tcp = connect_in(netns, port).await.map_err(|e| {
        StreamError::Internal(format!(
            "PortForward: connecting to 127.0.0.1:{port} in pod sandbox {}: {e}",
            target.pod_sandbox_id
        ))
    })?;
    // splice returns once the pod's side ended (or the client's, after the pod answered),
    // and returning is what lets the client see the connection end.
    match stream.splice(tcp).await {
        Ok(copied) => {
            debug!(pod = %target.pod_sandbox_id, port, ?copied, "port-forward connection done");
            Ok(())
        }
        Err(e) => {
            debug!(pod = %target.pod_sandbox_id, port, "port-forward connection failed: {e}");
            Err(StreamError::Internal(format!("127.0.0.1:{port}: {e}")))
        }
    }
}

/// The network namespace file of a ready pod; `None`: the node's (hostNetwork).
pub fn pod_netns(runtime: &Runtime, sandbox_id: &str) -> Result<Option<PathBuf>, tonic::Status> {
    let record = runtime.sandbox("PortForward", sandbox_id)?;
    if record.state != SandboxState::Ready {
        return Err(tonic::Status::failed_precondition(format!(
            "PortForward: pod sandbox {} is not ready",
            record.id
        )));
    }
    if record.host_network {
        return Ok(None);
    }
    record.net_ns.map(Some).ok_or_else(|| {
        tonic::Status::failed_precondition(format!(
            "PortForward: pod sandbox {} has no network namespace",
            record.id
        ))
    })
}

async fn connect_in(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Some(netns) = netns else {
        return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)?;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread, not the blocking pool: the pool reuses its threads, and this one
    // ends inside the pod's namespace.
    std::thread::Builder::new()
        .name("kraal-portfwd".into())
        .spawn(move || {
            let _ = tx.send(connect_blocking(&netns, addr));
        })?;
    let std_stream = rx
        .await
        .map_err(|_| std::io::Error::other("the netns thread ended without an answer"))??;
    std_stream.set_nonblocking(true)?;
    TcpStream::from_std(std_stream)
}

fn connect_blocking(netns: &std::path::Path, addr: SocketAddr) -> std::io::Result<StdTcpStream> {
    let file = std::fs::File::open(netns)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", netns.display())))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| std::io::Error::other(format!("setns({}): {e}", netns.display())))?;
    StdTcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
}
