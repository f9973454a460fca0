//! The one error type of the crate.
//!
//! Every variant names what it was about (image reference, layer digest, tar entry,
//! registry endpoint, file path), because these messages end up verbatim in kubelet
//! events and `crictl` output, where nobody can attach a debugger. The daemon maps
//! [`ErrorKind`] to a gRPC status code; this crate knows nothing about gRPC.

use std::fmt;
use std::path::PathBuf;

/// Coarse classification of an [`ImageError`], one per gRPC status code the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller passed something malformed (reference, config) or an image we cannot run.
    InvalidArgument,
    /// The image, manifest or platform does not exist.
    NotFound,
    /// The registry wanted credentials we did not have, or rejected the ones we had.
    Unauthenticated,
    /// No registry endpoint could be reached or answered sensibly.
    Unavailable,
    /// The operation is not allowed in the current state (e.g. image in use).
    FailedPrecondition,
    /// Content did not match its digest (corrupt or tampered with).
    DataLoss,
    /// Local failure: file system, database.
    Internal,
}

/// What one registry endpoint answered when we asked it for something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    /// The endpoint as configured or derived, e.g. `http://127.0.0.1:5000`.
    pub endpoint: String,
    /// Short description of what went wrong, e.g. `connection refused`.
    pub error: String,
}

impl fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.endpoint, self.error)
    }
}

/// Formats a list of endpoint failures as `a (x), b (y)`.
struct Attempts<'a>(&'a [EndpointFailure]);

impl fmt::Display for Attempts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, attempt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{attempt}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An image reference (or image id) that does not follow the grammar.
    #[error("invalid image reference {reference:?}: {reason} (expected {expected})")]
    InvalidReference {
        reference: String,
        reason: String,
        expected: &'static str,
    },

    /// A mirror entry of the registry configuration is unusable.
    #[error("registry config: mirrors.{registry:?}: endpoint {endpoint:?}: {reason}")]
    InvalidRegistryConfig {
        registry: String,
        endpoint: String,
        reason: String,
    },

    /// Every endpoint was tried for `what` and none delivered it.
    #[error("pull {reference}: {}{}: {}", what.as_deref().map(|w| format!("{w}: ")).unwrap_or_default(), summary(*kind), Attempts(attempts))]
    EndpointsFailed {
        reference: String,
        /// `None` for the image's own manifest, else e.g. `layer sha256:…`.
        what: Option<String>,
        kind: ErrorKind,
        attempts: Vec<EndpointFailure>,
    },

    /// The manifest list/index has no entry for this machine.
    #[error("pull {reference}: no image for platform {wanted} in the index (it offers: {offered})")]
    NoMatchingPlatform {
        reference: String,
        wanted: String,
        offered: String,
    },

    /// Something the registry sent does not hash to the digest it was asked for.
    #[error(
        "pull {reference}: {what}: content does not match its digest: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        reference: String,
        what: String,
        expected: String,
        actual: String,
    },

    /// A layer's uncompressed stream does not hash to the config's `rootfs.diff_ids[i]`.
    #[error(
        "pull {reference}: layer {layer}: uncompressed content does not match the image config's diff_id: expected {expected}, got {actual}"
    )]
    DiffIdMismatch {
        reference: String,
        layer: String,
        expected: String,
        actual: String,
    },

    /// Manifest, index or config the crate cannot use (malformed, unsupported media type).
    #[error("pull {reference}: {what}: {reason}")]
    UnsupportedContent {
        reference: String,
        what: String,
        reason: String,
    },

    /// A layer was refused while unpacking (unsafe entry, or the stream was malformed).
    #[error("pull {reference}: layer {layer}: {source}")]
    Layer {
        reference: String,
        layer: String,
        #[source]
        source: crate::unpack::UnpackError,
    },

    /// Removing an image that a container still uses.
    #[error("image {image} is in use by container {user}")]
    InUse { image: String, user: String },

    /// A local file system operation failed.
    #[error("{context}: {}: {source}", path.display())]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The metadata database failed.
    #[error("image metadata database {}: {context}: {message}", path.display())]
    Metadata {
        path: PathBuf,
        context: String,
        message: String,
    },

    /// A stored record could not be decoded (written by an incompatible version?).
    #[error("image metadata database {}: record {key:?} is unreadable: {message}", path.display())]
    CorruptRecord {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// A background task died (panicked or was cancelled) before it reported back.
    #[error("{context}: background task failed: {message}")]
    Task { context: String, message: String },
}

fn summary(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "not found",
        ErrorKind::Unauthenticated => "not authorized",
        ErrorKind::DataLoss => "corrupt content",
        _ => "no endpoint answered",
    }
}

impl ImageError {
    /// The gRPC-ish class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ImageError::InvalidReference { .. } | ImageError::InvalidRegistryConfig { .. } => {
                ErrorKind::InvalidArgument
            }
            ImageError::EndpointsFailed { kind, .. } => *kind,
            ImageError::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            ImageError::DigestMismatch { .. } | ImageError::DiffIdMismatch { .. } => {
                ErrorKind::DataLoss
            }
            ImageError::UnsupportedContent { .. } => ErrorKind::InvalidArgument,
            ImageError::Layer { source, .. } => source.kind(),
            ImageError::InUse { .. } => ErrorKind::FailedPrecondition,
            ImageError::Io { .. }
            | ImageError::Metadata { .. }
            | ImageError::CorruptRecord { .. }
            | ImageError::Task { .. } => ErrorKind::Internal,
        }
    }

    /// Shorthand for [`ImageError::Io`].
    pub(crate) fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ImageError::Io {
            context: context.into(),
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_failed_message_lists_every_endpoint() {
        let err = ImageError::EndpointsFailed {
            reference: "127.0.0.1:1/kraal-test/busybox:latest".into(),
            what: None,
            kind: ErrorKind::Unavailable,
            attempts: vec![EndpointFailure {
                endpoint: "http://127.0.0.1:1".into(),
                error: "connection refused".into(),
            }],
        };
        assert_eq!(
            err.to_string(),
            "pull 127.0.0.1:1/kraal-test/busybox:latest: no endpoint answered: http://127.0.0.1:1 (connection refused)"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn endpoints_failed_message_names_the_blob() {
        let err = ImageError::EndpointsFailed {
            reference: "r.example/a:1".into(),
            what: Some("layer sha256:ab".into()),
            kind: ErrorKind::NotFound,
            attempts: vec![
                EndpointFailure {
                    endpoint: "http://127.0.0.1:5000".into(),
                    error: "HTTP 404".into(),
                },
                EndpointFailure {
                    endpoint: "https://r.example".into(),
                    error: "blob unknown".into(),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "pull r.example/a:1: layer sha256:ab: not found: http://127.0.0.1:5000 (HTTP 404), https://r.example (blob unknown)"
        );
    }

    #[test]
    fn in_use_message() {
        let err = ImageError::InUse {
            image: "sha256:00".into(),
            user: "c1".into(),
        };
        assert_eq!(err.to_string(), "image sha256:00 is in use by container c1");
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }
}
