//! The files and messages exchanged between kraald and `kraal-monitor` (all JSON).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MonitorError;

/// Longest path a unix socket address can hold (`sun_path` is 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// `monitor.json`: what `kraal-monitor create --config <file>` runs. Written by kraald.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Container id (libcontainer's rules: `[A-Za-z0-9_+.-]`, not `.` or `..`).
    pub id: String,
    /// OCI bundle: holds `config.json`; the rootfs it names is already mounted.
    pub bundle: PathBuf,
    /// libcontainer's state root; the container's state lives in `<root>/<id>`.
    pub libcontainer_root: PathBuf,
    /// CRI log file (parent directories are created); `None`: output is drained and dropped.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// Where the exit status is written, atomically, once the container has exited.
    pub exit_file: PathBuf,
    /// Unix stream socket the monitor listens on for `start`, `reopen-log`, `state`.
    pub control_socket: PathBuf,
    /// The monitor's own diagnostics (its stderr and tracing output).
    pub monitor_log: PathBuf,
    /// On hybrid hosts: the container's cgroup2 directory; init is moved there at creation
    /// so every process of the container is in the unified tree too.
    #[serde(default)]
    pub unified_cgroup: Option<PathBuf>,
    /// Keep a stdin pipe open to the container (otherwise stdin is `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin after the first attach session ends (attach is not served yet).
    #[serde(default)]
    pub stdin_once: bool,
    /// Allocate a terminal. Not supported yet: creation fails with a clear error.
    #[serde(default)]
    pub tty: bool,
}

impl MonitorConfig {
    /// Reads and validates a `monitor.json`.
    pub fn load(path: &Path) -> Result<Self, MonitorError> {
        let cfg: Self = read_json(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes this config to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), MonitorError> {
        write_json(path, self)
    }

    /// Checks what can be checked before forking: the id and the socket path length.
    pub fn validate(&self) -> Result<(), MonitorError> {
        validate_id(&self.id)?;
        let mut sockets = vec![&self.control_socket];
        let console = self.console_socket();
        if self.tty {
            sockets.push(&console);
        }
        for socket in sockets {
            let len = socket.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                return Err(MonitorError::Config(format!(
                    "socket path {} is {len} bytes long; a unix socket path holds at most \
                     {MAX_SOCKET_PATH}",
                    socket.display()
                )));
            }
        }
        Ok(())
    }

    /// Where a tty container's init sends its pty master (libcontainer's console socket):
    /// next to the control socket, which is kept short for the same reason.
    pub fn console_socket(&self) -> PathBuf {
        let mut path = self.control_socket.clone().into_os_string();
        path.push(".tty");
        PathBuf::from(path)
    }

    /// `<libcontainer_root>/<id>`.
    pub fn container_dir(&self) -> PathBuf {
        self.libcontainer_root.join(&self.id)
    }
}

/// The config of `kraal-monitor exec --config <file>` (ExecSync). The exec'd process uses
/// the helper's own stdin/stdout/stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    pub id: String,
    pub libcontainer_root: PathBuf,
    /// An OCI `process` object (args, env, cwd, user, …) as a JSON file.
    pub process: PathBuf,
    /// Kill the process after this long; 0: no timeout.
    #[serde(default)]
    pub timeout_ms: u64,
    /// On hybrid hosts: the container's cgroup2 directory, joined before the process is
    /// created so it is in the unified tree from birth.
    #[serde(default)]
    pub unified_cgroup: Option<PathBuf>,
    /// Where [`ExecResult`] is written, atomically.
    pub result_file: PathBuf,
    /// stdin is a terminal: the process makes it its controlling terminal (tty exec).
    #[serde(default)]
    pub terminal: bool,
}

impl ExecConfig {
    pub fn load(path: &Path) -> Result<Self, MonitorError> {
        let cfg: Self = read_json(path)?;
        validate_id(&cfg.id)?;
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> Result<(), MonitorError> {
        write_json(path, self)
    }
}

/// The result file of `kraal-monitor exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Exit code; a death by signal `n` is `128 + n` (a timeout kill is 137).
    pub exit_code: i32,
    /// The process was killed because `timeout_ms` passed.
    pub timed_out: bool,
}

impl ExecResult {
    /// Reads a result file.
    pub fn load(path: &Path) -> Result<Self, MonitorError> {
        read_json(path)
    }
}

/// The line `kraal-monitor create` prints on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    /// The container's init process (host pid namespace).
    pub pid: i32,
    /// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
    pub pid_start_time: u64,
    /// The monitor process.
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
}

/// The line `kraal-monitor create` prints on failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateFailed {
    pub error: String,
}

/// The exit file: how and when the container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code; a death by signal `n` is `128 + n`.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// When the monitor reaped it, in nanoseconds since the Unix epoch.
    pub finished_at_unix_nanos: u64,
}

/// The payload of the control command `state` (after `ok `).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorState {
    /// The container's init process.
    pub pid: i32,
    /// `start` has succeeded.
    pub started: bool,
    /// init has exited (the exit file follows once the output is drained).
    #[serde(default)]
    pub exited: bool,
}

/// libcontainer's id rules, checked early so ids never escape the state root.
pub fn validate_id(id: &str) -> Result<(), MonitorError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(MonitorError::Config(format!(
            "invalid container id {id:?}: use letters, digits, '_', '+', '-', '.'"
        )))
    }
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, MonitorError> {
    let data = fs::read(path).map_err(|source| MonitorError::File {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&data).map_err(|e| MonitorError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), MonitorError> {
    let mut data = serde_json::to_vec(value).map_err(|e| MonitorError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    data.push(b'\n');
    crate::fsutil::write_atomic(path, &data).map_err(|source| MonitorError::File {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_config_roundtrip_and_defaults() {
        let json = r#"{"id":"c1","bundle":"/b","libcontainer_root":"/r","log_path":null,
            "exit_file":"/s/exit","control_socket":"/s/ctl","monitor_log":"/s/log"}"#;
        let cfg: MonitorConfig = serde_json::from_str(json).expect("parse");
        assert_eq!(cfg.log_path, None);
        assert_eq!(cfg.unified_cgroup, None);
        assert!(!cfg.stdin && !cfg.stdin_once && !cfg.tty);
        cfg.validate().expect("valid");
        assert_eq!(cfg.container_dir(), PathBuf::from("/r/c1"));
        let back: MonitorConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).expect("ser")).expect("de");
        assert_eq!(back, cfg);
    }

    #[test]
    fn monitor_config_rejects_bad_values() {
        let mut cfg = MonitorConfig {
            id: "../etc".into(),
            bundle: "/b".into(),
            libcontainer_root: "/r".into(),
            log_path: None,
            exit_file: "/e".into(),
            control_socket: "/s".into(),
            monitor_log: "/l".into(),
            unified_cgroup: None,
            stdin: false,
            stdin_once: false,
            tty: false,
        };
        let err = cfg.validate().expect_err("bad id");
        assert!(err.to_string().contains("invalid container id"), "{err}");
        cfg.id = "ok".into();
        cfg.control_socket = PathBuf::from(format!("/{}", "x".repeat(200)));
        let err = cfg.validate().expect_err("long socket");
        assert!(err.to_string().contains("at most 107"), "{err}");
        // A tty container's console socket is 4 bytes longer than its control socket.
        cfg.control_socket = PathBuf::from(format!("/{}", "x".repeat(105)));
        cfg.validate().expect("fits without a tty");
        cfg.tty = true;
        let err = cfg.validate().expect_err("console socket too long");
        assert!(err.to_string().contains(".tty"), "{err}");
        assert!(serde_json::from_str::<MonitorConfig>(r#"{"id":"x","bogus":1}"#).is_err());
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-DEF_1.2+3", "..."] {
            validate_id(ok).expect(ok);
        }
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn exit_status_format() {
        let s = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            finished_at_unix_nanos: 1,
        };
        assert_eq!(
            serde_json::to_string(&s).expect("ser"),
            r#"{"exit_code":137,"signal":9,"finished_at_unix_nanos":1}"#
        );
        let s: ExitStatus =
            serde_json::from_str(r#"{"exit_code":3,"signal":null,"finished_at_unix_nanos":5}"#)
                .expect("de");
        assert_eq!(s.signal, None);
    }
}
