//! Stats, OOM counters and pid listing against fake cgroup trees in a temp dir, so the
//! v1 and v2 code paths run on any host (this development machine is hybrid, with no
//! controllers in its cgroup2 tree).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kraal_cgroups::{
    CgroupError, Cgroups, FreezerKind, FreezerState, Hierarchy, MemoryHigh, Resources, Written,
    shares_to_weight,
};

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
}

#[test]
fn v2_stats_and_oom_from_unified_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mountinfo = format!(
        "30 1 0:30 / {} rw - cgroup2 cgroup2 rw,nsdelegate\n",
        root.display()
    );
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    assert_eq!(cg.hierarchy(), Hierarchy::V2);

    let pod = root.join("kubepods/pod1");
    write(
        &pod,
        "cpu.stat",
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
    );
    write(&pod, "memory.current", "10485760\n");
    write(
        &pod,
        "memory.stat",
        "anon 2097152\nfile 8388608\ninactive_file 6291456\nactive_file 2097152\npgfault 900\npgmajfault 9\n",
    );
    write(&pod, "pids.current", "3\n");
    write(
        &pod,
        "memory.events",
        "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n",
    );
    write(&pod, "cgroup.procs", "100\n");
    write(&pod.join("ctr"), "cgroup.procs", "101\n102\n");
    write(&pod.join("ctr"), "memory.events", "oom_kill 2\n");

    let s = cg.stats("/kubepods/pod1").unwrap();
    assert_eq!(s.cpu_usage_ns, 2_500_000);
    assert_eq!(s.memory_usage_bytes, 10_485_760);
    assert_eq!(s.memory_working_set_bytes, 10_485_760 - 6_291_456);
    assert_eq!(s.memory_rss_bytes, 2_097_152);
    assert_eq!((s.page_faults, s.major_page_faults), (900, 9));
    assert_eq!(s.pids, 3);

    // memory.events is hierarchical on v2: the pod's own count, not a sum.
    assert_eq!(cg.oom_kills("/kubepods/pod1").unwrap(), 2);
    assert_eq!(cg.pids("/kubepods/pod1").unwrap(), [100, 101, 102]);
    assert_eq!(cg.pids("/kubepods/pod1/ctr").unwrap(), [101, 102]);
    assert!(cg.pids("/kubepods/missing").unwrap().is_empty());

    let err = cg.stats("/kubepods/missing").unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("/kubepods/missing"), "{err}");
}

#[test]
fn v2_with_local_events_sums_the_subtree() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mountinfo = format!(
        "30 1 0:30 / {} rw - cgroup2 cgroup2 rw,memory_localevents\n",
        root.display()
    );
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    write(&root.join("pod"), "memory.events", "oom_kill 1\n");
    write(&root.join("pod/a"), "memory.events", "oom_kill 2\n");
    write(&root.join("pod/b"), "memory.events", "oom_kill 3\n");
    assert_eq!(cg.oom_kills("/pod").unwrap(), 6);
}

#[test]
fn v2_without_memory_controller_reports_zero_and_counts_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mountinfo = format!("30 1 0:30 / {} rw - cgroup2 cgroup2 rw\n", root.display());
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    write(&root.join("pod"), "cgroup.procs", "7\n8\n");
    let s = cg.stats("/pod").unwrap();
    assert_eq!(s.memory_usage_bytes, 0);
    assert_eq!(s.pids, 2);
    assert_eq!(cg.oom_kills("/pod").unwrap(), 0);
}

#[test]
fn v1_stats_come_from_each_controller_and_oom_kills_are_summed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mountinfo = format!(
        "\
32 31 0:29 / {r}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / {r}/memory rw - cgroup cgroup rw,memory
39 31 0:36 / {r}/pids rw - cgroup cgroup rw,pids
",
        r = root.display()
    );
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    assert_eq!(cg.hierarchy(), Hierarchy::V1);
    assert_eq!(cg.unified_path("/pod").unwrap(), None);
    // Pure v1: nothing to do for the unified tree.
    cg.add_to_unified("/pod", 1).unwrap();

    write(
        &root.join("cpu,cpuacct/pod"),
        "cpuacct.usage",
        "123456789\n",
    );
    let mem = root.join("memory/pod");
    write(&mem, "memory.usage_in_bytes", "8192000\n");
    write(
        &mem,
        "memory.stat",
        "cache 1\nrss 1\ntotal_cache 4096000\ntotal_rss 4000000\ntotal_inactive_file 4096000\ntotal_pgfault 50\ntotal_pgmajfault 1\n",
    );
    write(
        &mem,
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    );
    write(
        &mem.join("ctr1"),
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    );
    write(
        &mem.join("ctr2"),
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    );
    write(&root.join("pids/pod"), "pids.current", "4\n");

    let s = cg.stats("/pod").unwrap();
    assert_eq!(s.cpu_usage_ns, 123_456_789);
    assert_eq!(s.memory_usage_bytes, 8_192_000);
    assert_eq!(s.memory_working_set_bytes, 8_192_000 - 4_096_000);
    assert_eq!(s.memory_rss_bytes, 4_000_000);
    assert_eq!((s.page_faults, s.major_page_faults), (50, 1));
    assert_eq!(s.pids, 4);
    // v1 counts a kill only in the victim's memcg: the pod sums its containers.
    assert_eq!(cg.oom_kills("/pod").unwrap(), 3);
    assert_eq!(cg.oom_kills("/pod/ctr2").unwrap(), 2);
}

#[test]
fn unparsable_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mountinfo = format!(
        "35 31 0:32 / {}/memory rw - cgroup cgroup rw,memory\n",
        root.display()
    );
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    write(&root.join("memory/pod"), "memory.usage_in_bytes", "lots\n");
    let err = cg.stats("/pod").unwrap_err().to_string();
    assert!(err.contains("memory.usage_in_bytes"), "{err}");
    assert!(err.contains("\"lots\""), "{err}");
}

fn v2_fake(root: &Path) -> Cgroups {
    let mountinfo = format!("30 1 0:30 / {} rw - cgroup2 cgroup2 rw\n", root.display());
    Cgroups::from_mountinfo(&mountinfo).unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn v2_freeze_that_never_settles_times_out_and_thaws() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = v2_fake(tmp.path());
    assert_eq!(cg.freezer_kind(), Some(FreezerKind::V2));
    let pod = tmp.path().join("pod");
    // A regular file never turns "frozen 1": the tasks "never stop".
    write(&pod, "cgroup.events", "populated 1\nfrozen 0\n");
    write(&pod, "cgroup.freeze", "0\n");

    let start = Instant::now();
    let err = cg.freeze("/pod", Duration::from_millis(60)).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(err, CgroupError::FreezeTimeout { ref rel, waited_ms } if rel == "/pod" && waited_ms >= 60),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("/pod") && msg.contains("thawed again"),
        "{msg}"
    );
    // Thawed again: nothing left asking to freeze.
    assert_eq!(read(&pod.join("cgroup.freeze")).trim(), "0");
    assert_eq!(cg.freezer_state("/pod").unwrap(), FreezerState::Thawed);

    // Asked to freeze but not there yet: freezing. Then frozen (own or inherited).
    write(&pod, "cgroup.freeze", "1\n");
    assert_eq!(cg.freezer_state("/pod").unwrap(), FreezerState::Freezing);
    write(&pod, "cgroup.events", "populated 1\nfrozen 1\n");
    assert_eq!(cg.freezer_state("/pod").unwrap(), FreezerState::Frozen);
    assert_eq!(
        cg.freeze("/pod", Duration::ZERO).unwrap(),
        pod.join("cgroup.freeze")
    );
}

#[test]
fn v1_freezer_is_preferred_on_hybrid_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mountinfo = format!(
        "\
37 31 0:34 / {r}/freezer rw - cgroup cgroup rw,freezer
41 31 0:38 / {r}/unified rw - cgroup2 cgroup2 rw
",
        r = root.display()
    );
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    assert_eq!(cg.freezer_kind(), Some(FreezerKind::V1));
    let pod = root.join("freezer/pod");
    write(&pod, "freezer.state", "THAWED\n");
    std::fs::create_dir_all(root.join("unified/pod")).unwrap();

    let file = cg.freeze("/pod", Duration::from_secs(1)).unwrap();
    assert_eq!(file, pod.join("freezer.state"));
    assert_eq!(read(&file), "FROZEN\n");
    assert_eq!(cg.freezer_state("/pod").unwrap(), FreezerState::Frozen);
    assert_eq!(cg.thaw("/pod").unwrap(), file);
    assert_eq!(read(&file), "THAWED\n");

    write(&pod, "freezer.state", "SLUSHY\n");
    let err = cg.freezer_state("/pod").unwrap_err().to_string();
    assert!(
        err.contains("freezer.state") && err.contains("SLUSHY"),
        "{err}"
    );
}

#[test]
fn freezing_needs_a_freezer_and_an_existing_cgroup() {
    let tmp = tempfile::tempdir().unwrap();
    let mountinfo = format!(
        "35 31 0:32 / {}/memory rw - cgroup cgroup rw,memory\n",
        tmp.path().display()
    );
    let cg = Cgroups::from_mountinfo(&mountinfo).unwrap();
    assert_eq!(cg.freezer_kind(), None);
    let err = cg.freeze("/pod", Duration::ZERO).unwrap_err();
    assert!(matches!(err, CgroupError::FreezerUnavailable), "{err}");

    let cg = v2_fake(tmp.path());
    let err = cg.freeze("/missing", Duration::ZERO).unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/missing"), "{err}");
}

/// A v2 cgroup with the cpu and memory files of a fresh cgroup. (Fake files are not
/// truncated by cgroupfs-style writes, so the written values are checked in the
/// returned list, not in the files.)
fn v2_cpu_cgroup(dir: &Path, cpu_max: &str) {
    write(dir, "cpu.max", cpu_max);
    write(dir, "cpu.max.burst", "0\n");
    write(dir, "cpu.weight", "100\n");
    write(dir, "cpu.idle", "0\n");
    write(dir, "memory.max", "max\n");
    write(dir, "memory.high", "max\n");
}

fn written(dir: &Path, file: &str, value: &str) -> Written {
    Written {
        file: dir.join(file),
        value: value.to_string(),
    }
}

#[test]
fn v2_policy_files_in_kernel_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = v2_fake(tmp.path());
    let dir: PathBuf = tmp.path().join("pod");
    v2_cpu_cgroup(&dir, "max 100000\n");

    let done = cg
        .apply_resources(
            "/pod",
            &Resources {
                cpu_shares: Some(1024),
                cpu_quota_us: Some(10_000),
                cpu_period_us: Some(50_000),
                cpu_burst_us: Some(5_000),
                cpu_idle: Some(true),
                memory_limit_bytes: Some(1 << 30),
                memory_high: Some(MemoryHigh::Unlimited),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        done,
        [
            written(&dir, "cpu.max.burst", "0"),
            written(&dir, "cpu.max", "10000 50000"),
            written(&dir, "cpu.weight", "39"),
            written(&dir, "cpu.idle", "1"),
            written(&dir, "cpu.max.burst", "5000"),
            written(&dir, "memory.max", "1073741824"),
            written(&dir, "memory.high", "max"),
        ]
    );

    // A new period alone keeps the quota; a quota alone keeps the period.
    let other = tmp.path().join("other");
    v2_cpu_cgroup(&other, "20000 100000\n");
    let period_only = Resources {
        cpu_period_us: Some(50_000),
        ..Default::default()
    };
    assert_eq!(
        cg.apply_resources("/other", &period_only).unwrap(),
        [written(&other, "cpu.max", "20000 50000")]
    );
    let quota_only = Resources {
        cpu_quota_us: Some(-1),
        memory_high: Some(MemoryHigh::Bytes(1 << 20)),
        ..Default::default()
    };
    assert_eq!(
        cg.apply_resources("/other", &quota_only).unwrap(),
        [
            written(&other, "cpu.max", "max"),
            written(&other, "memory.high", "1048576"),
        ]
    );
    // cpu.weight read back as shares writes back as the same weight.
    let shares = cg.read_cpu_shares("/other").unwrap().unwrap();
    assert_eq!(shares_to_weight(shares), 100);
}

#[test]
fn v2_refusals_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = v2_fake(tmp.path());
    let dir = tmp.path().join("pod");
    v2_cpu_cgroup(&dir, "max 100000\n");
    std::fs::remove_file(dir.join("cpu.idle")).unwrap();
    let before = read(&dir.join("cpu.max"));

    // An older kernel without cpu.idle.
    let err = cg
        .apply_resources(
            "/pod",
            &Resources {
                cpu_quota_us: Some(50_000),
                cpu_idle: Some(true),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(err.to_string().contains("cpu.idle"), "{err}");

    // A burst on top of no quota (the current one: max).
    let err = cg
        .apply_resources(
            "/pod",
            &Resources {
                cpu_burst_us: Some(1_000),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CgroupError::CpuBurst {
                burst_us: 1_000,
                quota_us: None,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(read(&dir.join("cpu.max")), before);
    assert_eq!(read(&dir.join("cpu.max.burst")), "0\n");
}
