//! Real containers through `kraal-monitor`: busybox rootfs, libcontainer, and the host's
//! cgroups as kraal sees them (`kraal_cgroups`): v1 controllers plus the unified tree the
//! monitor also places the container in on hybrid hosts, the unified tree alone on v2.
//! Needs root.
//!
//! Every test uses its own cgroup parent `/kraal-test-<pid>-<n>` and removes it (in every
//! hierarchy kraal uses), and kills what it started, also on failure.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kraal_cgroups::{Cgroups, Hierarchy, UNIFIED_KEY};
use kraal_runtime::log::{Stream, parse_record};
use kraal_runtime::monitor::{
    self, Created, ExecConfig, ExecResult, ExitStatus, MonitorConfig, MonitorError, client,
};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_kraal-monitor");
const TIMEOUT: Duration = Duration::from_secs(5);
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "head", "tr", "ls", "true", "false", "stty", "tty",
];

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// This host's cgroup hierarchies, as kraal detects them.
fn cgroups() -> Cgroups {
    Cgroups::detect().expect("detecting the cgroup hierarchies")
}

/// One container and everything around it.
struct Fixture {
    dir: tempfile::TempDir,
    /// cgroup parent, relative to each hierarchy's root: `kraal-test-<pid>-<n>`.
    parent: String,
    id: String,
    created: Option<Created>,
    cleaned: bool,
}

impl Fixture {
    /// A bundle running `args` in a busybox rootfs.
    fn new(name: &str, args: &[&str]) -> Self {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::Builder::new()
            .prefix("kraal-monitor-test-")
            .tempdir()
            .expect("tempdir");
        let fx = Fixture {
            parent: format!("kraal-test-{}-{n}", std::process::id()),
            id: format!("{name}-{n}"),
            dir,
            created: None,
            cleaned: false,
        };
        let rootfs = fx.bundle().join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
        }
        fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        fx.write_spec(args);
        if let Some(unified) = fx.unified_cgroup() {
            fs::create_dir_all(unified).expect("unified cgroup");
        }
        fx
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("lc-root")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs/pod/ctr/0.log")
    }
    fn exit_file(&self) -> PathBuf {
        self.state().join("exit")
    }
    fn socket(&self) -> PathBuf {
        self.state().join("ctl.sock")
    }
    /// The cgroup2 directory the monitor adds the container to, as kraald asks it to: on
    /// hybrid hosts only (libcontainer there knows just the v1 controllers; on v2 it places
    /// the container in the unified tree itself).
    fn unified_cgroup(&self) -> Option<PathBuf> {
        let cgroups = cgroups();
        match cgroups.hierarchy() {
            Hierarchy::Hybrid => cgroups.unified_path(&self.cgroups_path()).expect("path"),
            _ => None,
        }
    }
    fn cgroups_path(&self) -> String {
        format!("/{}/{}", self.parent, self.id)
    }
    fn write_spec(&self, args: &[&str]) {
        let caps = json!([
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_NET_BIND_SERVICE"
        ]);
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "HOME=/"],
                "cwd": "/",
                "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "kraal-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                 "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "cgroupsPath": self.cgroups_path(),
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
                "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        fs::create_dir_all(self.bundle()).expect("bundle");
        fs::write(
            self.bundle().join("config.json"),
            serde_json::to_vec_pretty(&spec).expect("spec json"),
        )
        .expect("write config.json");
    }

    fn monitor_config(&self) -> MonitorConfig {
        MonitorConfig {
            id: self.id.clone(),
            bundle: self.bundle(),
            libcontainer_root: self.root(),
            log_path: Some(self.log_path()),
            exit_file: self.exit_file(),
            control_socket: self.socket(),
            monitor_log: self.state().join("monitor.log"),
            unified_cgroup: self.unified_cgroup(),
            stdin: false,
            stdin_once: false,
            tty: false,
        }
    }

    fn try_create(&mut self, cfg: &MonitorConfig) -> Result<Created, MonitorError> {
        let path = self.dir.path().join("monitor.json");
        cfg.save(&path).expect("save monitor.json");
        let created = client::spawn_create(Path::new(BIN), &path)?;
        self.created = Some(created);
        Ok(created)
    }

    fn create(&mut self) -> Created {
        let cfg = self.monitor_config();
        match self.try_create(&cfg) {
            Ok(c) => c,
            Err(e) => panic!("create failed: {e}\nmonitor log:\n{}", self.monitor_log()),
        }
    }

    fn start(&self) {
        client::start(&self.socket(), TIMEOUT).expect("start");
    }

    fn monitor_log(&self) -> String {
        fs::read_to_string(self.state().join("monitor.log")).unwrap_or_default()
    }

    fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = monitor::read_exit_file(&self.exit_file()).expect("exit file") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no exit file after 30 s; monitor log:\n{}",
                self.monitor_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// (stream, partial, content) of every record in `path`.
    fn records(path: &Path) -> Vec<(Stream, bool, Vec<u8>)> {
        let data = fs::read(path).unwrap_or_default();
        data.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let r = parse_record(l).unwrap_or_else(|| {
                    panic!("not a CRI log record: {:?}", String::from_utf8_lossy(l))
                });
                assert_eq!(r.timestamp.len(), 30, "timestamp {:?}", r.timestamp);
                assert!(r.timestamp.ends_with('Z'));
                (r.stream, r.partial, r.content.to_vec())
            })
            .collect()
    }

    /// Runs `kraal-monitor exec` with `args`; returns (exit code of the helper, stdout,
    /// stderr, result).
    fn exec(&self, args: &[&str], timeout_ms: u64) -> (i32, String, String, Option<ExecResult>) {
        self.exec_in(&self.id, args, timeout_ms)
    }

    /// `exec` into container `id` (which may not exist).
    fn exec_in(
        &self,
        id: &str,
        args: &[&str],
        timeout_ms: u64,
    ) -> (i32, String, String, Option<ExecResult>) {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let process = self.dir.path().join(format!("process-{n}.json"));
        let process_json = json!({
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin"],
            "cwd": "/"
        });
        fs::write(&process, process_json.to_string()).expect("process.json");
        let result_file = self.dir.path().join(format!("exec-{n}.result"));
        let cfg = ExecConfig {
            id: id.to_owned(),
            libcontainer_root: self.root(),
            process,
            timeout_ms,
            unified_cgroup: self.unified_cgroup(),
            result_file: result_file.clone(),
            terminal: false,
        };
        let cfg_path = self.dir.path().join(format!("exec-{n}.json"));
        cfg.save(&cfg_path).expect("exec.json");
        let out = Command::new(BIN)
            .arg("exec")
            .arg("--config")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .output()
            .expect("run exec helper");
        let result = if result_file.exists() {
            Some(ExecResult::load(&result_file).expect("result file"))
        } else {
            None
        };
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            result,
        )
    }

    /// Pids in the container's cgroup, in any hierarchy kraal uses.
    fn cgroup_pids(&self) -> Vec<i32> {
        cgroups()
            .pids(&self.cgroups_path())
            .expect("listing the container's processes")
    }

    /// Is the monitor process (pid, start time) still alive?
    fn monitor_alive(&self) -> bool {
        let Some(c) = self.created else { return false };
        is_alive(c.monitor_pid, c.monitor_start_time)
    }

    fn wait_monitor_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.monitor_alive() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Deletes the container, stops the monitor, removes the cgroups; returns what could
    /// not be removed.
    fn teardown(&mut self) -> Vec<PathBuf> {
        self.cleaned = true;
        if let Err(e) = client::delete(Path::new(BIN), &self.root(), &self.id) {
            eprintln!("teardown: delete failed: {e}");
            // Kill what is left of the container: processes this test started.
            for pid in self.cgroup_pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(c) = self.created
            && !self.wait_monitor_gone(Duration::from_secs(15))
        {
            eprintln!(
                "teardown: monitor {} still alive; killing it",
                c.monitor_pid
            );
            kill_verified(c.monitor_pid, c.monitor_start_time);
        }
        remove_cgroup_parent(&self.parent)
    }

    /// Teardown that must leave nothing behind.
    fn finish(mut self) {
        let left = self.teardown();
        assert!(left.is_empty(), "cgroup directories left behind: {left:?}");
        assert!(
            !self.root().join(&self.id).exists(),
            "libcontainer state left"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if !self.cleaned {
            let left = self.teardown();
            if !left.is_empty() {
                eprintln!("cgroup directories left behind: {left:?}");
            }
        }
    }
}

fn is_alive(pid: i32, start_time: u64) -> bool {
    // A zombie is gone as far as we care.
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .map(|(_, r)| r.trim_start())
        .unwrap_or("");
    !state.starts_with('Z') && monitor::proc_start_time(pid).ok() == Some(start_time)
}

fn kill_verified(pid: i32, start_time: u64) {
    if is_alive(pid, start_time) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The hierarchies kraal uses (v1 controllers by name, "unified") in which a process whose
/// `/proc/<pid>/cgroup` is `proc_cgroup` is not in the cgroupfs path `rel`.
fn not_in_container_cgroup(proc_cgroup: &str, rel: &str) -> Vec<String> {
    let dirs = cgroups().dirs(rel).expect("cgroup dirs");
    assert!(!dirs.is_empty());
    dirs.into_keys()
        .filter(|hierarchy| {
            !proc_cgroup.lines().any(|line| {
                let mut fields = line.splitn(3, ':');
                let (Some(id), Some(controllers), Some(path)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    return false;
                };
                let named = if hierarchy == UNIFIED_KEY {
                    id == "0" && controllers.is_empty()
                } else {
                    controllers.split(',').any(|c| c == hierarchy)
                };
                named && path.ends_with(rel)
            })
        })
        .collect()
}

/// Removes `<hierarchy>/<parent>` (and anything below it) in every hierarchy kraal uses.
/// Returns the directories that would not go.
fn remove_cgroup_parent(parent: &str) -> Vec<PathBuf> {
    let mut left = Vec::new();
    let mut dirs: Vec<PathBuf> = cgroups()
        .dirs(&format!("/{parent}"))
        .expect("cgroup dirs")
        .into_values()
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        if dir.exists() {
            rmdir_tree(&dir, &mut left);
        }
    }
    left
}

fn rmdir_tree(dir: &Path, left: &mut Vec<PathBuf>) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path(), left);
            }
        }
    }
    // Processes that were just killed may take a moment to leave the cgroup.
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    left.push(dir.to_owned());
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn vm_rss_kb(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[test]
fn exit_code_log_lines_and_cleanup() {
    let mut fx = Fixture::new("exit3", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let c = fx.create();
    // The pair identifies the processes.
    assert_eq!(
        monitor::proc_start_time(c.pid).expect("init"),
        c.pid_start_time
    );
    assert_eq!(
        monitor::proc_start_time(c.monitor_pid).expect("monitor"),
        c.monitor_start_time
    );
    // The monitor is on its own: not our child, own session.
    let stat = fs::read_to_string(format!("/proc/{}/stat", c.monitor_pid)).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect(")")
        .1
        .split_whitespace()
        .collect();
    let (ppid, sid): (i32, i32) = (
        fields[1].parse().expect("ppid"),
        fields[3].parse().expect("sid"),
    );
    assert_ne!(
        ppid,
        std::process::id() as i32,
        "the monitor must not be our child"
    );
    assert_eq!(sid, c.monitor_pid, "the monitor leads its own session");
    // init is in the container's cgroup in every hierarchy kraal uses: the v1 controllers
    // and the unified tree on hybrid hosts, the unified tree on v2.
    let cg = fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).expect("cgroup");
    let missing = not_in_container_cgroup(&cg, &fx.cgroups_path());
    assert!(missing.is_empty(), "not in {missing:?}:\n{cg}");

    let s = client::state(&fx.socket(), TIMEOUT).expect("state");
    assert_eq!((s.pid, s.started, s.exited), (c.pid, false, false));
    // Unknown commands are refused precisely.
    let err = client::control(&fx.socket(), "frobnicate", TIMEOUT).expect_err("unknown");
    assert!(err.to_string().contains("unknown command"), "{err}");

    fx.start();
    let exit = fx.wait_exit();
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(exit.finished_at_unix_nanos > 1_700_000_000_000_000_000);

    let mut records = Fixture::records(&fx.log_path());
    records.sort_by_key(|r| r.0 == Stream::Stderr);
    assert_eq!(
        records,
        vec![
            (Stream::Stdout, false, b"out".to_vec()),
            (Stream::Stderr, false, b"err".to_vec()),
        ]
    );
    // The monitor is done: exited, control socket removed.
    assert!(
        fx.wait_monitor_gone(TIMEOUT),
        "monitor still running after exit"
    );
    assert!(!fx.socket().exists());

    // Exec into the stopped container: a clear error, no result.
    let (code, _out, err, result) = fx.exec(&["echo", "hi"], 0);
    assert_eq!(code, 1);
    assert!(err.contains("not running"), "{err}");
    assert!(result.is_none());

    // Start again is refused (the monitor is gone).
    assert!(client::start(&fx.socket(), TIMEOUT).is_err());

    // Delete is idempotent.
    client::delete(Path::new(BIN), &fx.root(), &fx.id).expect("delete");
    assert!(!fx.root().join(&fx.id).exists());
    client::delete(Path::new(BIN), &fx.root(), &fx.id).expect("delete again");
    client::delete(Path::new(BIN), &fx.root(), "never-existed").expect("delete unknown");
    let err = client::delete(Path::new(BIN), &fx.root(), "../x").expect_err("bad id");
    assert!(err.to_string().contains("invalid container id"), "{err}");
    fx.finish();
}

#[test]
fn long_line_is_split_into_partial_records() {
    let mut fx = Fixture::new(
        "longline",
        &[
            "sh",
            "-c",
            "head -c 40960 /dev/zero | tr '\\000' a; echo; echo -n tail",
        ],
    );
    fx.create();
    fx.start();
    assert_eq!(fx.wait_exit().exit_code, 0);
    let records = Fixture::records(&fx.log_path());
    let shape: Vec<(Stream, bool, usize)> =
        records.iter().map(|(s, p, c)| (*s, *p, c.len())).collect();
    assert_eq!(
        shape,
        vec![
            (Stream::Stdout, true, 16384),
            (Stream::Stdout, true, 16384),
            (Stream::Stdout, false, 8192),
            // The last line has no newline: written as a full record at end-of-file.
            (Stream::Stdout, false, 4),
        ]
    );
    let joined: Vec<u8> = records[..3].iter().flat_map(|r| r.2.clone()).collect();
    assert_eq!(joined, vec![b'a'; 40960]);
    assert_eq!(records[3].2, b"tail");
    fx.finish();
}

#[test]
fn reopen_log_after_rotation() {
    let mut fx = Fixture::new("reopen", &["sh", "-c", "echo a; sleep 1; echo b"]);
    fx.create();
    fx.start();
    let log = fx.log_path();
    wait_for("the first line", || {
        fs::read(&log)
            .map(|d| d.ends_with(b" stdout F a\n"))
            .unwrap_or(false)
    });
    let rotated = log.with_extension("log.1");
    fs::rename(&log, &rotated).expect("rotate");
    client::reopen_log(&fx.socket(), TIMEOUT).expect("reopen-log");
    assert!(log.exists(), "reopen creates the new file");
    assert_eq!(fx.wait_exit().exit_code, 0);
    assert_eq!(
        Fixture::records(&rotated),
        vec![(Stream::Stdout, false, b"a".to_vec())]
    );
    assert_eq!(
        Fixture::records(&log),
        vec![(Stream::Stdout, false, b"b".to_vec())]
    );
    fx.finish();
}

#[test]
fn sigkill_to_init_is_137_and_monitor_is_small() {
    let mut fx = Fixture::new("killed", &["sleep", "300"]);
    // A descriptor the spawner leaks (no close-on-exec): the monitor must not hold it.
    let marker_path = fx.dir.path().join("marker");
    let marker = fs::File::create(&marker_path).expect("marker");
    nix::fcntl::fcntl(
        &marker,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .expect("clear FD_CLOEXEC");
    let c = fx.create();
    drop(marker);
    fx.start();
    let s = client::state(&fx.socket(), TIMEOUT).expect("state");
    assert!(s.started && !s.exited);

    let mut links = Vec::new();
    for e in fs::read_dir(format!("/proc/{}/fd", c.monitor_pid))
        .expect("fds")
        .flatten()
    {
        if let Ok(target) = fs::read_link(e.path()) {
            links.push(target);
        }
    }
    assert!(
        !links.contains(&marker_path),
        "monitor inherited the spawner's fd: {links:?}"
    );
    assert!(links.len() <= 10, "monitor holds too many fds: {links:?}");

    // Let the monitor settle, then measure it.
    std::thread::sleep(Duration::from_millis(200));
    let rss = vm_rss_kb(c.monitor_pid);
    println!("kraal-monitor VmRSS while the container runs: {rss} kB");
    eprintln!("kraal-monitor VmRSS while the container runs: {rss} kB");
    assert!(rss < 8 * 1024, "monitor RSS {rss} kB");

    assert!(is_alive(c.pid, c.pid_start_time));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill init");
    let exit = fx.wait_exit();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    fx.finish();
}

#[test]
fn exec_runs_in_the_container_and_times_out() {
    let mut fx = Fixture::new("exec", &["sleep", "300"]);
    let c = fx.create();
    fx.start();

    let (code, out, err, result) = fx.exec(&["echo", "hi"], 0);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "hi\n");
    assert_eq!(
        result,
        Some(ExecResult {
            exit_code: 0,
            timed_out: false
        })
    );

    let (code, out, err, result) = fx.exec(&["sh", "-c", "echo oops >&2; exit 7"], 10_000);
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "");
    assert_eq!(err, "oops\n");
    assert_eq!(result.map(|r| (r.exit_code, r.timed_out)), Some((7, false)));

    // The exec'd process is in the container: its PID namespace, its cgroups (v1 and
    // unified).
    let (code, out, err, _) = fx.exec(&["cat", "/proc/self/cgroup"], 0);
    assert_eq!(code, 0, "stderr: {err}");
    let missing = not_in_container_cgroup(&out, &fx.cgroups_path());
    assert!(missing.is_empty(), "not in {missing:?}:\n{out}");
    let (_, out, _, _) = fx.exec(&["sh", "-c", "echo $$"], 0);
    assert_ne!(out.trim(), "1");
    assert!(
        out.trim().parse::<i32>().expect("pid") < 100,
        "pid in the container's ns: {out}"
    );

    // Timeout: killed, reported, and nothing left running.
    let t0 = Instant::now();
    let (code, _out, err, result) = fx.exec(&["sh", "-c", "sleep 30 & sleep 30"], 500);
    let took = t0.elapsed();
    assert_eq!(code, 0, "stderr: {err}");
    let result = result.expect("result");
    assert!(result.timed_out);
    assert_eq!(result.exit_code, 137);
    assert!(
        took < Duration::from_secs(10),
        "exec with timeout took {took:?}"
    );
    wait_for("only init left in the cgroup", || {
        fx.cgroup_pids() == vec![c.pid]
    });

    // Missing container: clear error.
    let (code, _out, err, result) = fx.exec_in("nope", &["true"], 0);
    assert_eq!(code, 1);
    assert!(err.contains("\"nope\" not found"), "{err}");
    assert!(result.is_none());

    fx.finish();
}

#[test]
fn control_socket_survives_bad_clients() {
    let mut fx = Fixture::new("clients", &["sleep", "300"]);
    let c = fx.create();
    // A client that connects and says nothing, then one that sends garbage: the monitor
    // keeps serving.
    {
        let _idle = std::os::unix::net::UnixStream::connect(fx.socket()).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
    }
    let err = client::control(&fx.socket(), &"x".repeat(10_000), TIMEOUT).expect_err("garbage");
    assert!(
        matches!(
            err,
            MonitorError::Refused { .. } | MonitorError::Control { .. }
        ),
        "{err}"
    );
    fx.start();
    let err = client::start(&fx.socket(), TIMEOUT).expect_err("second start");
    assert!(err.to_string().contains("libcontainer start"), "{err}");
    let s = client::state(&fx.socket(), TIMEOUT).expect("state");
    assert_eq!((s.pid, s.started, s.exited), (c.pid, true, false));
    // Termination requests to the monitor are ignored: it lives as long as the container.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.monitor_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.monitor_pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    std::thread::sleep(Duration::from_millis(100));
    assert!(fx.monitor_alive());
    client::state(&fx.socket(), TIMEOUT).expect("still serving");
    // Deleting a running container kills it; the monitor records that and exits.
    client::delete(Path::new(BIN), &fx.root(), &fx.id).expect("delete");
    let exit = fx.wait_exit();
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    assert!(fx.wait_monitor_gone(TIMEOUT));
    fx.finish();
}

#[test]
fn failed_create_leaves_nothing_behind() {
    // A mount libcontainer cannot do: creation fails inside the container's init.
    let mut fx = Fixture::new("badmount", &["true"]);
    let spec_path = fx.bundle().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&spec_path).expect("read")).expect("spec");
    spec["mounts"]
        .as_array_mut()
        .expect("mounts")
        .push(json!({"destination": "/bogus", "type": "no-such-fs", "source": "none"}));
    fs::write(&spec_path, spec.to_string()).expect("write");
    let cfg = fx.monitor_config();
    let err = fx.try_create(&cfg).expect_err("must fail");
    let MonitorError::Create(msg) = &err else {
        panic!("unexpected error kind: {err}")
    };
    // libcontainer's message, and the cause as the container's init logged it.
    assert!(msg.contains("libcontainer"), "{msg}");
    assert!(msg.contains("/bogus") && msg.contains("ENODEV"), "{msg}");
    assert!(
        !fx.root().join(&fx.id).exists(),
        "libcontainer state left behind"
    );
    assert!(!fx.socket().exists(), "control socket left behind");
    // libcontainer's cgroups are gone; on hybrid hosts the unified one is the test's own
    // (made for the monitor) and goes with the teardown.
    let cgroups = cgroups();
    for (hierarchy, dir) in cgroups.dirs(&fx.cgroups_path()).expect("cgroup dirs") {
        if hierarchy == UNIFIED_KEY && cgroups.hierarchy() == Hierarchy::Hybrid {
            continue;
        }
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // The monitor is gone (it is reaped by the create process on failure).
    let mut cfg = fx.monitor_config();
    assert!(!fx.exit_file().exists());

    // tty while the spec has no terminal: libcontainer refuses the console socket, and
    // the socket does not stay behind.
    cfg.tty = true;
    let err = fx.try_create(&cfg).expect_err("tty");
    assert!(err.to_string().contains("libcontainer"), "{err}");
    assert!(!cfg.console_socket().exists(), "console socket left behind");

    // A missing bundle: named in the error.
    cfg.tty = false;
    cfg.bundle = fx.dir.path().join("no-bundle");
    let err = fx.try_create(&cfg).expect_err("no bundle");
    assert!(
        err.to_string()
            .contains("no-bundle/config.json: No such file"),
        "{err}"
    );
    assert!(!fx.root().join(&fx.id).exists());
    fx.finish();
}

#[test]
fn stdin_pipe_is_held_open() {
    // With stdin: true the container's stdin is a pipe the monitor keeps open (nothing
    // attaches yet), so `cat` blocks instead of seeing end-of-file.
    let mut fx = Fixture::new("stdin", &["sh", "-c", "cat; echo cat-ended"]);
    let mut cfg = fx.monitor_config();
    cfg.stdin = true;
    let c = fx.try_create(&cfg).expect("create");
    fx.start();
    std::thread::sleep(Duration::from_millis(300));
    assert!(is_alive(c.pid, c.pid_start_time), "cat saw end-of-file");
    let link = fs::read_link(format!("/proc/{}/fd/0", c.pid)).expect("fd 0");
    assert!(link.to_string_lossy().starts_with("pipe:"), "{link:?}");
    fx.finish();

    // Without stdin it is /dev/null: cat ends at once.
    let mut fx = Fixture::new("nostdin", &["sh", "-c", "cat; echo cat-ended"]);
    fx.create();
    fx.start();
    assert_eq!(fx.wait_exit().exit_code, 0);
    let records = Fixture::records(&fx.log_path());
    assert_eq!(
        records,
        vec![(Stream::Stdout, false, b"cat-ended".to_vec())]
    );
    fx.finish();
}

/// The monitor's log is written by the forked monitor; read it line by line to make sure
/// it is plain text (no ANSI escapes) and names the container.
#[test]
fn monitor_log_is_plain_text() {
    let mut fx = Fixture::new("mlog", &["true"]);
    fx.create();
    fx.start();
    fx.wait_exit();
    // The monitor logs "exit file written" just after writing the file the test waited
    // for: on a slow (emulated) machine the line may not be there yet.
    let read_lines = || -> Vec<String> {
        let f = fs::File::open(fx.state().join("monitor.log")).expect("monitor log");
        BufReader::new(f).lines().map_while(Result::ok).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = read_lines();
    while !lines.iter().any(|l| l.contains("exit file written")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        lines = read_lines();
    }
    assert!(
        lines.iter().any(|l| l.contains("creating container")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("exit file written")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI escapes in {lines:?}"
    );
    fx.finish();
}

/// The container's processes start with the signal state of a fresh program: nothing
/// ignored (the Rust runtime ignores SIGPIPE in the monitor), nothing blocked (the monitor
/// blocks SIGCHLD for its signalfd).
#[test]
fn container_processes_get_default_signal_state() {
    let mut fx = Fixture::new("signals", &["sleep", "300"]);
    let c = fx.create();
    fx.start();
    let field = |text: &str, name: &str| -> String {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    // init, once it runs `sleep`.
    let status = format!("/proc/{}/status", c.pid);
    wait_for("init to exec sleep", || {
        fs::read_to_string(&status)
            .map(|s| field(&s, "Name") == "sleep")
            .unwrap_or(false)
    });
    let text = fs::read_to_string(&status).expect("status");
    assert_eq!(field(&text, "SigIgn"), "0000000000000000", "{text}");
    assert_eq!(field(&text, "SigBlk"), "0000000000000000", "{text}");
    // An exec'd process.
    let (code, out, err, _) = fx.exec(&["cat", "/proc/self/status"], 0);
    assert_eq!(code, 0, "{err}");
    assert_eq!(field(&out, "SigIgn"), "0000000000000000", "{out}");
    assert_eq!(field(&out, "SigBlk"), "0000000000000000", "{out}");
    fx.finish();
}

/// Sends `frames` on an attach connection and reads stdout frames until `done` holds for
/// everything read so far.
fn attach_exchange(
    conn: &mut std::os::unix::net::UnixStream,
    frames: &[u8],
    done: impl Fn(&str) -> bool,
) -> String {
    use kraal_runtime::monitor::attach::{FRAME_HEADER, FRAME_STDOUT};
    use std::io::{Read, Write};
    conn.write_all(frames).expect("send frames");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&String::from_utf8_lossy(&out)) {
        assert!(
            Instant::now() < deadline,
            "attach output so far: {:?}",
            String::from_utf8_lossy(&out)
        );
        let mut header = [0u8; FRAME_HEADER];
        conn.read_exact(&mut header).expect("frame header");
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).expect("frame payload");
        assert_eq!(header[0], FRAME_STDOUT, "a terminal has only stdout");
        out.extend_from_slice(&payload);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A tty container: init gets a terminal of its own devpts as its controlling terminal,
/// the monitor its master; attach resizes it and writes to it, and the CRI log has the
/// terminal's output as stdout.
#[test]
fn tty_container_gets_a_terminal() {
    use kraal_runtime::monitor::attach::{FRAME_STDIN, encode_frame, encode_resize};
    let script = "read l; stty size; echo got $l; read l; echo bye";
    let mut fx = Fixture::new("tty", &["sh", "-c", script]);
    let spec_path = fx.bundle().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&fs::read(&spec_path).expect("read spec")).expect("spec");
    spec["process"]["terminal"] = json!(true);
    fs::write(&spec_path, spec.to_string()).expect("write spec");
    let mut cfg = fx.monitor_config();
    cfg.tty = true;
    cfg.stdin = true;
    cfg.stdin_once = true;
    let c = match fx.try_create(&cfg) {
        Ok(c) => c,
        Err(e) => panic!("create failed: {e}\nmonitor log:\n{}", fx.monitor_log()),
    };
    assert!(!cfg.console_socket().exists(), "console socket left behind");
    // init's stdio is the pty slave, and it is its controlling terminal (its session's
    // tty_nr in /proc/PID/stat is not 0).
    let link = fs::read_link(format!("/proc/{}/fd/0", c.pid)).expect("fd 0");
    assert!(link.to_string_lossy().starts_with("/dev/pts/"), "{link:?}");
    let stat = fs::read_to_string(format!("/proc/{}/stat", c.pid)).expect("stat");
    let after_comm = stat.rsplit_once(") ").expect("stat format").1;
    let tty_nr: i64 = after_comm
        .split(' ')
        .nth(4)
        .and_then(|f| f.parse().ok())
        .expect("tty_nr");
    assert_ne!(tty_nr, 0, "no controlling terminal: {stat}");
    fx.start();

    let mut conn = std::os::unix::net::UnixStream::connect(fx.socket()).expect("connect");
    {
        use std::io::{Read, Write};
        conn.write_all(b"attach stdin\n").expect("attach");
        let mut reply = [0u8; 3];
        conn.read_exact(&mut reply).expect("reply");
        assert_eq!(&reply, b"ok\n");
    }
    let mut frames = Vec::new();
    encode_resize(&mut frames, 100, 30);
    encode_frame(&mut frames, FRAME_STDIN, b"hi\n");
    let out = attach_exchange(&mut conn, &frames, |o| o.contains("got hi"));
    // The terminal echoes the input and turns newlines into CR LF.
    assert!(out.contains("hi\r\n"), "{out:?}");
    assert!(out.contains("30 100\r\n"), "{out:?}");
    // stdin_once: the attach ending gives the shell end-of-file (the EOF character).
    drop(conn);
    assert_eq!(fx.wait_exit().exit_code, 0);
    let records = Fixture::records(&fx.log_path());
    assert!(
        records.iter().all(|(s, _, _)| *s == Stream::Stdout),
        "{records:?}"
    );
    let logged: Vec<u8> = records.iter().flat_map(|(_, _, l)| l.clone()).collect();
    let logged = String::from_utf8_lossy(&logged);
    assert!(logged.contains("got hi"), "{logged:?}");
    assert!(logged.contains("bye"), "{logged:?}");
    fx.finish();
}
