//! The small files a pod's containers bind-mount: `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf`. Written atomically so a container never sees half a file.

use std::net::IpAddr;
use std::path::Path;

use super::SandboxError;

/// The pod's DNS settings as kubelet sends them (CRI `DNSConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

pub fn write_hostname(path: &Path, hostname: &str) -> Result<(), SandboxError> {
    validate_hostname(hostname)?;
    write_atomically(path, format!("{hostname}\n").as_bytes())
}

/// A pod with its own network namespace gets loopback entries and its own name; a
/// hostNetwork pod sees the node's `/etc/hosts`, as with containerd.
pub fn write_hosts(path: &Path, hostname: &str, host_network: bool) -> Result<(), SandboxError> {
    if host_network {
        let node = std::fs::read("/etc/hosts").unwrap_or_default();
        return write_atomically(path, &node);
    }
    validate_hostname(hostname)?;
    let text = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    );
    write_atomically(path, text.as_bytes())
}

/// Without DNS settings the pod gets the node's resolv.conf (kubelet's `Default` policy).
pub fn write_resolv_conf(path: &Path, dns: Option<&DnsSettings>) -> Result<(), SandboxError> {
    match dns {
        None => {
            let node = std::fs::read("/etc/resolv.conf").unwrap_or_default();
            write_atomically(path, &node)
        }
        Some(dns) => write_atomically(path, render_resolv_conf(dns)?.as_bytes()),
    }
}

/// resolv.conf text from DNS settings; rejects what the resolver would misread.
pub fn render_resolv_conf(dns: &DnsSettings) -> Result<String, SandboxError> {
    let mut text = String::new();
    for server in &dns.servers {
        if server.parse::<IpAddr>().is_err() {
            return Err(SandboxError::Invalid {
                field: "dns_config.servers",
                value: server.clone(),
                expected: "an IPv4 or IPv6 address",
            });
        }
        text.push_str(&format!("nameserver {server}\n"));
    }
    for (field, values) in [
        ("dns_config.searches", &dns.searches),
        ("dns_config.options", &dns.options),
    ] {
        if let Some(bad) = values
            .iter()
            .find(|v| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(SandboxError::Invalid {
                field,
                value: bad.clone(),
                expected: "a non-empty word without spaces",
            });
        }
    }
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(text)
}

/// The hostname is one word on one line of each file. Which names a pod may have is
/// decided in [`super::pod_hostname`]; the node's own is taken as it is.
fn validate_hostname(hostname: &str) -> Result<(), SandboxError> {
    if hostname.is_empty()
        || hostname
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(SandboxError::Invalid {
            field: "hostname",
            value: hostname.to_string(),
            expected: "a non-empty word without spaces",
        });
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SandboxError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|e| SandboxError::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_settings() {
        let dns = DnsSettings {
            servers: vec!["10.0.0.10".into(), "fd00::a".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            render_resolv_conf(&dns).unwrap(),
            "nameserver 10.0.0.10\nnameserver fd00::a\nsearch ns.svc.cluster.local cluster.local\noptions ndots:5\n"
        );
    }

    #[test]
    fn bad_dns_settings_name_the_field() {
        let dns = DnsSettings {
            servers: vec!["not-an-ip".into()],
            ..Default::default()
        };
        let err = render_resolv_conf(&dns).unwrap_err().to_string();
        assert!(
            err.contains("dns_config.servers") && err.contains("not-an-ip"),
            "{err}"
        );
        let dns = DnsSettings {
            searches: vec!["a\nnameserver 1.2.3.4".into()],
            ..Default::default()
        };
        let err = render_resolv_conf(&dns).unwrap_err().to_string();
        assert!(err.contains("dns_config.searches"), "{err}");
    }

    #[test]
    fn hostnames_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hostname");
        write_hostname(&path, "web-0.example").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "web-0.example\n");
        for bad in ["", "a b", "x\n127.0.0.1 evil"] {
            assert!(write_hostname(&path, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_for_own_network_name_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_hosts(&path, "pod-a", false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("127.0.1.1\tpod-a\n"));
    }
}
