//! Any `:authority` on kraald's unix sockets. kubelet 1.28–1.30 (grpc-go before 1.61) sends
//! the socket's path, e.g. `/run/kraal/kraal.sock`, as the HTTP/2 `:authority`; h2 refuses
//! that as a malformed URI and resets the stream, and it has no setting to accept it. On a unix
//! socket the authority names nothing, so each accepted connection is wrapped in
//! [`Tolerant`], which rewrites such an authority to `localhost` before h2 reads it.
//!
//! The rewrite is in the byte stream, below h2, because no layer above sees the request first.

mod frames;
mod headers;
mod stream;

pub use stream::Tolerant;

use tokio::net::UnixListener;
use tokio_stream::{Stream, StreamExt, wrappers::UnixListenerStream};

/// The listener's connections, each wrapped in [`Tolerant`]: what tonic's
/// `serve_with_incoming_shutdown` takes.
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = std::io::Result<Tolerant<tokio::net::UnixStream>>> {
    UnixListenerStream::new(listener).map(|accepted| accepted.map(Tolerant::new))
}
