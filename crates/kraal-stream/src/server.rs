//! The HTTP side: listen, mint URLs, and on a request check the token, negotiate the
//! protocol, answer 101 and hand the upgraded connection to SPDY or WebSocket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::error::StreamError;
use crate::idle::{Activity, watchdog};
use crate::remotecommand::{Command, Version};
use crate::runtime::{AttachRequest, ExecRequest, PortForwardRequest, StreamRuntime};
use crate::spdy;
use crate::spdy::session::{Session, SessionConfig};
use crate::tokens::{Kind, Lookup, Pending, TokenStore};
use crate::{tls, websocket};

const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// WebSocket port-forward subprotocols; both mean the same framing here.
const WS_PORT_FORWARD: &[(&str, ())] = &[("portforward.k8s.io", ()), ("v4.channel.k8s.io", ())];

/// The streaming server. Dropping it stops accepting connections and ends every session.
pub struct Server<R: StreamRuntime> {
    shared: Arc<Shared<R>>,
    local_addr: SocketAddr,
    base_url: String,
}

struct Shared<R> {
    runtime: Arc<R>,
    cfg: ServerConfig,
    tokens: TokenStore,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// What a request upgrades to.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    Spdy(Option<Version>),
    WebSocket(Option<Version>),
}

impl<R: StreamRuntime> Server<R> {
    /// Binds the listener and starts serving.
    pub async fn bind(cfg: ServerConfig, runtime: Arc<R>) -> Result<Self, StreamError> {
        let tls = cfg.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| StreamError::Config(format!("listen on {}: {e}", cfg.listen)))?;
        let local_addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = cfg
            .base_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
        let shared = Arc::new(Shared {
            runtime,
            tokens: TokenStore::new(cfg.token_ttl, cfg.max_pending_tokens),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent_streams)),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            cfg,
        });
        info!(%local_addr, %base_url, "streaming server listening");
        tokio::spawn(accept_loop(shared.clone(), listener, tls));
        Ok(Server {
            shared,
            local_addr,
            base_url,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sessions being served right now.
    pub fn active_streams(&self) -> usize {
        self.shared.cfg.max_concurrent_streams - self.shared.permits.available_permits()
    }

    /// The URL for a CRI `Exec`.
    pub fn get_exec_url(&self, req: ExecRequest) -> Result<String, StreamError> {
        if req.cmd.is_empty() {
            return Err(StreamError::InvalidArgument("cmd is empty".into()));
        }
        check_stdio(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.mint("exec", Pending::Command(Command::Exec(req)))
    }

    /// The URL for a CRI `Attach`.
    pub fn get_attach_url(&self, req: AttachRequest) -> Result<String, StreamError> {
        check_stdio(req.tty, req.stdin, req.stdout, req.stderr)?;
        self.mint("attach", Pending::Command(Command::Attach(req)))
    }

    /// The URL for a CRI `PortForward`.
    pub fn get_port_forward_url(&self, req: PortForwardRequest) -> Result<String, StreamError> {
        if req.pod_sandbox_id.is_empty() {
            return Err(StreamError::InvalidArgument(
                "pod_sandbox_id is empty".into(),
            ));
        }
        self.mint("portforward", Pending::PortForward(req))
    }

    fn mint(&self, path: &str, p: Pending) -> Result<String, StreamError> {
        let token = self.shared.tokens.insert(p)?;
        Ok(format!("{}/{path}/{token}", self.base_url))
    }

    /// Stops accepting, ends every session (their runtimes see the client gone) and waits
    /// up to `timeout` for them to finish.
    pub async fn shutdown(self, timeout: Duration) {
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        if tokio::time::timeout(timeout, self.shared.tracker.wait())
            .await
            .is_err()
        {
            warn!("streaming server: sessions still running at shutdown");
        }
    }
}

impl<R: StreamRuntime> Drop for Server<R> {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

fn check_stdio(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), StreamError> {
    if !(stdin || stdout || stderr) {
        return Err(StreamError::InvalidArgument(
            "one of stdin, stdout and stderr must be set".into(),
        ));
    }
    if tty && stderr {
        return Err(StreamError::InvalidArgument(
            "tty and stderr cannot both be set: a terminal merges stderr into stdout".into(),
        ));
    }
    Ok(())
}

async fn accept_loop<R: StreamRuntime>(
    shared: Arc<Shared<R>>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.shutdown.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                warn!("streaming server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        debug!(%peer, "streaming connection");
        let shared2 = shared.clone();
        let tls = tls.clone();
        shared.tracker.spawn(async move {
            match tls {
                None => serve_http(shared2, tcp).await,
                Some(acceptor) => {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    {
                        Ok(Ok(s)) => serve_http(shared2, s).await,
                        Ok(Err(e)) => debug!(%peer, "TLS handshake: {e}"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_http<R, IO>(shared: Arc<Shared<R>>, io: IO)
where
    R: StreamRuntime,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let shared = shared.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(shared, req)) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let mut conn = pin!(conn);
    tokio::select! {
        r = &mut conn => if let Err(e) = r { debug!("streaming connection: {e}") },
        _ = shared.shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
    }
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body = msg.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// All values of a header, comma lists split, in order.
fn header_values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn handle<R: StreamRuntime>(
    shared: Arc<Shared<R>>,
    mut req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut parts = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let kind = match parts.next() {
        Some("exec") => Kind::Exec,
        Some("attach") => Kind::Attach,
        Some("portforward") => Kind::PortForward,
        _ => return plain(StatusCode::NOT_FOUND, "not found"),
    };
    let token = parts.next().unwrap_or("").trim_end_matches('/').to_owned();
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET or POST with an upgrade",
        );
    }
    let upgrade = header_values(req.headers(), "upgrade")
        .join(",")
        .to_ascii_lowercase();
    let is_ws = upgrade.contains("websocket");
    if !is_ws && !upgrade.contains("spdy/3.1") {
        return plain(
            StatusCode::BAD_REQUEST,
            "this endpoint streams: send Connection: Upgrade with Upgrade: SPDY/3.1 or websocket",
        );
    }

    // Negotiate before taking the token, so a client that speaks nothing we know keeps
    // its URL for a retry with other versions.
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let rh = resp.headers_mut();
    rh.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let protocol = if is_ws {
        let Some(key) = req
            .headers()
            .get("sec-websocket-key")
            .and_then(|v| v.to_str().ok())
        else {
            return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
        };
        if req
            .headers()
            .get("sec-websocket-version")
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            let mut r = plain(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket version 13 required",
            );
            r.headers_mut()
                .insert("sec-websocket-version", HeaderValue::from_static("13"));
            return r;
        }
        let offered = header_values(req.headers(), "sec-websocket-protocol").join(",");
        rh.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&websocket::accept_key(key)) {
            rh.insert("sec-websocket-accept", v);
        }
        let (chosen, version) = if kind == Kind::PortForward {
            match websocket::negotiate(&offered, WS_PORT_FORWARD) {
                Some((name, ())) => (Some(name), None),
                None if offered.is_empty() => (None, None),
                None => return refuse(&offered, WS_PORT_FORWARD.iter().map(|p| p.0)),
            }
        } else {
            match websocket::negotiate(&offered, Version::WEBSOCKET) {
                Some((name, v)) => (Some(name), Some(v)),
                None if offered.is_empty() => (None, Some(Version::V4)),
                None => return refuse(&offered, Version::WEBSOCKET.iter().map(|p| p.0)),
            }
        };
        if let Some(name) = chosen {
            rh.insert("sec-websocket-protocol", HeaderValue::from_static(name));
        }
        Protocol::WebSocket(version)
    } else {
        let offered = header_values(req.headers(), "x-stream-protocol-version");
        rh.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        let (chosen, version) = if kind == Kind::PortForward {
            if offered.is_empty() || offered.iter().any(|p| p == PORT_FORWARD_PROTOCOL) {
                (Some(PORT_FORWARD_PROTOCOL), None)
            } else {
                return refuse(&offered.join(","), [PORT_FORWARD_PROTOCOL].into_iter());
            }
        } else {
            let found = offered
                .iter()
                .find_map(|o| Version::SPDY.iter().find(|(name, _)| name == o).copied());
            match found {
                Some((name, v)) => (Some(name), Some(v)),
                // Clients from before version negotiation speak the first protocol.
                None if offered.is_empty() => (None, Some(Version::V1)),
                None => return refuse(&offered.join(","), Version::SPDY.iter().map(|p| p.0)),
            }
        };
        if let Some(name) = chosen {
            rh.insert("x-stream-protocol-version", HeaderValue::from_static(name));
        }
        Protocol::Spdy(version)
    };

    let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many concurrent streams (limit {}); retry later",
                shared.cfg.max_concurrent_streams
            ),
        );
    };
    let pending = match shared.tokens.take(kind, &token) {
        Lookup::Found(p) => p,
        Lookup::Expired => {
            return plain(
                StatusCode::GONE,
                "stream URL expired: ask the runtime for a new one",
            );
        }
        Lookup::Unknown => {
            return plain(
                StatusCode::NOT_FOUND,
                "unknown or already used stream URL: each URL works once",
            );
        }
    };
    // WebSocket port-forward names its ports in the URL; fall back to the CRI request's.
    let mut ws_ports = Vec::new();
    if let (Protocol::WebSocket(_), Pending::PortForward(pf)) = (protocol, &pending) {
        match query_ports(req.uri().query().unwrap_or("")) {
            Ok(p) if !p.is_empty() => ws_ports = p,
            Ok(_) => ws_ports = pf.ports.clone(),
            Err(msg) => return plain(StatusCode::BAD_REQUEST, msg),
        }
        if ws_ports.is_empty() || ws_ports.len() > websocket::portforward::MAX_PORTS {
            return plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "port-forward over WebSocket needs 1 to {} ports in ?ports=",
                    websocket::portforward::MAX_PORTS
                ),
            );
        }
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    let s = shared.clone();
    shared.tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                run_session(
                    s,
                    permit,
                    TokioIo::new(upgraded),
                    protocol,
                    pending,
                    ws_ports,
                )
                .await
            }
            Err(e) => debug!("upgrade failed: {e}"),
        }
    });
    resp
}

fn refuse<'a>(offered: &str, supported: impl Iterator<Item = &'a str>) -> Response<Full<Bytes>> {
    let supported: Vec<&str> = supported.collect();
    let mut r = plain(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: none of the offered protocols ({offered}) is supported; supported: {}",
            supported.join(", ")
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&supported.join(", ")) {
        r.headers_mut()
            .insert("x-accepted-stream-protocol-versions", v);
    }
    r
}

fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("ports=") else {
            continue;
        };
        for p in value.split([',', ' ']).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("invalid port {p:?}")),
            }
        }
    }
    Ok(ports)
}

async fn run_session<R, IO>(
    shared: Arc<Shared<R>>,
    permit: OwnedSemaphorePermit,
    io: IO,
    protocol: Protocol,
    pending: Pending,
    ws_ports: Vec<u16>,
) where
    R: StreamRuntime,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = shared.cfg.clone();
    let runtime = shared.runtime.clone();
    let gone = shared.shutdown.child_token();
    let activity = Activity::new();
    activity.touch();
    let session_cfg = SessionConfig {
        flow_control: cfg.flow_control,
        max_header_block: cfg.max_header_block,
    };
    let grace = cfg.runtime_grace + Duration::from_secs(2);
    let idle = cfg.idle_timeout;
    let session = async {
        match (protocol, pending) {
            (Protocol::Spdy(Some(v)), Pending::Command(cmd)) => {
                let s = Session::start(io, session_cfg, gone.clone(), activity.clone());
                spdy::exec::serve(s, v, cmd, runtime, cfg).await
            }
            (Protocol::Spdy(None), Pending::PortForward(req)) => {
                let s = Session::start(io, session_cfg, gone.clone(), activity.clone());
                spdy::portforward::serve(s, req, runtime, cfg).await
            }
            (Protocol::WebSocket(Some(v)), Pending::Command(cmd)) => {
                let ws =
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(websocket::config()))
                        .await;
                websocket::exec::serve(ws, v, cmd, runtime, cfg, gone.clone(), activity.clone())
                    .await
            }
            (Protocol::WebSocket(None), Pending::PortForward(req)) => {
                let ws =
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(websocket::config()))
                        .await;
                websocket::portforward::serve(
                    ws,
                    req.pod_sandbox_id,
                    ws_ports,
                    runtime,
                    cfg,
                    gone.clone(),
                    activity.clone(),
                )
                .await
            }
            (p, _) => warn!(?p, "protocol and request kind do not match"),
        }
    };
    let mut session = pin!(session);
    tokio::select! {
        _ = &mut session => {}
        _ = watchdog(activity.clone(), idle, gone.clone()) => {
            // The client is gone (closed, idle, or server shutdown): the session winds
            // down and the runtime gets its grace; past that everything is dropped.
            if tokio::time::timeout(grace, &mut session).await.is_err() {
                warn!("stream session did not end after its client left; dropping it");
            }
        }
    }
    gone.cancel();
    drop(permit);
}
