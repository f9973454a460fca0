use std::io;

/// What went wrong, for the server's callers and for the runtime's answers.
///
/// The runtime returns these from [`crate::StreamRuntime`] calls; the server turns them into
/// the error stream's Status (exec/attach) or the port-forward error stream's text.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The request is malformed (e.g. a tty with a separate stderr).
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The container, sandbox or port does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The target exists but cannot take the request now (e.g. the pod is frozen).
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Too many pending tokens or streams.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Configuration that cannot be used (address, TLS files).
    #[error("configuration: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// Anything else the runtime wants to report, as text.
    #[error("{0}")]
    Internal(String),
}
