//! WebSocket, for clients that connect to the runtime directly: every binary message is one
//! channel's data, prefixed by the channel number (`v4.channel.k8s.io`,
//! `v5.channel.k8s.io`). RFC 6455 framing is tokio-tungstenite's; channels are ours.

pub(crate) mod exec;
pub(crate) mod portforward;

use std::future::Future;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use crate::idle::Activity;

/// How long the client has to answer our Close before the session is dropped.
const CLOSE_ANSWER: Duration = Duration::from_secs(1);

/// The largest message accepted from a client; stdin and port-forward data come in pieces
/// far smaller.
const MAX_MESSAGE: usize = 16 << 20;

pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

pub(crate) fn accept_key(client_key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(client_key.as_bytes())
}

/// Picks the first subprotocol the client offers (in its order of preference) that we
/// support.
pub(crate) fn negotiate<'a, V: Copy>(
    offered: &str,
    supported: &'a [(&'a str, V)],
) -> Option<(&'a str, V)> {
    offered
        .split(',')
        .map(str::trim)
        .find_map(|p| supported.iter().find(|(name, _)| *name == p).copied())
}

/// One channel's frame: its number, then the data.
pub(crate) fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

/// Copies one outbound pipe's chunks onto `channel`.
pub(crate) async fn pump(mut rx: mpsc::Receiver<Bytes>, channel: u8, out: mpsc::Sender<Message>) {
    while let Some(chunk) = rx.recv().await {
        if out.send(channel_message(channel, &chunk)).await.is_err() {
            return;
        }
    }
}

/// Sends queued messages until the queue closes or the connection fails; closes the
/// connection after a Close message.
pub(crate) async fn writer<S>(mut sink: S, mut rx: mpsc::Receiver<Message>, activity: Activity)
where
    S: Sink<Message> + Unpin,
{
    while let Some(m) = rx.recv().await {
        let closing = matches!(m, Message::Close(_));
        if sink.send(m).await.is_err() {
            return;
        }
        activity.touch();
        if closing {
            break;
        }
    }
    let _ = sink.close().await;
}

/// The Close that ends a session the server finished: status 1000, no reason.
pub(crate) fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The client's next channel message: its channel and the data after the channel byte.
/// None once the client closed, vanished or broke the framing; text, pings and empty
/// messages are skipped.
pub(crate) async fn next_channel_message<S, E>(
    stream: &mut S,
    activity: &Activity,
) -> Option<(u8, Bytes)>
where
    S: Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        activity.touch();
        match msg {
            Ok(Message::Binary(data)) if !data.is_empty() => {
                return Some((data[0], data.slice(1..)));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
    None
}

/// Runs a session to its end: `main` (the runtime's side, queuing messages on the channel
/// `queue` drains), the writer sending them, and `reader` (the client's side). Once the
/// writer is done the client gets [`CLOSE_ANSWER`] to answer our Close before its side is
/// dropped.
pub(crate) async fn run_session<S>(
    main: impl Future<Output = ()>,
    sink: S,
    queue: mpsc::Receiver<Message>,
    activity: Activity,
    reader: impl Future<Output = ()>,
) where
    S: Sink<Message> + Unpin,
{
    let done = CancellationToken::new();
    let served = async {
        tokio::join!(main, writer(sink, queue, activity));
        done.cancel();
    };
    let read_until_done = async {
        tokio::select! {
            _ = reader => {}
            _ = async { done.cancelled().await; tokio::time::sleep(CLOSE_ANSWER).await } => {}
        }
    };
    tokio::join!(served, read_until_done);
}
