//! Issue 16: kubelet's systemd cgroup driver, through the CRI socket as kubelet drives it.
//!
//! On a node run by systemd (the v2 guest of `../shared/vm`): a pod with a slice-form parent
//! gets its slice, each container (and a shared-PID pod's infra process) a transient scope
//! of its own with its pid in it, its limits known to systemd (so a `systemctl daemon-reload`
//! keeps them) and the policy files right on v2; a kraald restart moves nothing; removal
//! leaves no unit behind. On a node without systemd (the development host) a configured
//! systemd driver stops kraald at start with a message that says why, and each test asserts
//! exactly that instead.
//!
//! cgroup files are found through what kraald reports (`unifiedCgroup` in the verbose
//! status), never by a path of the test's own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kraal_e2e::{Kraald, cri, pod_config, run_kraald, shell_container};
use tonic::Code;

/// sh as PID 1 ignores SIGTERM unless it traps it; this one exits 0 on TERM.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";
const SYSTEMD_DRIVER: &str = "cgroup_driver = \"systemd\"";

/// systemd's own test for "PID 1 is systemd" (`sd_booted()`).
fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Starts a kraald with the systemd driver where systemd runs. Elsewhere asserts that kraald
/// refuses to start, naming the driver and what is missing, and returns None.
async fn systemd_kraald() -> Option<Kraald> {
    if systemd_booted() {
        return Some(Kraald::start(SYSTEMD_DRIVER).await);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.toml");
    let text = format!(
        "socket = {:?}\nroot = {:?}\nstate = {:?}\n{SYSTEMD_DRIVER}\n[cni]\nenabled = false\n[bandwidth]\nenabled = false\n",
        dir.path().join("kraal.sock"),
        dir.path().join("root"),
        dir.path().join("state"),
    );
    std::fs::write(&config, text).expect("write config");
    let config = config.to_str().expect("utf-8 path");
    let (status, output) = run_kraald(&["--config", config], Duration::from_secs(30));
    assert!(
        !status.success(),
        "kraald started without systemd:\n{output}"
    );
    for needle in [
        "cgroup_driver = \"systemd\" is configured",
        "systemd is not running on this node",
        "/run/systemd/system",
        "cgroup_driver = \"cgroupfs\"",
    ] {
        assert!(output.contains(needle), "no {needle:?} in:\n{output}");
    }
    assert!(
        !dir.path().join("kraal.sock").exists(),
        "a refused kraald left its socket"
    );
    None
}

/// `systemctl show UNIT -p PROP --value`.
fn show(unit: &str, prop: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", unit, "-p", prop, "--value"])
        .output()
        .expect("systemctl show");
    assert!(out.status.success(), "systemctl show {unit}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn systemctl(args: &[&str]) -> String {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .expect("systemctl");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A unit systemd no longer has (or has stopped).
fn gone(unit: &str) -> bool {
    matches!(
        show(unit, "ActiveState").as_str(),
        "inactive" | "failed" | ""
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// ContainerStatus verbose info.
async fn container_info(kraald: &Kraald, id: &str) -> serde_json::Value {
    kraald.container_status_verbose(id).await.1
}

fn dir_of(info: &serde_json::Value, what: &str) -> PathBuf {
    PathBuf::from(
        info["unifiedCgroup"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no unifiedCgroup in {info}")),
    )
}

/// The pids in a cgroup2 directory.
fn procs(dir: &Path) -> Vec<i32> {
    read(&dir.join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Polls `check` (systemd applies some changes asynchronously; the guest is emulated).
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn expect_file(path: &Path, want: &str) -> Result<(), String> {
    let got = read(path);
    if got == want {
        Ok(())
    } else {
        Err(format!("{} is {got:?}, expected {want:?}", path.display()))
    }
}

fn limited(name: &str, quota: i64) -> cri::ContainerConfig {
    let mut c = shell_container(name, "", SERVE);
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: quota,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test]
async fn the_cgroupfs_driver_refuses_slices_and_names_the_driver_it_expects() {
    let kraald = Kraald::start("").await;
    let mut pod = pod_config("sd-wrong-form", true);
    pod.linux.as_mut().expect("linux").cgroup_parent = "kubepods-besteffort-podx1.slice".into();
    let err = kraald
        .run_pod(pod)
        .await
        .expect_err("a slice under cgroupfs");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for needle in [
        "kubepods-besteffort-podx1.slice",
        "cgroupfs driver expects an absolute path",
        "cgroup_driver = \"systemd\"",
    ] {
        assert!(
            err.message().contains(needle),
            "{needle:?}: {}",
            err.message()
        );
    }
    let config = kraald
        .runtime()
        .await
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        config.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
    // The node facts name the driver in force, and kraalctl shows them.
    assert!(
        kraald.log().contains("with the cgroupfs driver"),
        "{}",
        kraald.log()
    );
    let text = kraalctl_node(&kraald);
    assert!(text.contains("cgroup driver:    cgroupfs\n"), "{text}");
    assert!(
        ["v1", "v2", "hybrid"]
            .iter()
            .any(|h| text.contains(&format!("cgroup hierarchy: {h}\n"))),
        "{text}"
    );
}

/// `kraalctl cri node` against `kraald`: the node facts kraald serves in Status.
fn kraalctl_node(kraald: &Kraald) -> String {
    let out = Command::new(kraal_e2e::kraalctl_bin())
        .arg("--cri-socket")
        .arg(&kraald.socket)
        .args(["cri", "node"])
        .output()
        .expect("kraalctl cri node");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_systemd_driver_is_in_force_or_refused_at_start() {
    let Some(kraald) = systemd_kraald().await else {
        return;
    };
    let config = kraald
        .runtime()
        .await
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .expect("RuntimeConfig")
        .into_inner();
    assert_eq!(
        config.linux.expect("linux").cgroup_driver,
        cri::CgroupDriver::Systemd as i32
    );
    // The start-up line names the hierarchy and the driver.
    let log = kraald.log();
    assert!(
        log.contains("node: cgroup v2 with the systemd driver"),
        "{log}"
    );
    if let Some(line) = log.lines().find(|l| l.contains("node: cgroup")) {
        println!("kraald's start-up line: {line}");
    }
    // A cgroupfs path is the other driver's form: refused, naming the form expected.
    let mut pod = pod_config("sd-path-form", true);
    pod.linux.as_mut().expect("linux").cgroup_parent = "/kubepods/besteffort/podx".into();
    let err = kraald.run_pod(pod).await.expect_err("a path under systemd");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("slice name like kubepods-besteffort-pod<uid>.slice"),
        "{}",
        err.message()
    );
    // kraalctl shows the node facts kraald serves in Status.
    let text = kraalctl_node(&kraald);
    assert!(text.contains("cgroup hierarchy: v2"), "{text}");
    assert!(text.contains("cgroup driver:    systemd"), "{text}");
}

#[tokio::test]
async fn pods_get_slices_and_containers_scopes_that_systemd_keeps_right() {
    let Some(mut kraald) = systemd_kraald().await else {
        return;
    };
    let image = kraald.pull_busybox().await;
    let slice = format!("kraale2e-besteffort-pod{}.slice", std::process::id());
    let mut pod = pod_config("sd-slices", true);
    {
        let linux = pod.linux.as_mut().expect("linux");
        linux.cgroup_parent = slice.clone();
        // A shared PID namespace: the pod's infra process gets a scope of its own.
        let ns = linux
            .security_context
            .as_mut()
            .and_then(|s| s.namespace_options.as_mut())
            .expect("namespace options");
        ns.pid = 0;
    }
    pod.annotations
        .insert("kraal.dev/cpu-burst".into(), "200m".into());
    pod.annotations
        .insert("kraal.dev/memory-high".into(), "64Mi".into());
    let pod_id = match kraald.run_pod(pod.clone()).await {
        Ok(id) => id,
        Err(e) => panic!("RunPodSandbox: {e:?}\n{}", kraald.log()),
    };

    // The slice: made by kraal (nothing else had), where kubelet's systemd driver puts it.
    let (_, pod_info) = kraald.pod_status_verbose(&pod_id).await;
    let expanded = format!("/kraale2e.slice/kraale2e-besteffort.slice/{slice}");
    assert_eq!(pod_info["cgroupParent"], expanded.as_str(), "{pod_info}");
    assert_eq!(show(&slice, "ActiveState"), "active");
    assert_eq!(show(&slice, "ControlGroup"), expanded);
    let infra_pid = pod_info["pid"].as_i64().expect("infra pid") as i32;
    let infra_scope = format!("kraal-infra-{pod_id}.scope");
    assert_eq!(show(&infra_scope, "ActiveState"), "active");
    let infra_cgroup =
        std::fs::read_to_string(format!("/proc/{infra_pid}/cgroup")).expect("infra cgroup");
    assert!(
        infra_cgroup
            .trim_end()
            .ends_with(&format!("{expanded}/{infra_scope}")),
        "{infra_cgroup}"
    );

    // A container: its own delegated scope in the slice, its init in it.
    let mut config = limited("web", 50_000);
    config.image = Some(cri::ImageSpec {
        image: image.clone(),
        ..Default::default()
    });
    let id = kraald.run_container(&pod_id, &pod, config).await;
    let scope = format!("kraal-{id}.scope");
    let info = container_info(&kraald, &id).await;
    assert_eq!(
        info["cgroupsPath"],
        format!("{expanded}/{scope}").as_str(),
        "{info}"
    );
    let dir = dir_of(&info, "web");
    let pid = info["pid"].as_i64().expect("pid") as i32;
    assert_eq!(show(&scope, "ActiveState"), "active");
    assert_eq!(show(&scope, "Slice"), slice);
    assert_eq!(show(&scope, "Delegate"), "yes");
    // No DefaultTasksMax for containers: no one asked for a pids limit.
    assert_eq!(show(&scope, "TasksMax"), "infinity");
    expect_file(&dir.join("pids.max"), "max").expect("pids.max");
    assert_eq!(show(&scope, "ControlGroup"), format!("{expanded}/{scope}"));
    assert!(procs(&dir).contains(&pid), "{pid} not in {}", dir.display());
    let status = systemctl(&["status", "--no-pager", &scope]);
    assert!(status.contains(&pid.to_string()), "{status}");
    println!("systemctl status {scope}:\n{status}");

    // kubelet's limits and the pod's policy, in the files and in systemd's record.
    let weight = (1 + (512 - 2) * 9999 / 262_142).to_string();
    let files = |quota: &str| {
        vec![
            (dir.join("cpu.max"), format!("{quota} 100000")),
            (dir.join("cpu.max.burst"), "20000".to_string()),
            (dir.join("cpu.weight"), weight.clone()),
            (dir.join("cpu.idle"), "0".to_string()),
            (dir.join("memory.high"), (64u64 << 20).to_string()),
            (dir.join("memory.max"), (256u64 << 20).to_string()),
        ]
    };
    let check_files = |quota: &'static str| {
        let files = files(quota);
        move || -> Result<(), String> {
            for (file, want) in &files {
                expect_file(file, want)?;
            }
            Ok(())
        }
    };
    eventually("policy files after create", check_files("50000"));
    assert_eq!(show(&scope, "CPUQuotaPerSecUSec"), "500ms");
    assert_eq!(show(&scope, "CPUWeight"), weight);
    assert_eq!(show(&scope, "MemoryHigh"), (64u64 << 20).to_string());
    assert_eq!(show(&scope, "MemoryMax"), (256u64 << 20).to_string());

    // UpdateContainerResources reaches systemd too, and survives its re-application.
    kraald
        .runtime()
        .await
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 30_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    assert_eq!(show(&scope, "CPUQuotaPerSecUSec"), "300ms");
    eventually("files after the update", check_files("30000"));
    let reload = Command::new("systemctl")
        .arg("daemon-reload")
        .status()
        .expect("systemctl daemon-reload");
    assert!(reload.success());
    // systemd re-applies units after a reload; give it time to write whatever it would.
    std::thread::sleep(Duration::from_secs(3));
    eventually("files after daemon-reload", check_files("30000"));
    assert_eq!(show(&scope, "CPUQuotaPerSecUSec"), "300ms");
    // Evidence for a reader of the run's output (cargo test -- --nocapture).
    println!(
        "after daemon-reload: {}\n{}",
        systemctl(&[
            "show",
            &scope,
            "-p",
            "CPUQuotaPerSecUSec,CPUWeight,MemoryHigh,MemoryMax,TasksMax,Delegate,Slice,ControlGroup"
        ]),
        systemctl(&["list-units", "--no-pager", "--all", "kraal*", "kraale2e*"])
    );

    // A kraald restart moves nothing: the container runs on in the same scope.
    kraald.restart().await;
    let status = kraald.container_status(&id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(show(&scope, "ActiveState"), "active");
    assert!(
        procs(&dir).contains(&pid),
        "{pid} left {} after a restart",
        dir.display()
    );
    let after = container_info(&kraald, &id).await;
    assert_eq!(after["cgroupsPath"], info["cgroupsPath"]);

    // Removal leaves no unit: the scopes, and the slice kraal made.
    kraald.remove_pod(&pod_id).await;
    eventually("units gone after RemovePodSandbox", || {
        for unit in [&scope, &infra_scope, &slice] {
            if !gone(unit) {
                return Err(format!(
                    "{unit} is {}:\n{}",
                    show(unit, "ActiveState"),
                    systemctl(&["status", "--no-pager", unit])
                ));
            }
        }
        Ok(())
    });
    assert!(!dir.exists(), "{} is still there", dir.display());
}

#[tokio::test]
async fn offline_pods_stay_idle_through_a_daemon_reload_and_default_parents_get_a_kraal_slice() {
    let Some(kraald) = systemd_kraald().await else {
        return;
    };
    let image = kraald.pull_busybox().await;
    let mut pod = pod_config("sd-offline", true);
    // No parent: kraal's own slice under kraal.slice.
    pod.linux.as_mut().expect("linux").cgroup_parent = String::new();
    pod.annotations
        .insert("kraal.dev/qos-class".into(), "offline".into());
    let pod_id = match kraald.run_pod(pod.clone()).await {
        Ok(id) => id,
        Err(e) => panic!("RunPodSandbox: {e:?}\n{}", kraald.log()),
    };
    let slice = format!("kraal-pod{pod_id}.slice");
    let (_, pod_info) = kraald.pod_status_verbose(&pod_id).await;
    assert_eq!(
        pod_info["cgroupParent"],
        format!("/kraal.slice/{slice}").as_str()
    );
    assert_eq!(show(&slice, "ActiveState"), "active");
    let pod_dir = dir_of(&pod_info, "pod");
    let mut config = limited("batch", 50_000);
    config.image = Some(cri::ImageSpec {
        image,
        ..Default::default()
    });
    let id = kraald.run_container(&pod_id, &pod, config).await;
    let dir = dir_of(&container_info(&kraald, &id).await, "batch");
    let offline = || -> Result<(), String> {
        for d in [&pod_dir, &dir] {
            expect_file(&d.join("cpu.idle"), "1")?;
            expect_file(&d.join("cpu.weight"), "1")?;
        }
        expect_file(&dir.join("cpu.max"), "50000 100000")
    };
    eventually("offline files", offline);
    assert!(
        Command::new("systemctl")
            .arg("daemon-reload")
            .status()
            .expect("daemon-reload")
            .success()
    );
    std::thread::sleep(Duration::from_secs(3));
    eventually("offline files after daemon-reload", offline);
    kraald.remove_pod(&pod_id).await;
    eventually("kraal's slice gone", || {
        if gone(&slice) {
            Ok(())
        } else {
            Err(format!("{slice} is {}", show(&slice, "ActiveState")))
        }
    });
}
