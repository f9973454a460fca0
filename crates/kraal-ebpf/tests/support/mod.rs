//! Test environment: a real cgroup2 directory and bpffs pin root per test, and helper processes
//! (this test binary re-executed) that run socket operations from inside the pod cgroup.

#![allow(dead_code)] // each test binary uses a different part

pub mod ops;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const BPFFS: &str = "/sys/fs/bpf";
/// Env var telling the re-executed binary which operations to run.
pub const HELPER_ENV: &str = "KRAAL_EBPF_TEST_HELPER";

/// The cgroup2 mount as kraal sees it (`/sys/fs/cgroup` on v2 hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones): the programs attach only to cgroup2.
pub fn cgroup2_root() -> PathBuf {
    kraal_cgroups::Cgroups::detect()
        .expect("detecting the cgroup hierarchies")
        .unified_root()
        .expect("this host has no cgroup2 mount, which cgroup eBPF programs need")
        .to_path_buf()
}

/// One test's pod cgroup and pin root, removed on drop.
pub struct Env {
    pub cgroup: PathBuf,
    pub pins: PathBuf,
}

impl Env {
    pub fn new(name: &str) -> Env {
        kraal_ebpf::ensure_bpffs(Path::new(BPFFS)).expect("bpffs");
        let pid = std::process::id();
        let cgroup = cgroup2_root()
            .join(format!("kraal-ebpf-test-{pid}"))
            .join(name);
        std::fs::create_dir_all(&cgroup).expect("create test cgroup");
        let pins = Path::new(BPFFS)
            .join(format!("kraal-ebpf-test-{pid}"))
            .join(name);
        Env { cgroup, pins }
    }

    /// Runs `ops` in a helper process inside the pod cgroup; returns its result lines.
    pub fn run(&self, ops: &[&str]) -> Vec<String> {
        self.run_in(ops, true)
    }

    /// Like [`Env::run`], but the helper starts outside the pod cgroup.
    pub fn run_outside(&self, ops: &[&str]) -> Vec<String> {
        self.run_in(ops, false)
    }

    fn run_in(&self, ops: &[&str], join: bool) -> Vec<String> {
        let mut child = self.start(ops, join);
        drop(child.stdin.take());
        let out = child.stdout.take().expect("stdout");
        let lines = read_results(BufReader::new(out), None);
        let status = child.child.wait().expect("wait helper");
        assert!(status.success(), "helper {ops:?} failed: {status}");
        lines
    }

    /// Starts a helper that runs `ops`, prints `paused` and keeps its sockets until released.
    pub fn spawn(&self, ops: &[&str]) -> Helper {
        self.start(ops, true)
    }

    fn start(&self, ops: &[&str], join: bool) -> Helper {
        let procs = OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .expect("open cgroup.procs");
        let fd = procs.as_raw_fd();
        let exe = std::env::current_exe().expect("current exe");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            "support::ops::helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, ops.join(";"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        // SAFETY: only write(2) between fork and exec; "0" moves the writing process itself.
        unsafe {
            cmd.pre_exec(move || {
                if join && libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn helper");
        drop(procs);
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        Helper {
            child,
            stdin,
            stdout,
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Unpinning detaches; then the cgroups can go.
        let _ = std::fs::remove_dir_all(&self.pins);
        if let Some(parent) = self.pins.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        if let Some(parent) = self.cgroup.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

pub struct Helper {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
}

impl Helper {
    /// Result lines up to the `paused` op.
    pub fn until_paused(&mut self) -> Vec<String> {
        let out = self.stdout.as_mut().expect("stdout");
        read_results(BufReader::new(out), Some("paused"))
    }

    /// Lets a paused helper go on to its next `paused` op; returns the result lines before it.
    pub fn resume(&mut self) -> Vec<String> {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"\n").expect("resume helper");
        stdin.flush().expect("resume helper");
        self.until_paused()
    }

    /// Lets the helper exit (closing its sockets) and waits for it.
    pub fn finish(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let status = self.child.wait().expect("wait helper");
        assert!(status.success(), "helper failed: {status}");
    }
}

impl Drop for Helper {
    /// A failed test must not leave its helper in the cgroup, or the cgroup cannot be removed.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_results(out: impl BufRead, stop: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    for line in out.lines() {
        let line = line.expect("helper output");
        // libtest may print its "test ... " prefix on the same line as the first result.
        if let Some(result) = line.find("KP ").map(|at| &line[at + 3..]) {
            if Some(result) == stop {
                break;
            }
            lines.push(result.to_string());
        }
    }
    lines
}

/// Program ids attached to `dir` according to bpftool (effective on the dir itself only).
pub fn attached(dir: &Path) -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(dir)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .map(|a| a.iter().filter_map(|e| e["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// A TCP listener outside the pod that accepts and drops connections in the background.
pub fn sink_listener() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    addr
}

pub fn file_exists(p: &Path) -> bool {
    File::open(p).is_ok()
}
