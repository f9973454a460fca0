//! The connection adapter: reads from the client go through the [`Rewriter`]; writes to
//! the client pass straight on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use super::frames::Rewriter;

/// How much is read from the client at a time.
const READ_CHUNK: usize = 16 * 1024;

pub struct Tolerant<S> {
    inner: S,
    rewriter: Rewriter,
    /// Read from the client, not yet rewritten.
    scratch: Vec<u8>,
    /// Rewritten, not yet read by the server; `out_pos` is how much of it was.
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
}

impl<S> Tolerant<S> {
    pub fn new(inner: S) -> Self {
        Tolerant {
            inner,
            rewriter: Rewriter::new(),
            scratch: vec![0; READ_CHUNK],
            out: Vec::new(),
            out_pos: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tolerant<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Held-back bytes (a header block still open) produce nothing yet, and an empty
            // read would mean end of stream to the server: keep reading until there is output.
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                this.rewriter.finish(&mut this.out);
            } else {
                this.rewriter.push(read.filled(), &mut this.out);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tolerant<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// tonic asks the connection for its peer's details; they are the socket's.
impl<S: Connected> Connected for Tolerant<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_are_rewritten_and_writes_pass_through() {
        let (client, server) = tokio::io::duplex(64);
        let mut server = Tolerant::new(server);
        let mut client = client;
        let writer = tokio::spawn(async move {
            let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            // HEADERS, END_HEADERS, stream 1: :authority "/x" as a literal.
            bytes.extend_from_slice(&[0, 0, 6, 1, 4, 0, 0, 0, 1, 0x41, 2, b'/', b'x', 0x83, 0x86]);
            client.write_all(&bytes).await.unwrap();
            let mut answer = [0u8; 5];
            client.read_exact(&mut answer).await.unwrap();
            client.shutdown().await.unwrap();
            answer
        });
        let mut seen = Vec::new();
        server.write_all(b"hello").await.unwrap();
        server.read_to_end(&mut seen).await.unwrap();
        assert_eq!(&writer.await.unwrap(), b"hello");
        let fields = loona_hpack::Decoder::new().decode(&seen[33..]).unwrap();
        assert_eq!(fields[0], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(fields[1].0, b":method");
    }
}
