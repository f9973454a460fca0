//! Pod networking through CNI, with Debian's real plugins (/usr/lib/cni) and real namespaces:
//! each test gets a network of its own (its own bridge, subnet, IPAM dir and conf dir, built
//! from hack/cni/10-kraal.conflist), never the node's /etc/cni/net.d, and removes its bridge
//! (the bridge plugin never does) when it ends.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kraal_e2e::*;
use serde_json::json;
use tonic::Code;

/// Every address of these tests is in 10.231.<tag>.0/24 (and fd00:231:<tag>::/64): the range of
/// hack's development network, one /24 per test, clear of this machine's own routes.
struct TestNet {
    dir: tempfile::TempDir,
    name: String,
    bridge: String,
    tag: u8,
    /// The `CNI-DN-*` chains (portmap's per-pod chains) that existed before the test.
    dnat_chains_before: BTreeSet<String>,
    /// Whether portmap's shared chains existed before (then they are not ours to remove).
    shared_chains_existed: bool,
    /// Held for the test's whole life (dropped last): the leftover checks compare the node's
    /// iptables before and after, which another test's pods would change meanwhile (cargo
    /// runs a file's tests on parallel threads).
    _lock: std::fs::File,
}

const LOCK: &str = "/run/lock/kraal-e2e-network.lock";

fn lock_node() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let lock = std::fs::File::create(LOCK).unwrap_or_else(|e| panic!("{LOCK}: {e}"));
    // SAFETY: flock on a file descriptor this function owns.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(locked, 0, "flock {LOCK}");
    lock
}

const SHARED_CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
];

fn nat_rules() -> String {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .expect("iptables -t nat -S");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dnat_chains() -> BTreeSet<String> {
    nat_rules()
        .lines()
        .filter_map(|l| l.strip_prefix("-N CNI-DN-"))
        .map(|c| format!("CNI-DN-{c}"))
        .collect()
}

impl TestNet {
    fn new(tag: u8) -> TestNet {
        let dir = tempfile::Builder::new()
            .prefix("kraal-cni-")
            .tempdir()
            .expect("temp dir");
        for sub in ["conf", "bin", "ipam"] {
            std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        let lock = lock_node();
        let pid = std::process::id();
        let rules = nat_rules();
        let net = TestNet {
            name: format!("kraal-test-{tag}-{pid}"),
            // IFNAMSIZ: at most 15 characters.
            bridge: format!("kt{tag}x{:x}", pid & 0xfffff),
            tag,
            dnat_chains_before: dnat_chains(),
            shared_chains_existed: rules.contains(&format!("-N {}", SHARED_CHAINS[0])),
            dir,
            _lock: lock,
        };
        net.write_conflist("10-test.conflist", &[]);
        net
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    fn subnet_prefix(&self) -> String {
        format!("10.231.{}.", self.tag)
    }

    /// hack's conflist with this test's bridge, subnets (v4 and v6) and IPAM dir, and
    /// `extra` plugins appended to the chain.
    fn conflist(&self, extra: &[serde_json::Value]) -> serde_json::Value {
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/cni/10-kraal.conflist");
        let text = std::fs::read_to_string(&template).expect("hack/cni/10-kraal.conflist");
        let mut list: serde_json::Value = serde_json::from_str(&text).expect("template is JSON");
        list["name"] = json!(self.name);
        let bridge = &mut list["plugins"][0];
        assert_eq!(bridge["type"], "bridge", "the template starts with bridge");
        bridge["bridge"] = json!(self.bridge);
        bridge["ipam"]["dataDir"] = json!(self.ipam_dir());
        bridge["ipam"]["ranges"] = json!([
            [{ "subnet": format!("10.231.{}.0/24", self.tag) }],
            [{ "subnet": format!("fd00:231:{}::/64", self.tag) }],
        ]);
        bridge["ipam"]["routes"] = json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]);
        if let Some(plugins) = list["plugins"].as_array_mut() {
            plugins.extend(extra.iter().cloned());
        }
        list
    }

    fn write_conflist(&self, file: &str, extra: &[serde_json::Value]) {
        let text = serde_json::to_string_pretty(&self.conflist(extra)).expect("JSON");
        std::fs::write(self.conf_dir().join(file), text).expect("write conflist");
    }

    /// A plugin of the test's own: `body` is a shell script.
    fn write_plugin(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.bin_dir().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn kraald_config(&self, timeout: &str) -> String {
        format!(
            "[cni]\nconf_dir = {:?}\nbin_dirs = [{:?}, \"/usr/lib/cni\"]\nplugin_timeout = {timeout:?}\n",
            self.conf_dir(),
            self.bin_dir()
        )
    }

    /// What a pod may leave on the node: ports on the bridge (veths), IPAM allocations,
    /// namespace pins and mounts under kraald's state dir, portmap chains.
    fn leftovers(&self, k: &Kraald) -> Vec<String> {
        let mut found = Vec::new();
        let brif = Path::new("/sys/class/net").join(&self.bridge).join("brif");
        if let Ok(entries) = std::fs::read_dir(&brif) {
            for e in entries.flatten() {
                found.push(format!("veth on {}: {:?}", self.bridge, e.file_name()));
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.ipam_dir().join(&self.name)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != "lock" && !name.starts_with("last_reserved_ip") {
                    found.push(format!("IPAM allocation {name}"));
                }
            }
        }
        let state = k.state.display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines().filter(|l| l.contains(&state)) {
            found.push(format!("mount: {line}"));
        }
        for chain in dnat_chains().difference(&self.dnat_chains_before) {
            found.push(format!("iptables chain {chain}"));
        }
        let prefix = self.subnet_prefix();
        for rule in nat_rules().lines().filter(|l| l.contains(&prefix)) {
            found.push(format!("iptables rule {rule}"));
        }
        found
    }

    fn assert_clean(&self, k: &Kraald) {
        let left = self.leftovers(k);
        assert!(left.is_empty(), "left behind: {left:#?}\n{}", k.log());
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
        // portmap creates its shared chains once and never removes them: if this test made
        // them and no other pod uses them now, they go too.
        if !self.shared_chains_existed && dnat_chains().is_empty() {
            for chain in SHARED_CHAINS {
                let rules = nat_rules();
                // The rules quote their comments: the shell splits them as iptables-save wrote them.
                for rule in rules.lines().filter(|l| {
                    l.starts_with("-A ")
                        && l.contains(&format!("-j {chain}"))
                        && !l.starts_with(&format!("-A {chain} "))
                }) {
                    let rule = rule.trim_start_matches("-A ");
                    let _ = Command::new("sh")
                        .args(["-c", &format!("iptables -w -t nat -D {rule}")])
                        .status();
                }
            }
            for chain in SHARED_CHAINS {
                let _ = Command::new("iptables")
                    .args(["-w", "-t", "nat", "-F", chain])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            for chain in SHARED_CHAINS {
                let _ = Command::new("iptables")
                    .args(["-w", "-t", "nat", "-X", chain])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

fn network_condition(status: &cri::StatusResponse) -> cri::RuntimeCondition {
    status
        .status
        .as_ref()
        .expect("status")
        .conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .cloned()
        .expect("NetworkReady condition")
}

async fn network_ready(k: &Kraald) -> cri::RuntimeCondition {
    let status = k
        .runtime()
        .await
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    network_condition(&status)
}

async fn pod_ips(k: &Kraald, pod: &str) -> (String, Vec<String>) {
    let (response, _) = k.pod_status_verbose(pod).await;
    let network = response.status.expect("status").network.expect("network");
    (
        network.ip,
        network.additional_ips.into_iter().map(|i| i.ip).collect(),
    )
}

/// An httpd serving `text` on port 8080 of the pod.
fn web_server(image: &str, text: &str) -> cri::ContainerConfig {
    shell_container(
        "web",
        image,
        &format!(
            "mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"
        ),
    )
}

fn sleeper(image: &str) -> cri::ContainerConfig {
    shell_container("client", image, "exec sleep 3600")
}

/// Polls an HTTP GET with `nc` from `client` until the server on `addr` port 8080 answers
/// (httpd may take a moment to listen); the body. (busybox's wget crashes in these images: it
/// looks the scheme up through NSS, which a static busybox without NSS libraries does not
/// survive.)
async fn fetch(k: &Kraald, client: &str, addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} 8080");
    loop {
        let out = k.exec(client, &["sh", "-c", &script], 10).await;
        if let Ok(out) = &out
            && out.exit_code == 0
        {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Some((_, body)) = text.split_once("\r\n\r\n") {
                return body.trim().to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "GET from {addr}:8080 in {client}: {out:?}\n{}",
            k.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn pods_get_addresses_and_reach_each_other() {
    let net = TestNet::new(1);
    let k = Kraald::start(&net.kraald_config("30s")).await;
    let image = k.pull_busybox().await;

    let server_cfg = pod_config("net-server", false);
    let server = k
        .run_pod(server_cfg.clone())
        .await
        .unwrap_or_else(|s| panic!("{s:?}\n{}", k.log()));
    let client_cfg = pod_config("net-client", false);
    let client = k.run_pod(client_cfg.clone()).await.expect("client pod");

    let (server_ip, server_more) = pod_ips(&k, &server).await;
    let (client_ip, client_more) = pod_ips(&k, &client).await;
    assert!(
        server_ip.starts_with(&net.subnet_prefix()),
        "pod IP {server_ip}"
    );
    assert!(
        client_ip.starts_with(&net.subnet_prefix()),
        "pod IP {client_ip}"
    );
    assert_ne!(server_ip, client_ip);
    let v6 = format!("fd00:231:{}::", net.tag);
    assert!(
        server_more.len() == 1 && server_more[0].starts_with(&v6),
        "the IPv6 address comes second: {server_more:?}"
    );
    assert_eq!(client_more.len(), 1, "{client_more:?}");
    let (_, info) = k.pod_status_verbose(&server).await;
    assert_eq!(info["network"]["name"], net.name.as_str(), "{info}");
    let host_if = info["network"]["hostInterface"]
        .as_str()
        .expect("host interface")
        .to_string();
    assert!(
        Path::new("/sys/class/net")
            .join(&net.bridge)
            .join("brif")
            .join(&host_if)
            .exists(),
        "{host_if} is the pod's veth on {}",
        net.bridge
    );

    k.run_container(
        &server,
        &server_cfg,
        web_server(&image, "hello-from-server"),
    )
    .await;
    let c = k.run_container(&client, &client_cfg, sleeper(&image)).await;

    // The container sees the pod's interfaces: eth0 with the pod's address, and lo.
    let links = k.exec_ok(&c, &["ls", "/sys/class/net"]).await;
    let links: BTreeSet<&str> = links.split_whitespace().collect();
    assert_eq!(links, BTreeSet::from(["eth0", "lo"]));
    let addr = k
        .exec_ok(&c, &["ip", "-o", "addr", "show", "dev", "eth0"])
        .await;
    assert!(addr.contains(&format!("{client_ip}/24")), "{addr}");

    let ping = k
        .exec_ok(&c, &["ping", "-c", "1", "-W", "5", &server_ip])
        .await;
    assert!(ping.contains("1 packets received"), "{ping}");
    let page = fetch(&k, &c, &server_ip).await;
    assert_eq!(page, "hello-from-server");
    let page6 = fetch(&k, &c, &server_more[0]).await;
    assert_eq!(page6, "hello-from-server");

    k.remove_pod(&server).await;
    k.remove_pod(&client).await;
    net.assert_clean(&k);
}

#[tokio::test]
async fn host_port_reaches_the_container_from_loopback() {
    let net = TestNet::new(2);
    let k = Kraald::start(&net.kraald_config("30s")).await;
    let image = k.pull_busybox().await;
    let host_port = 31000 + (std::process::id() % 1000) as i32;
    let mut cfg = pod_config("net-hostport", false);
    cfg.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: String::new(),
    }];
    let pod = k
        .run_pod(cfg.clone())
        .await
        .unwrap_or_else(|s| panic!("{s:?}\n{}", k.log()));
    k.run_container(&pod, &cfg, web_server(&image, "hello-through-hostport"))
        .await;
    let (pod_ip, _) = pod_ips(&k, &pod).await;
    assert!(
        nat_rules().contains(&format!("--to-destination {pod_ip}:8080")),
        "portmap's DNAT rule:\n{}",
        nat_rules()
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let got = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", host_port as u16))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })();
        match got {
            Ok(text) if text.contains("200") => break text,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "127.0.0.1:{host_port}: {other:?}\n{}",
                    k.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(body.contains("hello-through-hostport"), "{body}");

    k.remove_pod(&pod).await;
    assert!(
        !nat_rules().contains(&format!("dport {host_port}")),
        "the hostPort's rules are gone:\n{}",
        nat_rules()
    );
    net.assert_clean(&k);
}

#[tokio::test]
async fn fifty_cycles_leave_nothing_behind() {
    let net = TestNet::new(3);
    let k = Kraald::start(&net.kraald_config("30s")).await;
    let started = Instant::now();
    // Five pods at a time, so the cycles also run side by side.
    for round in 0..10 {
        let mut starts = Vec::new();
        for i in 0..5 {
            let mut cfg = pod_config(&format!("cycle-{round}-{i}"), false);
            cfg.port_mappings = vec![cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 32100 + i,
                host_ip: String::new(),
            }];
            let k = &k;
            starts.push(async move { k.run_pod(cfg).await });
        }
        let ids: Vec<String> = futures::future::join_all(starts)
            .await
            .into_iter()
            .map(|r| r.unwrap_or_else(|s| panic!("{s:?}\n{}", k.log())))
            .collect();
        let mut ips = BTreeSet::new();
        for id in &ids {
            let (ip, _) = pod_ips(&k, id).await;
            assert!(ips.insert(ip.clone()), "{ip} given twice");
        }
        for id in &ids {
            k.remove_pod(id).await;
        }
    }
    eprintln!(
        "50 networked pod create/remove cycles in {:?}",
        started.elapsed()
    );
    net.assert_clean(&k);
}

#[tokio::test]
async fn network_ready_follows_the_conf_dir() {
    let net = TestNet::new(4);
    std::fs::remove_file(net.conf_dir().join("10-test.conflist")).expect("rm");
    let k = Kraald::start(&net.kraald_config("30s")).await;
    let cond = network_ready(&k).await;
    assert!(!cond.status, "{cond:?}");
    assert_eq!(cond.reason, "NetworkPluginNotReady");
    assert!(
        cond.message.contains(&net.conf_dir().display().to_string()),
        "{cond:?}"
    );
    // A pod without a network config is refused, naming why, and leaves nothing.
    assert_code(
        k.run_pod(pod_config("net-too-early", false)).await,
        Code::FailedPrecondition,
        "no valid CNI network config",
    );
    // A broken file is not a network: still not ready, and the message names the file.
    std::fs::write(
        net.conf_dir().join("05-broken.conflist"),
        "{\"cniVersion\": \"1.0.0\", \"name\": ",
    )
    .expect("write");
    let cond = network_ready(&k).await;
    assert!(
        !cond.status && cond.message.contains("05-broken.conflist"),
        "{cond:?}"
    );
    assert_code(
        k.run_pod(pod_config("net-broken", false)).await,
        Code::FailedPrecondition,
        "05-broken.conflist",
    );
    net.write_conflist("10-test.conflist", &[]);
    let cond = network_ready(&k).await;
    assert!(cond.status, "{cond:?}");
    // hostNetwork pods never needed it.
    let host = k
        .run_pod(pod_config("net-host", true))
        .await
        .expect("hostNetwork pod");
    assert_eq!(pod_ips(&k, &host).await.0, "");
    k.remove_pod(&host).await;
    let listed = k
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
    net.assert_clean(&k);
}

#[tokio::test]
async fn failing_and_hanging_plugins_fail_clearly_and_leave_nothing() {
    let net = TestNet::new(5);
    // Fails every command, with a CNI error object on stdout, after bridge has done its part.
    net.write_plugin(
        "kraal-fail",
        r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":999,"msg":"kraal-fail refuses","details":"as the test asked"}'; exit 1"#,
    );
    net.write_plugin("kraal-hang", "cat >/dev/null; exec sleep 600");
    net.write_conflist("10-test.conflist", &[json!({"type": "kraal-fail"})]);
    let k = Kraald::start(&net.kraald_config("2s")).await;

    let err = k
        .run_pod(pod_config("net-fail", false))
        .await
        .expect_err("plugin fails");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    let msg = err.message();
    assert!(
        msg.contains("\"kraal-fail\"")
            && msg.contains("kraal-fail refuses: as the test asked")
            && msg.contains("ADD"),
        "{msg}"
    );
    net.assert_clean(&k);

    net.write_conflist("10-test.conflist", &[json!({"type": "kraal-hang"})]);
    let started = Instant::now();
    let err = k
        .run_pod(pod_config("net-hang", false))
        .await
        .expect_err("plugin hangs");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("\"kraal-hang\"") && err.message().contains("killed"),
        "{err:?}"
    );
    // ADD's hang (2 s) and DEL's (2 s) while undoing, not the plugin's 600 s.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let hung = Command::new("pgrep")
        .args(["-f", "sleep 600"])
        .output()
        .expect("pgrep");
    assert!(
        hung.stdout.is_empty(),
        "the hung plugin was killed: {:?}",
        String::from_utf8_lossy(&hung.stdout)
    );
    net.assert_clean(&k);

    // A plugin that is not installed.
    net.write_conflist(
        "10-test.conflist",
        &[json!({"type": "kraal-not-installed"})],
    );
    assert_code(
        k.run_pod(pod_config("net-missing", false)).await,
        Code::FailedPrecondition,
        "\"kraal-not-installed\" not found",
    );
    net.assert_clean(&k);
    let listed = k
        .runtime()
        .await
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .expect("list")
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn concurrent_starts_run_side_by_side() {
    let net = TestNet::new(6);
    // Each ADD waits (up to 20 s) until four ADDs have begun, logging when it starts and
    // ends. Run side by side, all four start before any ends; run one after another, the
    // first ends alone after 20 s. The order is the proof, not the time: the emulated v2
    // guest takes seconds per pod, and a wall-clock bound failed there with nothing wrong.
    let log = net.dir.path().join("adds.log");
    net.write_plugin(
        "kraal-slow",
        &format!(
            r#"cat >/dev/null
[ "$CNI_COMMAND" = ADD ] || exit 0
echo "start $$" >> {log:?}
i=0
while [ "$(grep -c start {log:?})" -lt 4 ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
echo "end $$" >> {log:?}
echo '{{"cniVersion":"1.0.0"}}'"#
        ),
    );
    let mut list = net.conflist(&[]);
    if let Some(plugins) = list["plugins"].as_array_mut() {
        plugins.insert(0, json!({"type": "kraal-slow"}));
    }
    std::fs::write(net.conf_dir().join("10-test.conflist"), list.to_string()).expect("write");
    let k = Kraald::start(&net.kraald_config("30s")).await;
    let starts = (0..4)
        .map(|i| {
            let k = &k;
            async move { k.run_pod(pod_config(&format!("net-par-{i}"), false)).await }
        })
        .collect::<Vec<_>>();
    let ids: Vec<String> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|s| panic!("{s:?}\n{}", k.log())))
        .collect();
    let events: Vec<String> = std::fs::read_to_string(&log)
        .expect("the plugin's log")
        .lines()
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        events,
        [
            "start", "start", "start", "start", "end", "end", "end", "end"
        ],
        "the four pods' ADDs did not run side by side"
    );
    for id in &ids {
        k.remove_pod(id).await;
    }
    net.assert_clean(&k);
}

#[tokio::test]
async fn restart_keeps_networking_and_teardown_works_later() {
    let net = TestNet::new(7);
    let mut k = Kraald::start(&net.kraald_config("30s")).await;
    let image = k.pull_busybox().await;
    let server_cfg = pod_config("net-r-server", false);
    let server = k.run_pod(server_cfg.clone()).await.expect("server pod");
    let client_cfg = pod_config("net-r-client", false);
    let client = k.run_pod(client_cfg.clone()).await.expect("client pod");
    k.run_container(&server, &server_cfg, web_server(&image, "still-here"))
        .await;
    let c = k.run_container(&client, &client_cfg, sleeper(&image)).await;
    let (server_ip, _) = pod_ips(&k, &server).await;
    assert_eq!(fetch(&k, &c, &server_ip).await, "still-here");

    k.restart().await;
    assert_eq!(
        pod_ips(&k, &server).await.0,
        server_ip,
        "the IP survives in the record"
    );
    assert_eq!(fetch(&k, &c, &server_ip).await, "still-here");
    // The restarted kraald asked the plugins (CHECK) about both pods' networks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while k.log().matches("pod network CHECK passed").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no CHECK after the restart:\n{}",
            k.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    k.remove_pod(&server).await;
    k.remove_pod(&client).await;
    net.assert_clean(&k);
}
