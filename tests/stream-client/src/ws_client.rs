//! A WebSocket client written from RFC 6455 for the tests (masked client frames, unmasked
//! server frames), independent of the server's WebSocket library.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::http::{self, Refused, Upgraded};

/// The RFC 6455 section 1.3 example: this key must be answered with this accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub struct WsClient {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    pub protocol: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum WsMessage {
    Binary(Vec<u8>),
    Text(String),
    Close(Option<u16>),
}

impl WsClient {
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<WsClient, Refused> {
        let mut h = vec![
            ("Connection".to_owned(), "Upgrade".to_owned()),
            ("Upgrade".to_owned(), "websocket".to_owned()),
            ("Sec-WebSocket-Version".to_owned(), "13".to_owned()),
            ("Sec-WebSocket-Key".to_owned(), KEY.to_owned()),
        ];
        if !protocols.is_empty() {
            h.push(("Sec-WebSocket-Protocol".to_owned(), protocols.join(", ")));
        }
        let Upgraded {
            read,
            write,
            leftover,
            headers,
        } = http::upgrade(url, "GET", &h).await?;
        assert_eq!(
            headers.get("sec-websocket-accept").map(String::as_str),
            Some(ACCEPT)
        );
        Ok(WsClient {
            read,
            write,
            buf: leftover,
            protocol: headers.get("sec-websocket-protocol").cloned(),
        })
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.write.write_all(&f).await;
    }

    /// A binary message on `channel`.
    pub async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut p = vec![channel];
        p.extend_from_slice(data);
        self.frame(0x2, &p).await;
    }

    pub async fn close(&mut self) {
        self.frame(0x8, &1000u16.to_be_bytes()).await;
    }

    async fn fill(&mut self, n: usize) -> bool {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < n {
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
        true
    }

    /// The next message (fragments joined), None when the connection ended.
    pub async fn recv(&mut self) -> Option<WsMessage> {
        let mut message = Vec::new();
        let mut first_opcode = None;
        loop {
            if !self.fill(2).await {
                return None;
            }
            let fin = self.buf[0] & 0x80 != 0;
            let opcode = self.buf[0] & 0x0f;
            assert_eq!(self.buf[1] & 0x80, 0, "server frames are never masked");
            let (len, hdr) = match self.buf[1] & 0x7f {
                126 => {
                    if !self.fill(4).await {
                        return None;
                    }
                    (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                }
                127 => {
                    if !self.fill(10).await {
                        return None;
                    }
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.buf[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                n => (n as usize, 2),
            };
            if !self.fill(hdr + len).await {
                return None;
            }
            let payload: Vec<u8> = self.buf.drain(..hdr + len).skip(hdr).collect();
            match opcode {
                0x9 => {
                    self.frame(0xA, &payload).await;
                    continue;
                }
                0xA => continue,
                0x8 => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Some(WsMessage::Close(code));
                }
                _ => {}
            }
            if first_opcode.is_none() {
                first_opcode = Some(opcode);
            }
            message.extend_from_slice(&payload);
            if fin {
                return Some(match first_opcode {
                    Some(0x1) => WsMessage::Text(String::from_utf8_lossy(&message).into()),
                    _ => WsMessage::Binary(message),
                });
            }
        }
    }

    pub async fn recv_timeout(&mut self, t: Duration) -> Option<WsMessage> {
        tokio::time::timeout(t, self.recv()).await.ok().flatten()
    }

    /// Every channel's data until the server's Close, as a port-forward client sees the end
    /// of its connections (v4 has no per-channel end): nothing is sent meanwhile, so a server
    /// that waits for the client to close first never gets there and `Err` says so. Returns
    /// the data by channel (port prefixes included) and the Close's code; answers the Close.
    pub async fn until_server_close(
        &mut self,
        t: Duration,
    ) -> Result<(BTreeMap<u8, Vec<u8>>, Option<u16>), String> {
        let mut channels: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + t;
        loop {
            match tokio::time::timeout_at(deadline, self.recv()).await {
                Ok(Some(WsMessage::Binary(b))) => {
                    if let Some((ch, d)) = b.split_first() {
                        channels.entry(*ch).or_default().extend_from_slice(d);
                    }
                }
                Ok(Some(WsMessage::Close(code))) => {
                    self.close().await;
                    return Ok((channels, code));
                }
                Ok(Some(WsMessage::Text(s))) => return Err(format!("unexpected text {s:?}")),
                Ok(None) => {
                    return Err(format!(
                        "connection ended without a Close; got {channels:?}"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "no Close within {t:?}; got {channels:?}; a port-forward client would hang"
                    ));
                }
            }
        }
    }
}
