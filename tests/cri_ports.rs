//! Pods' local port ranges on the node side, through the CRI socket: `auto:<count>` blocks
//! from the node's pool that never collide, and a pod network namespace whose ephemeral
//! ports all land in the pod's range.

use std::collections::BTreeSet;
use std::time::Duration;

use kraal_e2e::*;
use tonic::Code;

fn with_annotation(
    mut pod: cri::PodSandboxConfig,
    key: &str,
    value: &str,
) -> cri::PodSandboxConfig {
    pod.annotations.insert(key.to_string(), value.to_string());
    pod
}

/// The `[start, end]` ranges PodSandboxStatus reports for `which` (bind or connect).
async fn ranges(k: &Kraald, pod: &str, which: &str) -> Vec<(u64, u64)> {
    let (_, info) = k.pod_status_verbose(pod).await;
    info["ports"][which]
        .as_array()
        .unwrap_or_else(|| panic!("no ports.{which} in {info}"))
        .iter()
        .map(|r| (r[0].as_u64().expect("start"), r[1].as_u64().expect("end")))
        .collect()
}

fn host_ephemeral() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").expect("sysctl");
    let mut parts = text
        .split_whitespace()
        .map(|p| p.parse::<u64>().expect("port"));
    (parts.next().expect("start"), parts.next().expect("end"))
}

#[tokio::test]
async fn auto_blocks_come_from_the_pool_and_never_collide() {
    let k = Kraald::start("[ports]\npool = \"20000-23999\"\n").await;
    let host = host_ephemeral();
    let mut blocks = Vec::new();
    let mut pods = Vec::new();
    for name in ["auto-a", "auto-b", "auto-c"] {
        let cfg = with_annotation(pod_config(name, true), "kraal.dev/bind-ports", "auto:1000");
        let pod = k.run_pod(cfg).await.expect("RunPodSandbox");
        let got = ranges(&k, &pod, "bind").await;
        assert_eq!(got.len(), 1, "{got:?}");
        let (start, end) = got[0];
        assert_eq!(end - start + 1, 1000, "a block of exactly 1000 ports");
        assert!(
            (20000..=23999).contains(&start) && end <= 23999,
            "{start}-{end} outside the pool"
        );
        assert!(
            end < host.0 || start > host.1,
            "{start}-{end} overlaps the host's ephemeral range {host:?}"
        );
        blocks.push((start, end));
        pods.push(pod);
    }
    for (i, a) in blocks.iter().enumerate() {
        for b in &blocks[i + 1..] {
            assert!(a.1 < b.0 || b.1 < a.0, "blocks {a:?} and {b:?} overlap");
        }
    }
    // 1000 ports remain: 1001 do not fit, and the refusal leaves nothing behind.
    let greedy = with_annotation(
        pod_config("auto-greedy", true),
        "kraal.dev/bind-ports",
        "auto:1001",
    );
    assert_code(
        k.run_pod(greedy).await,
        Code::ResourceExhausted,
        "no free block of 1001 ports",
    );
    let listed = k
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert_eq!(listed.len(), 3, "{listed:?}");
    // A removed pod's block is free again.
    k.remove_pod(&pods[0]).await;
    let again = with_annotation(
        pod_config("auto-d", true),
        "kraal.dev/bind-ports",
        "auto:1000",
    );
    let pod = k
        .run_pod(again)
        .await
        .expect("RunPodSandbox after a removal");
    assert_eq!(ranges(&k, &pod, "bind").await, vec![blocks[0]]);
    // Concurrent starts never share a block.
    let (x, y) = tokio::join!(
        k.run_pod(with_annotation(
            pod_config("auto-x", true),
            "kraal.dev/connect-ports",
            "auto:500"
        )),
        k.run_pod(with_annotation(
            pod_config("auto-y", true),
            "kraal.dev/connect-ports",
            "auto:500"
        )),
    );
    let (x, y) = (x.expect("pod x"), y.expect("pod y"));
    let (bx, by) = (
        ranges(&k, &x, "connect").await[0],
        ranges(&k, &y, "connect").await[0],
    );
    assert!(
        bx.1 < by.0 || by.1 < bx.0,
        "concurrent blocks {bx:?} and {by:?} overlap"
    );
}

#[tokio::test]
async fn a_pod_netns_hands_out_ephemeral_ports_only_from_its_range() {
    let k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let cfg = with_annotation(
        pod_config("netns-ports", false),
        "kraal.dev/bind-ports",
        "21000-21099",
    );
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    let (_, info) = k.pod_status_verbose(&pod).await;
    assert_eq!(
        info["ports"]["netns_range"],
        serde_json::json!([21000, 21099]),
        "{info}"
    );
    let id = k
        .run_container(&pod, &cfg, shell_container("c", &image, "sleep 1000"))
        .await;
    let sysctl = k
        .exec_ok(&id, &["cat", "/proc/sys/net/ipv4/ip_local_port_range"])
        .await;
    assert_eq!(
        sysctl.split_whitespace().collect::<Vec<_>>(),
        ["21000", "21099"]
    );
    // 30 short connections to a local listener; every one's local port is in range.
    // 20 connections held open to a local listener (itself in the bind range, or the
    // bind hook refuses it); every client's local port is in range.
    let script = "nc -ll -p 21050 -e /bin/cat & sleep 0.3; \
                  i=0; while [ $i -lt 20 ]; do sleep 3 | nc 127.0.0.1 21050 >/dev/null & i=$((i+1)); done; \
                  sleep 1; netstat -tn 2>&1";
    let out = k
        .exec(&id, &["sh", "-c", script], 30)
        .await
        .expect("ExecSync");
    let text = String::from_utf8_lossy(&out.stdout);
    let ports: BTreeSet<u64> = text
        .lines()
        .filter(|l| l.contains("127.0.0.1:21050") && !l.contains("0.0.0.0"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter(|local| !local.ends_with(":21050"))
        .filter_map(|local| local.rsplit(':').next()?.parse().ok())
        .collect();
    assert!(
        ports.len() >= 20,
        "too few connections seen: {text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for port in &ports {
        assert!(
            (21000..=21099).contains(port),
            "ephemeral port {port} outside 21000-21099: {text}"
        );
    }
    k.remove_pod(&pod).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn a_node_can_require_host_network_pods_to_declare_ports() {
    let k = Kraald::start("[ports]\nhost_network_requires_ranges = true\n").await;
    assert_code(
        k.run_pod(pod_config("undeclared", true)).await,
        Code::InvalidArgument,
        "kraal.dev/bind-ports",
    );
    // Pods with their own netns, and hostNetwork pods that declare a range, are fine.
    let own = k
        .run_pod(pod_config("own-netns", false))
        .await
        .expect("own netns pod");
    let declared = with_annotation(
        pod_config("declared", true),
        "kraal.dev/bind-ports",
        "22000-22099",
    );
    let declared = k.run_pod(declared).await.expect("declared pod");
    assert_eq!(ranges(&k, &declared, "bind").await, vec![(22000, 22099)]);
    k.remove_pod(&own).await;
    k.remove_pod(&declared).await;
}

#[tokio::test]
async fn host_network_pods_without_ranges_can_get_the_nodes_default() {
    let k = Kraald::start(
        "[ports]\npool = \"24000-24999\"\nhost_network_default_ports = \"auto:100\"\n",
    )
    .await;
    let quiet = k
        .run_pod(pod_config("quiet", true))
        .await
        .expect("unannotated hostNetwork pod");
    let bind = ranges(&k, &quiet, "bind").await;
    assert_eq!(bind.len(), 1, "{bind:?}");
    let (start, end) = bind[0];
    assert!(
        (24000..=24999).contains(&start) && end - start == 99,
        "{bind:?}"
    );
    assert_eq!(
        ranges(&k, &quiet, "connect").await,
        bind,
        "one block for both"
    );
    // A pod that declares its own ports, and a pod with its own netns, get no default.
    let declared = with_annotation(
        pod_config("says", true),
        "kraal.dev/connect-ports",
        "24500-24509",
    );
    let declared = k.run_pod(declared).await.expect("declared pod");
    assert_eq!(ranges(&k, &declared, "connect").await, vec![(24500, 24509)]);
    let (_, info) = k.pod_status_verbose(&declared).await;
    assert!(info["ports"]["bind"].is_null(), "{info}");
    let own = k
        .run_pod(pod_config("own", false))
        .await
        .expect("own netns pod");
    let (_, info) = k.pod_status_verbose(&own).await;
    assert!(info["ports"]["bind"].is_null(), "{info}");
    for pod in [quiet, declared, own] {
        k.remove_pod(&pod).await;
    }
}

/// Runs `script` in the container and returns stdout and stderr together.
async fn sh(k: &Kraald, id: &str, script: &str) -> String {
    let out = k
        .exec(id, &["sh", "-c", script], 20)
        .await
        .expect("ExecSync");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `bpftool cgroup show` lists as attached to `dir`.
fn attached_to(dir: &str) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["cgroup", "show", dir])
        .output()
        .expect("bpftool (hack/setup.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn host_network_binds_are_held_to_the_pods_range_across_a_restart() {
    let mut k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let cfg = with_annotation(
        pod_config("hostports", true),
        "kraal.dev/bind-ports",
        "20000-20099",
    );
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    // eBPF cgroup programs attach to the pod's cgroup2 directory, as kraald reports it.
    let (_, info) = k.pod_status_verbose(&pod).await;
    let unified = kraal_e2e::CgroupDirs::from_info(&info)
        .unified()
        .unwrap_or_else(|| panic!("the pod has no cgroup2 directory: {info}"))
        .to_string_lossy()
        .into_owned();
    let id = k
        .run_container(&pod, &cfg, shell_container("c", &image, "sleep 1000"))
        .await;

    let outside = "nc -l -p 30001 2>&1; echo rc=$?";
    let inside = "nc -l -p 20050 & pid=$!; sleep 0.3; netstat -tln | grep ':20050 '; kill $pid";
    // bind(0): the listening port that appears when nc listens without a port.
    let ephemeral = "netstat -tln > /tmp/before; nc -l & pid=$!; sleep 0.3; netstat -tln > /tmp/after; \
                     kill $pid; diff /tmp/before /tmp/after | grep '^+tcp'";
    let refused = sh(&k, &id, outside).await;
    assert!(
        refused.contains("rc=1") && refused.to_lowercase().contains("permission denied"),
        "a bind outside the range must fail with EACCES: {refused}"
    );
    let allowed = sh(&k, &id, inside).await;
    assert!(
        allowed.contains(":20050"),
        "a bind inside the range must work: {allowed}"
    );
    let chosen = sh(&k, &id, ephemeral).await;
    let ports: Vec<u64> = chosen
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.rsplit(':').next()?.parse().ok())
        .collect();
    assert!(!ports.is_empty(), "no new listener found: {chosen}");
    for port in ports {
        assert!(
            (20000..=20099).contains(&port),
            "bind(0) got {port}, outside 20000-20099: {chosen}"
        );
    }
    let (_, info) = k.pod_status_verbose(&pod).await;
    let counters = &info["portCounters"];
    assert!(counters["bindsDenied"].as_u64() >= Some(1), "{info}");
    assert!(counters["ephemeralPorts"].as_u64() >= Some(1), "{info}");

    // Enforcement survives kraald restarting, and nothing is attached twice.
    let before = attached_to(&unified);
    assert!(
        before.contains("bind4"),
        "nothing attached to {unified}: {before}"
    );
    k.restart().await;
    let refused = sh(&k, &id, outside).await;
    assert!(refused.contains("rc=1"), "after a restart: {refused}");
    assert_eq!(
        attached_to(&unified),
        before,
        "the restart changed what is attached"
    );

    // Removing the pod leaves nothing attached or pinned for it.
    k.remove_pod(&pod).await;
    let pods_dir = k.bpf_pin_root().join("pods");
    let left: Vec<_> = std::fs::read_dir(&pods_dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "pins left in {}: {left:?}",
        pods_dir.display()
    );
    assert!(
        !std::path::Path::new(&unified).exists(),
        "the pod's cgroup2 dir is still there"
    );
}

#[tokio::test]
async fn port_pins_stay_with_a_running_pod_and_go_with_the_last_one() {
    let mut k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let cfg = with_annotation(
        pod_config("pinned", true),
        "kraal.dev/bind-ports",
        "20100-20199",
    );
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    let id = k
        .run_container(&pod, &cfg, shell_container("c", &image, "sleep 1000"))
        .await;
    let root = k.bpf_pin_root();
    let before = pinned_files(&root);
    assert!(
        before.keys().any(|p| p.starts_with(root.join("pods"))),
        "no pod pinned under {}: {before:?}",
        root.display()
    );

    // A running pod's pins survive a restart and are re-adopted, not made anew.
    k.restart().await;
    let refused = sh(&k, &id, "nc -l -p 30002 2>&1; echo rc=$?").await;
    assert!(refused.contains("rc=1"), "after a restart: {refused}");
    assert_eq!(pinned_files(&root), before, "the restart changed the pins");

    // With the last pod gone and kraald stopped, nothing of kraal is left pinned.
    k.remove_pod(&pod).await;
    let status = k.stop();
    assert!(status.success(), "kraald exited with {status}");
    let left = pinned_files(&root);
    assert!(
        left.is_empty(),
        "pins left after the last pod: {left:?}\n{}",
        k.log()
    );
    assert!(!root.exists(), "{} is still there", root.display());
}
