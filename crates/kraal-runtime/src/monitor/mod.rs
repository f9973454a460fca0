//! The per-container monitor (`kraal-monitor`), conmon / containerd-shim style.
//!
//! libcontainer forks a container's init from the calling process and only that process
//! can reap it. So each container gets a small single-threaded monitor: it creates the
//! container through libcontainer, holds its stdio, writes the CRI log file, reaps init and
//! records the exit status atomically. kraald never links libcontainer at runtime: it runs
//! the `kraal-monitor` binary and talks to each monitor over a unix socket, so kraald can
//! restart without touching a running container.
//!
//! Subcommands (see [`cli`]):
//!
//! * `kraal-monitor create --config <monitor.json>` ([`MonitorConfig`]): forks the monitor,
//!   which creates the container (init blocked until `start`) and reports one JSON line,
//!   [`Created`] or [`CreateFailed`], that the invoked process prints on stdout before
//!   exiting 0 or 1. The monitor lives on (own session, parent re-assigned), serving the
//!   control socket: `start`, `reopen-log`, `state`, one command per connection, answered
//!   by one line `ok[ <payload>]` or `error: <message>`. When init exits, it drains the
//!   output, writes the exit file ([`ExitStatus`]) and exits.
//! * `kraal-monitor delete --root <libcontainer_root> --id <id>`: force-delete (kill,
//!   remove state and cgroup); a missing container is success.
//! * `kraal-monitor exec --config <exec.json>` ([`ExecConfig`]): ExecSync helper, runs a
//!   process in the container on its own stdio and writes [`ExecResult`].
//!
//! [`client`] is the kraald side.

pub mod attach;
pub mod cli;
pub mod client;
pub mod config;
mod create;
mod delete;
mod exec;
mod exec_executor;
mod sys;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Every descendant of a process, found through /proc (kraald kills an abandoned exec's
/// process tree with it).
pub use sys::descendants;

pub use config::{
    CreateFailed, Created, ExecConfig, ExecResult, ExitStatus, MonitorConfig, MonitorState,
};

/// Errors of the monitor's files and of the kraald-side client.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("invalid monitor config: {0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: invalid JSON: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("failed to run {}: {source}", bin.display())]
    Spawn {
        bin: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `kraal-monitor create` reported an error (libcontainer's message included).
    #[error("creating the container failed: {0}")]
    Create(String),
    /// `kraal-monitor delete` failed.
    #[error("deleting the container failed: {0}")]
    Delete(String),
    /// The monitor binary answered something this client does not understand.
    #[error("unexpected output from kraal-monitor {subcommand} ({status}): {output:?}")]
    BadOutput {
        subcommand: &'static str,
        status: String,
        output: String,
    },
    /// Talking to the control socket failed (monitor gone, timeout, …).
    #[error("control socket {}: {command}: {source}", socket.display())]
    Control {
        socket: PathBuf,
        command: String,
        #[source]
        source: io::Error,
    },
    /// The monitor refused the command.
    #[error("monitor refused {command:?}: {message}")]
    Refused { command: String, message: String },
}

/// Start time of process `pid`: field 22 of `/proc/<pid>/stat`, in clock ticks since boot.
/// Together with the pid it names one process for good (pids get reused, this pair not).
pub fn proc_start_time(pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line.
fn parse_start_time(stat: &str) -> io::Result<u64> {
    let field = stat_field(stat, 22)?;
    field.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad start time {field:?} in /proc stat: {e}"),
        )
    })
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/<pid>/stat` line. Field 2, the command
/// name, may hold spaces and parentheses, so fields from 3 on are counted after the last
/// `)`.
pub(crate) fn stat_field(stat: &str, n: usize) -> io::Result<&str> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("/proc stat: {what}"));
    if n < 3 {
        return Err(bad("fields 1 and 2 are not read this way"));
    }
    let close = stat
        .rfind(')')
        .ok_or_else(|| bad("no ')' after the command name"))?;
    stat[close + 1..]
        .split_ascii_whitespace()
        .nth(n - 3)
        .ok_or_else(|| bad(&format!("no field {n}")))
}

/// Reads an exit file. `Ok(None)`: not written yet (the container has not exited, or its
/// monitor died before it could record the status).
pub fn read_exit_file(path: &Path) -> Result<Option<ExitStatus>, MonitorError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| MonitorError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MonitorError::File {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes an exit file atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_exit_file(path: &Path, status: &ExitStatus) -> Result<(), MonitorError> {
    config::write_json(path, status)
}

/// A libcontainer error as precisely as it can be told. Some of its variants hide their
/// payload from `Display` (`InvalidInput`), and `CreateContainerError` hides its cause from
/// `source()`, so a generic "io error" inside it would lose the errno: then the debug form,
/// which has it, is appended.
pub(crate) fn libcontainer_error(err: &libcontainer::error::LibcontainerError) -> String {
    use libcontainer::error::LibcontainerError as E;
    match err {
        E::InvalidInput(msg) => format!("invalid input: {msg}"),
        E::CreateContainerError(_) => {
            let msg = error_chain(err);
            let opaque = [
                "io error",
                "syscall error",
                "serialization error",
                "oci spec error",
            ];
            if opaque.iter().any(|o| msg.contains(o)) {
                format!("{msg} [{err:?}]")
            } else {
                msg
            }
        }
        _ => error_chain(err),
    }
}

/// An error with its chain of sources, each message once: libcontainer often repeats
/// the inner message in the outer one.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let msg = e.to_string();
        if !msg.is_empty() && !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parsing() {
        let stat = "1234 (sh) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 \
                    1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat).expect("parse"), 987654);
        // A command name with spaces and parentheses.
        let stat = "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0";
        assert_eq!(parse_start_time(stat).expect("parse"), 4242);
        assert_eq!(stat_field(stat, 3).expect("state"), "R");
        assert_eq!(stat_field(stat, 4).expect("ppid"), "1");
        assert!(parse_start_time("12 (x) S 1 2").is_err());
        assert!(parse_start_time("garbage").is_err());
    }

    #[test]
    fn start_time_of_self() {
        let me = std::process::id() as i32;
        let t = proc_start_time(me).expect("self");
        assert!(t > 0);
        assert_eq!(proc_start_time(me).expect("again"), t);
        assert!(proc_start_time(i32::MAX).is_err());
    }

    #[test]
    fn exit_file_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/exit");
        assert_eq!(read_exit_file(&path).expect("missing"), None);
        let status = ExitStatus {
            exit_code: 3,
            signal: None,
            finished_at_unix_nanos: 1_795_594_500_000_000_000,
        };
        write_exit_file(&path, &status).expect("write");
        assert_eq!(read_exit_file(&path).expect("read"), Some(status));
        assert!(!dir.path().join("sub/exit.tmp").exists());
        fs::write(&path, b"{").expect("corrupt");
        assert!(matches!(
            read_exit_file(&path),
            Err(MonitorError::Parse { .. })
        ));
    }

    #[test]
    fn chain_dedups() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner broke")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner broke")]
        struct Inner(#[source] io::Error);
        let e = Outer(Inner(io::Error::from_raw_os_error(libc::ENOENT)));
        let s = error_chain(&e);
        assert!(s.starts_with("outer: inner broke: No such file"), "{s}");
    }
}
