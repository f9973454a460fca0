//! Exec and attach over SPDY: the client opens one stream per `streamType` (error, stdin,
//! stdout, stderr, resize), we wait for all the request needs, run the command, and end
//! with the status on the error stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::frame::rst;
use super::session::{IncomingStream, Session};
use crate::config::ServerConfig;
use crate::remotecommand::{self, Command, Endpoints, Version};
use crate::runtime::StreamRuntime;

#[derive(Default)]
struct Streams {
    error: Option<IncomingStream>,
    stdin: Option<IncomingStream>,
    stdout: Option<IncomingStream>,
    stderr: Option<IncomingStream>,
    resize: Option<IncomingStream>,
}

pub(crate) async fn serve<R: StreamRuntime>(
    mut session: Session,
    version: Version,
    cmd: Command,
    runtime: Arc<R>,
    cfg: ServerConfig,
) {
    let gone = session.gone();
    let (want_in, want_out, want_err) = cmd.wants();
    let want_resize = cmd.tty() && version.has_resize();
    let expected = 1 + [want_in, want_out, want_err, want_resize]
        .iter()
        .filter(|w| **w)
        .count();

    let mut got = Streams::default();
    let mut count = 0;
    let deadline = tokio::time::sleep(cfg.stream_creation_timeout);
    tokio::pin!(deadline);
    while count < expected {
        let s = tokio::select! {
            s = session.accept() => s,
            _ = &mut deadline => {
                warn!(expected, count, "exec: timed out waiting for the client's streams");
                session.close(Duration::from_secs(1)).await;
                return;
            }
        };
        let Some(s) = s else {
            debug!("exec: client left before opening its streams");
            return;
        };
        let slot = match s.headers.get("streamtype") {
            Some("error") => &mut got.error,
            Some("stdin") if want_in => &mut got.stdin,
            Some("stdout") if want_out => &mut got.stdout,
            Some("stderr") if want_err => &mut got.stderr,
            Some("resize") if want_resize => &mut got.resize,
            other => {
                warn!(stream_type = ?other, "exec: unexpected stream");
                session.reset(s.id, rst::PROTOCOL_ERROR).await;
                continue;
            }
        };
        if slot.is_some() {
            session.reset(s.id, rst::STREAM_IN_USE).await;
            continue;
        }
        *slot = Some(s);
        count += 1;
    }
    let Some(error) = got.error else {
        return;
    };

    // Keep what we write on; drop the readers nobody uses (what the client sends there is
    // discarded). The streams the client writes to stay open from our side until the
    // session ends (`held`): a FIN from us would make client-go stop sending stdin.
    let mut waits: Vec<oneshot::Receiver<()>> = Vec::new();
    let mut held = Vec::new();
    let mut ep = Endpoints::default();
    if let Some(s) = got.stdin {
        let (reader, open) = s.into_inbound();
        ep.stdin = Some(reader);
        held.push(open);
    }
    if let Some(s) = got.stdout {
        ep.stdout = Some(s.writer);
        waits.push(s.done);
    }
    if let Some(s) = got.stderr {
        ep.stderr = Some(s.writer);
        waits.push(s.done);
    }
    if let Some(s) = got.resize {
        let (reader, open) = s.into_inbound();
        ep.resize = Some(reader);
        held.push(open);
    }

    info!(?cmd, ?version, "exec: streams ready, running");
    let outcome = {
        let run = remotecommand::run(runtime.as_ref(), cmd, ep, gone.clone(), cfg.runtime_grace);
        tokio::pin!(run);
        // Keep taking streams while the command runs so the session's reader never waits
        // on us; nothing more is expected, so they are refused.
        let mut accepting = true;
        loop {
            tokio::select! {
                out = &mut run => break out,
                s = session.accept(), if accepting => match s {
                    Some(s) => session.reset(s.id, rst::REFUSED_STREAM).await,
                    None => accepting = false,
                },
            }
        }
    };
    info!(?outcome, "exec: finished");
    if gone.is_cancelled() {
        return;
    }
    // Output first, then the status: the client may stop reading once it has the status.
    for w in waits {
        let _ = tokio::time::timeout(cfg.runtime_grace, w).await;
    }
    let IncomingStream {
        writer: mut err_writer,
        done: err_done,
        ..
    } = error;
    if let Some(bytes) = version.status(&outcome) {
        let _ = err_writer.write_all(&bytes).await;
    }
    drop(err_writer);
    let _ = tokio::time::timeout(cfg.runtime_grace, err_done).await;
    drop(held);
    session.close(Duration::from_secs(5)).await;
}
