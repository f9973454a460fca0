//! Stats, OOM counters and pid listing against fake cgroup trees in a temp dir, so the
//! v1 and v2 code paths run on any host (this development machine is hybrid, with no
//! controllers in its cgroup2 tree).

use std::path::Path;

use kraal_cgroups::{Cgroups, Hierarchy};

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
