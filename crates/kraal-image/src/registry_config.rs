//! Registry mirrors, and the ordered list of endpoints a pull tries.
//!
//! For a reference on registry host `H` the endpoints are `mirrors[H].endpoints` in
//! order, then `H` itself (Docker Hub's API lives on `registry-1.docker.io`). Plain HTTP
//! is used only for loopback hosts, both for `H` and for configured mirrors, so a typo in
//! a config file can never send credentials or unverified-by-TLS traffic over a network.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::reference::DEFAULT_REGISTRY;

/// Where Docker Hub's registry API actually answers.
const DOCKER_HUB_ENDPOINT_HOST: &str = "registry-1.docker.io";

/// Mirrors per registry host, as read from kraald's config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host (`docker.io`, `registry.k8s.io`, `127.0.0.1:5000`) → its mirrors.
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirrorConfig>,
}

/// The mirrors of one registry, tried in order before the registry itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// `http://127.0.0.1:5000`, `https://mirror.example`.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// How to talk to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One place a pull can fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) scheme: Scheme,
    /// `host[:port]` as oci-client wants it (IPv6 in brackets).
    pub(crate) host: String,
    /// False for the registry itself, true for a configured mirror.
    pub(crate) is_mirror: bool,
}

impl Endpoint {
    /// `scheme://host[:port]`: how errors and logs name the endpoint.
    pub(crate) fn url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.host)
    }
}

impl RegistryConfig {
    /// Checks every mirror entry: the key is a registry host, every endpoint is
    /// `http(s)://host[:port]` (a trailing `/` is fine, a path prefix is not supported),
    /// and `http` only for loopback hosts.
    pub fn validate(&self) -> Result<(), ImageError> {
        for (registry, mirror) in &self.mirrors {
            if registry.is_empty() || registry.contains(['/', '@', ' ']) || registry.contains("://")
            {
                return Err(ImageError::InvalidRegistryConfig {
                    registry: registry.clone(),
                    endpoint: String::new(),
                    reason: "the key must be a registry host[:port] such as \"docker.io\" or \"127.0.0.1:5000\"".into(),
                });
            }
            for endpoint in &mirror.endpoints {
                parse_endpoint(endpoint).map_err(|reason| ImageError::InvalidRegistryConfig {
                    registry: registry.clone(),
                    endpoint: endpoint.clone(),
                    reason,
                })?;
            }
        }
        Ok(())
    }

    /// The endpoints to try, in order, for an image on `registry`.
    pub(crate) fn endpoints_for(&self, registry: &str) -> Result<Vec<Endpoint>, ImageError> {
        let mut out = Vec::new();
        if let Some(mirror) = self.mirrors.get(registry) {
            for endpoint in &mirror.endpoints {
                let (scheme, host) = parse_endpoint(endpoint).map_err(|reason| {
                    ImageError::InvalidRegistryConfig {
                        registry: registry.to_string(),
                        endpoint: endpoint.clone(),
                        reason,
                    }
                })?;
                out.push(Endpoint {
                    scheme,
                    host,
                    is_mirror: true,
                });
            }
        }
        out.push(upstream_endpoint(registry));
        Ok(out)
    }
}

/// The registry itself: HTTP for loopback, HTTPS otherwise; Docker Hub's API host.
pub(crate) fn upstream_endpoint(registry: &str) -> Endpoint {
    let host = if registry == DEFAULT_REGISTRY {
        DOCKER_HUB_ENDPOINT_HOST.to_string()
    } else {
        registry.to_string()
    };
    let scheme = if is_loopback_host(registry) {
        Scheme::Http
    } else {
        Scheme::Https
    };
    Endpoint {
        scheme,
        host,
        is_mirror: false,
    }
}

/// True when `host[:port]` names this machine: `127.0.0.0/8`, `::1`, `localhost`.
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = strip_port(host_port);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    unbracketed
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// `host` of `host[:port]`, keeping IPv6 brackets.
fn strip_port(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        return match host_port.find(']') {
            Some(end) => &host_port[..=end],
            None => host_port,
        };
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// Parses `http(s)://host[:port][/]` into scheme and `host[:port]`; the error says which
/// rule was broken.
fn parse_endpoint(endpoint: &str) -> Result<(Scheme, String), String> {
    let (scheme, rest) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err("must start with http:// or https://".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains(['@', '?', '#']) || path.contains(['?', '#']) {
        return Err("must be scheme://host[:port] without user info, query or fragment".into());
    }
    if !path.is_empty() && path != "/" {
        return Err(format!(
            "path prefix {path:?} is not supported: a mirror must serve the registry API at /v2/ of host[:port]"
        ));
    }
    check_host_port(authority)?;
    if scheme == Scheme::Http && !is_loopback_host(authority) {
        return Err(format!(
            "plain http is allowed only for loopback hosts (127.0.0.0/8, ::1, localhost), not {authority:?}; use https"
        ));
    }
    Ok((scheme, authority.to_string()))
}

fn check_host_port(authority: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("host {authority:?}: '[' without ']'"))?;
        ip.parse::<Ipv6Addr>()
            .map_err(|_| format!("host {authority:?}: {ip:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("host {authority:?}: unexpected text after ']'"))?,
            ),
        };
        (None, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return Err(format!(
                "host {host:?} is not a valid host name or IP address"
            ));
        }
    }
    if let Some(port) = port
        && !(port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|p| p > 0))
    {
        return Err(format!("port {port:?} must be a number from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn config(registry: &str, endpoints: &[&str]) -> RegistryConfig {
        let mut mirrors = BTreeMap::new();
        mirrors.insert(
            registry.to_string(),
            MirrorConfig {
                endpoints: endpoints.iter().map(|s| s.to_string()).collect(),
            },
        );
        RegistryConfig { mirrors }
    }

    #[test]
    fn valid_configs() {
        for ep in [
            "http://127.0.0.1:5000",
            "http://127.9.8.7",
            "http://localhost:5000/",
            "http://[::1]:5000",
            "https://mirror.example",
            "https://mirror.example:8443",
            "https://10.0.0.1:5000",
        ] {
            assert!(config("docker.io", &[ep]).validate().is_ok(), "{ep}");
        }
        assert!(RegistryConfig::default().validate().is_ok());
    }

    #[test]
    fn invalid_configs_name_registry_endpoint_and_rule() {
        let cases = [
            (
                "http://mirror.example",
                "plain http is allowed only for loopback",
            ),
            (
                "http://10.0.0.1:5000",
                "plain http is allowed only for loopback",
            ),
            (
                "http://[::2]:5000",
                "plain http is allowed only for loopback",
            ),
            ("ftp://127.0.0.1", "must start with http:// or https://"),
            ("127.0.0.1:5000", "must start with http:// or https://"),
            (
                "https://mirror.example/prefix",
                "path prefix \"/prefix\" is not supported",
            ),
            ("https://user:pw@mirror.example", "without user info"),
            ("https://mirror.example:0", "port \"0\""),
            ("https://mirror.example:x", "port \"x\""),
            ("https://mir ror", "not a valid host"),
            ("https://", "not a valid host"),
            ("https://[zz]:1", "not an IPv6 address"),
        ];
        for (ep, rule) in cases {
            let err = config("registry.k8s.io", &[ep]).validate().err();
            let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(rule), "{ep}: {msg}");
            assert!(msg.contains("\"registry.k8s.io\""), "{msg}");
            assert!(msg.contains(&format!("{ep:?}")), "{msg}");
            assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::InvalidArgument));
        }
        let bad_key = config("https://docker.io", &["https://m.example"]).validate();
        assert!(bad_key.is_err());
    }

    #[test]
    fn deserialises_strictly() {
        let ok: Result<RegistryConfig, _> = serde_json::from_str(
            r#"{"mirrors":{"docker.io":{"endpoints":["http://127.0.0.1:5000"]}}}"#,
        );
        assert_eq!(
            ok.ok(),
            Some(config("docker.io", &["http://127.0.0.1:5000"]))
        );
        let unknown: Result<RegistryConfig, _> =
            serde_json::from_str(r#"{"mirrors":{"docker.io":{"endpoint":["x"]}}}"#);
        assert!(unknown.is_err());
        let unknown_top: Result<RegistryConfig, _> = serde_json::from_str(r#"{"mirror":{}}"#);
        assert!(unknown_top.is_err());
    }

    #[test]
    fn endpoint_order_and_schemes() {
        let cfg = config("docker.io", &["http://127.0.0.1:5000", "https://m.example"]);
        let eps = cfg.endpoints_for("docker.io").unwrap_or_default();
        let urls: Vec<_> = eps.iter().map(|e| (e.url(), e.is_mirror)).collect();
        assert_eq!(
            urls,
            vec![
                ("http://127.0.0.1:5000".to_string(), true),
                ("https://m.example".to_string(), true),
                ("https://registry-1.docker.io".to_string(), false),
            ]
        );
        let local = cfg.endpoints_for("127.0.0.1:5000").unwrap_or_default();
        assert_eq!(local.len(), 1);
        assert_eq!(local[0].url(), "http://127.0.0.1:5000");
        let v6 = cfg.endpoints_for("[::1]:5000").unwrap_or_default();
        assert_eq!(v6[0].url(), "http://[::1]:5000");
        let other = cfg.endpoints_for("quay.io").unwrap_or_default();
        assert_eq!(other[0].url(), "https://quay.io");
    }

    #[test]
    fn loopback_detection() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.1.2.3:1",
            "localhost",
            "LOCALHOST:80",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1",
            "128.0.0.1:5000",
            "localhost.example",
            "[::2]:5000",
            "example.com",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
