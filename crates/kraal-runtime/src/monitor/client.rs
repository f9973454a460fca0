//! kraald's side of the monitor: run `kraal-monitor create` / `delete`, talk to a running
//! monitor over its control socket. Blocking calls (kraald runs them on a blocking
//! thread); no libcontainer involved.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::MonitorError;
use super::config::{CreateFailed, Created, MonitorState};

/// Runs `<monitor_bin> create --config <config_path>` and returns what the monitor reported.
/// The call returns once the container is created (init waits for `start`); the monitor
/// itself keeps running on its own.
pub fn spawn_create(monitor_bin: &Path, config_path: &Path) -> Result<Created, MonitorError> {
    let out = run(
        monitor_bin,
        &[
            "create".as_ref(),
            "--config".as_ref(),
            config_path.as_os_str(),
        ],
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or("").trim();
    if out.status.success() {
        if let Ok(created) = serde_json::from_str::<Created>(line) {
            return Ok(created);
        }
    } else if let Ok(failed) = serde_json::from_str::<CreateFailed>(line) {
        return Err(MonitorError::Create(failed.error));
    }
    Err(MonitorError::BadOutput {
        subcommand: "create",
        status: out.status.to_string(),
        output: format!("{}{}", stdout, String::from_utf8_lossy(&out.stderr)),
    })
}

/// Runs `<monitor_bin> delete --root <root> --id <id>`: kills the container's processes and
/// removes its libcontainer state and cgroup. Deleting a missing container succeeds.
pub fn delete(monitor_bin: &Path, root: &Path, id: &str) -> Result<(), MonitorError> {
    let out = run(
        monitor_bin,
        &[
            "delete".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
            "--id".as_ref(),
            id.as_ref(),
        ],
    )?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg = stderr
        .trim()
        .strip_prefix("kraal-monitor delete: ")
        .unwrap_or(stderr.trim());
    Err(MonitorError::Delete(if msg.is_empty() {
        format!("kraal-monitor delete: {}", out.status)
    } else {
        msg.to_owned()
    }))
}

/// Runs the monitor binary with `args` to completion, capturing its output.
fn run(monitor_bin: &Path, args: &[&OsStr]) -> Result<Output, MonitorError> {
    Command::new(monitor_bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| MonitorError::Spawn {
            bin: monitor_bin.to_owned(),
            source,
        })
}

/// Sends one control command (`start`, `reopen-log`, `state`) and returns the reply's
/// payload (empty for a plain `ok`). `timeout` bounds connecting aside, each read and write.
pub fn control(socket: &Path, cmd: &str, timeout: Duration) -> Result<String, MonitorError> {
    let io_err = |source| MonitorError::Control {
        socket: socket.to_owned(),
        command: cmd.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut request = Vec::with_capacity(cmd.len() + 1);
    request.extend_from_slice(cmd.as_bytes());
    request.push(b'\n');
    stream.write_all(&request).map_err(io_err)?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .map_err(io_err)?;
    let reply = String::from_utf8_lossy(&reply);
    let line = reply.lines().next().unwrap_or("").trim_end();
    if line == "ok" {
        Ok(String::new())
    } else if let Some(payload) = line.strip_prefix("ok ") {
        Ok(payload.to_owned())
    } else if let Some(message) = line.strip_prefix("error: ") {
        Err(MonitorError::Refused {
            command: cmd.to_owned(),
            message: message.to_owned(),
        })
    } else {
        Err(io_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected reply {line:?}"),
        )))
    }
}

/// `control(socket, "state", timeout)`, parsed.
pub fn state(socket: &Path, timeout: Duration) -> Result<MonitorState, MonitorError> {
    let payload = control(socket, "state", timeout)?;
    serde_json::from_str(&payload).map_err(|e| MonitorError::Parse {
        path: socket.to_owned(),
        message: format!("state reply {payload:?}: {e}"),
    })
}

/// `control(socket, "start", timeout)`.
pub fn start(socket: &Path, timeout: Duration) -> Result<(), MonitorError> {
    control(socket, "start", timeout).map(|_| ())
}

/// `control(socket, "reopen-log", timeout)`.
pub fn reopen_log(socket: &Path, timeout: Duration) -> Result<(), MonitorError> {
    control(socket, "reopen-log", timeout).map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A fake monitor answering one connection with `reply`; returns the request it got.
    fn fake(reply: &'static str) -> (tempfile::TempDir, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(dir.path().join("ctl")).expect("bind");
        let h = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut req = String::new();
            let mut buf = [0u8; 64];
            while !req.contains('\n') {
                let n = conn.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                req.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            conn.write_all(reply.as_bytes()).expect("write");
            req
        });
        (dir, h)
    }

    #[test]
    fn control_replies() {
        let t = Duration::from_secs(5);
        let (dir, h) = fake("ok\n");
        assert_eq!(
            control(&dir.path().join("ctl"), "start", t).expect("ok"),
            ""
        );
        assert_eq!(h.join().expect("join"), "start\n");

        let (dir, h) = fake("ok {\"pid\":7,\"started\":true,\"exited\":false}\n");
        let s = state(&dir.path().join("ctl"), t).expect("state");
        assert_eq!(
            s,
            MonitorState {
                pid: 7,
                started: true,
                exited: false
            }
        );
        h.join().expect("join");

        let (dir, h) = fake("error: the container has already exited\n");
        let err = start(&dir.path().join("ctl"), t).expect_err("refused");
        assert!(
            matches!(&err, MonitorError::Refused { message, .. } if message == "the container has already exited"),
            "{err}"
        );
        h.join().expect("join");

        let (dir, h) = fake("what?\n");
        let err = reopen_log(&dir.path().join("ctl"), t).expect_err("garbage");
        assert!(err.to_string().contains("unexpected reply"), "{err}");
        h.join().expect("join");
    }

    #[test]
    fn control_without_monitor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = control(&dir.path().join("nope"), "state", Duration::from_secs(1))
            .expect_err("no socket");
        assert!(matches!(err, MonitorError::Control { .. }), "{err}");
    }

    #[test]
    fn missing_binary() {
        let err = spawn_create(Path::new("/nonexistent/kraal-monitor"), Path::new("/x"))
            .expect_err("no binary");
        assert!(matches!(err, MonitorError::Spawn { .. }), "{err}");
    }
}
