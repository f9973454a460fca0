//! The CRI streaming server: `Exec`, `Attach` and `PortForward` hand kubelet (or crictl) a
//! URL; the client connects to it and speaks SPDY/3.1 or WebSocket. This crate serves those
//! URLs and knows nothing about containers: it asks the runtime through [`StreamRuntime`].
//!
//! kraald owns a [`Server`], calls [`Server::get_exec_url`] and friends from its CRI
//! handlers, and implements [`StreamRuntime`] over its monitors (attach, pty) and pod
//! network namespaces (port-forward).

// A request must never be able to panic the daemon: clippy proves there is no unwrap or
// expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod error;
mod idle;
mod pipe;
mod remotecommand;
mod runtime;
mod server;
pub mod spdy;
mod splice;
mod status;
mod tls;
mod tokens;
mod websocket;

pub use config::{FlowControl, ServerConfig, TlsConfig};
pub use error::StreamError;
pub use pipe::{ClientGone, InboundPipe, OutboundPipe, PortStream};
pub use runtime::{
    AttachRequest, ExecRequest, PortForwardRequest, PortForwardTarget, StreamIo, StreamRuntime,
    TerminalSize,
};
pub use server::Server;
pub use splice::{SpliceError, Spliced, TARGET_END_GRACE};
