//! Port-forward over SPDY (`portforward.k8s.io`): per forwarded connection the client opens
//! an error stream and a data stream carrying the same `port` and `requestID` headers. The
//! connection lives as long as the client keeps it, with any number of such pairs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::frame::rst;
use super::session::{IncomingStream, Session};
use crate::config::ServerConfig;
use crate::pipe::PortStream;
use crate::runtime::{PortForwardRequest, PortForwardTarget, StreamRuntime};

#[derive(Default)]
struct Pair {
    data: Option<IncomingStream>,
    error: Option<IncomingStream>,
    since: Option<Instant>,
}

pub(crate) async fn serve<R: StreamRuntime>(
    mut session: Session,
    req: PortForwardRequest,
    runtime: Arc<R>,
    cfg: ServerConfig,
) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut active = JoinSet::new();
    let mut tick =
        tokio::time::interval(cfg.stream_creation_timeout.max(Duration::from_secs(2)) / 2);
    loop {
        tokio::select! {
            s = session.accept() => {
                let Some(s) = s else { break };
                let Some((key, is_data)) = classify(&s) else {
                    warn!("port-forward: stream without a known streamType");
                    session.reset(s.id, rst::PROTOCOL_ERROR).await;
                    continue;
                };
                let pair = pending.entry(key.clone()).or_default();
                pair.since.get_or_insert_with(Instant::now);
                let slot = if is_data { &mut pair.data } else { &mut pair.error };
                if slot.is_some() {
                    session.reset(s.id, rst::STREAM_IN_USE).await;
                    continue;
                }
                *slot = Some(s);
                if pair.data.is_some() && pair.error.is_some()
                    && let Some(Pair { data: Some(data), error: Some(error), .. }) = pending.remove(&key)
                {
                    active.spawn(forward(runtime.clone(), req.pod_sandbox_id.clone(), data, error));
                }
            }
            _ = tick.tick() => {
                let stale: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() > cfg.stream_creation_timeout))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    warn!(request_id = %k, "port-forward: half a stream pair timed out");
                    if let Some(p) = pending.remove(&k) {
                        for s in [p.data, p.error].into_iter().flatten() {
                            session.reset(s.id, rst::CANCEL).await;
                        }
                    }
                }
            }
            Some(_) = active.join_next(), if !active.is_empty() => {}
        }
    }
    debug!("port-forward: connection gone; letting forwards finish");
    // The pipes of every forward now read EOF and fail writes; give the runtime its grace.
    let drain = async { while active.join_next().await.is_some() {} };
    if tokio::time::timeout(cfg.runtime_grace, drain)
        .await
        .is_err()
    {
        warn!("port-forward: runtime did not finish in time; aborting");
    }
}

/// The pair key and whether this is the data stream. Old clients send no `requestID`: the
/// error stream is opened right before its data stream, two ids earlier.
fn classify(s: &IncomingStream) -> Option<(String, bool)> {
    let is_data = match s.headers.get("streamtype")? {
        "data" => true,
        "error" => false,
        _ => return None,
    };
    let key = match s.headers.get("requestid") {
        Some(id) => id.to_owned(),
        None if is_data => s.id.saturating_sub(2).to_string(),
        None => s.id.to_string(),
    };
    Some((key, is_data))
}

async fn forward<R: StreamRuntime>(
    runtime: Arc<R>,
    pod_sandbox_id: String,
    data: IncomingStream,
    error: IncomingStream,
) {
    let IncomingStream {
        writer: mut err_writer,
        ..
    } = error;
    let port = data.headers.get("port").and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port.filter(|p| *p != 0) else {
        let msg = format!(
            "invalid port header {:?}",
            data.headers.get("port").unwrap_or("")
        );
        let _ = err_writer.write_all(msg.as_bytes()).await;
        return;
    };
    info!(%pod_sandbox_id, port, "port-forward: connection");
    let target = PortForwardTarget {
        pod_sandbox_id: pod_sandbox_id.clone(),
        port,
    };
    let stream = PortStream::new(data.reader, data.writer);
    if let Err(e) = runtime.port_forward(target, stream).await {
        let msg = format!("error forwarding port {port} to pod {pod_sandbox_id}: {e}");
        debug!("port-forward: {msg}");
        let _ = err_writer.write_all(msg.as_bytes()).await;
    }
}
