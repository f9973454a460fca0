//! The admin API through its own socket, driven by the real `kraalctl`: freeze and thaw a
//! pod (checked in the freezer and by a process that stops counting), exec into a frozen
//! pod refused, a container stopped while frozen stopped cleanly, and a pod's policy
//! changed live, checked in the cgroup files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kraal_e2e::*;
use tonic::Code;

/// A host dir mounted at /out in the container, so the test can watch what it writes.
fn out_mount(dir: &Path) -> cri::Mount {
    cri::Mount {
        container_path: "/out".into(),
        host_path: dir.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// A container that writes an ever-growing counter to /out/<name>.
fn counter(name: &str, image: &str, dir: &Path) -> cri::ContainerConfig {
    let mut config = shell_container(
        name,
        image,
        &format!(
            "i=0; while :; do i=$((i+1)); echo $i > /out/{name}.tmp; mv /out/{name}.tmp /out/{name}; usleep 10000; done"
        ),
    );
    config.mounts = vec![out_mount(dir)];
    config
}

fn read_counter(dir: &Path, name: &str) -> u64 {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits until the counter has moved past `above`.
async fn counter_moves(dir: &Path, name: &str, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = read_counter(dir, name);
        if now > above {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "counter {name} stuck at {now} (expected it above {above})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "kraalctl failed ({:?}): {}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn failed(out: std::process::Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "kraalctl should fail with 1: {}{}",
        stdout(&out),
        stderr(&out)
    );
    for needle in needles {
        assert!(
            stderr(&out).contains(needle),
            "kraalctl's error lacks {needle:?}: {}",
            stderr(&out)
        );
    }
}

fn json(out: std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("kraalctl -o json prints JSON")
}

#[tokio::test]
async fn freeze_stops_the_pod_and_thaw_resumes_it() {
    let k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let out = tempfile::tempdir().expect("temp dir");
    let pod_cfg = pod_config("freezer", false);
    let pod = k.run_pod(pod_cfg.clone()).await.expect("RunPodSandbox");
    let a = k
        .run_container(&pod, &pod_cfg, counter("a", &image, out.path()))
        .await;
    let b = k
        .run_container(&pod, &pod_cfg, counter("b", &image, out.path()))
        .await;
    counter_moves(out.path(), "a", 0).await;
    counter_moves(out.path(), "b", 0).await;

    let mode = std::fs::metadata(k.admin_socket())
        .expect("admin socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the admin socket is root only");

    let said = ok(k.kraalctl(&["pod", "freeze", "kraal-e2e/freezer"]));
    assert!(
        said.contains("froze pod kraal-e2e/freezer") && said.contains("a, b"),
        "{said}"
    );
    // The v1 freezer where it is mounted, cgroup.freeze / cgroup.events on v2.
    let cgroups = [k.container_cgroup(&a).await, k.container_cgroup(&b).await];
    for cgroup in &cgroups {
        assert_eq!(cgroup.freezer_state(), "FROZEN", "{cgroup:?}");
    }
    let (_, info) = k.pod_status_verbose(&pod).await;
    assert_eq!(info["frozen"], true, "{info}");
    let frozen_at = (read_counter(out.path(), "a"), read_counter(out.path(), "b"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        (read_counter(out.path(), "a"), read_counter(out.path(), "b")),
        frozen_at,
        "a frozen pod's processes must not run"
    );

    // Exec into a frozen container is refused at once instead of hanging.
    let started = Instant::now();
    assert_code(
        k.exec(&a, &["true"], 30).await,
        Code::FailedPrecondition,
        "frozen",
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ExecSync into a frozen pod took {:?}",
        started.elapsed()
    );
    // Freezing again is not an error.
    let again = ok(k.kraalctl(&["pod", "freeze", &pod]));
    assert!(again.contains("already frozen"), "{again}");

    let said = ok(k.kraalctl(&["pod", "thaw", &pod]));
    assert!(said.contains("thawed pod kraal-e2e/freezer"), "{said}");
    counter_moves(out.path(), "a", frozen_at.0).await;
    counter_moves(out.path(), "b", frozen_at.1).await;
    for cgroup in &cgroups {
        assert_eq!(cgroup.freezer_state(), "THAWED", "{cgroup:?}");
    }
    let (_, info) = k.pod_status_verbose(&pod).await;
    assert_eq!(info["frozen"], false, "{info}");
    assert_eq!(k.exec_ok(&a, &["echo", "back"]).await, "back");
    // Both still running: thaw restored exactly the state before the freeze.
    for id in [&a, &b] {
        assert_eq!(
            k.container_status(id).await.state,
            cri::ContainerState::ContainerRunning as i32
        );
    }
    k.remove_pod(&pod).await;
}

#[tokio::test]
async fn a_container_stopped_while_frozen_stops_cleanly() {
    let k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let out = tempfile::tempdir().expect("temp dir");
    let pod_cfg = pod_config("frozen-stop", false);
    let pod = k.run_pod(pod_cfg.clone()).await.expect("RunPodSandbox");
    let mut polite = shell_container(
        "polite",
        &image,
        "trap 'echo bye > /out/bye; exit 0' TERM; echo up > /out/up; while :; do usleep 10000; done",
    );
    polite.mounts = vec![out_mount(out.path())];
    let polite = k.run_container(&pod, &pod_cfg, polite).await;
    let other = k
        .run_container(&pod, &pod_cfg, counter("other", &image, out.path()))
        .await;
    counter_moves(out.path(), "other", 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.path().join("up").exists() {
        assert!(Instant::now() < deadline, "the trap was never installed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ok(k.kraalctl(&["pod", "freeze", &pod]));

    let started = Instant::now();
    k.runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: polite.clone(),
            timeout: 20,
        })
        .await
        .expect("StopContainer");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop waited for its timeout: the container never saw SIGTERM"
    );
    let status = k.wait_exited(&polite, Duration::from_secs(5)).await;
    assert_eq!(status.exit_code, 0, "stopped by its own TERM handler");
    assert_eq!(
        read_trimmed(&out.path().join("bye")),
        "bye",
        "the TERM handler ran"
    );
    // The rest of the pod stays frozen.
    let other_cgroup = k.container_cgroup(&other).await;
    assert_eq!(other_cgroup.freezer_state(), "FROZEN", "{other_cgroup:?}");
    let held = read_counter(out.path(), "other");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_counter(out.path(), "other"), held);
    // A frozen pod takes no new containers until thawed.
    assert_code(
        k.create(&pod, &pod_cfg, shell_container("late", &image, "sleep 1"))
            .await,
        Code::FailedPrecondition,
        "frozen",
    );
    // Removing a frozen pod works (kubelet deleting it must not hang).
    k.remove_pod(&pod).await;
    let listed = k
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn policy_changes_live_and_bad_changes_change_nothing() {
    let k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let pod_cfg = pod_config("live-policy", true);
    let pod = k.run_pod(pod_cfg.clone()).await.expect("RunPodSandbox");
    let mut web = shell_container("web", &image, "sleep 1000");
    web.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            oom_score_adj: 500,
            ..Default::default()
        }),
        ..Default::default()
    });
    let web = k.run_container(&pod, &pod_cfg, web).await;
    let cgroup = k.container_cgroup(&web).await;
    let pod_cgroup = k.pod_cgroup(&pod).await;
    // v1 cpu.cfs_burst_us and cpu.shares; v2 cpu.max.burst and cpu.weight (offline: weight 1
    // and cpu.idle 1; kubelet's shares 512 are weight 20).
    let burst = cgroup.cpu_burst_file();
    let v2 = cgroup.is_v2();
    let weight_file = |c: &CgroupDirs| c.file("cpu", "cpu.shares", "cpu.weight");
    let pod_shares = weight_file(&pod_cgroup);
    let shares = weight_file(&cgroup);
    let (offline_weight, web_weight) = if v2 { ("1", "20") } else { ("2", "512") };
    let idle = |c: &CgroupDirs| read_trimmed(&c.controller("cpu").join("cpu.idle"));
    let pid = k.container_status(&web).await;
    assert_eq!(read_trimmed(&burst), "0");
    assert_eq!(read_trimmed(&shares), web_weight);
    let original_pod_shares = read_trimmed(&pod_shares);
    let init_pid = container_pid(&k, &web).await;
    let oom = PathBuf::from(format!("/proc/{init_pid}/oom_score_adj"));
    assert_eq!(read_trimmed(&oom), "500", "{pid:?}");

    // A burst, live: 200m of a 100ms period is 20000 µs.
    let status = json(k.kraalctl(&[
        "-o",
        "json",
        "pod",
        "update",
        "live-policy",
        "kraal.dev/cpu-burst=200m",
    ]));
    assert_eq!(read_trimmed(&burst), "20000");
    let applied = status["applied"].as_array().expect("applied list");
    assert!(
        applied
            .iter()
            .any(|a| a["file"] == burst.to_string_lossy().as_ref()
                && a["value"] == "20000"
                && a["source"] == "kraal.dev/cpu-burst"
                && a["scope"] == "web"),
        "{status}"
    );
    assert_eq!(status["annotations"]["kraal.dev/cpu-burst"], "200m");

    // Offline, live: minimal weight for pod and container, the highest OOM score.
    ok(k.kraalctl(&["pod", "update", &pod, "kraal.dev/qos-class=offline"]));
    assert_eq!(read_trimmed(&pod_shares), offline_weight);
    assert_eq!(read_trimmed(&shares), offline_weight);
    if v2 {
        assert_eq!(idle(&pod_cgroup), "1", "offline on v2 is cpu.idle too");
        assert_eq!(idle(&cgroup), "1", "offline on v2 is cpu.idle too");
    }
    assert_eq!(read_trimmed(&oom), "1000");
    assert_eq!(read_trimmed(&burst), "20000", "the burst stays");
    let (_, info) = k.pod_status_verbose(&pod).await;
    assert_eq!(info["policyAnnotations"]["kraal.dev/qos-class"], "offline");
    assert_eq!(info["policy"]["qos_class"], "offline", "{info}");

    // Invalid changes are refused and change nothing.
    for (change, needles) in [
        (
            "kraal.dev/cpu-burst=5x",
            &["InvalidArgument", "kraal.dev/cpu-burst", "5x"][..],
        ),
        (
            "kraal.dev/cpu-burst=900m",
            &["InvalidArgument", "cpu-burst", "500m"][..],
        ),
        (
            "kraal.dev/qos-class=batch",
            &["InvalidArgument", "batch", "online"][..],
        ),
        (
            "app.example.com/owner=me",
            &["InvalidArgument", "not a policy annotation"][..],
        ),
        (
            "kraal.dev/cpu_burst=1",
            &["InvalidArgument", "kraal.dev/cpu_burst"][..],
        ),
    ] {
        failed(k.kraalctl(&["pod", "update", &pod, change]), needles);
        assert_eq!(read_trimmed(&burst), "20000", "after {change}");
        assert_eq!(read_trimmed(&shares), offline_weight, "after {change}");
    }
    // A dry run reports without writing.
    let preview = json(k.kraalctl(&[
        "-o",
        "json",
        "pod",
        "update",
        &pod,
        "kraal.dev/cpu-burst=100m",
        "--dry-run",
    ]));
    assert_eq!(preview["annotations"]["kraal.dev/cpu-burst"], "100m");
    assert_eq!(read_trimmed(&burst), "20000");
    failed(
        k.kraalctl(&["pod", "policy", "no-such-pod"]),
        &["NotFound", "no-such-pod"],
    );

    // Back to online and no burst: kubelet's values return.
    ok(k.kraalctl(&[
        "pod",
        "update",
        &pod,
        "kraal.dev/qos-class-",
        "kraal.dev/cpu-burst-",
    ]));
    assert_eq!(read_trimmed(&pod_shares), original_pod_shares);
    assert_eq!(read_trimmed(&shares), web_weight);
    if v2 {
        assert_eq!(idle(&pod_cgroup), "0");
        assert_eq!(idle(&cgroup), "0");
    }
    assert_eq!(read_trimmed(&burst), "0");
    let human = ok(k.kraalctl(&["pod", "policy", &pod]));
    assert!(human.contains("kraal-e2e/live-policy"), "{human}");
    let burst_name = burst
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    assert!(!human.contains(burst_name), "{human}");
    k.remove_pod(&pod).await;
}

/// The container's init pid, from the verbose ContainerStatus info.
async fn container_pid(k: &Kraald, id: &str) -> i64 {
    let (_, info) = k.container_status_verbose(id).await;
    info["pid"].as_i64().expect("pid in info")
}
