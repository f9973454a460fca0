//! Shared test support: a fake runtime that runs real host processes (pipes or a real
//! pty), an echo server, and the protocol clients (from `kraal-stream-testclient`, shared
//! with the end-to-end tests).
#![allow(dead_code)]

// Each test file uses some of them.
#[allow(unused_imports)]
pub use kraal_stream_testclient::{http, remotecommand, spdy_client, ws_client};

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use kraal_stream::{
    AttachRequest, ExecRequest, PortForwardTarget, PortStream, Server, ServerConfig, StreamError,
    StreamIo, StreamRuntime, TerminalSize,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    ExecStarted {
        pid: u32,
    },
    /// `reaped`: the child was waited for; `gone`: the client left first.
    ExecEnded {
        pid: u32,
        code: i32,
        gone: bool,
        reaped: bool,
    },
    AttachEnded {
        container: String,
        gone: bool,
    },
    PortForwardEnded {
        port: u16,
    },
}

#[derive(Default)]
pub struct FakeRuntime {
    pub events: Mutex<Vec<Event>>,
    containers: Mutex<HashMap<String, FakeContainer>>,
}

/// A "container": its pid, its output for every attacher, its stdin for attachers that
/// send some.
struct FakeContainer {
    pid: u32,
    output: broadcast::Sender<Bytes>,
    stdin: Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>,
}

impl FakeRuntime {
    fn record(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until an event matching `pred` was recorded.
    pub async fn wait_for(&self, t: Duration, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such event; saw {:?}",
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A "container": a process whose stdout every attacher receives and whose stdin
    /// attachers with stdin write to.
    pub fn start_container(&self, id: &str, script: &str) -> u32 {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let (tx, _) = broadcast::channel(256);
        let out = child.stdout.take().unwrap();
        let stdin = Arc::new(tokio::sync::Mutex::new(child.stdin.take().unwrap()));
        let tx2 = tx.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx2.send(Bytes::from(format!("{l}\n")));
            }
            let _ = child.wait().await;
        });
        self.containers.lock().unwrap().insert(
            id.to_owned(),
            FakeContainer {
                pid,
                output: tx,
                stdin,
            },
        );
        pid
    }

    async fn exec_pipes(&self, req: ExecRequest, mut io: StreamIo) -> Result<i32, StreamError> {
        let mut child = tokio::process::Command::new(&req.cmd[0])
            .args(&req.cmd[1..])
            .stdin(if io.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if io.stdout.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if io.stderr.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        self.record(Event::ExecStarted { pid });
        let stdin = copy_in(io.stdin.take(), child.stdin.take());
        let stdout = copy_out(child.stdout.take(), io.stdout.take());
        let stderr = copy_out(child.stderr.take(), io.stderr.take());
        let finish = async {
            let (_, _, status) = tokio::join!(stdout, stderr, child.wait());
            status
        };
        self.finish(pid, finish, stdin, &io, None).await
    }

    async fn exec_tty(&self, req: ExecRequest, mut io: StreamIo) -> Result<i32, StreamError> {
        let pty =
            nix::pty::openpty(None, None).map_err(|e| StreamError::Internal(e.to_string()))?;
        // Apply the client's first size before the command looks at it, like a runtime
        // sets the console size before starting the process.
        let mut resize = io.resize.take();
        if let Some(r) = resize.as_mut()
            && let Ok(Some(size)) = tokio::time::timeout(Duration::from_secs(2), r.recv()).await
        {
            set_size(&pty.master, size);
        }
        let slave = pty.slave;
        let mut cmd = tokio::process::Command::new(&req.cmd[0]);
        cmd.args(&req.cmd[1..])
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?))
            .kill_on_drop(true);
        unsafe {
            cmd.pre_exec(|| {
                // A session leader with the pty as its controlling terminal.
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        drop(cmd);
        drop(slave);
        let pid = child.id().unwrap_or(0);
        self.record(Event::ExecStarted { pid });
        let master: OwnedFd = pty.master;
        let resize_master = master.try_clone()?;
        let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
        let writer = tokio::fs::File::from_std(std::fs::File::from(master));
        let stdin = copy_in(io.stdin.take(), Some(writer));
        // The pty reads EIO once the child and its descendants closed the slave.
        let stdout = copy_out(Some(reader), io.stdout.take());
        let finish = async {
            let (status, _) = tokio::join!(child.wait(), stdout);
            status
        };
        self.finish(pid, finish, stdin, &io, resize.map(|r| (r, resize_master)))
            .await
    }

    async fn finish(
        &self,
        pid: u32,
        finish: impl std::future::Future<Output = std::io::Result<std::process::ExitStatus>>,
        stdin: impl std::future::Future<Output = ()>,
        io: &StreamIo,
        resize: Option<(tokio::sync::mpsc::Receiver<TerminalSize>, OwnedFd)>,
    ) -> Result<i32, StreamError> {
        tokio::pin!(finish, stdin);
        let mut stdin_done = false;
        let (mut resize_rx, resize_fd) = match resize {
            Some((r, fd)) => (Some(r), Some(fd)),
            None => (None, None),
        };
        loop {
            tokio::select! {
                status = &mut finish => {
                    let status = status?;
                    let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                    self.record(Event::ExecEnded { pid, code, gone: false, reaped: true });
                    return Ok(code);
                }
                _ = &mut stdin, if !stdin_done => stdin_done = true,
                size = async { resize_rx.as_mut().unwrap().recv().await }, if resize_rx.is_some() => match size {
                    Some(s) => set_size(resize_fd.as_ref().unwrap(), s),
                    None => resize_rx = None,
                },
                _ = io.client_gone.wait() => {
                    // The client left: kill and reap, then report.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    let reaped = finish.await.is_ok();
                    self.record(Event::ExecEnded { pid, code: -1, gone: true, reaped });
                    return Err(StreamError::Internal("client gone".into()));
                }
            }
        }
    }
}

fn set_size(fd: &OwnedFd, s: TerminalSize) {
    let ws = libc::winsize {
        ws_row: s.height,
        ws_col: s.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

async fn copy_in<R, W>(src: Option<R>, dst: Option<W>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if let (Some(mut src), Some(mut dst)) = (src, dst) {
        let _ = tokio::io::copy(&mut src, &mut dst).await;
        let _ = dst.shutdown().await;
    }
}

async fn copy_out<R, W>(src: Option<R>, dst: Option<W>)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    if let (Some(mut src), Some(mut dst)) = (src, dst) {
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
}

impl StreamRuntime for FakeRuntime {
    async fn exec(&self, req: ExecRequest, io: StreamIo) -> Result<i32, StreamError> {
        if req.tty {
            self.exec_tty(req, io).await
        } else {
            self.exec_pipes(req, io).await
        }
    }

    async fn attach(&self, req: AttachRequest, mut io: StreamIo) -> Result<(), StreamError> {
        let (mut rx, container_stdin) = match self.containers.lock().unwrap().get(&req.container_id)
        {
            Some(c) => (c.output.subscribe(), c.stdin.clone()),
            None => return Err(StreamError::NotFound(req.container_id.clone())),
        };
        let mut out = io.stdout.take();
        // The client's stdin goes to the container's until the client closes it; the
        // container's stdin stays open for the next attacher.
        let feed = async {
            if let Some(mut src) = io.stdin.take() {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let n = match src.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let mut dst = container_stdin.lock().await;
                    if dst.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
            std::future::pending::<()>().await
        };
        tokio::pin!(feed);
        let gone = loop {
            tokio::select! {
                _ = &mut feed => unreachable!(),
                m = rx.recv() => match m {
                    Ok(b) => if let Some(o) = out.as_mut() && o.write_all(&b).await.is_err() { break true },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break false,
                },
                _ = io.client_gone.wait() => break true,
            }
        };
        self.record(Event::AttachEnded {
            container: req.container_id,
            gone,
        });
        Ok(())
    }

    async fn port_forward(
        &self,
        target: PortForwardTarget,
        stream: PortStream,
    ) -> Result<(), StreamError> {
        let tcp = TcpStream::connect(("127.0.0.1", target.port)).await?;
        let result = stream.splice(tcp).await;
        self.record(Event::PortForwardEnded { port: target.port });
        result
            .map(|_| ())
            .map_err(|e| StreamError::Internal(e.to_string()))
    }
}

pub async fn server(cfg: ServerConfig) -> (Server<FakeRuntime>, Arc<FakeRuntime>) {
    let rt = Arc::new(FakeRuntime::default());
    let s = Server::bind(cfg, rt.clone()).await.unwrap();
    (s, rt)
}

pub fn exec(cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// A TCP echo server on 127.0.0.1; returns its port.
pub async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let (mut r, mut w) = s.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still has /proc/<pid>, so look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')),
        Err(_) => false,
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
