//! kraald's side of the streaming server: `kraal-stream` serves the URLs and speaks SPDY and
//! WebSocket; this module is the runtime behind it. Exec runs a `kraal-monitor exec`
//! helper on pipes or a pty, attach talks to the container's monitor, port-forward connects
//! inside the pod's network namespace.

mod attach;
mod exec;
mod port_forward;
mod pty;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kraal_stream::{
    AttachRequest, ExecRequest, PortForwardTarget, PortStream, Server, ServerConfig, StreamError,
    StreamIo, StreamRuntime, TlsConfig,
};
use tonic::{Code, Status};

use crate::config::StreamingConfig;
use crate::runtime::Runtime;
use crate::state::{ContainerRecord, ContainerState};

pub type StreamServer = Server<KraalStreams>;

/// The runtime the streaming server asks for exec, attach and port-forward.
pub struct KraalStreams {
    runtime: Arc<Runtime>,
}

/// Binds the streaming server as configured.
pub async fn start(
    config: &StreamingConfig,
    runtime: Arc<Runtime>,
) -> anyhow::Result<StreamServer> {
    let tls = (!config.tls_cert.as_os_str().is_empty()).then(|| TlsConfig {
        cert_path: config.tls_cert.clone(),
        key_path: config.tls_key.clone(),
    });
    let base_url = config.base_url.trim();
    let cfg = ServerConfig {
        listen: config.address,
        base_url: (!base_url.is_empty()).then(|| base_url.to_string()),
        tls,
        token_ttl: Duration::from_secs(config.token_ttl_seconds),
        max_concurrent_streams: config.max_concurrent_streams,
        idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
        ..ServerConfig::default()
    };
    Server::bind(cfg, Arc::new(KraalStreams { runtime }))
        .await
        .with_context(|| format!("starting the streaming server on {}", config.address))
}

impl StreamRuntime for KraalStreams {
    async fn exec(&self, req: ExecRequest, io: StreamIo) -> Result<i32, StreamError> {
        exec::exec(&self.runtime, req, io).await
    }

    async fn attach(&self, req: AttachRequest, io: StreamIo) -> Result<(), StreamError> {
        attach::attach(&self.runtime, req, io).await
    }

    async fn port_forward(
        &self,
        target: PortForwardTarget,
        stream: PortStream,
    ) -> Result<(), StreamError> {
        port_forward::port_forward(&self.runtime, target, stream).await
    }
}

pub use port_forward::pod_netns;

/// The container a call names, if it can take an exec or attach now: running, and its pod
/// not frozen (joining a frozen cgroup would hang the exec until someone thaws the pod).
/// Checked when the URL is minted and again when it is used.
pub fn running_container(
    runtime: &Runtime,
    call: &str,
    container_id: &str,
) -> Result<ContainerRecord, Status> {
    let record = runtime.container(call, container_id)?;
    if record.state != ContainerState::Running {
        return Err(Status::failed_precondition(format!(
            "{call}: container {} is not running ({:?})",
            record.id, record.state
        )));
    }
    crate::policy::refuse_if_frozen(runtime, &record.sandbox_id, call)?;
    Ok(record)
}

/// A streaming server error as the CRI call's status.
pub fn status_of(call: &str, err: StreamError) -> Status {
    let code = match &err {
        StreamError::InvalidArgument(_) => Code::InvalidArgument,
        StreamError::NotFound(_) => Code::NotFound,
        StreamError::FailedPrecondition(_) => Code::FailedPrecondition,
        StreamError::ResourceExhausted(_) => Code::ResourceExhausted,
        _ => Code::Internal,
    };
    Status::new(code, format!("{call}: {err}"))
}

/// A CRI-side refusal (from the checks shared with the gRPC calls) as the session's error.
fn stream_error(status: Status) -> StreamError {
    let msg = status.message().to_string();
    match status.code() {
        Code::NotFound => StreamError::NotFound(msg),
        Code::FailedPrecondition => StreamError::FailedPrecondition(msg),
        Code::InvalidArgument => StreamError::InvalidArgument(msg),
        _ => StreamError::Internal(msg),
    }
}
