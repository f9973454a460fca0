//! Kernel tests on this host's real cgroups (needs root; skipped with a message
//! otherwise). Every cgroup lives under a `/kraal-test-<pid>-<n>` parent that [`Scratch`]
//! removes when the test ends, pass or fail, after killing the processes the test
//! started — by their pid, never anyone else's — and thawing what it froze (a task
//! frozen by the v1 freezer does not die of SIGKILL until it is thawed).

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kraal_cgroups::{
    CgroupError, Cgroups, FreezerKind, FreezerState, Hierarchy, MANAGED_V1_CONTROLLERS, MemoryHigh,
    Resources, Written, shares_to_weight,
};

const MIB: u64 = 1 << 20;
/// Set in the environment of the re-executed test binary that plays the memory hog.
const HOG_ENV: &str = "KRAAL_CGROUPS_TEST_HOG";
/// Set in the environment of the re-executed test binary that counts into a file.
const COUNTER_ENV: &str = "KRAAL_CGROUPS_TEST_COUNTER";
/// Generous: a running task freezes within milliseconds.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: kernel cgroup tests need root");
    }
    root
}

/// A kraal-named top-level cgroup for one test, and the processes the test started.
struct Scratch {
    cg: Cgroups,
    top: String,
    children: Vec<Child>,
    /// Cgroups the test froze, thawed again on drop.
    frozen: Vec<String>,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch::with(Cgroups::detect().unwrap())
    }

    /// A scratch cgroup in the given hierarchies only.
    fn with(cg: Cgroups) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let top = format!(
            "/kraal-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Scratch {
            cg,
            top,
            children: Vec::new(),
            frozen: Vec::new(),
        }
    }

    /// Freezes `rel`, remembering to thaw it on drop.
    fn freeze(&mut self, rel: &str) -> PathBuf {
        self.frozen.push(rel.to_string());
        self.cg.freeze(rel, FREEZE_TIMEOUT).unwrap()
    }

    /// Starts this test binary as `counter_helper`, counting into `file`, inside `rel`.
    fn spawn_counter(&mut self, rel: &str, file: &Path) -> i32 {
        let exe = std::env::current_exe().unwrap();
        let mut gate = self.spawn_gated(
            &exe,
            &[
                "--exact",
                "counter_helper",
                "--nocapture",
                "--test-threads=1",
            ],
            &[(COUNTER_ENV, file.to_str().unwrap())],
        );
        self.cg.add_pid(rel, gate.pid).unwrap();
        gate.open();
        gate.pid
    }

    fn rel(&self, sub: &str) -> String {
        format!("{}/{sub}", self.top)
    }

    /// Starts `program args` held at a gate: it runs only once [`Gate::open`] is called,
    /// so the test can move it into a cgroup before it does anything.
    fn spawn_gated(&mut self, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Gate {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"read _ && exec "$@""#)
            .arg("sh")
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let pid = child.id() as i32;
        self.children.push(child);
        Gate { pid, stdin }
    }

    fn spawn_sleep(&mut self) -> i32 {
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    /// Waits for one of our children to exit and returns its status.
    fn wait(&mut self, pid: i32) -> std::process::ExitStatus {
        self.child(pid).wait().unwrap()
    }

    /// SIGKILLs one of our children (by its pid) and reaps it.
    fn kill(&mut self, pid: i32) {
        let child = self.child(pid);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn child(&mut self, pid: i32) -> &mut Child {
        self.children
            .iter_mut()
            .find(|c| c.id() as i32 == pid)
            .unwrap()
    }

    /// Every directory `rel` has in the managed hierarchies of this host.
    fn dirs(&self, rel: &str) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = MANAGED_V1_CONTROLLERS
            .iter()
            .filter_map(|c| self.cg.v1_path(c, rel).unwrap())
            .collect();
        dirs.extend(self.cg.unified_path(rel).unwrap());
        dirs
    }

    /// The directory holding memory accounting for `rel`.
    fn memory_dir(&self, rel: &str) -> PathBuf {
        self.cg
            .v1_path("memory", rel)
            .unwrap()
            .or_else(|| self.cg.unified_path(rel).unwrap())
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for rel in self.frozen.iter().rev() {
            match self.cg.thaw(rel) {
                // Removed by the test already: nothing to thaw.
                Err(e) if e.is_not_found() => {}
                Err(e) => eprintln!("thawing {rel} failed: {e}"),
                Ok(_) => {}
            }
        }
        for child in &mut self.children {
            // Already reaped children are skipped by std; the rest are ours to kill.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = self.cg.remove(&self.top) {
            eprintln!("cleanup of {} failed: {e}", self.top);
        }
    }
}

struct Gate {
    pid: i32,
    stdin: Option<ChildStdin>,
}

impl Gate {
    fn open(&mut self) {
        let mut stdin = self.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn create_move_list_and_remove_a_pod() {
    if !is_root() {
        return;
    }
    let mut s = Scratch::new();
    let pod = s.rel("kubepods/pod1");
    let ctr = format!("{pod}/ctr1");
    let unified_root_control =
        s.cg.unified_root()
            .map(|root| read(&root.join("cgroup.subtree_control")));
    s.cg.create(&ctr).unwrap();
    // Idempotent, and creating the parent after the child is fine.
    s.cg.create(&pod).unwrap();
    s.cg.create(&ctr).unwrap();

    let dirs = s.dirs(&ctr);
    let v1_count = MANAGED_V1_CONTROLLERS
        .iter()
        .filter(|c| s.cg.v1_path(c, &ctr).unwrap().is_some())
        .count();
    assert!(!dirs.is_empty());
    for dir in s.dirs(&pod).iter().chain(&dirs) {
        assert!(dir.is_dir(), "{} missing", dir.display());
    }
    if s.cg.hierarchy() == Hierarchy::Hybrid {
        let unified = s.cg.unified_path(&ctr).unwrap().unwrap();
        assert!(unified.starts_with(s.cg.unified_root().unwrap()));
        assert!(unified.is_dir());
        assert!(v1_count >= 1);
        // Hybrid: the unified tree is membership only; the host's root is left alone and
        // no level enables controllers (so the pod level can hold processes below).
        let root = s.cg.unified_root().unwrap();
        assert_eq!(
            Some(read(&root.join("cgroup.subtree_control"))),
            unified_root_control
        );
        for rel in [s.top.clone(), pod.clone()] {
            let dir = s.cg.unified_path(&rel).unwrap().unwrap();
            assert_eq!(read(&dir.join("cgroup.subtree_control")).trim(), "");
        }
    }

    // Every created cpuset level can take tasks: cpus and mems are set.
    if let Some(cpuset) = s.cg.v1_root("cpuset") {
        let mut dir = cpuset.to_path_buf();
        for name in ctr.trim_start_matches('/').split('/') {
            dir.push(name);
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let value = read(&dir.join(file));
                assert!(
                    !value.trim().is_empty(),
                    "{} is empty",
                    dir.join(file).display()
                );
            }
        }
    }

    // On v2 the pod enables the controllers its children use: that is what makes their
    // limits possible, and what forbids the pod itself to hold a process (the kernel's
    // "no internal processes" rule; EBUSY). So a process of the pod's own goes into a leaf
    // below it, as kraald does with a shared-PID pod's infra process.
    let leaf = format!("{pod}/infra");
    s.cg.create(&leaf).unwrap();
    let pid = s.spawn_sleep();
    if s.cg.hierarchy() == Hierarchy::V2 {
        let dir = s.cg.unified_path(&pod).unwrap().unwrap();
        let root = s.cg.unified_root().unwrap();
        let available = read(&root.join("cgroup.subtree_control"));
        let enabled = read(&dir.join("cgroup.subtree_control"));
        for controller in ["cpu", "memory", "pids"] {
            if available.split_whitespace().any(|c| c == controller) {
                assert!(
                    enabled.split_whitespace().any(|c| c == controller),
                    "{controller} not enabled below {}: {enabled:?}",
                    dir.display()
                );
            }
        }
        let ctr_dir = s.cg.unified_path(&ctr).unwrap().unwrap();
        assert!(
            ctr_dir.join("memory.high").exists(),
            "{}",
            ctr_dir.display()
        );
        let err = s.cg.add_pid(&pod, pid).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    }
    s.cg.add_pid(&leaf, pid).unwrap();

    assert_eq!(s.cg.pids(&pod).unwrap(), [pid]);
    assert_eq!(s.cg.pids(&leaf).unwrap(), [pid]);
    assert!(s.cg.pids(&ctr).unwrap().is_empty());
    let proc_cgroup = read(Path::new(&format!("/proc/{pid}/cgroup")));
    let in_leaf = |prefix: &str| {
        proc_cgroup.lines().any(|l| {
            l.split_once(':')
                .is_some_and(|(_, rest)| rest == format!("{prefix}:{leaf}"))
        })
    };
    if s.cg.v1_root("memory").is_some() {
        assert!(in_leaf("memory"), "{proc_cgroup}");
        assert!(
            in_leaf("cpuacct") || in_leaf("cpu,cpuacct"),
            "{proc_cgroup}"
        );
    }
    if s.cg.unified_root().is_some() {
        assert!(in_leaf(""), "{proc_cgroup}");
    }

    // Removing while the sleep is inside: a clear error, and nothing removed.
    let err = s.cg.remove(&s.top).unwrap_err();
    assert!(err.is_busy(), "{err}");
    assert!(
        matches!(err, CgroupError::Busy { ref pids, .. } if pids == &[pid]),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&leaf) && msg.contains(&pid.to_string()),
        "{msg}"
    );
    for dir in &dirs {
        assert!(dir.is_dir(), "{} removed although busy", dir.display());
    }

    s.kill(pid);
    s.cg.remove(&s.top).unwrap();
    for dir in s.dirs(&s.top) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // Removing twice is fine.
    s.cg.remove(&s.top).unwrap();
    s.cg.remove(&pod).unwrap();
}

#[test]
fn page_cache_shows_in_stats_and_is_reclaimed_on_remove() {
    if !is_root() {
        return;
    }
    let mut s = Scratch::new();
    let pod = s.rel("pod-cache");
    s.cg.create(&pod).unwrap();

    // Written with O_DIRECT, so the file is not in the page cache (nor charged to this
    // test's own cgroup) until the pod reads it.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = tmp.path().join("data");
    let size_mib = 16;
    let status = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=1M",
            &format!("count={size_mib}"),
            "oflag=direct",
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(status.success());

    let read_in_pod = |s: &mut Scratch| {
        let mut gate = s.spawn_gated(Path::new("cat"), &[file.to_str().unwrap()], &[]);
        s.cg.add_pid(&pod, gate.pid).unwrap();
        gate.open();
        assert!(s.wait(gate.pid).success());
    };

    read_in_pod(&mut s);
    let before = s.cg.stats(&pod).unwrap();
    eprintln!("after reading {size_mib} MiB: {before:?}");
    assert!(
        before.memory_usage_bytes >= size_mib / 2 * MIB,
        "{before:?}"
    );
    assert!(
        before.memory_usage_bytes > before.memory_working_set_bytes + size_mib / 2 * MIB,
        "page cache not counted as inactive: {before:?}"
    );
    assert!(before.cpu_usage_ns > 0, "{before:?}");
    assert!(s.cg.pids(&pod).unwrap().is_empty());

    // reclaim drops the cache the exited reader left charged to the pod.
    s.cg.reclaim(&pod).unwrap();
    let after = s.cg.stats(&pod).unwrap();
    eprintln!("after reclaim: {after:?}");
    assert!(
        after.memory_usage_bytes + size_mib / 2 * MIB <= before.memory_usage_bytes,
        "{after:?}"
    );

    // Charged again, then remove with the cache still there (reclaim inside remove).
    read_in_pod(&mut s);
    assert!(s.cg.stats(&pod).unwrap().memory_usage_bytes >= size_mib / 2 * MIB);
    s.cg.remove(&s.top).unwrap();
    assert!(!s.memory_dir(&pod).exists());
    assert!(s.cg.stats(&pod).unwrap_err().is_not_found());
}

#[test]
fn oom_kills_are_counted_in_the_container_and_the_pod() {
    if !is_root() {
        return;
    }
    let mut s = Scratch::new();
    let pod = s.rel("pod-oom");
    let ctr = format!("{pod}/ctr");
    s.cg.create(&ctr).unwrap();
    let mem = s.memory_dir(&ctr);
    if mem.join("memory.limit_in_bytes").exists() {
        std::fs::write(mem.join("memory.limit_in_bytes"), (8 * MIB).to_string()).unwrap();
    } else {
        std::fs::write(mem.join("memory.max"), (8 * MIB).to_string()).unwrap();
        if mem.join("memory.swap.max").exists() {
            std::fs::write(mem.join("memory.swap.max"), "0").unwrap();
        }
    }
    assert_eq!(s.cg.oom_kills(&pod).unwrap(), 0);

    // This test binary, re-executed to run only `hog_helper`, allocates 64 MiB.
    let exe = std::env::current_exe().unwrap();
    let mut gate = s.spawn_gated(
        &exe,
        &["--exact", "hog_helper", "--nocapture", "--test-threads=1"],
        &[(HOG_ENV, "64")],
    );
    s.cg.add_pid(&ctr, gate.pid).unwrap();
    gate.open();
    let status = s.wait(gate.pid);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "hog was not OOM-killed: {status:?}"
    );

    assert!(s.cg.oom_kills(&ctr).unwrap() >= 1);
    assert!(
        s.cg.oom_kills(&pod).unwrap() >= 1,
        "pod does not count its container's kill"
    );
    s.cg.remove(&s.top).unwrap();
}

/// Not a test on its own: allocates and touches `$KRAAL_CGROUPS_TEST_HOG` MiB when
/// re-executed by `oom_kills_are_counted_in_the_container_and_the_pod`.
#[test]
fn hog_helper() {
    let Some(mib) = std::env::var(HOG_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return;
    };
    let mut hog = vec![0u8; mib << 20];
    for i in (0..hog.len()).step_by(4096) {
        hog[i] = 1;
    }
    std::hint::black_box(&hog);
}

#[test]
fn invalid_and_missing_paths() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    let err = s.cg.create("/kraal-test/../process_api").unwrap_err();
    assert!(matches!(err, CgroupError::InvalidPath { .. }), "{err}");
    // Never created: removing is a no-op, stats say which cgroup is missing.
    s.cg.remove(&s.rel("never")).unwrap();
    let err = s.cg.stats(&s.rel("never")).unwrap_err();
    assert!(err.to_string().contains(&s.rel("never")), "{err}");
}

/// Not a test on its own: counts up forever, writing the count to `$KRAAL_CGROUPS_TEST_COUNTER`
/// at offset 0 with a fixed width (never truncating, so a reader never sees an empty
/// file), when re-executed by the freezer tests.
#[test]
fn counter_helper() {
    use std::os::unix::fs::FileExt;
    let Ok(path) = std::env::var(COUNTER_ENV) else {
        return;
    };
    let file = std::fs::File::create(path).unwrap();
    for i in 1u64.. {
        file.write_all_at(format!("{i:020}\n").as_bytes(), 0)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The count `counter_helper` has reached (0 before its first write).
fn count(file: &Path) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to 10 s) until the counter is above `above`; returns it.
fn wait_for_count_above(file: &Path, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = count(file);
        if n > above {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "counter stuck at {n} (waiting for > {above})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A counting process in `pod/ctr`; freezing `pod` stops it (the freeze is recursive),
/// thawing `pod` lets it go on.
fn freeze_and_thaw_a_counting_process(s: &mut Scratch, control_file: &str) {
    let pod = s.rel("pod-freeze");
    let ctr = format!("{pod}/ctr");
    s.cg.create(&ctr).unwrap();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let counter = tmp.path().join("counter");
    let pid = s.spawn_counter(&ctr, &counter);
    let running = wait_for_count_above(&counter, 0);
    assert_eq!(s.cg.freezer_state(&pod).unwrap(), FreezerState::Thawed);

    let start = Instant::now();
    let file = s.freeze(&pod);
    eprintln!("froze in {:?} via {}", start.elapsed(), file.display());
    assert_eq!(file.file_name().unwrap(), control_file);
    assert!(
        file.parent()
            .unwrap()
            .ends_with(pod.trim_start_matches('/'))
    );
    assert_eq!(s.cg.freezer_state(&pod).unwrap(), FreezerState::Frozen);
    assert_eq!(s.cg.freezer_state(&ctr).unwrap(), FreezerState::Frozen);

    let frozen_at = count(&counter);
    assert!(frozen_at >= running);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&counter), frozen_at, "counter grew while frozen");
    // Freezing a frozen cgroup is fine; the process is still there.
    s.cg.freeze(&pod, FREEZE_TIMEOUT).unwrap();
    assert_eq!(s.cg.pids(&pod).unwrap(), [pid]);

    let file = s.cg.thaw(&pod).unwrap();
    assert_eq!(file.file_name().unwrap(), control_file);
    assert_eq!(s.cg.freezer_state(&pod).unwrap(), FreezerState::Thawed);
    assert_eq!(s.cg.freezer_state(&ctr).unwrap(), FreezerState::Thawed);
    wait_for_count_above(&counter, frozen_at);

    s.kill(pid);
    s.cg.remove(&s.top).unwrap();
}

#[test]
fn v1_freezer_stops_a_subtree_and_thaw_resumes_it() {
    if !is_root() {
        return;
    }
    let mut s = Scratch::new();
    if s.cg.freezer_kind() != Some(FreezerKind::V1) {
        eprintln!("skipped: no v1 freezer controller mounted");
        return;
    }
    freeze_and_thaw_a_counting_process(&mut s, "freezer.state");
}

#[test]
fn cgroup2_freeze_stops_a_subtree_and_thaw_resumes_it() {
    if !is_root() {
        return;
    }
    // Only this host's cgroup2 line, so the unified tree's cgroup.freeze is used even
    // where a v1 freezer is mounted (hybrid).
    let mountinfo = read(Path::new("/proc/self/mountinfo"));
    let Some(line) = mountinfo.lines().find(|l| l.contains(" - cgroup2 ")) else {
        eprintln!("skipped: this host has no cgroup2 mount");
        return;
    };
    let cg = Cgroups::from_mountinfo(&format!("{line}\n")).unwrap();
    assert_eq!(cg.freezer_kind(), Some(FreezerKind::V2));
    let mut s = Scratch::with(cg);
    freeze_and_thaw_a_counting_process(&mut s, "cgroup.freeze");
}

#[test]
fn freezing_a_missing_cgroup_is_not_found() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    let missing = s.rel("never");
    let err = s.cg.freeze(&missing, FREEZE_TIMEOUT).unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains(&missing), "{err}");
    assert!(s.cg.thaw(&missing).unwrap_err().is_not_found());
    assert!(s.cg.freezer_state(&missing).unwrap_err().is_not_found());
}

#[test]
fn cpu_burst_idle_and_memory_high_on_v1() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    if s.cg.v1_root("cpu").is_none() || s.cg.v1_root("memory").is_none() {
        eprintln!("skipped: needs the v1 cpu and memory controllers");
        return;
    }
    let ctr = s.rel("pod-res/ctr");
    s.cg.create(&ctr).unwrap();
    let cpu = s.cg.v1_path("cpu", &ctr).unwrap().unwrap();
    let mem = s.cg.v1_path("memory", &ctr).unwrap().unwrap();
    let w = |dir: &Path, file: &str, value: &str| Written {
        file: dir.join(file),
        value: value.to_string(),
    };
    let value = |dir: &Path, file: &str| read(&dir.join(file)).trim().to_string();
    let no_soft_limit = value(&mem, "memory.soft_limit_in_bytes");
    if !cpu.join("cpu.cfs_burst_us").exists() || !cpu.join("cpu.idle").exists() {
        eprintln!("skipped: this kernel has no cpu.cfs_burst_us or cpu.idle");
        return;
    }
    assert_eq!(s.cg.read_cpu_shares(&ctr).unwrap(), Some(1024));

    let written =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_period_us: Some(50_000),
                cpu_quota_us: Some(10_000),
                cpu_burst_us: Some(5_000),
                cpu_idle: Some(true),
                memory_high: Some(MemoryHigh::Bytes(64 * MIB)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        written,
        [
            w(&cpu, "cpu.cfs_burst_us", "0"),
            w(&cpu, "cpu.cfs_period_us", "50000"),
            w(&cpu, "cpu.cfs_quota_us", "10000"),
            w(&cpu, "cpu.idle", "1"),
            w(&cpu, "cpu.cfs_burst_us", "5000"),
            w(&mem, "memory.soft_limit_in_bytes", &(64 * MIB).to_string()),
        ]
    );
    assert_eq!(value(&cpu, "cpu.cfs_period_us"), "50000");
    assert_eq!(value(&cpu, "cpu.cfs_quota_us"), "10000");
    assert_eq!(value(&cpu, "cpu.cfs_burst_us"), "5000");
    assert_eq!(value(&cpu, "cpu.idle"), "1");
    assert_eq!(
        value(&mem, "memory.soft_limit_in_bytes"),
        (64 * MIB).to_string()
    );
    // An idle group has the minimum weight, whatever its shares were.
    assert_eq!(s.cg.read_cpu_shares(&ctr).unwrap(), Some(3));

    // Applying an offline plan again (shares + idle on an idle group) must not trip over
    // the kernel's refusal of weight writes to idle groups.
    let offline = Resources {
        cpu_shares: Some(2),
        cpu_idle: Some(true),
        ..Default::default()
    };
    for _ in 0..2 {
        s.cg.apply_resources(&ctr, &offline).unwrap();
        assert_eq!(value(&cpu, "cpu.idle"), "1");
    }

    // A quota below the current burst: the kernel would refuse the quota while the old
    // burst is in place, so the burst goes to 0 first.
    let lower = Resources {
        cpu_quota_us: Some(4_000),
        cpu_burst_us: Some(2_000),
        ..Default::default()
    };
    assert_eq!(
        s.cg.apply_resources(&ctr, &lower).unwrap(),
        [
            w(&cpu, "cpu.cfs_burst_us", "0"),
            w(&cpu, "cpu.cfs_quota_us", "4000"),
            w(&cpu, "cpu.cfs_burst_us", "2000"),
        ]
    );
    assert_eq!(value(&cpu, "cpu.cfs_quota_us"), "4000");
    assert_eq!(value(&cpu, "cpu.cfs_burst_us"), "2000");

    // Refused before anything is written: a quota below the burst that stays, and a
    // burst without a quota.
    let err =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_quota_us: Some(1_000),
                memory_high: Some(MemoryHigh::Unlimited),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::CpuBurst {
                burst_us: 2_000,
                quota_us: Some(1_000),
                ..
            }
        ),
        "{err}"
    );
    let err =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_quota_us: Some(-1),
                cpu_burst_us: Some(1_000),
                ..Default::default()
            },
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&ctr) && msg.contains("1000 µs") && msg.contains("-1"),
        "{msg}"
    );
    assert_eq!(value(&cpu, "cpu.cfs_quota_us"), "4000");
    assert_eq!(value(&cpu, "cpu.cfs_burst_us"), "2000");
    assert_eq!(
        value(&mem, "memory.soft_limit_in_bytes"),
        (64 * MIB).to_string()
    );

    // Idle off first, then the shares (refused while idle; clearing idle resets them).
    let written =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_idle: Some(false),
                cpu_shares: Some(512),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        written,
        [w(&cpu, "cpu.idle", "0"), w(&cpu, "cpu.shares", "512")]
    );
    assert_eq!(s.cg.read_cpu_shares(&ctr).unwrap(), Some(512));

    // No throttle point: the soft limit is back at the kernel's "unlimited".
    let written =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                memory_high: Some(MemoryHigh::Unlimited),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(written, [w(&mem, "memory.soft_limit_in_bytes", "-1")]);
    assert_eq!(value(&mem, "memory.soft_limit_in_bytes"), no_soft_limit);
}

/// The v2 counterpart of `cpu_burst_idle_and_memory_high_on_v1`: on a pure v2 host (where
/// that one has no v1 controllers to test) the same plan goes to `cpu.max`,
/// `cpu.max.burst`, `cpu.weight`, `cpu.idle` and `memory.high`, in an order the kernel
/// accepts, and reads back as written.
#[test]
fn cpu_burst_idle_and_memory_high_on_v2() {
    if !is_root() {
        return;
    }
    let s = Scratch::new();
    if s.cg.hierarchy() != Hierarchy::V2 {
        eprintln!("skipped: not a cgroup v2 host (the v1 test covers this one)");
        return;
    }
    let ctr = s.rel("pod-res/ctr");
    s.cg.create(&ctr).unwrap();
    let dir = s.cg.unified_path(&ctr).unwrap().unwrap();
    let w = |file: &str, value: &str| Written {
        file: dir.join(file),
        value: value.to_string(),
    };
    let value = |file: &str| read(&dir.join(file)).trim().to_string();
    for file in [
        "cpu.max",
        "cpu.max.burst",
        "cpu.weight",
        "cpu.idle",
        "memory.high",
    ] {
        assert!(
            dir.join(file).exists(),
            "{} missing: the pod's parent did not enable the controller",
            dir.join(file).display()
        );
    }
    assert_eq!(
        s.cg.read_cpu_shares(&ctr).unwrap().map(shares_to_weight),
        Some(100)
    );

    let written =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_period_us: Some(50_000),
                cpu_quota_us: Some(10_000),
                cpu_burst_us: Some(5_000),
                cpu_idle: Some(true),
                memory_high: Some(MemoryHigh::Bytes(64 * MIB)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        written,
        [
            w("cpu.max.burst", "0"),
            w("cpu.max", "10000 50000"),
            w("cpu.idle", "1"),
            w("cpu.max.burst", "5000"),
            w("memory.high", &(64 * MIB).to_string()),
        ]
    );
    assert_eq!(value("cpu.max"), "10000 50000");
    assert_eq!(value("cpu.max.burst"), "5000");
    assert_eq!(value("cpu.idle"), "1");
    assert_eq!(value("memory.high"), (64 * MIB).to_string());
    // An idle group has the minimum weight.
    assert_eq!(value("cpu.weight"), "1");

    // Offline again (weight + idle on an idle group): idle goes to 0 for the weight write.
    let offline = Resources {
        cpu_shares: Some(2),
        cpu_idle: Some(true),
        ..Default::default()
    };
    for _ in 0..2 {
        s.cg.apply_resources(&ctr, &offline).unwrap();
        assert_eq!(value("cpu.idle"), "1");
        assert_eq!(value("cpu.weight"), "1");
    }

    // A quota below the current burst: the burst goes to 0 first.
    let lower = Resources {
        cpu_quota_us: Some(4_000),
        cpu_burst_us: Some(2_000),
        ..Default::default()
    };
    assert_eq!(
        s.cg.apply_resources(&ctr, &lower).unwrap(),
        [
            w("cpu.max.burst", "0"),
            w("cpu.max", "4000"),
            w("cpu.max.burst", "2000"),
        ]
    );
    assert_eq!(value("cpu.max"), "4000 50000");
    assert_eq!(value("cpu.max.burst"), "2000");

    // Refused before anything is written.
    let err =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_quota_us: Some(1_000),
                memory_high: Some(MemoryHigh::Unlimited),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::CpuBurst {
                burst_us: 2_000,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(value("cpu.max"), "4000 50000");
    assert_eq!(value("memory.high"), (64 * MIB).to_string());

    // Online: idle off, kubelet's weight back (512 shares = weight 20).
    let written =
        s.cg.apply_resources(
            &ctr,
            &Resources {
                cpu_idle: Some(false),
                cpu_shares: Some(512),
                memory_high: Some(MemoryHigh::Unlimited),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        written,
        [
            w("cpu.idle", "0"),
            w("cpu.weight", "20"),
            w("memory.high", "max"),
        ]
    );
    assert_eq!(value("cpu.weight"), "20");
    assert_eq!(value("memory.high"), "max");
}
