//! Streams a layer blob from the network into a blocking unpack thread.
//!
//! The async side hashes and counts what arrives and forwards it over a bounded channel;
//! the blocking side reads it as a plain `Read`. No compressed copy touches the disk.
//! The end of the stream is an explicit message, sent only when size and digest
//! matched: if the download breaks off, is cancelled or turns out corrupt, the reader
//! sees an error rather than a clean end, so a truncated layer can never pass as whole.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use oci_client::client::SizedStream;
use tokio::sync::mpsc;

use crate::digest::Hasher;
use crate::fetch::{Failure, FailureClass, check_size_and_digest, is_digest_error};

/// Chunks in flight between downloader and unpacker (each a few KB to a few hundred).
pub(crate) const CHANNEL_DEPTH: usize = 16;

/// What travels from the downloader to the unpacker.
pub(crate) enum Chunk {
    Data(Bytes),
    /// Everything arrived and matched the digest.
    End,
}

/// The unpacker's end: a blocking `Read` over the channel.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Chunk>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.current.is_empty() {
                let n = buf.len().min(self.current.len());
                buf[..n].copy_from_slice(&self.current[..n]);
                self.current.advance(n);
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            // Only ever called from a blocking thread (spawn_blocking), never a runtime worker.
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.ended = true,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the layer download stopped before its end",
                    ));
                }
            }
        }
    }
}

/// Why feeding stopped.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// The download failed or delivered wrong content: try another endpoint.
    Failed(Failure),
    /// The unpacker stopped reading (it refused the layer); its error says why.
    ReceiverGone,
}

/// Forwards `stream` to `tx`, checking it against `digest` and `size` as it goes.
pub(crate) async fn feed(
    mut stream: SizedStream,
    tx: mpsc::Sender<Chunk>,
    digest: &str,
    size: u64,
) -> Result<(), FeedError> {
    let mut hasher = Hasher::default();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            // oci-client verifies too and fails at the end; ours says more below.
            Err(e) if is_digest_error(&e) => break,
            Err(e) => {
                return Err(FeedError::Failed(Failure::new(
                    FailureClass::Unreachable,
                    format!(
                        "download interrupted after {} bytes: {}",
                        hasher.len(),
                        crate::fetch::describe_io(&e)
                    ),
                )));
            }
        };
        hasher.update(&chunk);
        if hasher.len() > size {
            return Err(FeedError::Failed(Failure::new(
                FailureClass::Corrupt,
                format!("sent more than the {size} bytes the manifest declares"),
            )));
        }
        tx.send(Chunk::Data(chunk))
            .await
            .map_err(|_| FeedError::ReceiverGone)?;
    }
    check_size_and_digest(hasher, size, digest).map_err(FeedError::Failed)?;
    tx.send(Chunk::End)
        .await
        .map_err(|_| FeedError::ReceiverGone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_sees_data_then_clean_end() {
        let (tx, rx) = mpsc::channel(2);
        let reader = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            ChannelReader::new(rx).read_to_end(&mut out).map(|_| out)
        });
        tx.send(Chunk::Data(Bytes::from_static(b"hello ")))
            .await
            .ok();
        tx.send(Chunk::Data(Bytes::from_static(b"world")))
            .await
            .ok();
        tx.send(Chunk::End).await.ok();
        assert_eq!(reader.await.unwrap().unwrap(), b"hello world");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reader_errors_when_the_sender_vanishes_without_end() {
        let (tx, rx) = mpsc::channel(2);
        let reader = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            ChannelReader::new(rx).read_to_end(&mut out)
        });
        tx.send(Chunk::Data(Bytes::from_static(b"partial")))
            .await
            .ok();
        drop(tx);
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
