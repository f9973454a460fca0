use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("creating the pod's namespaces ({what}): {source}")]
    Unshare {
        what: String,
        source: std::io::Error,
    },
    #[error("reading the node's hostname: {0}")]
    Hostname(std::io::Error),
    #[error("the namespace pinning thread panicked")]
    ThreadPanicked,
    #[error("invalid {field} {value:?}: {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

impl SandboxError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        SandboxError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True when the error is the caller's fault (bad hostname, bad DNS option), not the node's.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, SandboxError::Invalid { .. })
    }
}
