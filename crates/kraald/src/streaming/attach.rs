//! Attach: the container's stdio is held by its monitor, which serves `attach` on the
//! control socket (`kraal_runtime::monitor::attach`): it then sends the container's output
//! as frames and takes stdin frames. Detaching is closing that connection; the container
//! is never touched. For a tty attach the client's terminal sizes go to the monitor as
//! resize frames (the monitor ignores them for a container without a terminal).

use std::sync::Arc;
use std::time::Duration;

use kraal_runtime::monitor::attach::{
    FRAME_HEADER, FRAME_STDERR, FRAME_STDIN, FRAME_STDIN_CLOSE, FRAME_STDOUT, encode_frame,
    encode_resize,
};
use kraal_stream::{AttachRequest, OutboundPipe, StreamError, StreamIo, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{running_container, stream_error};
use crate::runtime::Runtime;

/// How long the monitor may take to answer `attach`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame from the monitor is one read of the container's output; anything much larger
/// means the stream is out of step.
const MAX_FRAME: usize = 1 << 20;

pub async fn attach(
    runtime: &Arc<Runtime>,
    req: AttachRequest,
    mut io: StreamIo,
) -> Result<(), StreamError> {
    let record = running_container(runtime, "Attach", &req.container_id).map_err(stream_error)?;
    let socket = runtime.layout.control_socket(&record.id);
    let stdin = io.stdin.take();
    // Sizes only for a tty attach: kraal-stream opens no resize stream otherwise.
    let resize = if req.tty { io.resize.take() } else { None };
    let conn = tokio::time::timeout(REPLY_TIMEOUT, handshake(&socket, stdin.is_some()))
        .await
        .map_err(|_| {
            StreamError::Internal(format!(
                "Attach: the monitor of container {} did not answer within {REPLY_TIMEOUT:?}",
                record.id
            ))
        })??;
    info!(container = %record.id, stdin = stdin.is_some(), tty = req.tty, "attached");
    let (rd, wr) = conn.into_split();
    let mut stdout = io.stdout.take();
    let mut stderr = io.stderr.take();
    let output = relay_output(rd, &mut stdout, &mut stderr);
    let input = async move {
        let mut wr = wr;
        relay_input(stdin, resize, &mut wr).await;
        // The write half stays open (dropping it would shut it down, which the monitor
        // takes for a detach) until the session ends.
        std::future::pending::<()>().await
    };
    tokio::select! {
        r = output => match r {
            Ok(()) => debug!(container = %record.id, "container output ended"),
            Err(e) => debug!(container = %record.id, "attach connection: {e}"),
        },
        () = input => {}
        () = io.client_gone.wait() => debug!(container = %record.id, "attach client left"),
    }
    for out in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = out.shutdown().await;
    }
    info!(container = %record.id, "detached");
    Ok(())
}

/// Connects to the control socket and asks for attach; the connection is ready for frames.
async fn handshake(socket: &std::path::Path, stdin: bool) -> Result<UnixStream, StreamError> {
    let mut conn = UnixStream::connect(socket).await.map_err(|e| {
        StreamError::Internal(format!(
            "Attach: connecting to the monitor at {}: {e}",
            socket.display()
        ))
    })?;
    let request: &[u8] = if stdin {
        b"attach stdin\n"
    } else {
        b"attach\n"
    };
    conn.write_all(request).await?;
    // Byte by byte: the frames follow the reply on the same connection.
    let mut line = Vec::new();
    loop {
        let b = conn.read_u8().await?;
        if b == b'\n' || line.len() > 4096 {
            break;
        }
        line.push(b);
    }
    let line = String::from_utf8_lossy(&line);
    match line.trim() {
        "ok" => Ok(conn),
        other => Err(StreamError::FailedPrecondition(format!(
            "Attach: the monitor refused: {}",
            other.strip_prefix("error: ").unwrap_or(other)
        ))),
    }
}

/// Monitor frames to the client's stdout and stderr until the monitor closes the
/// connection (the container exited). Streams the client did not ask for are dropped.
async fn relay_output(
    mut rd: OwnedReadHalf,
    stdout: &mut Option<OutboundPipe>,
    stderr: &mut Option<OutboundPipe>,
) -> std::io::Result<()> {
    let mut header = [0u8; FRAME_HEADER];
    let mut payload = Vec::new();
    loop {
        match rd.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_FRAME {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes from the monitor"),
            ));
        }
        payload.resize(len, 0);
        rd.read_exact(&mut payload).await?;
        let target = match header[0] {
            FRAME_STDOUT => stdout.as_mut(),
            FRAME_STDERR => stderr.as_mut(),
            _ => None,
        };
        if let Some(out) = target
            && out.write_all(&payload).await.is_err()
        {
            // The client is going away; client_gone ends the session.
            continue;
        }
    }
}

/// The client's stdin as frames to the monitor, then the close signal (which closes the
/// container's stdin only for `stdin_once` containers); and terminal sizes as resize
/// frames, in the order they come. Returns when both are done (or the monitor is gone).
async fn relay_input(
    mut stdin: Option<impl AsyncRead + Unpin>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    wr: &mut OwnedWriteHalf,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut frame = Vec::with_capacity(buf.len() + FRAME_HEADER);
    while stdin.is_some() || resize.is_some() {
        frame.clear();
        tokio::select! {
            read = read_some(&mut stdin, &mut buf) => match read {
                Some(n) => encode_frame(&mut frame, FRAME_STDIN, &buf[..n]),
                None => {
                    stdin = None;
                    encode_frame(&mut frame, FRAME_STDIN_CLOSE, &[]);
                }
            },
            size = next_size(&mut resize) => match size {
                Some(size) => {
                    debug!(width = size.width, height = size.height, "attach: resize");
                    encode_resize(&mut frame, size.width, size.height);
                }
                None => resize = None,
            },
        }
        if !frame.is_empty() && wr.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// The next bytes of `stdin`: `None` at its end (or error); pending forever without stdin.
async fn read_some(stdin: &mut Option<impl AsyncRead + Unpin>, buf: &mut [u8]) -> Option<usize> {
    let Some(s) = stdin else {
        return std::future::pending().await;
    };
    match s.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// The next terminal size; `None` when the client's resize stream ended; pending forever
/// without one.
async fn next_size(resize: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match resize {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}
