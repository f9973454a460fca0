//! Container and pod configs as the real clients send them (kubelet, critest), on this node:
//! hugepage limits for every page size, pods without a hostname, privileged and `ALL`
//! capabilities, mount propagation, RunAsGroup alone, and the log file of a failed create.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kraal_e2e::{Kraald, assert_code, cri, pod_config, shell_container};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tonic::Code;

/// sh as PID 1 ignores SIGTERM unless it traps it; this one exits 0 on TERM.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

fn node_hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .into_string()
        .expect("utf-8 hostname")
}

/// An 80-character pod name: longer than any hostname the kernel takes, like critest's.
fn long_name(tag: &str) -> String {
    let mut name = format!("{tag}-{}-", std::process::id());
    while name.len() < 80 {
        name.push('x');
    }
    name
}

/// kubelet's page size names for the kernel's hugepage sizes (`hugepages-2048kB` -> `2MB`).
fn kubelet_page_sizes() -> Vec<String> {
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir("/sys/kernel/mm/hugepages").expect("hugepages dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        let kb: u64 = name
            .strip_prefix("hugepages-")
            .and_then(|s| s.strip_suffix("kB"))
            .and_then(|s| s.parse().ok())
            .expect("hugepages-<N>kB");
        sizes.push(match kb {
            kb if kb % (1 << 20) == 0 => format!("{}GB", kb >> 20),
            kb if kb % (1 << 10) == 0 => format!("{}MB", kb >> 10),
            kb => format!("{kb}KB"),
        });
    }
    sizes
}

fn resources(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    config
        .linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}

fn security(config: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

fn privileged_pod(name: &str) -> cri::PodSandboxConfig {
    let mut pod = pod_config(name, false);
    if let Some(sc) = pod.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    pod
}

/// The host's (this test's, so kraald's) capability bounding set, as /proc prints it.
fn host_cap_bound() -> String {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim()
        .to_string()
}

#[tokio::test]
async fn hugepage_limits_for_every_page_size_as_kubelet_sends_them() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("hugepages", false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let sizes = kubelet_page_sizes();
    assert!(!sizes.is_empty(), "this host has no hugepage sizes");
    let mut config = shell_container("huge", &image, SERVE);
    resources(&mut config).hugepage_limits = sizes
        .iter()
        .map(|size| cri::HugepageLimit {
            page_size: size.clone(),
            limit: 0,
        })
        .collect();
    let id = kraald.run_container(&pod, &pod_cfg, config).await;
    assert_eq!(
        kraald.container_status(&id).await.state,
        cri::ContainerState::ContainerRunning as i32
    );
    assert_eq!(kraald.exec_ok(&id, &["echo", "ran"]).await, "ran");

    // Where kraal's cgroup manager has the hugetlb controller (a v1 hierarchy, or cgroup v2
    // with hugetlb among the container's controllers) the limits are in the container's
    // cgroup: v1 hugetlb.<size>.limit_in_bytes, v2 hugetlb.<size>.max. Elsewhere (hybrid
    // hosts with hugetlb bound to cgroup2 only) they are dropped with a warning, as
    // containerd does.
    let cgroup = kraald.container_cgroup(&id).await;
    let v2_hugetlb = cgroup.is_v2()
        && kraal_e2e::read_trimmed(&cgroup.controller("cpu").join("cgroup.controllers"))
            .split_whitespace()
            .any(|c| c == "hugetlb");
    if cgroup.v1("hugetlb").is_some() || v2_hugetlb {
        for size in &sizes {
            let file = cgroup.file(
                "hugetlb",
                &format!("hugetlb.{size}.limit_in_bytes"),
                &format!("hugetlb.{size}.max"),
            );
            assert_eq!(
                kraal_e2e::read_trimmed(&file),
                "0",
                "kubelet's hugepage limit 0 for {size} is not in {}",
                file.display()
            );
        }
    } else {
        let log = kraald.log();
        assert!(
            log.contains("hugepage_limits") && log.contains("ignored"),
            "no hugetlb controller for kraal here ({cgroup:?}), yet no warning that the limits were dropped:\n{log}"
        );
    }
}

/// The hostname inside a running container, its /etc/hostname and its init's HOSTNAME.
async fn hostnames_seen(kraald: &Kraald, id: &str) -> (String, String, String) {
    (
        kraald.exec_ok(id, &["hostname"]).await,
        kraald.exec_ok(id, &["cat", "/etc/hostname"]).await,
        kraald
            .exec_ok(
                id,
                &[
                    "sh",
                    "-c",
                    "tr '\\0' '\\n' < /proc/1/environ | sed -n 's/^HOSTNAME=//p'",
                ],
            )
            .await,
    )
}

#[tokio::test]
async fn pods_without_a_hostname_get_the_nodes_whatever_their_name() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let node = node_hostname();
    let host_uts = std::fs::read_link("/proc/self/ns/uts").expect("uts ns");
    for host_network in [false, true] {
        let name = long_name(if host_network { "hn" } else { "own" });
        let mut pod_cfg = pod_config(&name, host_network);
        // critest's pods, and kubelet's hostNetwork pods: no hostname at all.
        pod_cfg.hostname.clear();
        let pod = kraald
            .run_pod(pod_cfg.clone())
            .await
            .unwrap_or_else(|s| panic!("RunPodSandbox {name} ({host_network}): {s:?}"));
        let id = kraald
            .run_container(&pod, &pod_cfg, shell_container("c", &image, SERVE))
            .await;
        // containerd: no sethostname, so a pod's own UTS namespace keeps the node's
        // hostname it started with, and /etc/hostname says the same.
        assert_eq!(
            hostnames_seen(&kraald, &id).await,
            (node.clone(), node.clone(), node.clone()),
            "host_network {host_network}"
        );
        let uts = kraald
            .exec_ok(&id, &["readlink", "/proc/self/ns/uts"])
            .await;
        assert_eq!(
            uts == host_uts.to_string_lossy(),
            host_network,
            "only hostNetwork pods share the node's UTS namespace"
        );
        kraald.remove_pod(&pod).await;
    }
}

#[tokio::test]
async fn a_requested_hostname_is_set_and_checked() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let mut pod_cfg = pod_config(&long_name("named"), false);
    pod_cfg.hostname = "kraal-set-name".into();
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let id = kraald
        .run_container(&pod, &pod_cfg, shell_container("c", &image, SERVE))
        .await;
    let want = "kraal-set-name".to_string();
    assert_eq!(
        hostnames_seen(&kraald, &id).await,
        (want.clone(), want.clone(), want)
    );

    // A requested hostname the kernel cannot take is the request's fault, said as such.
    let mut bad = pod_config("toolong", false);
    bad.hostname = "h".repeat(70);
    assert_code(kraald.run_pod(bad).await, Code::InvalidArgument, "hostname");
}

#[tokio::test]
async fn privileged_and_add_all_get_exactly_the_hosts_capabilities() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = privileged_pod("caps");
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let want = format!("CapEff:\t{}", host_cap_bound());

    let mut config = shell_container("priv", &image, SERVE);
    security(&mut config).privileged = true;
    let id = kraald.run_container(&pod, &pod_cfg, config).await;
    assert_eq!(
        kraald
            .exec_ok(&id, &["grep", "CapEff", "/proc/1/status"])
            .await,
        want
    );

    let mut config = shell_container("all", &image, SERVE);
    security(&mut config).capabilities = Some(cri::Capability {
        add_capabilities: vec!["ALL".into()],
        ..Default::default()
    });
    let id = kraald.run_container(&pod, &pod_cfg, config).await;
    assert_eq!(
        kraald
            .exec_ok(&id, &["grep", "CapEff", "/proc/1/status"])
            .await,
        want
    );
}

/// A directory bind-mounted on itself and made a shared mount (or a slave's master), the
/// way kubelet's volume directories are; unmounted with everything below it on drop.
struct SharedDir {
    dir: tempfile::TempDir,
}

impl SharedDir {
    fn new() -> SharedDir {
        let dir = tempfile::Builder::new()
            .prefix("kraal-prop-")
            .tempdir()
            .expect("temp dir");
        mount(
            Some(dir.path()),
            dir.path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind the dir on itself");
        mount(
            None::<&str>,
            dir.path(),
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .expect("make it shared");
        SharedDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        // Mounts that propagated in sit below the bind; a lazy unmount of the bind takes
        // them all.
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

fn is_mount_point(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let path = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(path.as_ref()))
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never happened");
}

#[tokio::test]
async fn bidirectional_and_host_to_container_mounts_propagate() {
    let bidi = SharedDir::new();
    let h2c = SharedDir::new();
    std::fs::create_dir(bidi.path().join("inner")).expect("mkdir inner");
    std::fs::create_dir(h2c.path().join("sub")).expect("mkdir sub");
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = privileged_pod("propagation");
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");

    let mut config = shell_container(
        "prop",
        &image,
        &format!(
            "mount -t tmpfs inside /bidi/inner && echo from-container > /bidi/inner/made; {SERVE}"
        ),
    );
    security(&mut config).privileged = true;
    config.mounts = vec![
        cri::Mount {
            container_path: "/bidi".into(),
            host_path: bidi.path().to_string_lossy().into_owned(),
            propagation: cri::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        },
        cri::Mount {
            container_path: "/h2c".into(),
            host_path: h2c.path().to_string_lossy().into_owned(),
            propagation: cri::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        },
    ];
    let id = kraald.run_container(&pod, &pod_cfg, config).await;

    // Bidirectional: the container's tmpfs shows up on the node.
    let inner = bidi.path().join("inner");
    eventually("the container's mount appearing on the node", || {
        is_mount_point(&inner)
            && std::fs::read_to_string(inner.join("made")).is_ok_and(|s| s == "from-container\n")
    })
    .await;

    // Host to container: a mount the node makes later shows up inside.
    let sub = h2c.path().join("sub");
    mount(
        Some("node"),
        &sub,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("tmpfs on the node");
    std::fs::write(sub.join("seen"), "from-node\n").expect("write on the node");
    let out = kraald
        .exec(&id, &["sh", "-c", "for i in $(seq 100); do cat /h2c/sub/seen 2>/dev/null && exit 0; sleep 0.05; done; exit 1"], 20)
        .await
        .expect("ExecSync");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-node\n",
        "the node's mount did not reach the container"
    );
    kraald.remove_pod(&pod).await;
    let _ = umount2(&sub, MntFlags::MNT_DETACH);
    let _ = umount2(&inner, MntFlags::MNT_DETACH);
}

#[tokio::test]
async fn run_as_group_without_run_as_user_is_refused() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("rungroup", false);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let mut config = shell_container("grouponly", &image, SERVE);
    security(&mut config).run_as_group = Some(cri::Int64Value { value: 1234 });
    let status = kraald
        .create(&pod, &pod_cfg, config)
        .await
        .expect_err("a group without a user is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("run_as_group") && status.message().contains("run_as_user"),
        "{:?} should name both fields",
        status.message()
    );
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn a_failed_create_leaves_no_log_file() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let log_dir = kraald.dir().join("pod-logs");
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let mut pod_cfg = pod_config("faillog", false);
    pod_cfg.log_directory = log_dir.to_string_lossy().into_owned();
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let a_file = kraald.dir().join("a-file");
    std::fs::write(&a_file, "x").expect("write a file");

    // Each fails at a different step; kubelet names the log <name>_<attempt>.log.
    let mount = |host: &Path, container: &str| cri::Mount {
        container_path: container.into(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let mut failing = Vec::new();
    // A file onto the image's /etc directory: only libcontainer finds out, in the
    // container's mount namespace, after the monitor has opened the log.
    let mut c = shell_container("file-on-dir", &image, SERVE);
    c.mounts = vec![mount(&a_file, "/etc")];
    failing.push(c);
    // A missing mount source: found while the spec is built.
    let mut c = shell_container("no-source", &image, SERVE);
    c.mounts = vec![mount(&kraald.dir().join("missing"), "/data")];
    failing.push(c);
    // A localhost seccomp profile that does not exist.
    let mut c = shell_container("bad-seccomp", &image, SERVE);
    security(&mut c).seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::Localhost as i32,
        localhost_ref: kraald
            .dir()
            .join("no-profile.json")
            .to_string_lossy()
            .into_owned(),
    });
    failing.push(c);
    for (attempt, mut config) in failing.into_iter().enumerate() {
        let name = config.metadata.as_ref().expect("metadata").name.clone();
        config.log_path = format!("{name}_{attempt}.log");
        let result = kraald.create(&pod, &pod_cfg, config).await;
        assert!(
            result.is_err(),
            "{name}: expected a refused create, got {result:?}"
        );
        assert_eq!(log_files(&log_dir), Vec::<PathBuf>::new(), "{name}");
    }

    // A log file that was there before the call is not the call's to remove.
    let earlier = log_dir.join("kept_0.log");
    std::fs::write(&earlier, "earlier run\n").expect("write earlier log");
    let mut config = shell_container("kept", &image, SERVE);
    config.mounts = vec![mount(&a_file, "/etc")];
    config.log_path = "kept_0.log".into();
    assert!(kraald.create(&pod, &pod_cfg, config).await.is_err());
    assert_eq!(
        std::fs::read_to_string(&earlier).expect("earlier log kept"),
        "earlier run\n"
    );
}
