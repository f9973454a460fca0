//! Exec and attach, independent of the transport: the SPDY and WebSocket adapters collect
//! the client's streams into [`Endpoints`] and call [`run`], then deliver the [`Outcome`] on
//! the error stream in the form their protocol version wants.

use std::pin::pin;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::error::StreamError;
use crate::pipe::{ClientGone, InboundPipe, OutboundPipe};
use crate::runtime::{AttachRequest, ExecRequest, StreamIo, StreamRuntime, TerminalSize};
use crate::status::{self, Outcome};

#[derive(Debug, Clone)]
pub(crate) enum Command {
    Exec(ExecRequest),
    Attach(AttachRequest),
}

impl Command {
    pub(crate) fn tty(&self) -> bool {
        match self {
            Command::Exec(r) => r.tty,
            Command::Attach(r) => r.tty,
        }
    }

    /// (stdin, stdout, stderr) as requested; a tty has no separate stderr.
    pub(crate) fn wants(&self) -> (bool, bool, bool) {
        let (i, o, e) = match self {
            Command::Exec(r) => (r.stdin, r.stdout, r.stderr),
            Command::Attach(r) => (r.stdin, r.stdout, r.stderr),
        };
        (i, o, e && !self.tty())
    }
}

/// The remotecommand protocol versions, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

impl Version {
    /// The SPDY `X-Stream-Protocol-Version` names, in the server's preference order.
    pub(crate) const SPDY: &'static [(&'static str, Version)] = &[
        ("v4.channel.k8s.io", Version::V4),
        ("v3.channel.k8s.io", Version::V3),
        ("v2.channel.k8s.io", Version::V2),
        ("channel.k8s.io", Version::V1),
    ];

    /// The WebSocket subprotocols.
    pub(crate) const WEBSOCKET: &'static [(&'static str, Version)] = &[
        ("v5.channel.k8s.io", Version::V5),
        ("v4.channel.k8s.io", Version::V4),
    ];

    /// Whether the client sends terminal sizes on a resize stream (v3 on).
    pub(crate) fn has_resize(self) -> bool {
        self >= Version::V3
    }

    /// The error stream's content for `outcome`, `None` for nothing.
    pub(crate) fn status(self, outcome: &Outcome) -> Option<Vec<u8>> {
        if self >= Version::V4 {
            Some(status::status_json(outcome))
        } else {
            status::status_text(outcome)
        }
    }
}

/// The client's streams for one command.
#[derive(Default)]
pub(crate) struct Endpoints {
    pub stdin: Option<InboundPipe>,
    pub stdout: Option<OutboundPipe>,
    pub stderr: Option<OutboundPipe>,
    pub resize: Option<InboundPipe>,
}

/// Runs `cmd` on the runtime until it returns. Once `gone` fires the runtime gets `grace`
/// to notice and return; then its future is dropped.
pub(crate) async fn run<R: StreamRuntime>(
    runtime: &R,
    cmd: Command,
    ep: Endpoints,
    gone: CancellationToken,
    grace: Duration,
) -> Outcome {
    let (resize_tx, resize_rx) = match ep.resize {
        Some(_) => {
            let (tx, rx) = mpsc::channel(8);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let io = StreamIo {
        stdin: ep.stdin,
        stdout: ep.stdout,
        stderr: ep.stderr,
        resize: resize_rx,
        client_gone: ClientGone::new(gone.clone()),
    };
    let mut work = pin!(async {
        match cmd {
            Command::Exec(r) => match runtime.exec(r, io).await {
                Ok(code) => Outcome::Exited(code),
                Err(e) => Outcome::Failed(e),
            },
            Command::Attach(r) => match runtime.attach(r, io).await {
                Ok(()) => Outcome::Detached,
                Err(e) => Outcome::Failed(e),
            },
        }
    });
    let mut decode = pin!(decode_resize(ep.resize, resize_tx));
    let mut decoding = true;
    let mut deadline = pin!(tokio::time::sleep(Duration::MAX));
    let mut gone_seen = false;
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            _ = &mut decode, if decoding => decoding = false,
            _ = gone.cancelled(), if !gone_seen => {
                gone_seen = true;
                debug!("client gone; waiting for the runtime to return");
                deadline.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            _ = &mut deadline, if gone_seen => {
                return Outcome::Failed(StreamError::Internal(
                    "client went away and the runtime did not return in time".into(),
                ));
            }
        }
    }
}

/// Turns the resize stream's concatenated JSON objects (`{"Width":80,"Height":24}`) into
/// sizes. Malformed input is dropped, not fatal: a terminal size is advisory.
async fn decode_resize(pipe: Option<InboundPipe>, tx: Option<mpsc::Sender<TerminalSize>>) {
    let (Some(mut pipe), Some(tx)) = (pipe, tx) else {
        return;
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
        let mut keep_from = buf.len();
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    // The runtime may have stopped listening; keep draining regardless.
                    let _ = tx.send(size).await;
                }
                Some(Err(e)) if e.is_eof() => {
                    keep_from = it.byte_offset();
                    break;
                }
                Some(Err(e)) => {
                    debug!("resize stream: dropping malformed input: {e}");
                    break;
                }
                None => break,
            }
        }
        buf.drain(..keep_from.min(buf.len()));
        // A well-behaved client sends objects of ~30 bytes.
        if buf.len() > 4096 {
            buf.clear();
        }
    }
}
