//! Exec and attach over WebSocket: channel 0 stdin, 1 stdout, 2 stderr, 3 error (the
//! Status), 4 resize. v5 adds channel 255, "close": its one data byte names a channel the
//! client is done sending on (stdin EOF, which v4 cannot express).

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
use crate::pipe;
use crate::remotecommand::{self, Command, Endpoints, Version};
use crate::runtime::StreamRuntime;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<R, IO>(
    ws: WebSocketStream<IO>,
    version: Version,
    cmd: Command,
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
    let (want_in, want_out, want_err) = cmd.wants();

    let mut ep = Endpoints::default();
    let mut stdin_tx = None;
    if want_in {
        let (tx, rx) = pipe::inbound(None);
        stdin_tx = Some(tx);
        ep.stdin = Some(rx);
    }
    let mut resize_tx = None;
    if cmd.tty() {
        let (tx, rx) = pipe::inbound(None);
        resize_tx = Some(tx);
        ep.resize = Some(rx);
    }
    let mut pumps = Vec::new();
    if want_out {
        let (w, rx) = pipe::outbound();
        ep.stdout = Some(w);
        pumps.push(pump(rx, STDOUT, out_tx.clone()));
    }
    if want_err {
        let (w, rx) = pipe::outbound();
        ep.stderr = Some(w);
        pumps.push(pump(rx, STDERR, out_tx.clone()));
    }

    info!(?cmd, ?version, "ws exec: running");
    let main = {
        let gone = gone.clone();
        async move {
            let run =
                remotecommand::run(runtime.as_ref(), cmd, ep, gone.clone(), cfg.runtime_grace);
            let (outcome, _) = tokio::join!(run, futures::future::join_all(pumps));
            info!(?outcome, "ws exec: finished");
            if !gone.is_cancelled() {
                if let Some(status) = version.status(&outcome) {
                    let _ = out_tx.send(channel_message(ERROR, &status)).await;
                }
                let _ = out_tx.send(normal_close()).await;
            }
        }
    };

    let reader = {
        let gone = gone.clone();
        let activity = activity.clone();
        async move {
            while let Some((channel, rest)) = next_channel_message(&mut stream, &activity).await {
                match channel {
                    STDIN => feed(&mut stdin_tx, rest).await,
                    RESIZE => feed(&mut resize_tx, rest).await,
                    CLOSE if version >= Version::V5 => match rest.first() {
                        Some(&STDIN) => stdin_tx = None,
                        Some(&RESIZE) => resize_tx = None,
                        other => debug!(?other, "ws exec: close for an unknown channel"),
                    },
                    other => debug!(channel = other, "ws exec: data on an unexpected channel"),
                }
            }
            // The client closed or vanished: stdin reads EOF, the runtime hears `gone`.
            gone.cancel();
        }
    };

    run_session(main, sink, out_rx, activity, reader).await;
}

async fn feed(tx: &mut Option<mpsc::Sender<Bytes>>, data: Bytes) {
    if data.is_empty() {
        return;
    }
    if let Some(t) = tx
        && t.send(data).await.is_err()
    {
        // The runtime stopped reading this input; drop the rest.
        *tx = None;
    }
}
