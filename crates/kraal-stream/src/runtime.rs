//! What the server asks of the runtime. kraald implements [`StreamRuntime`]: exec through a
//! pty or pipes in the container, attach through the monitor's stdio socket, port-forward
//! by connecting inside the pod's network namespace.

use std::future::Future;

use tokio::sync::mpsc;

use crate::error::StreamError;
use crate::pipe::{ClientGone, InboundPipe, OutboundPipe, PortStream};

/// A CRI `ExecRequest`, kept by the server until its URL is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A CRI `AttachRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A CRI `PortForwardRequest`. `ports` may be empty: the client names ports per stream
/// (SPDY) or in the URL's `ports` query (WebSocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    pub pod_sandbox_id: String,
    pub ports: Vec<u16>,
}

/// One forwarded connection's destination: a port inside the sandbox's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardTarget {
    pub pod_sandbox_id: String,
    pub port: u16,
}

/// A terminal size as the client reports it (columns, rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The client's side of an exec or attach, as plain async pipes.
///
/// Each field is present only when the request asked for it (`stderr` is never present with
/// a tty: the terminal merges it into stdout). When the client goes away, `stdin` reads EOF,
/// writes to `stdout`/`stderr` fail with `BrokenPipe`, and `client_gone` fires: the runtime
/// must then stop what it started for this request (an exec's process, its pty) and return.
/// An attach must only detach: the container keeps running.
pub struct StreamIo {
    pub stdin: Option<InboundPipe>,
    pub stdout: Option<OutboundPipe>,
    pub stderr: Option<OutboundPipe>,
    /// Terminal size changes, first one as soon as the client sends it (tty only).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub client_gone: ClientGone,
}

/// The runtime behind the streaming server.
///
/// Futures are `Send` because the server runs them on its own tasks. A future that is still
/// running [`crate::ServerConfig::runtime_grace`] after the client went away is dropped, so
/// whatever must not outlive the request should also be cleaned up on drop (e.g. spawn the
/// exec's process with `kill_on_drop`).
pub trait StreamRuntime: Send + Sync + 'static {
    /// Runs `req.cmd` in the container and returns its exit code (128 + signal number when
    /// it was killed by a signal, as a shell reports it).
    fn exec(
        &self,
        req: ExecRequest,
        io: StreamIo,
    ) -> impl Future<Output = Result<i32, StreamError>> + Send;

    /// Connects `io` to the running container's stdio until the client detaches (returns
    /// `Ok`) or the container exits.
    fn attach(
        &self,
        req: AttachRequest,
        io: StreamIo,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Connects `stream` to `target.port` inside the sandbox's network namespace and copies
    /// with [`PortStream::splice`]: returning is what ends the connection for the client (the
    /// server then ends its error stream), so this must return once the target's side ended,
    /// not wait for the client to close first. An `Err` is shown to the client as the
    /// connection's error.
    fn port_forward(
        &self,
        target: PortForwardTarget,
        stream: PortStream,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;
}
