//! Streaming exec: the same `kraal-monitor exec` helper as ExecSync (libcontainer must not
//! fork from kraald's threads), with the client's streams on its stdio — pipes, or the
//! slave of a pty kraald holds the master of. The helper is a subreaper and waits for the
//! command, so the command's whole tree is found under the helper's pid when the client
//! leaves and everything has to go.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kraal_stream::{ExecRequest, StreamError, StreamIo, TerminalSize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::pty::{self, PtyMaster};
use super::{running_container, stream_error};
use crate::runtime::{ExecFiles, Runtime, TrackedProcess};

/// How long output may still arrive after the command exited (a process it left in the
/// background may hold the pipes open forever).
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long a tty exec waits for the client's first terminal size before starting the
/// command, so the command sees the right size from its first instruction.
const FIRST_SIZE_WAIT: Duration = Duration::from_millis(500);

pub async fn exec(
    runtime: &Arc<Runtime>,
    req: ExecRequest,
    mut io: StreamIo,
) -> Result<i32, StreamError> {
    let record = running_container(runtime, "Exec", &req.container_id).map_err(stream_error)?;
    let files =
        ExecFiles::write(runtime, "Exec", &record, &req.cmd, 0, req.tty).map_err(stream_error)?;
    let mut cmd = Command::new(&runtime.monitor_bin);
    cmd.arg("exec")
        .arg("--config")
        .arg(&files.config_file)
        // The last resort if this future is dropped: the helper at least dies.
        .kill_on_drop(true);
    let spawn_err = |e: std::io::Error| {
        StreamError::Internal(format!(
            "Exec: running {}: {e}",
            runtime.monitor_bin.display()
        ))
    };

    let mut stdin = io.stdin.take();
    let stdout = io.stdout.take();
    let stderr = io.stderr.take();
    let mut resize = io.resize.take();
    let status = if req.tty {
        let init = TrackedProcess {
            pid: record.pid,
            start_time: record.pid_start_time,
        };
        let (master, slave) = pty::open_for(init)
            .map_err(|e| StreamError::Internal(format!("Exec: opening a pty: {e}")))?;
        if let Some(r) = resize.as_mut()
            && let Ok(Some(size)) = tokio::time::timeout(FIRST_SIZE_WAIT, r.recv()).await
        {
            apply_size(&master, size);
        }
        let mut child = spawn_on_pty(cmd, slave).map_err(spawn_err)?;
        debug!(container = %record.id, pid = ?child.id(), cmd = ?req.cmd, "exec with a tty");
        let output = pump(Some(master.clone()), stdout);
        // The client closing stdin cannot close a terminal (that would hang it up): the
        // command reads on until it exits by itself.
        let input = feed(stdin.take(), Some(master.clone()), false);
        run(&mut child, output, input, resize, Some(master), &io).await
    } else {
        cmd.stdin(piped_if(stdin.is_some()))
            .stdout(piped_if(stdout.is_some()))
            .stderr(piped_if(stderr.is_some()));
        let mut child = cmd.spawn().map_err(spawn_err)?;
        debug!(container = %record.id, pid = ?child.id(), cmd = ?req.cmd, "exec");
        let out = pump(child.stdout.take(), stdout);
        let err = pump(child.stderr.take(), stderr);
        let output = async {
            tokio::join!(out, err);
        };
        let input = feed(stdin.take(), child.stdin.take(), true);
        run(&mut child, output, input, None, None, &io).await
    }?;
    match files.result() {
        Some(result) => {
            info!(container = %record.id, cmd = ?req.cmd, exit_code = result.exit_code, "exec finished");
            Ok(result.exit_code)
        }
        // The helper failed before running the command; it said why on the client's stderr.
        None => Err(StreamError::Internal(format!(
            "Exec: exec in container {} failed ({status})",
            record.id
        ))),
    }
}

fn piped_if(wanted: bool) -> Stdio {
    if wanted {
        Stdio::piped()
    } else {
        Stdio::null()
    }
}

/// Starts the helper with the pty slave as its stdio. The command makes the slave its
/// controlling terminal, in a session of its own (`kraal-monitor exec` with `terminal`), so
/// ^C and SIGWINCH reach the command's foreground process group and never the helper. The
/// helper leads a session without a terminal, apart from kraald's.
fn spawn_on_pty(mut cmd: Command, slave: OwnedFd) -> std::io::Result<Child> {
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: the closure runs in the forked child before exec and only calls setsid, which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // `cmd` (holding the parent's copies of the slave) is dropped on return, so the master
    // reads EIO once the command's side is closed.
    cmd.spawn()
}

/// Drives an exec until the helper exits (its status) or the client leaves (an error,
/// after the command's tree was killed and the helper reaped).
async fn run(
    child: &mut Child,
    output: impl Future<Output = ()>,
    input: impl Future<Output = ()>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
    master: Option<PtyMaster>,
    io: &StreamIo,
) -> Result<std::process::ExitStatus, StreamError> {
    tokio::pin!(output, input);
    let (mut output_done, mut input_done) = (false, false);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = &mut output, if !output_done => output_done = true,
            _ = &mut input, if !input_done => input_done = true,
            size = next_size(&mut resize) => match (size, &master) {
                (Some(size), Some(m)) => apply_size(m, size),
                _ => resize = None,
            },
            _ = io.client_gone.wait() => {
                kill_tree(child).await;
                return Err(StreamError::Internal("Exec: the client went away; the command was killed".into()));
            }
        }
    };
    let status = status
        .map_err(|e| StreamError::Internal(format!("Exec: waiting for the exec helper: {e}")))?;
    if !output_done
        && tokio::time::timeout(DRAIN_GRACE, &mut output)
            .await
            .is_err()
    {
        debug!("exec output still open after the command exited; closing it");
    }
    Ok(status)
}

async fn next_size(resize: &mut Option<mpsc::Receiver<TerminalSize>>) -> Option<TerminalSize> {
    match resize {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

fn apply_size(master: &PtyMaster, size: TerminalSize) {
    if let Err(e) = master.resize(size) {
        warn!(?size, "exec: setting the terminal size: {e}");
    }
}

/// Kills the helper's descendants (the command and what it started), then the helper,
/// and reaps it. Descendants first: with the helper gone they would be re-parented out of
/// reach. The helper is our unreaped child, so its pid cannot have been reused.
async fn kill_tree(child: &mut Child) {
    if let Some(pid) = child.id() {
        let pids = kraal_runtime::monitor::descendants(pid as i32);
        debug!(helper = pid, ?pids, "exec client gone: killing the command");
        for p in pids {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// Copies command output to the client until either side ends, then ends the client's
/// stream.
async fn pump<R, W>(src: Option<R>, dst: Option<W>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (Some(mut src), Some(mut dst)) = (src, dst) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if dst.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = dst.shutdown().await;
}

/// Copies the client's stdin to the command; `close` closes the command's side at the end
/// (EOF for a pipe).
async fn feed<R, W>(src: Option<R>, dst: Option<W>, close: bool)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (Some(mut src), Some(mut dst)) = (src, dst) else {
        return;
    };
    let _ = tokio::io::copy(&mut src, &mut dst).await;
    if close {
        let _ = dst.shutdown().await;
    }
    drop(dst);
}
