//! The byte pipes between a protocol session and the runtime. The runtime sees plain
//! `AsyncRead`/`AsyncWrite`; the session on the other end turns them into SPDY streams or
//! WebSocket channels. Bounded channels carry the backpressure both ways.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, PollSender};

/// The largest chunk one write hands to the session; bigger writes are split so one frame
/// never holds more than this.
pub(crate) const MAX_CHUNK: usize = 32 * 1024;

/// How many chunks may wait in a pipe.
pub(crate) const PIPE_DEPTH: usize = 16;

/// Called with the number of bytes the reader consumed: SPDY turns it into WINDOW_UPDATE.
pub(crate) type Credit = Arc<dyn Fn(usize) + Send + Sync>;

/// Data from the client (stdin, a forwarded connection's upstream). Reads EOF when the
/// client closes its side or goes away.
pub struct InboundPipe {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
    credit: Option<Credit>,
}

/// Creates a pipe whose sending end the session feeds.
pub(crate) fn inbound(credit: Option<Credit>) -> (mpsc::Sender<Bytes>, InboundPipe) {
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    (
        tx,
        InboundPipe {
            rx,
            pending: Bytes::new(),
            credit,
        },
    )
}

impl AsyncRead for InboundPipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.rx.poll_recv(cx)) {
                Some(chunk) => self.pending = chunk,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        let chunk = self.pending.split_to(n);
        buf.put_slice(&chunk);
        if let Some(credit) = &self.credit {
            credit(n);
        }
        Poll::Ready(Ok(()))
    }
}

/// Data to the client (stdout, stderr, a forwarded connection's downstream). Writes fail
/// with `BrokenPipe` once the client is gone; dropping it (or `shutdown`) ends the stream.
pub struct OutboundPipe {
    tx: PollSender<Bytes>,
}

pub(crate) fn outbound() -> (OutboundPipe, mpsc::Receiver<Bytes>) {
    let (tx, rx) = mpsc::channel(PIPE_DEPTH);
    (
        OutboundPipe {
            tx: PollSender::new(tx),
        },
        rx,
    )
}

impl AsyncWrite for OutboundPipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if ready!(self.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(MAX_CHUNK);
        match self.tx.send_item(Bytes::copy_from_slice(&buf[..n])) {
            Ok(()) => Poll::Ready(Ok(n)),
            Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

/// One forwarded connection: read what the client sends, write what it should receive.
/// `shutdown` half-closes towards the client.
pub struct PortStream {
    reader: InboundPipe,
    writer: OutboundPipe,
}

impl PortStream {
    pub(crate) fn new(reader: InboundPipe, writer: OutboundPipe) -> Self {
        PortStream { reader, writer }
    }

    /// The two halves, for runtimes that copy each way on its own task.
    pub fn into_split(self) -> (InboundPipe, OutboundPipe) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for PortStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for PortStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// Fires when the client's connection is gone (closed, reset, idle timeout, server
/// shutdown). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientGone(CancellationToken);

impl ClientGone {
    pub(crate) fn new(token: CancellationToken) -> Self {
        ClientGone(token)
    }

    /// Resolves once the client is gone.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }

    pub fn is_gone(&self) -> bool {
        self.0.is_cancelled()
    }
}
