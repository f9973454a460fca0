//! The connection to kraald's sockets (admin, and CRI for `kraalctl cri`): gRPC over a unix
//! socket, dialled the way the end-to-end harness dials the CRI socket.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use hyper_util::rt::TokioIo;
use kraal_api::kraal::v1::admin_client::AdminClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where kraald serves its admin API unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/kraal/admin.sock";

/// Connects to the admin socket. A socket that is missing, refuses the connection or is not
/// ours to open is reported with the path, the OS error and a hint.
pub async fn connect(socket: &Path) -> anyhow::Result<AdminClient<Channel>> {
    Ok(AdminClient::new(channel(socket, "admin socket").await?))
}

/// A channel to one of kraald's sockets; `role` names it in the error.
pub async fn channel(socket: &Path, role: &str) -> anyhow::Result<Channel> {
    let path = socket.to_path_buf();
    Endpoint::from_static("http://kraal.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path: PathBuf = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|err| unreachable_error(socket, role, &err))
}

/// The one-line message for a socket kraalctl could not connect to.
fn unreachable_error(
    socket: &Path,
    role: &str,
    err: &(dyn std::error::Error + 'static),
) -> anyhow::Error {
    let cause = io_cause(err).map_or_else(|| err.to_string(), ToString::to_string);
    let hint = if role == "admin socket" {
        "is kraald running? the admin socket is root only"
    } else {
        "is kraald running? the CRI socket is for root and kraald's socket_group"
    };
    anyhow!(
        "cannot reach kraald's {role} {}: {cause} ({hint})",
        socket.display()
    )
}

/// The I/O error at the root of a transport error, if there is one.
fn io_cause<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        current = err.source();
    }
    None
}

/// The one-line message for a gRPC error: `<code name>: <message>`, e.g.
/// `NotFound: pod "x" not found`.
pub fn status_error(status: &tonic::Status) -> anyhow::Error {
    let message = status.message().lines().collect::<Vec<_>>().join(" ");
    if message.is_empty() {
        anyhow!("{:?}", status.code())
    } else {
        anyhow!("{:?}: {message}", status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_name_the_code() {
        let err = status_error(&tonic::Status::not_found("pod \"x\" not found"));
        assert_eq!(err.to_string(), "NotFound: pod \"x\" not found");
        let err = status_error(&tonic::Status::failed_precondition("pod is\nstopped"));
        assert_eq!(err.to_string(), "FailedPrecondition: pod is stopped");
        let err = status_error(&tonic::Status::internal(""));
        assert_eq!(err.to_string(), "Internal");
    }

    #[tokio::test]
    async fn missing_socket_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let err = connect(&socket).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot reach kraald's admin socket {}: {} (is kraald running? the admin socket is root only)",
                socket.display(),
                // ENOENT: "No such file or directory (os error 2)"
                std::io::Error::from_raw_os_error(2)
            )
        );
    }
}
