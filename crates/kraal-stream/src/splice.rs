//! One forwarded connection copied between the client's [`PortStream`] and the connection the
//! runtime opened to the target port, with the ends kubectl's port-forward relies on.
//!
//! client-go copies the data stream to its local connection until our FIN, then reads the
//! error stream to its end, and only then closes the local connection. So a forward that
//! waited for both directions would wait for a client that waits for it (curl on a response
//! that ends by closing). Hence:
//! - the target ends first (EOF or error): what it sent goes out, the data stream gets its
//!   FIN, the client's direction gets [`TARGET_END_GRACE`] to finish, and the forward ends
//!   (the caller then ends the error stream);
//! - the client half-closes first: the target's write side is shut down and its answer is
//!   copied until it ends, however long that takes: a response must not be cut short.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pipe::{InboundPipe, MAX_CHUNK, OutboundPipe, PortStream};

/// How long the client may still send after the target's side ended, as containerd allows
/// (and socat's default): enough for bytes already in flight, short enough that a client
/// waiting for the error stream's end is not kept waiting.
pub const TARGET_END_GRACE: Duration = Duration::from_secs(1);

/// Bytes copied each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    pub to_target: u64,
    pub to_client: u64,
}

/// A failure of the target's connection: the only kind worth telling the client about (a
/// client that went away cannot read it).
#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error("reading from the forwarded connection: {0}")]
    Read(#[source] io::Error),
    #[error("writing to the forwarded connection: {0}")]
    Write(#[source] io::Error),
}

impl PortStream {
    /// Copies between the client and `conn` until the forward is over (see the module
    /// documentation); `conn` is closed when this returns.
    pub async fn splice<C>(self, conn: C) -> Result<Spliced, SpliceError>
    where
        C: AsyncRead + AsyncWrite + Send,
    {
        let (mut from_client, mut to_client) = self.into_split();
        let (mut from_target, mut to_target) = tokio::io::split(conn);
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let upstream = client_to_target(&mut from_client, &mut to_target, &up);
        let downstream = target_to_client(&mut from_target, &mut to_client, &down);
        tokio::pin!(upstream, downstream);
        let result = tokio::select! {
            target_done = &mut downstream => {
                // Whatever the client's direction does now (a write the closed target
                // refuses, say) is a consequence of the target's end, not news.
                let _ = tokio::time::timeout(TARGET_END_GRACE, &mut upstream).await;
                target_done
            }
            client_done = &mut upstream => match client_done {
                Ok(()) => downstream.await,
                Err(e) => {
                    // The target refused our bytes: let what it already sent get out.
                    let _ = tokio::time::timeout(TARGET_END_GRACE, &mut downstream).await;
                    Err(e)
                }
            },
        };
        result.map(|()| Spliced {
            to_target: up.load(Ordering::Relaxed),
            to_client: down.load(Ordering::Relaxed),
        })
    }
}

/// Until the client's EOF (its FIN, a reset, or its connection gone), then FIN to the target.
async fn client_to_target<W: AsyncWrite + Unpin>(
    client: &mut InboundPipe,
    target: &mut W,
    count: &AtomicU64,
) -> Result<(), SpliceError> {
    let mut buf = vec![0u8; MAX_CHUNK];
    loop {
        // The pipe never fails; treat a failure like its EOF all the same.
        let n = client.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        target
            .write_all(&buf[..n])
            .await
            .map_err(SpliceError::Write)?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    // The target reads EOF and may still answer.
    target.shutdown().await.map_err(SpliceError::Write)
}

/// Until the target's EOF or error, then FIN on the data stream. A client that is gone ends
/// this too, without an error: there is no one to tell.
async fn target_to_client<R: AsyncRead + Unpin>(
    target: &mut R,
    client: &mut OutboundPipe,
    count: &AtomicU64,
) -> Result<(), SpliceError> {
    let mut buf = vec![0u8; MAX_CHUNK];
    let result = loop {
        let n = match target.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(SpliceError::Read(e)),
        };
        if client.write_all(&buf[..n]).await.is_err() {
            break Ok(());
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    };
    let _ = client.shutdown().await;
    result
}
