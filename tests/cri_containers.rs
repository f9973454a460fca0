//! Pods and containers through the CRI socket: real containers on libcontainer, real
//! namespaces and cgroups, checked from inside the container and from the node.

use std::time::{Duration, Instant};

use kraal_e2e::{
    CgroupDirs, Kraald, Registry, assert_code, cri, pod_config, read_trimmed, shell_container,
};
use tonic::Code;

/// sh as PID 1 ignores SIGTERM unless it traps it; this one exits 0 on TERM.
const SERVE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

#[tokio::test]
async fn host_network_pod_lifecycle_logs_and_exec() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("hostnet", true);
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let log_dir = kraald.dir().join("logs");
    let mut pod_cfg = pod_cfg;
    pod_cfg.log_directory = log_dir.to_string_lossy().into_owned();
    // The log directory is the sandbox's: recreate the pod with it.
    kraald.remove_pod(&pod).await;
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");

    let id = kraald
        .run_container(
            &pod,
            &pod_cfg,
            shell_container(
                "web",
                &image,
                &format!("echo hello; echo oops >&2; {SERVE}"),
            ),
        )
        .await;
    let status = kraald.container_status(&id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert!(status.started_at > status.created_at);
    assert_eq!(status.log_path, log_dir.join("web.log").to_string_lossy());

    // Host network and host UTS: the container sees the node's hostname and interfaces.
    let node_hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(kraald.exec_ok(&id, &["hostname"]).await, node_hostname);
    let node_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        kraald
            .exec_ok(&id, &["readlink", "/proc/self/ns/net"])
            .await,
        node_net.to_string_lossy()
    );

    // ExecSync keeps stdout and stderr apart and returns the exit code.
    let out = kraald
        .exec(&id, &["sh", "-c", "echo out; echo err >&2; exit 4"], 10)
        .await
        .expect("ExecSync");
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.exit_code, 4);

    // The CRI log format: <RFC3339Nano> <stream> <F|P> <line>.
    let log = wait_for_log(&log_dir.join("web.log"), 2).await;
    let lines: Vec<&str> = log.lines().collect();
    let mut seen = Vec::new();
    for line in &lines {
        let mut parts = line.splitn(4, ' ');
        let time = parts.next().unwrap();
        let stream = parts.next().unwrap();
        let tag = parts.next().unwrap();
        let text = parts.next().unwrap_or("");
        assert!(
            time.len() == 30 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "timestamp {time:?} is not RFC3339 with nanoseconds"
        );
        assert_eq!(tag, "F", "{line}");
        seen.push((stream.to_string(), text.to_string()));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("stderr".into(), "oops".into()),
            ("stdout".into(), "hello".into())
        ]
    );

    // Lists and filters.
    let mut client = kraald.runtime().await;
    let listed = client
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    let pods = client
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: pod[..12].to_string(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);

    // Stats: the container's cgroup, with working set <= usage.
    let stats = client
        .container_stats(cri::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let memory = stats.memory.unwrap();
    let usage = memory.usage_bytes.unwrap().value;
    let working_set = memory.working_set_bytes.unwrap().value;
    assert!(usage > 0 && working_set <= usage, "{usage} {working_set}");
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);

    // Stop: SIGTERM is trapped, the container exits 0, promptly.
    let started = Instant::now();
    client
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let status = kraald.container_status(&id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.reason, "Completed");

    // Remove: container, then pod; both idempotent.
    for _ in 0..2 {
        client
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
    }
    kraald.remove_pod(&pod).await;
    kraald.remove_pod(&pod).await;
    assert_node_clean(&kraald, &pod_cfg);
}

#[tokio::test]
async fn own_netns_pod_isolates_and_containers_share_ipc_and_network() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let mut pod_cfg = pod_config("isolated", false);
    pod_cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["kraal-e2e.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    pod_cfg
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.ip_local_port_range".into(), "20000 20999".into());
    let pod = kraald
        .run_pod(pod_cfg.clone())
        .await
        .expect("RunPodSandbox");
    let a = kraald
        .run_container(&pod, &pod_cfg, shell_container("a", &image, SERVE))
        .await;
    // The pod's namespaced sysctl is set in its own network namespace only.
    let range = kraald
        .exec_ok(&a, &["cat", "/proc/sys/net/ipv4/ip_local_port_range"])
        .await;
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20999"]
    );
    let node_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    assert_ne!(
        node_range.split_whitespace().collect::<Vec<_>>(),
        ["20000", "20999"],
        "the node's own range changed"
    );
    let b = kraald
        .run_container(&pod, &pod_cfg, shell_container("b", &image, SERVE))
        .await;

    assert_eq!(kraald.exec_ok(&a, &["hostname"]).await, "isolated");
    // Only loopback, and it is up.
    let devices = kraald.exec_ok(&a, &["cat", "/proc/net/dev"]).await;
    let names: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, vec!["lo"], "{devices}");
    let resolv = kraald.exec_ok(&a, &["cat", "/etc/resolv.conf"]).await;
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search kraal-e2e.svc.cluster.local"),
        "{resolv}"
    );

    // Both containers are in the pod's network, IPC and UTS namespaces, not the node's.
    for ns in ["net", "ipc", "uts"] {
        let path = format!("/proc/self/ns/{ns}");
        let in_a = kraald.exec_ok(&a, &["readlink", &path]).await;
        let in_b = kraald.exec_ok(&b, &["readlink", &path]).await;
        let node = std::fs::read_link(&path).unwrap();
        assert_eq!(in_a, in_b, "{ns}");
        assert_ne!(in_a, node.to_string_lossy(), "{ns} must not be the node's");
    }
    // Shared network for real: b reaches a listener in a over 127.0.0.1.
    // The listener's stdin stays open (a background job's would be /dev/null): busybox nc
    // half-closes the connection when its stdin ends, and a sender that saw that FIN before
    // it had read its own stdin exited 0 without sending. It waits until the listener is up.
    let listener = kraald
        .exec(
            &a,
            &[
                "sh",
                "-c",
                "sleep 60 2>/dev/null | nc -l -p 7777 >/tmp/got 2>&1 & \
                 until netstat -tln | grep -q ':7777 '; do sleep 0.05; done; echo ok",
            ],
            20,
        )
        .await
        .unwrap();
    assert_eq!(listener.exit_code, 0);
    let sent = kraald
        .exec(&b, &["sh", "-c", "echo ping | nc -w 2 127.0.0.1 7777"], 10)
        .await
        .unwrap();
    assert_eq!(
        sent.exit_code,
        0,
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let mut got = String::new();
    for _ in 0..200 {
        got = kraald.exec_ok(&a, &["cat", "/tmp/got"]).await;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, "ping");
    // Shared IPC for real: a SysV message queue made in a is visible in b.
    kraald
        .exec_ok(&a, &["sh", "-c", "echo hi > /dev/shm/marker"])
        .await;
    assert_eq!(kraald.exec_ok(&b, &["cat", "/dev/shm/marker"]).await, "hi");

    // Verbose status shows where the pod lives.
    let (status, info) = kraald.pod_status_verbose(&pod).await;
    assert_eq!(info["hostNetwork"], false);
    assert_eq!(status.containers_statuses.len(), 2);
    // On hybrid and v2 hosts, every container process is also in the pod's cgroup2 dir.
    if let Some(unified) = info["unifiedCgroup"].as_str() {
        let procs = collect_procs(std::path::Path::new(unified));
        assert!(procs.len() >= 2, "no container processes under {unified}");
    }
    kraald.remove_pod(&pod).await;
    assert_node_clean(&kraald, &pod_cfg);
}

#[tokio::test]
async fn exit_codes_and_oom_killed() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("exits", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let ok = kraald
        .run_container(&pod, &pod_cfg, shell_container("ok", &image, "true"))
        .await;
    let fail = kraald
        .run_container(&pod, &pod_cfg, shell_container("fail", &image, "exit 3"))
        .await;
    let mut oom_cfg = shell_container(
        "oom",
        &image,
        "x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived",
    );
    oom_cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 * 1024 * 1024,
            ..Default::default()
        }),
        ..Default::default()
    });
    let oom = kraald.run_container(&pod, &pod_cfg, oom_cfg).await;

    let s = kraald.wait_exited(&ok, Duration::from_secs(20)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"));
    assert!(s.finished_at >= s.started_at);
    let s = kraald.wait_exited(&fail, Duration::from_secs(20)).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"));
    let s = kraald.wait_exited(&oom, Duration::from_secs(60)).await;
    assert_eq!(s.reason, "OOMKilled", "{s:?}");
    assert_eq!(s.exit_code, 137, "{s:?}");
    kraald.remove_pod(&pod).await;
}

#[tokio::test]
async fn stop_kills_a_container_that_ignores_sigterm_after_the_timeout() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("stubborn", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let id = kraald
        .run_container(
            &pod,
            &pod_cfg,
            shell_container(
                "stubborn",
                &image,
                "trap '' TERM; while true; do sleep 0.2; done",
            ),
        )
        .await;
    let started = Instant::now();
    kraald
        .runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 2,
        })
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "SIGKILL came early: {took:?}"
    );
    let s = kraald.container_status(&id).await;
    assert_eq!(s.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(s.exit_code, 137);
    kraald.remove_pod(&pod).await;
}

#[tokio::test]
async fn exec_sync_timeout_kills_the_command() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("exectimeout", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let id = kraald
        .run_container(&pod, &pod_cfg, shell_container("c", &image, SERVE))
        .await;
    let started = Instant::now();
    let result = kraald.exec(&id, &["sleep", "300"], 1).await;
    assert_code(result, Code::DeadlineExceeded, "timed out");
    assert!(started.elapsed() < Duration::from_secs(10));
    let ps = kraald.exec_ok(&id, &["ps", "-o", "args"]).await;
    assert!(
        !ps.contains("sleep 300"),
        "the timed-out command still runs:\n{ps}"
    );
    // Bad input.
    assert_code(kraald.exec(&id, &[], 1).await, Code::InvalidArgument, "cmd");
    assert_code(
        kraald.exec("nope", &["true"], 1).await,
        Code::NotFound,
        "nope",
    );
    kraald.remove_pod(&pod).await;
}

#[tokio::test]
async fn users_groups_readonly_rootfs_and_seccomp() {
    let kraald = Kraald::start("").await;
    let registry = Registry::from_env();
    let busybox = kraald.pull_busybox().await;
    let named = registry.image("kraal-test/nonroot:name");
    kraald
        .images()
        .await
        .pull_image(kraal_e2e::pull_request(&named))
        .await
        .unwrap();
    let pod_cfg = pod_config("users", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();

    // Image USER by name, resolved in the image's /etc/passwd and /etc/group.
    let c = kraald
        .run_container(&pod, &pod_cfg, shell_container("named", &named, SERVE))
        .await;
    assert_eq!(kraald.exec_ok(&c, &["id", "-u"]).await, "1000");
    assert_eq!(kraald.exec_ok(&c, &["id", "-g"]).await, "1000");
    let groups = kraald.exec_ok(&c, &["id", "-G"]).await;
    assert!(groups.split(' ').any(|g| g == "2000"), "{groups}");

    // run_as_user / run_as_group from the security context, readonly rootfs.
    let mut cfg = shell_container("numeric", &busybox, SERVE);
    cfg.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 4321 }),
            run_as_group: Some(cri::Int64Value { value: 765 }),
            supplemental_groups: vec![3000],
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = kraald.run_container(&pod, &pod_cfg, cfg).await;
    assert_eq!(kraald.exec_ok(&c, &["id", "-u"]).await, "4321");
    assert_eq!(kraald.exec_ok(&c, &["id", "-g"]).await, "765");
    assert!(kraald.exec_ok(&c, &["id", "-G"]).await.contains("3000"));
    let touch = kraald.exec(&c, &["touch", "/newfile"], 10).await.unwrap();
    assert_ne!(touch.exit_code, 0, "readonly rootfs accepted a write");
    assert!(String::from_utf8_lossy(&touch.stderr).contains("Read-only"));

    // RuntimeDefault filters the container; an oom_score_adj below what this host allows is
    // raised to the floor instead of failing the container.
    let floor: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut cfg = shell_container("default-profile", &busybox, SERVE);
    cfg.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            oom_score_adj: -999,
            ..Default::default()
        }),
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
    });
    let c = kraald.run_container(&pod, &pod_cfg, cfg).await;
    let init_status = kraald.exec_ok(&c, &["cat", "/proc/1/status"]).await;
    assert!(
        init_status.lines().any(|l| l == "Seccomp:\t2"),
        "{init_status}"
    );
    let adj: i32 = kraald
        .exec_ok(&c, &["cat", "/proc/1/oom_score_adj"])
        .await
        .parse()
        .unwrap();
    assert!(
        (-999..=floor.max(-999)).contains(&adj),
        "oom_score_adj {adj}"
    );

    // A Localhost seccomp profile that blocks mkdir really blocks it.
    let profile = kraald.dir().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut cfg = shell_container("seccomp", &busybox, SERVE);
    cfg.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: profile.to_string_lossy().into_owned(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = kraald.run_container(&pod, &pod_cfg, cfg).await;
    // The container's own process runs under the filter (mode 2 = filter)...
    let init_status = kraald.exec_ok(&c, &["cat", "/proc/1/status"]).await;
    assert!(
        init_status.lines().any(|l| l == "Seccomp:\t2"),
        "init is not filtered:\n{init_status}"
    );
    // ...and so does a process exec'd into it.
    let mkdir = kraald
        .exec(&c, &["mkdir", "/tmp/blocked"], 10)
        .await
        .unwrap();
    assert_ne!(mkdir.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&mkdir.stderr).contains("not permitted"),
        "{:?}",
        String::from_utf8_lossy(&mkdir.stderr)
    );
    assert_eq!(
        kraald
            .exec_ok(&c, &["sh", "-c", "touch /tmp/ok && echo yes"])
            .await,
        "yes"
    );

    // An image in use cannot be removed.
    let removed = kraald
        .images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: kraal_e2e::image_spec(&named),
        })
        .await;
    assert_code(removed, Code::FailedPrecondition, "in use by container");
    kraald.remove_pod(&pod).await;
}

#[tokio::test]
async fn containers_survive_kraald_sigkill_and_exits_while_down_are_reported() {
    let mut kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("survivor", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let long = kraald
        .run_container(&pod, &pod_cfg, shell_container("long", &image, SERVE))
        .await;
    let short = kraald
        .run_container(
            &pod,
            &pod_cfg,
            shell_container("short", &image, "sleep 2; exit 7"),
        )
        .await;
    let pid_file_before = kraald.exec_ok(&long, &["sh", "-c", "echo alive"]).await;
    assert_eq!(pid_file_before, "alive");

    kraald.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    kraald.start_again().await;

    let s = kraald.container_status(&long).await;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "{}",
        kraald.log()
    );
    assert_eq!(
        kraald.exec_ok(&long, &["echo", "still here"]).await,
        "still here"
    );
    let s = kraald.wait_exited(&short, Duration::from_secs(10)).await;
    assert_eq!(
        s.exit_code, 7,
        "the exit while kraald was down is its real code"
    );

    // A later exit is noticed by the restarted kraald.
    kraald
        .runtime()
        .await
        .stop_container(cri::StopContainerRequest {
            container_id: long.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    let s = kraald.wait_exited(&long, Duration::from_secs(10)).await;
    assert_eq!(s.exit_code, 0);
    kraald.remove_pod(&pod).await;
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_leave_nothing_behind() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let pod_cfg = pod_config("bad", true);
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();

    assert_code(
        kraald
            .create(
                &pod,
                &pod_cfg,
                shell_container("x", "127.0.0.1:1/nope:latest", "true"),
            )
            .await,
        Code::NotFound,
        "127.0.0.1:1/nope:latest",
    );
    let mut cfg = shell_container("mount", &image, "true");
    cfg.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/kraal-e2e".into(),
        ..Default::default()
    }];
    let bad_mount = kraald.create(&pod, &pod_cfg, cfg).await;
    assert!(bad_mount.is_err(), "a missing mount source was accepted");
    assert!(
        bad_mount
            .unwrap_err()
            .message()
            .contains("/nonexistent/kraal-e2e"),
        "the error names the mount source"
    );
    assert_code(
        kraald
            .create(
                "no-such-pod",
                &pod_cfg,
                shell_container("x", &image, "true"),
            )
            .await,
        Code::NotFound,
        "no-such-pod",
    );
    let first = kraald
        .run_container(&pod, &pod_cfg, shell_container("dup", &image, SERVE))
        .await;
    assert_code(
        kraald
            .create(&pod, &pod_cfg, shell_container("dup", &image, SERVE))
            .await,
        Code::AlreadyExists,
        &first,
    );
    let mut no_meta = pod_config("nometa", true);
    no_meta.metadata = None;
    assert_code(
        kraald.run_pod(no_meta).await,
        Code::InvalidArgument,
        "metadata",
    );
    let mut bad_sysctl = pod_config("sysctl", true);
    bad_sysctl
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("net.ipv4.ip_forward".into(), "1".into());
    assert_code(
        kraald.run_pod(bad_sysctl).await,
        Code::InvalidArgument,
        "net.ipv4.ip_forward",
    );

    // Only the one good container exists; the failed creates left no dirs, mounts or cgroups.
    let listed = kraald
        .runtime()
        .await
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    let dirs: Vec<_> = std::fs::read_dir(kraald.state.join("c"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(dirs, vec![std::ffi::OsString::from(&first)]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = kraald.state.to_string_lossy().into_owned();
    let rootfs_mounts = mounts
        .lines()
        .filter(|l| l.contains(&state) && l.contains("rootfs"))
        .count();
    assert_eq!(
        rootfs_mounts, 1,
        "only the good container's rootfs is mounted"
    );
    // The pod's memory directory (v1, or the unified one on v2) and, on hybrid hosts, its
    // cgroup2 directory too: one child each, the good container's.
    let pod_cgroup = kraald.pod_cgroup(&pod).await;
    let mut dirs = vec![pod_cgroup.controller("memory").to_path_buf()];
    dirs.extend(pod_cgroup.unified().map(std::path::Path::to_path_buf));
    dirs.dedup();
    for dir in dirs {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the pod cgroup {}: {e}", dir.display()));
        let cgroups: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(cgroups, vec![format!("kraal-{first}")], "{}", dir.display());
    }
    // The running container was not disturbed by the bad requests.
    assert_eq!(kraald.exec_ok(&first, &["echo", "fine"]).await, "fine");
    kraald.remove_pod(&pod).await;
    assert_node_clean(&kraald, &pod_cfg);
}

async fn wait_for_log(path: &std::path::Path, lines: usize) -> String {
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.lines().count() >= lines
        {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never got {lines} lines", path.display());
}

fn collect_procs(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().map(str::to_string));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    out
}

/// After RemovePodSandbox: no pod cgroup in any hierarchy kraal uses, no mounts under the
/// state dir.
fn assert_node_clean(kraald: &Kraald, pod_cfg: &cri::PodSandboxConfig) {
    let parent = pod_cfg.linux.as_ref().unwrap().cgroup_parent.clone();
    let dirs = CgroupDirs::of(&parent);
    assert!(!dirs.all().is_empty());
    let left = dirs.existing();
    assert!(left.is_empty(), "pod cgroup left behind: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = kraald.state.to_string_lossy().into_owned();
    let left: Vec<&str> = mounts.lines().filter(|l| l.contains(&state)).collect();
    assert!(left.is_empty(), "mounts left behind: {left:#?}");
}

#[tokio::test]
async fn update_resources_reopen_log_and_events() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let mut pod_cfg = pod_config("updates", true);
    let log_dir = kraald.dir().join("logs");
    pod_cfg.log_directory = log_dir.to_string_lossy().into_owned();
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();

    // Subscribe to events before anything happens to the container.
    let mut events = kraald
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let id = kraald
        .run_container(
            &pod,
            &pod_cfg,
            shell_container(
                "ticker",
                &image,
                "trap 'exit 0' TERM; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done",
            ),
        )
        .await;

    // New limits reach the cgroup and the status.
    let mut client = kraald.runtime().await;
    client
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                memory_limit_in_bytes: 64 * 1024 * 1024,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    // v1 memory.limit_in_bytes and cpu.cfs_quota_us, v2 memory.max and cpu.max.
    let cgroup = kraald.container_cgroup(&id).await;
    let limit = cgroup.file("memory", "memory.limit_in_bytes", "memory.max");
    assert_eq!(read_trimmed(&limit), "67108864", "{}", limit.display());
    assert_eq!(cgroup.cpu_max(), (Some(50_000), 100_000), "{cgroup:?}");
    let status = kraald.container_status(&id).await;
    let linux = status.resources.unwrap().linux.unwrap();
    assert_eq!(linux.memory_limit_in_bytes, 64 * 1024 * 1024);
    assert_code(
        client
            .update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: id.clone(),
                linux: Some(cri::LinuxContainerResources {
                    cpu_quota: 5,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "cpu_quota",
    );

    // kubelet's log rotation: rename, reopen, and new lines land in the new file.
    let log = log_dir.join("ticker.log");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rotated = log_dir.join("ticker.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    client
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = std::fs::read_to_string(&log).expect("a new log file after reopen");
    assert!(fresh.lines().count() >= 2, "{fresh}");
    assert!(
        fresh.lines().all(|l| l.contains(" stdout F tick ")),
        "{fresh}"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    let last_old: u64 = old
        .lines()
        .last()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let first_new: u64 = fresh
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        first_new > last_old,
        "no line lost or repeated across the reopen"
    );

    client
        .stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    client
        .remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    // Events: created, started, stopped, deleted, in that order, for this container.
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.message())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .unwrap();
        if event.container_id == id {
            kinds.push(event.container_event_type);
        }
    }
    use cri::ContainerEventType as E;
    assert_eq!(
        kinds,
        vec![
            E::ContainerCreatedEvent as i32,
            E::ContainerStartedEvent as i32,
            E::ContainerStoppedEvent as i32,
            E::ContainerDeletedEvent as i32,
        ]
    );
    kraald.remove_pod(&pod).await;
}

#[tokio::test]
async fn a_shared_pid_namespace_pod_has_an_infra_process_and_containers_see_each_other() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;
    let mut pod_cfg = pod_config("sharedpid", false);
    if let Some(ns) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = 0; // POD
    }
    let pod = kraald.run_pod(pod_cfg.clone()).await.unwrap();
    let a = kraald
        .run_container(
            &pod,
            &pod_cfg,
            shell_container(
                "a",
                &image,
                "trap 'exit 0' TERM; while true; do sleep 0.31; done",
            ),
        )
        .await;
    let b = kraald
        .run_container(&pod, &pod_cfg, shell_container("b", &image, SERVE))
        .await;
    // PID 1 of the pod's namespace is kraal's infra process, not a container.
    let init = kraald.exec_ok(&b, &["cat", "/proc/1/cmdline"]).await;
    assert!(init.contains("__pod-infra"), "{init:?}");
    let ps = kraald.exec_ok(&b, &["ps", "-o", "args"]).await;
    assert!(
        ps.contains("sleep 0.31"),
        "b does not see a's processes:\n{ps}"
    );
    let (_, info) = kraald.pod_status_verbose(&pod).await;
    let infra_pid = info["pid"].as_i64().expect("infra pid in the verbose info");
    assert!(std::path::Path::new(&format!("/proc/{infra_pid}")).exists());
    // The infra process has a leaf cgroup of its own below the pod's, in every hierarchy:
    // never the pod cgroup itself, which has the containers' cgroups below it (cgroup v2
    // forbids a process there once the children use controllers).
    let pod_cgroup = CgroupDirs::from_info(&info);
    let interior = pod_cgroup.interior_processes();
    assert!(
        interior.is_empty(),
        "processes in cgroups that have child cgroups: {interior:?}"
    );
    let infra_rel = info["infraCgroup"]
        .as_str()
        .unwrap_or_else(|| panic!("no infraCgroup in the verbose info: {info}"));
    let infra_cgroup = CgroupDirs::of(infra_rel);
    for dir in infra_cgroup.all() {
        assert!(
            read_trimmed(&dir.join("cgroup.procs"))
                .lines()
                .any(|p| p == infra_pid.to_string()),
            "infra process {infra_pid} is not in {}",
            dir.display()
        );
    }
    assert!(
        infra_cgroup
            .all()
            .iter()
            .all(|d| pod_cgroup.all().iter().any(|p| d.parent() == Some(*p))),
        "{infra_cgroup:?} is not a child of the pod cgroup {pod_cgroup:?}"
    );
    let _ = a;
    kraald.remove_pod(&pod).await;
    // The infra process is gone with the pod (it may linger a moment as it is reaped).
    let mut gone = false;
    for _ in 0..50 {
        let cmdline =
            std::fs::read_to_string(format!("/proc/{infra_pid}/cmdline")).unwrap_or_default();
        if !cmdline.contains("__pod-infra") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the infra process {infra_pid} outlived its pod");
    assert_node_clean(&kraald, &pod_cfg);
}

#[tokio::test]
async fn bad_pod_annotations_are_refused_before_anything_is_created() {
    let kraald = Kraald::start("").await;
    let image = kraald.pull_busybox().await;

    // A malformed value: the key, the value and the expected form are named.
    let mut bad = pod_config("badpolicy", true);
    bad.annotations
        .insert("kraal.dev/cpu-burst".into(), "lots".into());
    let err = kraald.run_pod(bad).await.expect_err("a bad annotation");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("kraal.dev/cpu-burst"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("lots"), "{}", err.message());
    // An unknown kraal.dev key (a typo) is refused too.
    let mut typo = pod_config("typo", true);
    typo.annotations
        .insert("kraal.dev/cpu_burst".into(), "500m".into());
    assert_code(
        kraald.run_pod(typo).await,
        Code::InvalidArgument,
        "kraal.dev/cpu_burst",
    );
    // Nothing was created for either.
    let pods = kraald
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    for name in ["badpolicy", "typo"] {
        let parent = format!("/kraal-e2e/pod-{name}-{}", std::process::id());
        let created = CgroupDirs::of(&parent).existing();
        assert!(created.is_empty(), "{created:?} was created");
    }

    // A valid policy is accepted and shown; a container whose limits contradict it is refused.
    let mut good = pod_config("goodpolicy", true);
    good.annotations
        .insert("kraal.dev/cpu-burst".into(), "500m".into());
    let pod = kraald.run_pod(good.clone()).await.expect("valid policy");
    let (_, info) = kraald.pod_status_verbose(&pod).await;
    assert!(!info["policy"].is_null(), "{info}");
    // A burst without a CPU limit has nothing to burst above.
    assert_code(
        kraald
            .create(&pod, &good, shell_container("nolimit", &image, SERVE))
            .await,
        Code::InvalidArgument,
        "kraal.dev/cpu-burst",
    );
    let mut limited = shell_container("limited", &image, SERVE);
    limited.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 100_000,
            ..Default::default()
        }),
        ..Default::default()
    });
    kraald.run_container(&pod, &good, limited).await;
    kraald.remove_pod(&pod).await;
}
