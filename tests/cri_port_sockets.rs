//! hostNetwork pods' local ports as their own processes see them. Pods are made through the
//! CRI socket; a socket probe (tools/socktool.rs, mounted with the host's libc into a busybox
//! container) binds, connects and churns inside the pod and prints every port it got, which
//! the tests check against the pod's range. Each test uses its own ports: they share the
//! host's network.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::time::Duration;

use kraal_e2e::*;

const SOCKTOOL: &str = env!("CARGO_BIN_EXE_socktool");
const EPERM: i32 = 1;
const EACCES: i32 = 13;
const EADDRINUSE: i32 = 98;
const EADDRNOTAVAIL: i32 = 99;

/// A busybox container that sleeps, with socktool at /socktool and the host's libc beside it.
fn probe(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    let mut config = shell_container(name, image, script);
    config.mounts = host_binary_mounts(&[(SOCKTOOL, "/socktool")]);
    config
}

fn host_pod(name: &str, annotations: &[(&str, &str)]) -> cri::PodSandboxConfig {
    let mut pod = pod_config(name, true);
    for (key, value) in annotations {
        pod.annotations.insert(key.to_string(), value.to_string());
    }
    pod
}

/// One line of socktool: `ok <port>` or `err <errno>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Port(u16),
    Errno(i32),
}

async fn socktool(k: &Kraald, id: &str, args: &[&str]) -> Vec<Got> {
    let mut cmd = vec!["/socktool"];
    cmd.extend_from_slice(args);
    let out = k.exec(id, &cmd, 120).await.expect("ExecSync socktool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "socktool {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|line| match line.split_once(' ') {
            Some(("ok", port)) => Got::Port(port.parse().expect("port")),
            Some(("err", errno)) => Got::Errno(errno.parse().expect("errno")),
            _ => panic!("socktool {args:?} printed {line:?}"),
        })
        .collect()
}

fn ports(got: &[Got]) -> Vec<u16> {
    got.iter()
        .filter_map(|g| match g {
            Got::Port(p) => Some(*p),
            Got::Errno(_) => None,
        })
        .collect()
}

/// `n` ports handed out, every one inside `range` and all different, then only `errno`.
fn assert_fills(got: &[Got], range: (u16, u16), errno: i32, what: &str) {
    let size = usize::from(range.1 - range.0) + 1;
    let (first, rest) = got.split_at(size.min(got.len()));
    let handed = ports(first);
    assert_eq!(
        handed.len(),
        first.len(),
        "{what}: a failure before the range was full: {first:?}"
    );
    for port in &handed {
        assert!(
            (range.0..=range.1).contains(port),
            "{what}: port {port} outside {range:?}"
        );
    }
    let distinct: BTreeSet<u16> = handed.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        handed.len(),
        "{what}: a port handed out twice"
    );
    assert!(
        rest.iter().all(|g| *g == Got::Errno(errno)),
        "{what}: past a full range expected errno {errno} every time: {rest:?}"
    );
}

/// A TCP server on the host's loopback (its port from the host's range) that holds every
/// connection until the client closes it.
fn holding_server() -> String {
    serve(|stream| {
        std::thread::spawn(move || {
            let mut stream = stream;
            let _ = stream.read_to_end(&mut Vec::new());
        });
    })
}

/// A server that reads each connection to its end and closes it, one at a time, as an
/// echo-style service does: the client closes first, so its ports go through TIME_WAIT.
fn closing_server() -> String {
    serve(|mut stream| {
        let _ = stream.read_to_end(&mut Vec::new());
    })
}

fn serve(handle: impl Fn(std::net::TcpStream) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || listener.incoming().flatten().for_each(handle));
    addr
}

async fn counters(k: &Kraald, pod: &str) -> serde_json::Value {
    let (_, info) = k.pod_status_verbose(pod).await;
    info["portCounters"].clone()
}

#[tokio::test]
async fn every_port_a_host_network_pod_gets_is_in_its_range() {
    let k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let range = (20000, 20099);
    let cfg = host_pod(
        "sockets",
        &[
            ("kraal.dev/bind-ports", "20000-20099"),
            ("kraal.dev/connect-ports", "20000-20099"),
        ],
    );
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    let id = k
        .run_container(&pod, &cfg, probe("probe", &image, "sleep 1000"))
        .await;

    // Explicit binds: TCP and UDP, IPv4, IPv6 and v4-mapped IPv6.
    for proto in ["tcp", "udp"] {
        for host in ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"] {
            let inside = format!("{host}:20050");
            let outside = format!("{host}:30050");
            assert_eq!(
                socktool(&k, &id, &["bind", proto, &inside]).await,
                [Got::Port(20050)],
                "{proto} bind {inside}"
            );
            assert_eq!(
                socktool(&k, &id, &["bind", proto, &outside]).await,
                [Got::Errno(EACCES)],
                "{proto} bind {outside}"
            );
        }
    }
    // Root in the container, but port 80 is not listed.
    assert_eq!(
        socktool(&k, &id, &["bind", "tcp", "127.0.0.1:80"]).await,
        [Got::Errno(EACCES)]
    );

    // 200 bind(0) in a row, all held: the 100 ports of the range, then EADDRINUSE.
    let got = socktool(&k, &id, &["hold", "200", "tcp", "127.0.0.1"]).await;
    assert_fills(&got, range, EADDRINUSE, "TCP bind(0)");
    let got = socktool(&k, &id, &["hold", "120", "udp", "::1"]).await;
    assert_fills(&got, range, EADDRINUSE, "UDP bind(0) on ::1");

    // connect() without bind takes its local port from the connect list.
    let target = holding_server();
    let got = socktool(&k, &id, &["connect", "200", &target]).await;
    assert_fills(&got, range, EADDRNOTAVAIL, "connect()");

    // FTP active mode: an ephemeral listener in range that the pod connects back to.
    let out = k
        .exec_ok(&id, &["/socktool", "callback", "127.0.0.1"])
        .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, word) in lines.iter().zip(["listen", "connect"]) {
        let port: u16 = line
            .strip_prefix(word)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            (range.0..=range.1).contains(&port),
            "{word} on {port}: {out}"
        );
    }
    assert_eq!(lines[2], "done", "{out}");

    // 1000 short connections through a 100-port range: every port lap meets the previous
    // lap's TIME_WAIT, and none of them may fail.
    let target = closing_server();
    let got = socktool(&k, &id, &["churn", "1000", &target]).await;
    let handed = ports(&got);
    assert_eq!(handed.len(), 1000, "churn failures: {:?}", {
        got.iter()
            .filter(|g| matches!(g, Got::Errno(_)))
            .collect::<Vec<_>>()
    });
    assert!(handed.iter().all(|p| (range.0..=range.1).contains(p)));

    // A UDP send from a socket never bound: the kernel autobinds it from the host's range,
    // which nothing can steer; kraal counts it.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp sink");
    let to = sink.local_addr().expect("addr").to_string();
    let got = socktool(&k, &id, &["sendto", &to]).await;
    assert!(
        matches!(got[..], [Got::Port(p)] if !(range.0..=range.1).contains(&p)),
        "{got:?}"
    );

    let c = counters(&k, &pod).await;
    assert_eq!(c["failures"], 0, "spurious failures: {c}");
    assert_eq!(c["unsteeredUdp"], 1, "{c}");
    assert!(c["bindsDenied"].as_u64() >= Some(7), "{c}");
    assert!(c["bindsAllowed"].as_u64() >= Some(6), "{c}");
    assert!(c["ephemeralPorts"].as_u64() >= Some(1300), "{c}");
    assert!(c["exhausted"].as_u64() >= Some(220), "{c}");

    let shown = k.kraalctl(&["pod", "policy", &pod]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("bind: 20000-20099") && text.contains("connect: 20000-20099"),
        "{text}"
    );
    k.remove_pod(&pod).await;
}

#[tokio::test]
async fn two_pods_with_auto_blocks_never_share_a_port() {
    let k = Kraald::start("[ports]\npool = \"21000-21999\"\n").await;
    let image = k.pull_busybox().await;
    let mut pods = Vec::new();
    for name in ["auto-x", "auto-y"] {
        let cfg = host_pod(name, &[("kraal.dev/bind-ports", "auto:50")]);
        let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
        let id = k
            .run_container(&pod, &cfg, probe("probe", &image, "sleep 1000"))
            .await;
        let (_, info) = k.pod_status_verbose(&pod).await;
        let block = &info["ports"]["bind"][0];
        let block = (
            block[0].as_u64().expect("start") as u16,
            block[1].as_u64().expect("end") as u16,
        );
        pods.push((pod, id, block));
    }
    // Both fill their blocks at the same time.
    let (a, b) = tokio::join!(
        socktool(&k, &pods[0].1, &["hold", "51", "tcp", "127.0.0.1"]),
        socktool(&k, &pods[1].1, &["hold", "51", "tcp", "127.0.0.1"]),
    );
    assert_fills(&a, pods[0].2, EADDRINUSE, "pod x");
    assert_fills(&b, pods[1].2, EADDRINUSE, "pod y");
    let a: BTreeSet<u16> = ports(&a).into_iter().collect();
    let b: BTreeSet<u16> = ports(&b).into_iter().collect();
    assert_eq!((a.len(), b.len()), (50, 50));
    assert!(a.is_disjoint(&b), "shared ports: {:?}", a.intersection(&b));
    for (pod, _, _) in &pods {
        assert_eq!(counters(&k, pod).await["failures"], 0);
        k.remove_pod(pod).await;
    }
}

#[tokio::test]
async fn kraalctl_changes_a_running_pods_ranges() {
    let k = Kraald::start("[ports]\npool = \"22000-22999\"\nunsteered_udp = \"deny\"\n").await;
    let image = k.pull_busybox().await;
    let cfg = host_pod("live", &[("kraal.dev/bind-ports", "20200-20249")]);
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    let id = k
        .run_container(&pod, &cfg, probe("probe", &image, "sleep 1000"))
        .await;
    assert_eq!(
        socktool(&k, &id, &["bind", "tcp", "127.0.0.1:20210"]).await,
        [Got::Port(20210)]
    );
    // This node refuses UDP sends it cannot steer.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp sink");
    let to = sink.local_addr().expect("addr").to_string();
    assert_eq!(
        socktool(&k, &id, &["sendto", &to]).await,
        [Got::Errno(EPERM)]
    );

    // A new list: the old port is refused, bind(0) fills the new one.
    let out = k.kraalctl(&["pod", "update", &pod, "kraal.dev/bind-ports=20250-20259"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("bind: 20250-20259"), "{text}");
    assert_eq!(
        socktool(&k, &id, &["bind", "tcp", "127.0.0.1:20210"]).await,
        [Got::Errno(EACCES)]
    );
    let got = socktool(&k, &id, &["hold", "12", "tcp", "127.0.0.1"]).await;
    assert_fills(&got, (20250, 20259), EADDRINUSE, "after the update");

    // An auto block from the pool.
    let out = k.kraalctl(&[
        "-o",
        "json",
        "pod",
        "update",
        &pod,
        "kraal.dev/bind-ports=auto:30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let block = &status["ports"]["bind"][0];
    let block = (
        block[0].as_u64().expect("first") as u16,
        block[1].as_u64().expect("last") as u16,
    );
    assert!(
        (22000..=22999).contains(&block.0) && block.1 - block.0 == 29,
        "{status}"
    );
    let got = socktool(&k, &id, &["hold", "31", "tcp", "127.0.0.1"]).await;
    assert_fills(&got, block, EADDRINUSE, "auto block set live");

    // A bad range changes nothing.
    let out = k.kraalctl(&["pod", "update", &pod, "kraal.dev/bind-ports=30-20"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("30-20"),
        "{err}"
    );
    let got = socktool(&k, &id, &["hold", "1", "tcp", "127.0.0.1"]).await;
    assert!(
        (block.0..=block.1).contains(&ports(&got)[0]),
        "after a refused update: {got:?}"
    );

    // Without the annotation the pod is unrestricted again.
    let out = k.kraalctl(&["pod", "update", &pod, "kraal.dev/bind-ports-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        socktool(&k, &id, &["bind", "tcp", "127.0.0.1:30210"]).await,
        [Got::Port(30210)]
    );
    k.remove_pod(&pod).await;

    // A pod with its own netns gets the new range as its ip_local_port_range.
    let cfg = pod_config("live-netns", false);
    let mut cfg = cfg;
    cfg.annotations
        .insert("kraal.dev/bind-ports".into(), "40000-40099".into());
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    let id = k
        .run_container(&pod, &cfg, shell_container("c", &image, "sleep 1000"))
        .await;
    let sysctl = ["cat", "/proc/sys/net/ipv4/ip_local_port_range"];
    assert_eq!(
        k.exec_ok(&id, &sysctl)
            .await
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["40000", "40099"]
    );
    let out = k.kraalctl(&["pod", "update", &pod, "kraal.dev/bind-ports=41000-41999"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        k.exec_ok(&id, &sysctl)
            .await
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["41000", "41999"]
    );
    k.remove_pod(&pod).await;
}

#[tokio::test]
async fn enforcement_never_lapses_while_kraald_restarts() {
    let mut k = Kraald::start("").await;
    let image = k.pull_busybox().await;
    let cfg = host_pod("lapse", &[("kraal.dev/bind-ports", "20300-20399")]);
    let pod = k.run_pod(cfg.clone()).await.expect("RunPodSandbox");
    // Tries a forbidden bind every 2 ms for 6 s; exits 1 if a single one got through.
    let prober = k
        .run_container(
            &pod,
            &cfg,
            probe("prober", &image, "/socktool deny-loop 6000 127.0.0.1:30301"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.restart().await;
    let status = k.wait_exited(&prober, Duration::from_secs(30)).await;
    assert_eq!(
        status.exit_code, 0,
        "a bind outside the range got through while kraald restarted"
    );
    let c = counters(&k, &pod).await;
    assert!(c["bindsDenied"].as_u64() >= Some(100), "{c}");
    k.remove_pod(&pod).await;
}
