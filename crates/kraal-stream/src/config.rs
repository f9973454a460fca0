use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the streaming server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen. Loopback by default: kubelet runs on the same node.
    pub listen: SocketAddr,
    /// The scheme://host:port put in front of the minted URLs. `None` derives it from the
    /// bound address (which is wrong when listening on 0.0.0.0: set it then).
    pub base_url: Option<String>,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsConfig>,
    /// How long a minted URL stays usable (it is single-use in any case).
    pub token_ttl: Duration,
    /// Upper bound on tokens minted but not used yet, so a caller loop cannot grow memory.
    pub max_pending_tokens: usize,
    /// Exec/attach/port-forward sessions served at once; more are refused with 503.
    pub max_concurrent_streams: usize,
    /// A session with no traffic either way for this long is closed (kubelet's
    /// `streamingConnectionIdleTimeout` defaults to 4h).
    pub idle_timeout: Duration,
    /// How long a client may take to open the streams a request needs (SPDY), or to pair a
    /// port-forward's data and error streams.
    pub stream_creation_timeout: Duration,
    /// After the client is gone, how long the runtime gets to notice and return before its
    /// future is dropped.
    pub runtime_grace: Duration,
    /// SPDY send-side flow control, see [`FlowControl`].
    pub flow_control: FlowControl,
    /// The largest decompressed SPDY header block accepted (zlib bombs).
    pub max_header_block: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            base_url: None,
            tls: None,
            token_ttl: Duration::from_secs(60),
            max_pending_tokens: 4096,
            max_concurrent_streams: 128,
            idle_timeout: Duration::from_secs(4 * 3600),
            stream_creation_timeout: Duration::from_secs(30),
            runtime_grace: Duration::from_secs(5),
            flow_control: FlowControl::Auto,
            max_header_block: 64 * 1024,
        }
    }
}

/// PEM files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// Whether the server waits for the client's WINDOW_UPDATEs before sending more data.
///
/// SPDY/3.1 requires it, but the Go client every Kubernetes tool uses (moby/spdystream)
/// neither sends nor honours WINDOW_UPDATE: honouring windows strictly would stall any
/// output above 64 KiB forever with kubelet, crictl and kubectl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowControl {
    /// Honour windows once the client shows it does flow control (a SETTINGS
    /// INITIAL_WINDOW_SIZE or any WINDOW_UPDATE); send freely before that.
    Auto,
    /// Always honour windows, from the initial 64 KiB.
    Strict,
}
