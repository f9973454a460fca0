//! Issue 4: pod annotations (DESIGN.md §4) enforced by the kernel. Every test drives kraald
//! through its CRI socket exactly as kubelet does, then reads what the kernel sees: cgroup
//! files, CPU time charged to cgroups, memory usage, oom_score_adj.
//!
//! Every test but the invalid-annotation one takes one lock, so no two of them run at the
//! same time: they measure CPU time and memory, and the development machines have two cores.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kraal_e2e::{CgroupDirs, Kraald, cri, keyed, pod_config, shell_container};
use tonic::Code;

const MIB: i64 = 1024 * 1024;
/// sh as PID 1 ignores SIGTERM unless it traps it; this one exits 0 on TERM.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";
const BURN: &str = "while :; do :; done";

// ---------------------------------------------------------------------------------------------
// Helpers: cgroup paths, files, polling.
// ---------------------------------------------------------------------------------------------

/// Serialises the tests that measure CPU time or memory.
static MEASURE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cgroup_parent(pod: &cri::PodSandboxConfig) -> String {
    pod.linux.as_ref().expect("linux").cgroup_parent.clone()
}

fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Polls `check` every 20ms until it returns `Some` or `timeout` passes.
async fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn with_resources(
    mut config: cri::ContainerConfig,
    resources: cri::LinuxContainerResources,
) -> cri::ContainerConfig {
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(resources),
        ..Default::default()
    });
    config
}

/// A CPU limit as kubelet sends it: period 100ms, the quota, and shares for the request
/// (kubelet's `milliCPUToShares`, request = limit).
fn cpu_limit(quota_us: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: quota_us,
        cpu_shares: (quota_us * 1024 / 100_000).max(2),
        ..Default::default()
    }
}

fn with_annotations(
    mut pod: cri::PodSandboxConfig,
    annotations: &[(&str, &str)],
) -> cri::PodSandboxConfig {
    for (key, value) in annotations {
        pod.annotations.insert(key.to_string(), value.to_string());
    }
    pod
}

/// Waits until the container's cgroup has charged `at_least` of CPU time (it is running).
async fn wait_burning(cgroup: &CgroupDirs, at_least: Duration) {
    let got = poll(Duration::from_secs(10), || {
        Some(cgroup.cpu_usage()).filter(|used| *used >= at_least)
    })
    .await;
    assert!(
        got.is_some(),
        "{} did not reach {at_least:?} of CPU time within 10s: the burner is not running",
        cgroup.cpu_usage_file().display()
    );
}

async fn list_containers(kraald: &Kraald, pod: &str) -> Vec<cri::Container> {
    kraald
        .runtime()
        .await
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.to_string(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
}

async fn list_pods(kraald: &Kraald) -> Vec<cri::PodSandbox> {
    kraald
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
}

fn dir_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The lines of kraald's log that mention any of `needles`, without terminal colours.
fn log_lines(kraald: &Kraald, needles: &[&str]) -> String {
    let log = kraald.log();
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `assert!(problems.is_empty())` with every problem listed.
fn assert_no_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// Compares a cgroup file with what it should hold, as a problem line if it does not.
fn expect_file(problems: &mut Vec<String>, path: &Path, want: &str, why: &str) {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim() == want => {}
        Ok(text) => problems.push(format!(
            "{why}: {} is {:?}, expected {want:?}",
            path.display(),
            text.trim()
        )),
        Err(e) => problems.push(format!("{why}: reading {}: {e}", path.display())),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Invalid annotations.
// ---------------------------------------------------------------------------------------------

/// One pod whose annotations kraal must refuse: the annotations, the key and value the
/// message must name, a fragment of what is wrong, and a fragment of the expected form (the
/// texts of crates/kraal-policy).
struct Invalid {
    annotations: &'static [(&'static str, &'static str)],
    key: &'static str,
    value: &'static str,
    problem: &'static str,
    expected: &'static str,
}

const fn bad(
    annotations: &'static [(&'static str, &'static str)],
    key: &'static str,
    value: &'static str,
    problem: &'static str,
    expected: &'static str,
) -> Invalid {
    Invalid {
        annotations,
        key,
        value,
        problem,
        expected,
    }
}

const PORTS: &str = r#"a port list like "20000-20999,8080" or "auto:<count>""#;
const CAP: &str = r#"a bit rate above 0 like "100M""#;
const KRAAL_BW: &str = r#""min=<bits/s>,max=<bits/s>[,burst=<bytes>]""#;
const QOS: &str = r#""online" or "offline""#;
const CPU: &str = r#"a CPU quantity of at least 0 like "500m""#;
const PERIOD: &str = "a duration from 1ms to 1s in whole microseconds";
const MEMORY: &str = r#"a memory size above 0 in bytes like "512Mi""#;
const UNKNOWN: &str = "one of kraal.dev/bind-ports, kraal.dev/connect-ports";
const DNS: &str = "is a DNS-1123 label";

#[rustfmt::skip]
const INVALID: &[Invalid] = &[
    // Quantities: bit rates.
    bad(&[("kubernetes.io/egress-bandwidth", "-5M")], "kubernetes.io/egress-bandwidth", "-5M", "negative values are not allowed", CAP),
    bad(&[("kubernetes.io/egress-bandwidth", "10Q")], "kubernetes.io/egress-bandwidth", "10Q", r#"unknown suffix "Q""#, CAP),
    bad(&[("kubernetes.io/ingress-bandwidth", "1.5.5")], "kubernetes.io/ingress-bandwidth", "1.5.5", r#"unknown suffix ".5""#, CAP),
    bad(&[("kubernetes.io/ingress-bandwidth", "")], "kubernetes.io/ingress-bandwidth", "", "the value is empty", CAP),
    bad(&[("kubernetes.io/egress-bandwidth", "0")], "kubernetes.io/egress-bandwidth", "0", "the rate must be greater than 0", CAP),
    // Quantities: memory-high.
    bad(&[("kraal.dev/memory-high", "-5M")], "kraal.dev/memory-high", "-5M", "negative values are not allowed", MEMORY),
    bad(&[("kraal.dev/memory-high", "10Q")], "kraal.dev/memory-high", "10Q", r#"unknown suffix "Q""#, MEMORY),
    bad(&[("kraal.dev/memory-high", "1.5.5Mi")], "kraal.dev/memory-high", "1.5.5Mi", r#"unknown suffix ".5Mi""#, MEMORY),
    bad(&[("kraal.dev/memory-high", "")], "kraal.dev/memory-high", "", "the value is empty", MEMORY),
    bad(&[("kraal.dev/memory-high", "0")], "kraal.dev/memory-high", "0", "memory-high must be greater than 0", MEMORY),
    bad(&[("kraal.dev/memory-high.db", "1GB")], "kraal.dev/memory-high.db", "1GB", r#"unknown suffix "GB""#, MEMORY),
    // Quantities: cpu-burst.
    bad(&[("kraal.dev/cpu-burst", "500x")], "kraal.dev/cpu-burst", "500x", r#"unknown suffix "x""#, CPU),
    bad(&[("kraal.dev/cpu-burst", "-500m")], "kraal.dev/cpu-burst", "-500m", "negative values are not allowed", CPU),
    bad(&[("kraal.dev/cpu-burst", "")], "kraal.dev/cpu-burst", "", "the value is empty", CPU),
    bad(&[("kraal.dev/cpu-burst.web", "1.5.5")], "kraal.dev/cpu-burst.web", "1.5.5", r#"unknown suffix ".5""#, CPU),
    bad(&[("kraal.dev/cpu-burst", "lots")], "kraal.dev/cpu-burst", "lots", "no number before the suffix", CPU),
    // Durations: cpu-period.
    bad(&[("kraal.dev/cpu-period", "0ms")], "kraal.dev/cpu-period", "0ms", "outside the kernel's CFS period range 1ms..=1s", PERIOD),
    bad(&[("kraal.dev/cpu-period", "2s")], "kraal.dev/cpu-period", "2s", "2s is outside the kernel's CFS period range", PERIOD),
    bad(&[("kraal.dev/cpu-period", "fast")], "kraal.dev/cpu-period", "fast", r#"expected a number at "fast""#, PERIOD),
    bad(&[("kraal.dev/cpu-period", "")], "kraal.dev/cpu-period", "", "the value is empty", PERIOD),
    bad(&[("kraal.dev/cpu-period", "100")], "kraal.dev/cpu-period", "100", r#"missing unit after "100""#, PERIOD),
    bad(&[("kraal.dev/cpu-period", "250us")], "kraal.dev/cpu-period", "250us", "is outside the kernel's CFS period range", PERIOD),
    bad(&[("kraal.dev/cpu-period.worker", "1.0005ms")], "kraal.dev/cpu-period.worker", "1.0005ms", "not a whole number of microseconds", PERIOD),
    // QoS class.
    bad(&[("kraal.dev/qos-class", "Online")], "kraal.dev/qos-class", "Online", "unknown QoS class", QOS),
    bad(&[("kraal.dev/qos-class", "batch")], "kraal.dev/qos-class", "batch", "unknown QoS class", QOS),
    bad(&[("kraal.dev/qos-class", "")], "kraal.dev/qos-class", "", "unknown QoS class", QOS),
    // Port lists.
    bad(&[("kraal.dev/bind-ports", "70000")], "kraal.dev/bind-ports", "70000", "port 70000 is outside 1..=65535", PORTS),
    bad(&[("kraal.dev/bind-ports", "30-20")], "kraal.dev/bind-ports", "30-20", "range start 30 is above its end 20", PORTS),
    bad(&[("kraal.dev/bind-ports", "20000-20099,20050")], "kraal.dev/bind-ports", "20000-20099,20050", "20000-20099 overlaps 20050", PORTS),
    bad(&[("kraal.dev/bind-ports", "")], "kraal.dev/bind-ports", "", "the list is empty", PORTS),
    bad(&[("kraal.dev/connect-ports", "auto:0")], "kraal.dev/connect-ports", "auto:0", "auto:0 is not a block size", PORTS),
    bad(&[("kraal.dev/connect-ports", "auto:x")], "kraal.dev/connect-ports", "auto:x", "auto:x is not a block size", PORTS),
    bad(&[("kraal.dev/connect-ports", "80,,81")], "kraal.dev/connect-ports", "80,,81", "entry 2 is empty", PORTS),
    bad(&[("kraal.dev/bind-ports", "1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33")], "kraal.dev/bind-ports", "1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33", "17 separate ranges; at most 16", PORTS),
    // kraal bandwidth.
    bad(&[("kraal.dev/egress-bandwidth", "min=80M,max=20M")], "kraal.dev/egress-bandwidth", "min=80M,max=20M", "min 80000000 bit/s is above max 20000000 bit/s", KRAAL_BW),
    bad(&[("kraal.dev/egress-bandwidth", "min=10M")], "kraal.dev/egress-bandwidth", "min=10M", "max is missing", KRAAL_BW),
    bad(&[("kraal.dev/ingress-bandwidth", "max=")], "kraal.dev/ingress-bandwidth", "max=", "max: the value is empty", KRAAL_BW),
    bad(&[("kraal.dev/ingress-bandwidth", "max=1M,rate=2")], "kraal.dev/ingress-bandwidth", "max=1M,rate=2", r#"unknown field "rate""#, "for a plain cap use kubernetes.io/ingress-bandwidth"),
    bad(&[("kraal.dev/egress-bandwidth", "max=0")], "kraal.dev/egress-bandwidth", "max=0", "max must be greater than 0", KRAAL_BW),
    // Keys.
    bad(&[("kraal.dev/cpu_burst", "500m")], "kraal.dev/cpu_burst", "500m", r#"unknown annotation under "kraal.dev/" (did you mean "kraal.dev/cpu-burst"?)"#, UNKNOWN),
    bad(&[("kraal.dev/qos-class.web", "offline")], "kraal.dev/qos-class.web", "offline", "kraal.dev/qos-class applies to the whole pod and has no per-container form", "kraal.dev/qos-class without a container suffix"),
    bad(&[("kraal.dev/bind-ports.web", "8080")], "kraal.dev/bind-ports.web", "8080", "applies to the whole pod", "kraal.dev/bind-ports without a container suffix"),
    bad(&[("kraal.dev/cpu-burst.Web", "500m")], "kraal.dev/cpu-burst.Web", "500m", "may hold only a-z, 0-9 and '-'", DNS),
    // Conflicts between keys, and one bad key among good ones and foreign ones.
    bad(
        &[("kubernetes.io/egress-bandwidth", "100M"), ("kraal.dev/egress-bandwidth", "max=200M")],
        "kraal.dev/egress-bandwidth", "max=200M",
        r#"conflicts with "kubernetes.io/egress-bandwidth" = "100M""#,
        "only one of kubernetes.io/egress-bandwidth (a plain cap) and kraal.dev/egress-bandwidth",
    ),
    bad(
        &[("kraal.dev/qos-class", "offline"), ("kraal.dev/ingress-bandwidth", "min=1M,max=2M")],
        "kraal.dev/ingress-bandwidth", "min=1M,max=2M",
        "offline pods get no guarantee",
        "no min (or min=0) for an offline pod",
    ),
    bad(
        &[
            ("app.kubernetes.io/name", "web"),
            ("kraal.dev/qos-class", "offline"),
            ("kraal.dev/cpu-burst", "500m"),
            ("kraal.dev/memory-high", "64Mi"),
            ("kraal.dev/bind-ports", "20000-20999,x"),
        ],
        "kraal.dev/bind-ports", "20000-20999,x",
        r#"entry "x" is not a port or a port range"#,
        PORTS,
    ),
];

/// The state kraald keeps for sandboxes: `<state>/sandboxes/<id>.json` and `<state>/p/<id>/`.
fn sandbox_records(kraald: &Kraald) -> Vec<String> {
    let mut found: Vec<String> = dir_entries(&kraald.state.join("sandboxes"))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .map(|n| format!("sandboxes/{n}"))
        .collect();
    found.extend(
        dir_entries(&kraald.state.join("p"))
            .into_iter()
            .map(|n| format!("p/{n}")),
    );
    found
}

/// The directories of `rel` that exist, in every hierarchy kraal uses.
fn existing_cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    CgroupDirs::of(rel).existing()
}

#[tokio::test]
async fn invalid_annotations_are_refused_and_create_nothing() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;

    // A good pod first, to see where kraald keeps a sandbox: the checks below look there.
    let good = with_annotations(
        pod_config("policy-good", true),
        &[
            ("kraal.dev/qos-class", "online"),
            ("app.kubernetes.io/name", "policy-e2e"),
        ],
    );
    let good_id = kraald
        .run_pod(good.clone())
        .await
        .unwrap_or_else(|s| panic!("RunPodSandbox with good annotations: {s:?}"));
    let records = sandbox_records(&kraald);
    assert!(
        records.contains(&format!("sandboxes/{good_id}.json"))
            && records.contains(&format!("p/{good_id}")),
        "kraald keeps its sandbox records somewhere else than sandboxes/<id>.json and p/<id>: {records:?}; fix this test's sandbox_records()"
    );
    // kraald's own report of where the pod lives, and kraal_cgroups' view that the checks
    // below use for pods that never get a status, agree; and the directories exist.
    let reported = kraald.pod_cgroup(&good_id).await;
    assert_eq!(reported, CgroupDirs::of(&cgroup_parent(&good)));
    assert_eq!(
        existing_cgroup_dirs(&cgroup_parent(&good)).len(),
        reported.all().len(),
        "the good pod's cgroup {} is missing from some hierarchy ({reported:?}): the checks below would prove nothing",
        cgroup_parent(&good)
    );
    kraald.remove_pod(&good_id).await;
    assert_eq!(sandbox_records(&kraald), Vec::<String>::new());

    assert!(INVALID.len() >= 30, "only {} invalid cases", INVALID.len());
    let mut problems = Vec::new();
    for (index, case) in INVALID.iter().enumerate() {
        let pod = with_annotations(pod_config(&format!("bad-{index}"), true), case.annotations);
        let label = format!("case {index} {:?}", case.annotations);
        match kraald.run_pod(pod.clone()).await {
            Ok(id) => {
                problems.push(format!("{label}: accepted as sandbox {id}"));
                kraald.remove_pod(&id).await;
                continue;
            }
            Err(status) => {
                let message = status.message();
                if status.code() != Code::InvalidArgument {
                    problems.push(format!(
                        "{label}: code {:?}, not InvalidArgument: {message}",
                        status.code()
                    ));
                }
                // The parser quotes key and value as Rust debug strings.
                let key = format!("{:?}", case.key);
                let value = format!("{:?}", case.value);
                let pair = format!("{key} = {value}");
                for (what, needle) in [
                    ("the key", key.as_str()),
                    ("the value", value.as_str()),
                    ("key = value", pair.as_str()),
                    ("what is wrong", case.problem),
                ] {
                    if !message.contains(needle) {
                        problems.push(format!(
                            "{label}: the message does not name {what} ({needle}): {message}"
                        ));
                    }
                }
                let form = message
                    .rsplit_once("; expected ")
                    .map(|(_, form)| form)
                    .unwrap_or_default();
                if !form.contains(case.expected) {
                    problems.push(format!(
                        "{label}: the message does not say the expected form ({:?}): {message}",
                        case.expected
                    ));
                }
            }
        }
        // Nothing was created.
        let left = existing_cgroup_dirs(&cgroup_parent(&pod));
        if !left.is_empty() {
            problems.push(format!("{label}: cgroups left behind: {left:?}"));
        }
    }
    let pods = list_pods(&kraald).await;
    if !pods.is_empty() {
        problems.push(format!(
            "ListPodSandbox is not empty after only refused pods: {:?}",
            pods.iter().map(|p| &p.id).collect::<Vec<_>>()
        ));
    }
    let records = sandbox_records(&kraald);
    if !records.is_empty() {
        problems.push(format!(
            "sandbox records left in the state dir: {records:?}"
        ));
    }
    assert_no_problems("RunPodSandbox with invalid annotations", &problems);

    // CreateContainer: the annotations parse, but do not fit a container's CRI limits.
    let pod_cfg = with_annotations(
        pod_config("policy-fit", true),
        &[
            ("kraal.dev/cpu-burst.nolimit", "500m"),
            ("kraal.dev/cpu-burst.lowlimit", "500m"),
            ("kraal.dev/memory-high.memfull", "128Mi"),
            ("kraal.dev/memory-high", "1Gi"),
            ("kraal.dev/cpu-period.tinyquota", "20ms"),
        ],
    );
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .unwrap_or_else(|s| panic!("RunPodSandbox policy-fit: {s:?}"));
    let memory = |bytes: i64| cri::LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        ..Default::default()
    };
    #[rustfmt::skip]
    let container_cases: Vec<(&str, cri::LinuxContainerResources, &str, &str, &str, &str)> = vec![
        // (container, resources, key, value, problem, expected form)
        ("nolimit", cri::LinuxContainerResources::default(), "kraal.dev/cpu-burst.nolimit", "500m",
         r#"cpu-burst set but container "nolimit" has no CPU limit"#, "a CPU limit (resources.limits.cpu)"),
        ("lowlimit", cpu_limit(20_000), "kraal.dev/cpu-burst.lowlimit", "500m",
         r#"cpu-burst 500m is above container "lowlimit"'s CPU limit 200m"#, "a cpu-burst of at most 200m"),
        ("memfull", memory(128 * MIB), "kraal.dev/memory-high.memfull", "128Mi",
         r#"memory-high 134217728 bytes is not below container "memfull"'s memory limit 134217728 bytes"#,
         "a memory-high below 134217728 bytes"),
        ("podwide", memory(512 * MIB), "kraal.dev/memory-high", "1Gi",
         r#"memory-high 1073741824 bytes is not below container "podwide"'s memory limit 536870912 bytes"#,
         "a memory-high below 536870912 bytes"),
        ("tinyquota", cpu_limit(2_000), "kraal.dev/cpu-period.tinyquota", "20ms",
         "quota of 400us, below the kernel's minimum of 1000us", "a cpu-period of at least 50000us"),
    ];
    let mut problems = Vec::new();
    for (name, resources, key, value, problem, expected) in container_cases {
        let config = with_resources(shell_container(name, &image, SERVE), resources);
        match kraald.create(&pod, &pod_cfg, config).await {
            Ok(id) => problems.push(format!("container {name}: created as {id}")),
            Err(status) => {
                let message = status.message();
                if status.code() != Code::InvalidArgument {
                    problems.push(format!(
                        "container {name}: code {:?}, not InvalidArgument: {message}",
                        status.code()
                    ));
                }
                for needle in [&format!("{key:?} = {value:?}"), problem, expected] {
                    if !message.contains(needle) {
                        problems.push(format!(
                            "container {name}: the message does not say {needle:?}: {message}"
                        ));
                    }
                }
            }
        }
    }
    let listed = list_containers(&kraald, &pod).await;
    if !listed.is_empty() {
        problems.push(format!(
            "ListContainers is not empty: {:?}",
            listed.iter().map(|c| &c.id).collect::<Vec<_>>()
        ));
    }
    for dir in existing_cgroup_dirs(&cgroup_parent(&pod_cfg)) {
        let children: Vec<String> = dir_entries(&dir)
            .into_iter()
            .filter(|n| n.starts_with("kraal-"))
            .collect();
        if !children.is_empty() {
            problems.push(format!(
                "container cgroups left under {}: {children:?}",
                dir.display()
            ));
        }
    }
    let container_dirs = dir_entries(&kraald.state.join("c"));
    if !container_dirs.is_empty() {
        problems.push(format!(
            "container state left in {}: {container_dirs:?}",
            kraald.state.join("c").display()
        ));
    }
    assert_no_problems(
        "CreateContainer with settings that do not fit its limits",
        &problems,
    );
    kraald.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------------
// 2. The CRI CPU limit, as the kernel enforces it.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cpu_quota_holds_a_burner_to_its_limit() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("quota", true);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let id = kraald
        .run_container(
            &pod,
            &pod_cfg,
            with_resources(shell_container("burner", &image, BURN), cpu_limit(20_000)),
        )
        .await;
    let cgroup = kraald.container_cgroup(&id).await;
    // v1 cpu.cfs_quota_us and cpu.cfs_period_us, v2 cpu.max "20000 100000".
    assert_eq!(
        cgroup.cpu_max(),
        (Some(20_000), 100_000),
        "the CRI limit 20000/100000 is not in {:?}",
        cgroup.controller("cpu")
    );
    wait_burning(&cgroup, Duration::from_millis(50)).await;

    let (u0, t0) = (cgroup.cpu_usage(), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (u1, t1) = (cgroup.cpu_usage(), Instant::now());
    let cpus = (u1 - u0).as_secs_f64() / (t1 - t0).as_secs_f64();
    assert!(
        (cpus - 0.2).abs() <= 0.03,
        "a burner limited to 20000us/100000us used {cpus:.3} CPUs over {:?} ({}), expected 0.2 ± 0.03",
        t1 - t0,
        cgroup.cpu_usage_file().display()
    );
    let cpu_stat = cgroup.controller("cpu").join("cpu.stat");
    let throttled = cgroup
        .cpu_stat("nr_throttled")
        .expect("cpu.stat nr_throttled");
    assert!(
        throttled > 0,
        "cpu.stat nr_throttled is 0: {}",
        read_trim(&cpu_stat)
    );
    kraald.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------------
// 3. cpu-burst: after a quiet spell a spike runs above its quota.
// ---------------------------------------------------------------------------------------------

/// Quota of the two CPU-limited containers of the burst test: 10ms per 100ms period.
const BURST_QUOTA_US: i64 = 10_000;

/// Spikes: spins for about a second of wall time (far more CPU than the quota allows, at any
/// machine speed), then is quiet for a second, in which unused quota is saved up to the
/// burst.
const SPIKES: &str = "while :; do end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done; sleep 1; done";

/// The kernel's own account of the burst, not wall-clock timings (which an emulated guest
/// cannot keep): after a quiet spell, a container with `kraal.dev/cpu-burst` runs above its
/// quota in one period (`cpu.stat` counts it in `nr_bursts`, v1 and v2 alike), while one
/// with the same limit and no burst is throttled at its quota and never bursts.
#[tokio::test]
async fn cpu_burst_lets_a_spike_run_above_its_quota() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    // The kernel refuses a burst above the quota (and kraal-policy with it), so the largest
    // burst for a 100m limit is 100m: 10ms a period saved up, 20ms of runtime after idling.
    // The burst is scoped to one container: the other, with the same limit, has none.
    let pod_cfg = with_annotations(
        pod_config("burst", true),
        &[("kraal.dev/cpu-burst.spiky", "100m")],
    );
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut cgroups = HashMap::new();
    for name in ["spiky", "steady"] {
        let config = with_resources(
            shell_container(name, &image, SPIKES),
            cpu_limit(BURST_QUOTA_US),
        );
        let id = kraald.run_container(&pod, &pod_cfg, config).await;
        cgroups.insert(name, kraald.container_cgroup(&id).await);
    }

    // The annotation reached the kernel: 100m × 100000us / 1000 = 10000us, for spiky only
    // (v1 cpu.cfs_burst_us, v2 cpu.max.burst).
    let burst_file = cgroups["spiky"].cpu_burst_file();
    let burst = read_trim(&burst_file);
    assert_eq!(
        burst,
        "10000",
        "kraal.dev/cpu-burst.spiky = 100m was not applied: {} is {burst}, expected 10000 (100m × period 100000us / 1000)\n{}",
        burst_file.display(),
        kraald.log()
    );
    let steady_file = cgroups["steady"].cpu_burst_file();
    let steady_burst = read_trim(&steady_file);
    assert_eq!(
        steady_burst,
        "0",
        "container steady has no cpu-burst annotation but {} is {steady_burst}",
        steady_file.display()
    );

    let cpu_stat = |name: &str| read_trim(&cgroups[name].controller("cpu").join("cpu.stat"));
    // A few spikes: each starts with saved-up quota, so spiky's first period runs over.
    let bursts = poll(Duration::from_secs(60), || {
        cgroups["spiky"].cpu_stat("nr_bursts").filter(|n| *n > 0)
    })
    .await;
    assert!(
        bursts.is_some(),
        "spiky never ran above its quota (nr_bursts 0) in a minute of spikes: {}",
        cpu_stat("spiky")
    );
    // Both spin far beyond the quota: both are throttled, only spiky ever bursts.
    for name in ["spiky", "steady"] {
        let throttled = poll(Duration::from_secs(60), || {
            cgroups[name].cpu_stat("nr_throttled").filter(|n| *n > 0)
        })
        .await;
        assert!(
            throttled.is_some(),
            "{name} was never throttled at its 10ms quota: {}",
            cpu_stat(name)
        );
    }
    assert_eq!(
        cgroups["steady"].cpu_stat("nr_bursts"),
        Some(0),
        "steady has no burst and yet ran above its quota: {}",
        cpu_stat("steady")
    );
    kraald.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------------
// 4. cpu-period: the period changes, the limit does not.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn cpu_period_rescales_the_quota() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = with_annotations(
        pod_config("period", true),
        &[
            ("kraal.dev/cpu-period", "50ms"),
            ("kraal.dev/cpu-period.slow", "200ms"),
        ],
    );
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut problems = Vec::new();
    // (container, quota per 100ms from kubelet, period kraal must set, quota kraal must set)
    for (name, quota, period_us, quota_us, source) in [
        (
            "fast",
            20_000,
            50_000,
            10_000,
            "kraal.dev/cpu-period = 50ms",
        ),
        (
            "slow",
            20_000,
            200_000,
            40_000,
            "kraal.dev/cpu-period.slow = 200ms",
        ),
        (
            "half",
            50_000,
            50_000,
            25_000,
            "kraal.dev/cpu-period = 50ms",
        ),
    ] {
        let id = kraald
            .run_container(
                &pod,
                &pod_cfg,
                with_resources(shell_container(name, &image, SERVE), cpu_limit(quota)),
            )
            .await;
        let cgroup = kraald.container_cgroup(&id).await;
        let got = cgroup.cpu_max();
        if got != (Some(quota_us), period_us) {
            problems.push(format!(
                "{source} not applied to container {name} (CRI quota {quota}/100000): quota and period in {} are {got:?}, expected ({quota_us}, {period_us})",
                cgroup.controller("cpu").display()
            ));
        }
    }
    assert_no_problems("cpu-period", &problems);
    kraald.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------------
// 5. qos-class offline: minimal CPU weight, first to be OOM-killed.
// ---------------------------------------------------------------------------------------------

/// What makes a cgroup offline (DESIGN.md §5). v1: `cpu.shares` 2, and not `cpu.idle`: an
/// idle v1 group reads `cpu.shares` 3 and refuses writes to it (EINVAL), which kubelet's
/// resource updates need; a `cpu.idle` of 1 would show here as shares 3. v2: `cpu.weight` 1
/// and `cpu.idle` 1.
fn offline_cpu_files(cgroup: &CgroupDirs) -> Vec<(PathBuf, &'static str)> {
    let dir = cgroup.controller("cpu");
    if cgroup.v1("cpu").is_some() {
        vec![(dir.join("cpu.shares"), "2")]
    } else {
        vec![(dir.join("cpu.weight"), "1"), (dir.join("cpu.idle"), "1")]
    }
}

/// An online container keeps the weight kubelet asked for.
fn online_cpu_files(cgroup: &CgroupDirs, shares: u64) -> Vec<(PathBuf, String)> {
    let dir = cgroup.controller("cpu");
    if cgroup.v1("cpu").is_some() {
        vec![(dir.join("cpu.shares"), shares.to_string())]
    } else {
        // kubelet's and runc's conversion of shares to cpu.weight.
        let weight = 1 + ((shares - 2) * 9999) / 262_142;
        vec![
            (dir.join("cpu.weight"), weight.to_string()),
            (dir.join("cpu.idle"), "0".to_string()),
        ]
    }
}

/// The highest online CPU, to pin both burners to.
fn last_cpu() -> u32 {
    let online = read_trim(Path::new("/sys/devices/system/cpu/online"));
    online
        .split(',')
        .filter_map(|part| part.rsplit('-').next()?.trim().parse().ok())
        .max()
        .expect("an online CPU")
}

#[tokio::test]
async fn offline_yields_the_cpu_to_online() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let core = last_cpu();
    let online_cfg = pod_config("online", true);
    let offline_cfg = with_annotations(
        pod_config("offline", true),
        &[("kraal.dev/qos-class", "offline")],
    );
    let online_pod = kraald
        .run_pod(online_cfg.clone())
        .await
        .expect("online pod");
    let offline_pod = kraald
        .run_pod(offline_cfg.clone())
        .await
        .expect("offline pod");
    // Both as kubelet would send them for a 1-CPU request: shares 1024, no quota; the
    // online one with the highest oom_score_adj the CRI allows, the offline one lower.
    let burner = |oom_score_adj: i64| {
        with_resources(
            shell_container("burner", &image, BURN),
            cri::LinuxContainerResources {
                cpu_shares: 1024,
                cpuset_cpus: core.to_string(),
                oom_score_adj,
                ..Default::default()
            },
        )
    };
    let online = kraald
        .run_container(&online_pod, &online_cfg, burner(1000))
        .await;
    let offline = kraald
        .run_container(&offline_pod, &offline_cfg, burner(500))
        .await;
    let online_cg = kraald.container_cgroup(&online).await;
    let offline_cg = kraald.container_cgroup(&offline).await;
    for cg in [&online_cg, &offline_cg] {
        let pids = cg.procs();
        assert!(!pids.is_empty(), "no process in {cg:?}");
        for pid in pids {
            let allowed = read_trim(&PathBuf::from(format!("/proc/{pid}/status")));
            let allowed = allowed
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or_default()
                .trim()
                .to_string();
            assert_eq!(
                allowed,
                core.to_string(),
                "pid {pid} of {cg:?} is not pinned to CPU {core} (cpuset_cpus): the measurement would be meaningless"
            );
        }
    }
    wait_burning(&online_cg, Duration::from_millis(50)).await;

    let mut problems = Vec::new();
    let usage = |cg: &CgroupDirs| cg.cpu_usage();
    let (on0, off0, t0) = (usage(&online_cg), usage(&offline_cg), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (on1, off1, wall) = (usage(&online_cg), usage(&offline_cg), t0.elapsed());
    let (on, off) = (
        (on1 - on0).as_nanos() as f64,
        (off1 - off0).as_nanos() as f64,
    );
    let share = on / (on + off);
    eprintln!(
        "CPU {core} over {wall:?}: online {:.3}, offline {:.3} of the core; online's share {share:.3}",
        on / wall.as_nanos() as f64,
        off / wall.as_nanos() as f64
    );
    if share < 0.9 {
        problems.push(format!(
            "online got {:.1}% of CPU {core} and offline {:.1}% (online's share of the two {:.1}%, expected >= 90%)",
            100.0 * on / wall.as_nanos() as f64,
            100.0 * off / wall.as_nanos() as f64,
            100.0 * share
        ));
    }

    let why = "kraal.dev/qos-class = offline not applied";
    let offline_pod_cg = kraald.pod_cgroup(&offline_pod).await;
    for (cgroup, what) in [
        (&offline_pod_cg, "offline pod cgroup"),
        (&offline_cg, "offline container cgroup"),
    ] {
        for (file, want) in offline_cpu_files(cgroup) {
            expect_file(&mut problems, &file, want, &format!("{why} to the {what}"));
        }
    }
    let why = "online (the default) must keep kubelet's weights";
    for (file, want) in online_cpu_files(&online_cg, 1024) {
        expect_file(&mut problems, &file, &want, why);
    }
    for (cg, want, why) in [
        (
            &offline_cg,
            "1000",
            "an offline container must be the first the OOM killer picks (CRI oom_score_adj 500)",
        ),
        (
            &online_cg,
            "999",
            "an online container is clamped below every offline one (CRI oom_score_adj 1000)",
        ),
    ] {
        for pid in cg.procs() {
            expect_file(
                &mut problems,
                &PathBuf::from(format!("/proc/{pid}/oom_score_adj")),
                want,
                why,
            );
        }
    }
    assert_no_problems("qos-class offline", &problems);
    kraald.remove_pod(&offline_pod).await;
    kraald.remove_pod(&online_pod).await;
}

// ---------------------------------------------------------------------------------------------
// 6. memory-high: a throttle-and-reclaim point, never a kill.
// ---------------------------------------------------------------------------------------------

/// Holds 96 MiB of anonymous memory: dd reads /dev/zero into one 96 MiB buffer (every page
/// written) and then blocks forever writing it into a pipe nobody reads.
const HOLD_96MIB: &str = "dd if=/dev/zero bs=100663296 count=1 2>/dev/null | sleep 100000";

#[tokio::test]
async fn memory_high_throttles_or_guides_reclaim_and_never_kills() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = with_annotations(
        pod_config("memhigh", true),
        &[("kraal.dev/memory-high", "64Mi")],
    );
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let id = kraald
        .run_container(
            &pod,
            &pod_cfg,
            with_resources(
                shell_container("hog", &image, HOLD_96MIB),
                cri::LinuxContainerResources {
                    memory_limit_in_bytes: 128 * MIB,
                    ..Default::default()
                },
            ),
        )
        .await;
    let cgroup = kraald.container_cgroup(&id).await;
    let mut problems = Vec::new();

    if let Some(dir) = cgroup.v1("memory") {
        // v1 (and hybrid hosts, where memory is a v1 controller): memory-high is the soft
        // limit, which only guides reclaim under global pressure; nothing is throttled.
        expect_file(
            &mut problems,
            &dir.join("memory.soft_limit_in_bytes"),
            "67108864",
            "kraal.dev/memory-high = 64Mi not applied (v1: the soft limit)",
        );
        expect_file(
            &mut problems,
            &dir.join("memory.limit_in_bytes"),
            "134217728",
            "the hard limit must stay kubelet's 128Mi",
        );
        // The memory really is charged, above memory-high, and nothing was killed.
        let stat = dir.join("memory.stat");
        let rss = poll(Duration::from_secs(15), || {
            keyed(&stat, "total_rss").filter(|rss| *rss >= 90 * MIB as u64)
        })
        .await;
        if rss.is_none() {
            problems.push(format!(
                "the container never held 90 MiB of anonymous memory: {}",
                std::fs::read_to_string(&stat).unwrap_or_default()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ooms = keyed(&dir.join("memory.oom_control"), "oom_kill");
        if ooms != Some(0) {
            problems.push(format!(
                "memory.oom_control oom_kill is {ooms:?}: {}",
                read_trim(&dir.join("memory.oom_control"))
            ));
        }
        let failcnt = read_trim(&dir.join("memory.failcnt"));
        if failcnt != "0" {
            problems.push(format!(
                "memory.failcnt is {failcnt}: 96 MiB should not hit the 128 MiB limit"
            ));
        }
    } else {
        // v2: memory.high is a real throttle point. Above it the kernel reclaims and, when
        // nothing can be reclaimed (anonymous memory without swap), makes the allocating
        // task sleep: the hog slows down below the hard limit instead of being OOM-killed.
        let dir = cgroup.controller("memory");
        expect_file(
            &mut problems,
            &dir.join("memory.high"),
            "67108864",
            "kraal.dev/memory-high = 64Mi not applied (v2: memory.high)",
        );
        expect_file(
            &mut problems,
            &dir.join("memory.max"),
            "134217728",
            "the hard limit must stay kubelet's 128Mi",
        );
        let events = dir.join("memory.events");
        // Generous: the breach comes as soon as the hog passes 64 MiB, but an emulated
        // guest is slow to get there.
        let high = poll(Duration::from_secs(60), || {
            keyed(&events, "high").filter(|n| *n > 0)
        })
        .await;
        if high.is_none() {
            problems.push(format!(
                "memory.events never counted a memory.high breach: {}",
                std::fs::read_to_string(&events).unwrap_or_default()
            ));
        }
        // Throttled: the time the hog spent stalled on memory shows in the cgroup's
        // pressure stall information (memory.high's penalty sleeps are accounted there).
        let pressure = dir.join("memory.pressure");
        match std::fs::read_to_string(&pressure) {
            Ok(text) => {
                let stalled = poll(Duration::from_secs(30), || {
                    let text = std::fs::read_to_string(&pressure).ok()?;
                    let some = text.lines().find(|l| l.starts_with("some "))?;
                    let total: u64 = some.rsplit_once("total=")?.1.trim().parse().ok()?;
                    (total > 0).then_some(total)
                })
                .await;
                if stalled.is_none() {
                    problems.push(format!(
                        "the hog above memory.high never stalled on memory: {}: {text}",
                        pressure.display()
                    ));
                }
            }
            // Without PSI (psi=0) the breach count above is the evidence.
            Err(e) => eprintln!("{}: {e}; not checking stalls", pressure.display()),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for key in ["max", "oom", "oom_kill"] {
            if keyed(&events, key) != Some(0) {
                problems.push(format!(
                    "memory.events {key} is not 0: the hog reached the hard limit or was OOM-killed instead of throttled: {}",
                    std::fs::read_to_string(&events).unwrap_or_default()
                ));
            }
        }
    }

    let status = kraald.container_status(&id).await;
    if status.state != cri::ContainerState::ContainerRunning as i32 {
        problems.push(format!(
            "the container is not running any more: {:?} reason {:?} exit {}",
            status.state, status.reason, status.exit_code
        ));
    }
    assert_no_problems("memory-high", &problems);
    kraald.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------------
// 7. Page cache of a removed container.
// ---------------------------------------------------------------------------------------------

/// A directory on a disk filesystem: a file on tmpfs is never page cache to reclaim.
fn disk_tempdir(kraald: &Kraald) -> tempfile::TempDir {
    let on_tmpfs = |path: &Path| {
        nix::sys::statfs::statfs(path)
            .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(true)
    };
    let base = [kraald.dir().to_path_buf(), PathBuf::from("/var/tmp")]
        .into_iter()
        .find(|p| !on_tmpfs(p))
        .expect("a directory on a disk filesystem (neither the test dir nor /var/tmp is)");
    tempfile::Builder::new()
        .prefix("kre-cache-")
        .tempdir_in(base)
        .expect("temp dir")
}

/// Bytes of `file` in the page cache, if util-linux's fincore is there to say.
fn resident_bytes(file: &Path) -> Option<u64> {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(file)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

#[tokio::test]
async fn page_cache_of_a_removed_container_is_reclaimed() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let data = disk_tempdir(&kraald);
    let file = data.path().join("F");
    let dd = std::process::Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", "count=64", "oflag=direct", "status=none"])
        .status()
        .expect("dd");
    assert!(dd.success(), "dd oflag=direct failed: {dd}");
    // Drop whatever the filesystem cached anyway.
    let _ = std::process::Command::new("dd")
        .arg(format!("if={}", file.display()))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status();
    match resident_bytes(&file) {
        Some(bytes) => assert!(
            bytes < 4 * MIB as u64,
            "{} has {bytes} bytes in the page cache before the container reads it: its pages would not be charged to the container",
            file.display()
        ),
        None => {
            eprintln!("fincore is not available: not checking the file is out of the page cache")
        }
    }

    let pod_cfg = pod_config("pagecache", true);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let pod_cgroup = kraald.pod_cgroup(&pod).await;
    let pod_usage = || pod_cgroup.memory_usage();
    let usage_file = pod_cgroup.memory_usage_file();
    let before = pod_usage();
    let mut config = shell_container(
        "reader",
        &image,
        &format!("cat /data/F > /dev/null; echo read; {SERVE}"),
    );
    config.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: data.path().to_string_lossy().into_owned(),
        readonly: true,
        ..Default::default()
    }];
    let id = kraald.run_container(&pod, &pod_cfg, config).await;
    let grown = poll(Duration::from_secs(15), || {
        Some(pod_usage()).filter(|u| *u >= before + 48 * MIB as u64)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the pod cgroup's {} did not grow by 48 MiB after reading a 64 MiB file: {} -> {}",
            usage_file.display(),
            before,
            pod_usage()
        )
    });
    // Let cat finish: usage stops growing.
    let mut grown = grown;
    let settle_deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = pod_usage();
        let settled = now.abs_diff(grown) < 256 * 1024;
        grown = now;
        if settled || Instant::now() > settle_deadline {
            break;
        }
    }
    let container_cgroup = kraald.container_cgroup(&id).await;
    let container_memory = container_cgroup.controller("memory").to_path_buf();
    let cache = container_cgroup
        .memory_stat("total_cache", "file")
        .unwrap_or(0);
    eprintln!("pod usage {before} -> {grown}; the container's page cache {cache}");

    let mut client = kraald.runtime().await;
    client
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 5,
        })
        .await
        .expect("StopContainer");
    client
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
    let left = container_cgroup.existing();
    assert!(
        left.is_empty(),
        "{left:?} still there after RemoveContainer (memory: {})",
        container_memory.display()
    );
    let dropped = poll(Duration::from_secs(3), || {
        Some(pod_usage()).filter(|u| *u + 48 * MIB as u64 <= grown)
    })
    .await;
    assert!(
        dropped.is_some(),
        "the pod cgroup still holds the removed container's page cache: {} {} after removal (was {grown} with the container, {before} before it); the container cgroup's pages stayed charged instead of being reclaimed (v1 memory.force_empty, v2 memory.reclaim)\nkraald's log about it:\n{}",
        usage_file.display(),
        pod_usage(),
        log_lines(
            &kraald,
            &[
                &id[..12],
                "reclaim",
                "force_empty",
                "memory.reclaim",
                "page cache"
            ]
        )
    );
    kraald.remove_pod(&pod).await;
}

// ---------------------------------------------------------------------------------------------
// 8. PodSandboxStatus shows what was applied, and it is what the files hold.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn applied_settings_are_visible_in_pod_status() {
    let _serial = MEASURE.lock().await;
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let annotations = [
        ("kraal.dev/qos-class", "offline"),
        ("kraal.dev/cpu-burst", "500m"),
        ("kraal.dev/memory-high", "64Mi"),
    ];
    let pod_cfg = with_annotations(
        pod_config("applied", true),
        &[
            annotations[0],
            annotations[1],
            annotations[2],
            ("app.kubernetes.io/name", "x"),
        ],
    );
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let id = kraald
        .run_container(
            &pod,
            &pod_cfg,
            with_resources(
                shell_container("app", &image, SERVE),
                cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: 100_000,
                    cpu_shares: 1024,
                    memory_limit_in_bytes: 128 * MIB,
                    ..Default::default()
                },
            ),
        )
        .await;
    let (_, info) = kraald.pod_status_verbose(&pod).await;
    let mut problems = Vec::new();

    if info["policy"]["qos_class"] != "offline" {
        problems.push(format!(
            "info.policy.qos_class is {}",
            info["policy"]["qos_class"]
        ));
    }
    match info["policyAnnotations"].as_object() {
        Some(map) => {
            for (key, value) in annotations {
                if map.get(key).and_then(|v| v.as_str()) != Some(value) {
                    problems.push(format!(
                        "info.policyAnnotations[{key:?}] is {:?}, expected {value:?}",
                        map.get(key)
                    ));
                }
            }
        }
        None => problems.push(format!(
            "info has no \"policyAnnotations\" map: {}",
            info["policyAnnotations"]
        )),
    }
    if info["frozen"] != serde_json::Value::Bool(false) {
        problems.push(format!("info.frozen is {}, expected false", info["frozen"]));
    }

    let pod_cg = CgroupDirs::from_info(&info);
    let ctr_cg = kraald.container_cgroup(&id).await;
    // The container's cgroup is a child of the pod's, in every hierarchy.
    assert_eq!(ctr_cg, pod_cg.child(&format!("kraal-{id}")));
    // (scope, file, value, source)
    let mut expected: Vec<(&str, PathBuf, &str, &str)> = Vec::new();
    for (scope, cgroup) in [("pod", &pod_cg), ("app", &ctr_cg)] {
        for (file, value) in offline_cpu_files(cgroup) {
            expected.push((scope, file, value, "kraal.dev/qos-class"));
        }
    }
    expected.push((
        "app",
        ctr_cg.cpu_burst_file(),
        "50000",
        "kraal.dev/cpu-burst",
    ));
    // v1: the soft limit; v2: memory.high.
    let memory_high_file = ctr_cg.file("memory", "memory.soft_limit_in_bytes", "memory.high");
    expected.push(("app", memory_high_file, "67108864", "kraal.dev/memory-high"));
    match info["applied"].as_array() {
        None => problems.push(format!(
            "info has no \"applied\" list (of {{scope, file, value, source}}); info = {info}"
        )),
        Some(applied) => {
            let same_file = |a: &str, b: &Path| {
                Path::new(a) == b
                    || std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
                        && std::fs::canonicalize(b).is_ok()
            };
            for (scope, file, value, source) in &expected {
                let entry = applied.iter().find(|e| {
                    e["scope"] == *scope && e["file"].as_str().is_some_and(|f| same_file(f, file))
                });
                let Some(entry) = entry else {
                    problems.push(format!(
                        "applied has no entry for {} (scope {scope:?}, from {source}): {}",
                        file.display(),
                        serde_json::Value::Array(applied.clone())
                    ));
                    continue;
                };
                if entry["value"] != *value {
                    problems.push(format!(
                        "applied says {} = {}, expected {value:?}",
                        file.display(),
                        entry["value"]
                    ));
                }
                if entry["source"] != *source {
                    problems.push(format!(
                        "applied says {} comes from {}, expected {source:?}",
                        file.display(),
                        entry["source"]
                    ));
                }
            }
            // Every entry, listed or not above, is what its file really holds.
            for entry in applied {
                let (Some(file), Some(value)) = (entry["file"].as_str(), entry["value"].as_str())
                else {
                    problems.push(format!("applied entry without a file or value: {entry}"));
                    continue;
                };
                if !Path::new(file).is_absolute() {
                    problems.push(format!("applied entry's file is not absolute: {entry}"));
                    continue;
                }
                match std::fs::read_to_string(file) {
                    Ok(text) if text.trim() == value => {}
                    Ok(text) => problems.push(format!(
                        "applied says {file} = {value:?} but it holds {:?}",
                        text.trim()
                    )),
                    Err(e) => problems.push(format!("applied lists {file}, unreadable: {e}")),
                }
            }
        }
    }
    // And the files themselves, whatever the status says.
    for (_, file, value, source) in &expected {
        expect_file(&mut problems, file, value, &format!("{source} not applied"));
    }
    assert_no_problems("PodSandboxStatus verbose info", &problems);
    kraald.remove_pod(&pod).await;
}
