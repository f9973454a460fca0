//! Raw HTTP/1.1 upgrade requests, written by hand so the tests see the server's bytes.

use std::collections::HashMap;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub struct Upgraded {
    pub read: OwnedReadHalf,
    pub write: OwnedWriteHalf,
    /// Bytes after the response head: the start of the upgraded protocol.
    pub leftover: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// "http://host:port/path?q" -> (host:port, /path?q)
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    (host.to_owned(), path.to_owned())
}

pub async fn upgrade(
    url: &str,
    method: &str,
    headers: &[(String, String)],
) -> Result<Upgraded, Refused> {
    let (host, path) = split_url(url);
    let mut sock = TcpStream::connect(&host).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();

    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "server closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut hdrs = HashMap::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            hdrs.insert(n.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let mut leftover = buf[head_end..].to_vec();
    if status != 101 {
        let len: usize = hdrs
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while leftover.len() < len {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            leftover.extend_from_slice(&chunk[..n]);
        }
        return Err(Refused {
            status,
            headers: hdrs,
            body: String::from_utf8_lossy(&leftover).to_string(),
        });
    }
    let (read, write) = sock.into_split();
    Ok(Upgraded {
        read,
        write,
        leftover,
        headers: hdrs,
    })
}
