//! The pod's hostname, decided once at RunPodSandbox as containerd decides it: the requested
//! `hostname` when kubelet sends one, else the node's. The pod's name is never used: it can
//! be longer than the kernel's 64-byte hostname limit (critest's are 68–97 characters) and
//! is not a host name at all for hostNetwork pods.

use super::SandboxError;

/// The kernel's `HOST_NAME_MAX`: sethostname(2) refuses anything longer.
const HOST_NAME_MAX: usize = 64;

/// The hostname a pod's containers see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodHostname {
    /// `/etc/hostname` and `HOSTNAME`; also what `hostname` prints in a pod with its own
    /// UTS namespace.
    pub name: String,
    /// Whether the pod's own UTS namespace gets `name` with sethostname. When not, a new UTS
    /// namespace keeps the hostname it was created with, the node's — as runc leaves it
    /// for a spec without `hostname`.
    pub set_in_uts: bool,
}

/// The requested hostname (validated: kubelet's is a DNS label, and a newline would inject
/// lines into `/etc/hosts`), or, when none was sent, the node's hostname as it is now.
pub fn pod_hostname(requested: &str) -> Result<PodHostname, SandboxError> {
    if requested.is_empty() {
        let node = nix::unistd::gethostname()
            .map_err(|e| SandboxError::Hostname(std::io::Error::from(e)))?;
        return Ok(PodHostname {
            name: node.to_string_lossy().into_owned(),
            set_in_uts: false,
        });
    }
    validate(requested)?;
    Ok(PodHostname {
        name: requested.to_owned(),
        set_in_uts: true,
    })
}

/// RFC 1123 host name that the kernel accepts.
fn validate(hostname: &str) -> Result<(), SandboxError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if hostname.len() > HOST_NAME_MAX || !hostname.split('.').all(label_ok) {
        return Err(SandboxError::Invalid {
            field: "hostname",
            value: hostname.to_string(),
            expected: "an RFC 1123 host name (letters, digits, '-', '.') of at most 64 \
                       characters (the kernel's limit), or empty for the node's hostname",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_hostnames_are_checked() {
        let h = pod_hostname("web-0.example").unwrap();
        assert_eq!(h.name, "web-0.example");
        assert!(h.set_in_uts);
        assert!(pod_hostname(&"a".repeat(63)).is_ok());
        let long = format!("{}.{}", "a".repeat(40), "b".repeat(30));
        for bad in ["-a", "a b", "x\n127.0.0.1 evil", &"a".repeat(64), &long] {
            let e = pod_hostname(bad).unwrap_err();
            assert!(e.is_invalid_argument(), "{bad:?}: {e}");
        }
    }

    #[test]
    fn empty_means_the_nodes() {
        let node = nix::unistd::gethostname().unwrap();
        let h = pod_hostname("").unwrap();
        assert_eq!(h.name, node.to_string_lossy());
        assert!(!h.set_in_uts);
    }
}
