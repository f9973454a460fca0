//! A tiny in-process OCI registry on 127.0.0.1 for pull tests, plus image builders.
//!
//! It speaks just enough of the distribution API for oci-client: `GET /v2/`,
//! manifests by tag or digest, blobs by digest; optional HTTP Basic auth; per-path
//! request counters; and blobs can be swapped for corrupt bytes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// GOARCH of this machine, as an index names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[derive(Default)]
struct State {
    /// (repository, tag or digest) -> (media type, bytes)
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    /// Served instead of the real blob for this digest.
    corrupt: HashMap<String, Vec<u8>>,
    basic_auth: Option<(String, String)>,
    requests: HashMap<String, usize>,
}

/// A running fake registry.
#[derive(Clone)]
pub struct FakeRegistry {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let served = state.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, state).await;
                });
            }
        });
        FakeRegistry { addr, state }
    }

    /// `127.0.0.1:<port>`
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn require_basic_auth(&self, user: &str, password: &str) {
        self.state.lock().unwrap().basic_auth = Some((user.into(), password.into()));
    }

    pub fn put_blob(&self, data: &[u8]) -> String {
        let digest = sha256(data);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(digest.clone(), data.to_vec());
        digest
    }

    pub fn corrupt_blob(&self, digest: &str, bytes: &[u8]) {
        self.state
            .lock()
            .unwrap()
            .corrupt
            .insert(digest.into(), bytes.to_vec());
    }

    /// Stores a manifest under its digest and, if given, a tag.
    pub fn put_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let digest = sha256(bytes);
        let mut s = self.state.lock().unwrap();
        let value = (media_type.to_string(), bytes.to_vec());
        s.manifests
            .insert((repo.into(), digest.clone()), value.clone());
        if let Some(tag) = tag {
            s.manifests.insert((repo.into(), tag.into()), value);
        }
        digest
    }

    /// How often a blob was requested (any repository).
    pub fn blob_requests(&self, digest: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.requests
            .iter()
            .filter(|(path, _)| path.ends_with(&format!("/blobs/{digest}")))
            .map(|(_, n)| *n)
            .sum()
    }

    pub fn total_requests(&self) -> usize {
        self.state.lock().unwrap().requests.values().sum()
    }
}

async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts
        .next()
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let authorization = lines
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("authorization")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();

    let (status, headers, body) = respond(&state, &method, &path, &authorization);
    let mut out = Vec::new();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    )?;
    for (k, v) in headers {
        write!(out, "{k}: {v}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    if method != "HEAD" {
        out.extend_from_slice(&body);
    }
    conn.write_all(&out).await?;
    conn.shutdown().await
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    format!(r#"{{"errors":[{{"code":"{code}","message":"{message}"}}]}}"#).into_bytes()
}

fn respond(
    state: &Mutex<State>,
    _method: &str,
    path: &str,
    authorization: &str,
) -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    let mut s = state.lock().unwrap();
    *s.requests.entry(path.to_string()).or_default() += 1;
    if let Some((user, password)) = &s.basic_auth {
        use base64_lite::encode;
        let expected = format!("Basic {}", encode(format!("{user}:{password}").as_bytes()));
        if authorization != expected {
            return (
                "401 Unauthorized",
                vec![("WWW-Authenticate".into(), r#"Basic realm="fake""#.into())],
                error_body("UNAUTHORIZED", "authentication required"),
            );
        }
    }
    if path == "/v2/" || path == "/v2" {
        return (
            "200 OK",
            vec![("Content-Type".into(), "application/json".into())],
            b"{}".to_vec(),
        );
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return ("404 Not Found", vec![], b"not found".to_vec());
    };
    if let Some(i) = rest.rfind("/manifests/") {
        let (repo, reference) = (&rest[..i], &rest[i + "/manifests/".len()..]);
        return match s.manifests.get(&(repo.to_string(), reference.to_string())) {
            Some((media_type, bytes)) => (
                "200 OK",
                vec![
                    ("Content-Type".into(), media_type.clone()),
                    ("Docker-Content-Digest".into(), sha256(bytes)),
                ],
                bytes.clone(),
            ),
            None => (
                "404 Not Found",
                vec![],
                error_body("MANIFEST_UNKNOWN", "manifest unknown"),
            ),
        };
    }
    if let Some(i) = rest.rfind("/blobs/") {
        let digest = &rest[i + "/blobs/".len()..];
        if let Some(bad) = s.corrupt.get(digest) {
            return ("200 OK", vec![], bad.clone());
        }
        return match s.blobs.get(digest) {
            Some(bytes) => (
                "200 OK",
                vec![("Docker-Content-Digest".into(), digest.to_string())],
                bytes.clone(),
            ),
            None => (
                "404 Not Found",
                vec![],
                error_body("BLOB_UNKNOWN", "blob unknown"),
            ),
        };
    }
    ("404 Not Found", vec![], b"not found".to_vec())
}

/// Just enough base64 for a Basic auth header.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Builds layer tars in memory.
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    pub fn file(mut self, path: &str, content: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.builder.append(&h, content).unwrap();
        self
    }

    /// An entry whose name is written raw (for names tar::Builder refuses).
    pub fn raw_file(mut self, path: &str, content: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        let name = &mut h.as_gnu_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.builder.append(&h, content).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A layer as pushed: blob bytes, media type and the diff_id of its tar.
#[derive(Clone)]
pub struct PushedLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: usize,
    pub media_type: String,
}

impl FakeRegistry {
    /// Pushes a layer blob made from `tar` with the given compression media type.
    pub fn push_layer(&self, tar: &[u8], media_type: &str) -> PushedLayer {
        let blob = match media_type {
            LAYER_GZIP | DOCKER_LAYER_GZIP => gzip(tar),
            LAYER_ZSTD => zstd::stream::encode_all(tar, 1).unwrap(),
            _ => tar.to_vec(),
        };
        let digest = self.put_blob(&blob);
        PushedLayer {
            digest,
            diff_id: sha256(tar),
            size: blob.len(),
            media_type: media_type.into(),
        }
    }

    /// Pushes config + manifest for `layers` (diff_ids from the layers unless given)
    /// and tags it. Returns (manifest digest, config digest).
    pub fn push_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        layers: &[PushedLayer],
        diff_ids: Option<Vec<String>>,
        user: &str,
    ) -> (String, String) {
        let diff_ids =
            diff_ids.unwrap_or_else(|| layers.iter().map(|l| l.diff_id.clone()).collect());
        let config = serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {"User": user, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = self.put_blob(&config_bytes);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len()},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let digest = self.put_manifest(repo, tag, OCI_MANIFEST, &bytes);
        (digest, config_digest)
    }

    /// Pushes an index over (platform "os/arch", manifest digest) pairs.
    pub fn push_index(
        &self,
        repo: &str,
        tag: Option<&str>,
        entries: &[(&str, &str, String)],
    ) -> String {
        let manifests: Vec<_> = entries
            .iter()
            .map(|(os, arch, digest)| {
                let size = self
                    .state
                    .lock()
                    .unwrap()
                    .manifests
                    .get(&(repo.to_string(), digest.clone()))
                    .map(|(_, b)| b.len())
                    .unwrap_or(0);
                serde_json::json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size, "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        let index =
            serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.put_manifest(repo, tag, OCI_INDEX, &serde_json::to_vec(&index).unwrap())
    }
}
