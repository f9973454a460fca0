//! Port-forward over WebSocket: the ports come from the URL; port i gets data channel 2i
//! and error channel 2i+1, and the first message we send on each carries the port as two
//! bytes, little-endian. One forwarded connection per port, for the socket's lifetime.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{channel_message, next_channel_message, normal_close, pump, run_session};
use crate::config::ServerConfig;
use crate::idle::Activity;
use crate::pipe::{self, PortStream};
use crate::runtime::{PortForwardTarget, StreamRuntime};

/// Channel numbers are one byte: two per port.
pub(crate) const MAX_PORTS: usize = 128;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<R, IO>(
    ws: WebSocketStream<IO>,
    pod_sandbox_id: String,
    ports: Vec<u16>,
    runtime: Arc<R>,
    cfg: ServerConfig,
    gone: CancellationToken,
    activity: Activity,
) where
    R: StreamRuntime,
    IO: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, mut stream) = ws.split();
    let (out_tx, out_rx) = mpsc::channel::<Message>(32);
    let mut feeders: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    let mut forwards = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let prefix = port.to_le_bytes();
        let _ = out_tx.send(channel_message(data_ch, &prefix)).await;
        let _ = out_tx.send(channel_message(err_ch, &prefix)).await;
        let (in_tx, reader) = pipe::inbound(None);
        let (writer_pipe, out_pipe_rx) = pipe::outbound();
        feeders.push(Some(in_tx));
        let out = out_tx.clone();
        let runtime = runtime.clone();
        let target = PortForwardTarget {
            pod_sandbox_id: pod_sandbox_id.clone(),
            port,
        };
        forwards.push(async move {
            info!(?target, "ws port-forward: connection");
            let fwd = runtime.port_forward(target.clone(), PortStream::new(reader, writer_pipe));
            let (res, _) = tokio::join!(fwd, pump(out_pipe_rx, data_ch, out.clone()));
            if let Err(e) = res {
                let msg = format!(
                    "error forwarding port {} to pod {}: {e}",
                    target.port, target.pod_sandbox_id
                );
                let _ = out.send(channel_message(err_ch, msg.as_bytes())).await;
            }
        });
    }

    let main = {
        let gone = gone.clone();
        let grace = cfg.runtime_grace;
        async move {
            let all = futures::future::join_all(forwards);
            tokio::pin!(all);
            tokio::select! {
                _ = &mut all => {}
                _ = gone.cancelled() => {
                    // The pipes now read EOF and fail writes; the runtime gets its grace.
                    let _ = tokio::time::timeout(grace, &mut all).await;
                }
            }
            if !gone.is_cancelled() {
                let _ = out_tx.send(normal_close()).await;
            }
        }
    };

    let reader = {
        let gone = gone.clone();
        let activity = activity.clone();
        async move {
            while let Some((channel, payload)) = next_channel_message(&mut stream, &activity).await
            {
                let idx = usize::from(channel / 2);
                if channel % 2 == 1 || payload.is_empty() {
                    continue;
                }
                if let Some(slot) = feeders.get_mut(idx)
                    && let Some(tx) = slot
                    && tx.send(payload).await.is_err()
                {
                    *slot = None;
                } else if idx >= ports.len() {
                    debug!(channel, "ws port-forward: data on an unknown channel");
                }
            }
            gone.cancel();
        }
    };

    run_session(main, sink, out_rx, activity, reader).await;
}
