//! Running one plugin binary the way the CNI spec says: parameters in `CNI_*` environment
//! variables, the network config on stdin, the result (or an error object) on stdout, with a
//! time limit after which the plugin is killed.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Command;
use super::error::CniError;
use super::result::PluginError;

/// A plugin's stdout and stderr are small JSON documents and log lines; a plugin gone wild must
/// not fill kraald's memory.
const OUTPUT_LIMIT: u64 = 1 << 20;

/// After the plugin exits, how long its pipes may stay open (a child it left behind holding
/// them) before kraal stops waiting for more output.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// One call of one plugin.
pub struct Call<'a> {
    pub command: Command,
    pub plugin: &'a str,
    pub network: &'a str,
    pub binary: &'a Path,
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    pub timeout: Duration,
}

/// The first `dir/<plugin>` that is a file, in the order of `dirs` (libcni's `FindInPath`).
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: dirs.to_vec(),
        })
}

impl Call<'_> {
    /// Runs the plugin to completion; its stdout on success, its own error otherwise.
    pub fn run(self) -> Result<Vec<u8>, CniError> {
        let started = Instant::now();
        let mut child = std::process::Command::new(self.binary)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout also kills what it started (iptables, ...)
            // and nothing keeps its pipes open after it is gone.
            .process_group(0)
            .spawn()
            .map_err(|source| CniError::Spawn {
                plugin: self.plugin.to_string(),
                command: self.command,
                network: self.network.to_string(),
                path: self.binary.to_path_buf(),
                source,
            })?;
        let outputs = self.start_io(&mut child);
        let finished = wait_until(&mut child, self.timeout);
        let status = match finished {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                // Not reaped yet, so its pid (and process group id) still belongs to it.
                let pid = child.id() as libc::pid_t;
                // SAFETY: kill(2) with a negative pid signals that process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                let _ = child.wait();
                tracing::warn!(plugin = self.plugin, command = %self.command, timeout = ?self.timeout, "CNI plugin killed after its time limit");
                return Err(CniError::Timeout {
                    plugin: self.plugin.to_string(),
                    command: self.command,
                    network: self.network.to_string(),
                    timeout: self.timeout,
                });
            }
        };
        let (stdout, stderr) = collect(outputs);
        tracing::debug!(plugin = self.plugin, command = %self.command, network = self.network, elapsed = ?started.elapsed(), %status, "CNI plugin call");
        if status.success() {
            return Ok(stdout);
        }
        Err(CniError::Plugin {
            plugin: self.plugin.to_string(),
            command: self.command,
            network: self.network.to_string(),
            code: serde_json::from_slice::<PluginError>(&stdout)
                .ok()
                .map(|e| e.code),
            message: failure_message(&status.to_string(), &stdout, &stderr),
        })
    }

    /// Feeds stdin and drains stdout/stderr on threads of their own, so a plugin that writes
    /// before it reads (or not at all) never blocks on a full pipe.
    fn start_io(&self, child: &mut Child) -> mpsc::Receiver<(bool, Vec<u8>)> {
        if let Some(mut stdin) = child.stdin.take() {
            let data = self.stdin.clone();
            std::thread::spawn(move || {
                // A plugin that exits without reading stdin closes the pipe: not an error here.
                let _ = stdin.write_all(&data);
            });
        }
        let (tx, rx) = mpsc::channel();
        let readers: [(bool, Option<Box<dyn Read + Send>>); 2] = [
            (
                true,
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
            (
                false,
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
            ),
        ];
        for (is_stdout, pipe) in readers {
            let Some(pipe) = pipe else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.take(OUTPUT_LIMIT).read_to_end(&mut buf);
                let _ = tx.send((is_stdout, buf));
            });
        }
        rx
    }
}

fn collect(outputs: mpsc::Receiver<(bool, Vec<u8>)>) -> (Vec<u8>, Vec<u8>) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + DRAIN_GRACE;
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match outputs.recv_timeout(left) {
            Ok((true, out)) => stdout = out,
            Ok((false, err)) => stderr = err,
            Err(_) => break,
        }
    }
    (stdout, stderr)
}

/// The plugin's own words: `msg: details` from its JSON error, else whatever it printed.
fn failure_message(status: &str, stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(err) = serde_json::from_slice::<PluginError>(stdout)
        && !err.msg.is_empty()
    {
        let mut text = err.msg;
        if !err.details.is_empty() {
            text.push_str(": ");
            text.push_str(&err.details);
        }
        return format!("{text} (code {})", err.code);
    }
    let printed = [stdout, stderr]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if printed.is_empty() {
        format!("{status}, no output")
    } else {
        format!("{status}: {printed}")
    }
}

/// Waits for the child to exit, at most `timeout`; None if it is still running. Uses a pidfd
/// (no reaping, no polling delay); kernels without pidfd_open fall back to polling.
fn wait_until(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    match pidfd_open(child.id() as libc::pid_t) {
        Ok(pidfd) => loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if poll_readable(&pidfd, left)? {
                return child.wait().map(Some);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        },
        Err(_) => loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        },
    }
}

fn pidfd_open(pid: libc::pid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// true once the pidfd is readable (the process exited); false when `wait` passed first.
fn poll_readable(fd: &OwnedFd, wait: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn call<'a>(binary: &'a Path, env: &'a [(String, String)], timeout: Duration) -> Call<'a> {
        Call {
            command: Command::Add,
            plugin: "test",
            network: "net",
            binary,
            env,
            stdin: b"{\"hello\": 1}".to_vec(),
            timeout,
        }
    }

    #[test]
    fn passes_env_and_stdin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "echoer", "echo \"$CNI_COMMAND\"; cat");
        let env = [("CNI_COMMAND".to_string(), "ADD".to_string())];
        let out = call(&bin, &env, Duration::from_secs(5))
            .run()
            .expect("runs");
        assert_eq!(String::from_utf8_lossy(&out), "ADD\n{\"hello\": 1}");
    }

    #[test]
    fn carries_the_plugins_own_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(
            dir.path(),
            "failer",
            "echo '{\"code\": 11, \"msg\": \"no address left\", \"details\": \"pool 10.0.0.0/30\"}'; exit 1",
        );
        let err = call(&bin, &[], Duration::from_secs(5))
            .run()
            .expect_err("fails");
        let text = err.to_string();
        assert!(
            text.contains("no address left: pool 10.0.0.0/30 (code 11)"),
            "{text}"
        );
        assert!(text.contains("\"test\"") && text.contains("ADD"), "{text}");
        let bin = script(dir.path(), "plain", "echo oops >&2; exit 3");
        let text = call(&bin, &[], Duration::from_secs(5))
            .run()
            .expect_err("fails")
            .to_string();
        assert!(text.contains("oops") && text.contains("3"), "{text}");
    }

    #[test]
    fn a_hanging_plugin_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("child-pid");
        let bin = script(
            dir.path(),
            "hanger",
            &format!("sleep 30 & echo $! > {}; wait", marker.display()),
        );
        let started = Instant::now();
        let err = call(&bin, &[], Duration::from_millis(300))
            .run()
            .expect_err("times out");
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Its child went with it: the whole group was killed.
        let pid: i32 = std::fs::read_to_string(&marker)
            .expect("marker")
            .trim()
            .parse()
            .expect("pid");
        std::thread::sleep(Duration::from_millis(100));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(
            status.is_empty() || status.contains("State:\tZ"),
            "{status}"
        );
    }

    #[test]
    fn finds_plugins_in_order() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        script(b.path(), "p", "true");
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find_plugin("p", &dirs).expect("found"), b.path().join("p"));
        script(a.path(), "p", "true");
        assert_eq!(find_plugin("p", &dirs).expect("found"), a.path().join("p"));
        let err = find_plugin("q", &dirs).expect_err("missing");
        assert!(err.to_string().contains("\"q\" not found"), "{err}");
    }
}
