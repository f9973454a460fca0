//! Per-pod bandwidth end to end (DESIGN §4–5): hostNetwork pods made through the CRI socket,
//! iperf3 as their traffic (the host's binary and libraries mounted into busybox containers),
//! and kraald shaping them on a lab uplink and on lo.
//!
//! ```text
//!  host netns (the node)                          lab netns kbt-<pid>
//!  kbt-up0 10.213.0.1/24  ─────── veth ───────  kbt-dn0 10.213.0.2/24   iperf3 servers
//!  lo 127.0.0.1                                 (same-node flows between pods)
//! ```
//!
//! Rates are checked on the wire. HTB counts every byte of a frame from the Ethernet header on,
//! and a cap is a limit on what the pod puts on the link, as with the CNI bandwidth plugin's
//! tbf. iperf3 reports goodput, the TCP payload: a full-size segment with timestamps carries
//! 1448 payload bytes in a 1514-byte frame on a 1500-MTU link, so a 50M cap reads ~47.8 in
//! goodput. Every report is converted with the frame/payload ratio of the link's MTU (bulk
//! flows send full-size segments, and the kernel adds the headers of every GSO segment to a
//! qdisc's byte count, so the ratio holds for GSO packets too). Comparing goodput with the cap
//! instead would spend 4.4 of the ±5 percent on headers and hide a shaper that lets 4% too
//! much through.
//!
//! Receivers report in 0.25 s intervals (servers run with `-i 0.25`, and clients fetch the
//! server's report with `--get-server-output`), which gives the per-second and live-change
//! checks their resolution. Flows run as containers of their pod (so they outlive a kraald
//! restart) and write their JSON into a host directory; containers started together wait on a
//! gate file so concurrent flows start within a few milliseconds of each other.
//!
//! The tests serialise on a lock file: they share the uplink's name and the host's lo, and
//! two flows on two cores would measure each other. Each test removes what it made (the lab
//! netns and veth on drop, also after a failure) and asserts that kraald removed its qdiscs,
//! classes and IFBs once the pods were gone. Figures are printed (and appended to
//! `$KRAAL_BW_LOG` if set) for the record.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Code;

use kraal_e2e::*;

const IPERF3: &str = "/usr/bin/iperf3";
const UPLINK: &str = "kbt-up0";
const PEER_IF: &str = "kbt-dn0";
const HOST_ADDR: &str = "10.213.0.1";
const PEER_ADDR: &str = "10.213.0.2";
const LOCK: &str = "/run/lock/kraal-e2e-bandwidth.lock";
const M: f64 = 1e6;
/// The node's machine threshold in [`node_config`]: 10% of 1G.
const THRESHOLD: f64 = 100e6;
/// UDP flows send datagrams of this size: 1442-byte frames, all alike.
const UDP_PAYLOAD: u64 = 1400;

/// The node of every test but the disabled one: the lab's uplink and lo shaped, 1 Gbit/s each
/// way, and a machine threshold of 100 Mbit/s so that soft limits meet it at iperf3 rates.
fn node_config() -> String {
    format!(
        "[bandwidth]\nenabled = true\ndevices = [\"{UPLINK}\"]\negress_capacity = \"1G\"\ningress_capacity = \"1G\"\nthreshold = 0.1\nloopback = true\n"
    )
}

// ---------------------------------------------------------------------------------------------
// The lab.
// ---------------------------------------------------------------------------------------------

fn sh(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn must(program: &str, args: &[&str]) -> String {
    let out = sh(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tc <args>` in the host netns, stdout (empty when the device is gone).
fn tc(args: &str) -> String {
    let out = sh("tc", &args.split_whitespace().collect::<Vec<_>>());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The host's `kraal-ifb*` devices.
fn kraal_ifbs() -> BTreeSet<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("kraal-ifb"))
                .collect()
        })
        .unwrap_or_default()
}

fn qdisc_lines(dev: &str) -> BTreeSet<String> {
    tc(&format!("qdisc show dev {dev}"))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Seconds since boot, 10 ms resolution: the one clock the host and the containers share
/// (busybox's `date` has no sub-second format).
fn uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").expect("/proc/uptime");
    parse_uptime(&text)
}

fn parse_uptime(text: &str) -> f64 {
    text.split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not /proc/uptime: {text:?}"))
}

/// Prints a measurement, and appends it to `$KRAAL_BW_LOG` if set.
fn log(line: &str) {
    eprintln!("bw: {line}");
    if let Ok(path) = std::env::var("KRAAL_BW_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

fn mbit(bps: f64) -> String {
    format!("{:.2}", bps / M)
}

fn mbits(list: &[f64]) -> String {
    let parts: Vec<String> = list.iter().map(|b| format!("{:.1}", b / M)).collect();
    format!("[{}]", parts.join(", "))
}

fn assert_within(what: &str, got: f64, want: f64, tol: f64) {
    let (lo, hi) = (want * (1.0 - tol), want * (1.0 + tol));
    assert!(
        (lo..=hi).contains(&got),
        "{what}: {} Mbit/s on the wire, want {} ±{:.0}% ({}..{})",
        mbit(got),
        mbit(want),
        tol * 100.0,
        mbit(lo),
        mbit(hi)
    );
}

/// The uplink with its far end in a netns of this test, iperf3 servers there, and a host
/// directory for the flows' reports. Holds the lock file until dropped; removes the netns and
/// the veth, and whatever kraald left on the devices, on drop.
struct Lab {
    netns: String,
    uplink_ifindex: u32,
    servers: Vec<Child>,
    out: tempfile::TempDir,
    flows: usize,
    lo_before: BTreeSet<String>,
    ifbs_before: BTreeSet<String>,
    _lock: File,
}

impl Lab {
    fn new() -> Lab {
        assert!(
            Path::new(IPERF3).exists(),
            "{IPERF3} is missing: install iperf3 (the kraal-net shaping tests need it too)"
        );
        let lock = File::create(LOCK).unwrap_or_else(|e| panic!("{LOCK}: {e}"));
        // SAFETY: flock on a file descriptor this function owns.
        let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "flock {LOCK}");
        assert!(
            !Path::new("/sys/class/net").join(UPLINK).exists(),
            "{UPLINK} exists already: a run that was killed left it; `ip link del {UPLINK}`"
        );
        let netns = format!("kbt-{}", std::process::id());
        let lo_before = qdisc_lines("lo");
        let ifbs_before = kraal_ifbs();
        must("ip", &["netns", "add", &netns]);
        // From here on, Drop removes what exists.
        let mut lab = Lab {
            netns,
            uplink_ifindex: 0,
            servers: Vec::new(),
            out: tempfile::Builder::new()
                .prefix("kbt-flows-")
                .tempdir()
                .expect("temp dir"),
            flows: 0,
            lo_before,
            ifbs_before,
            _lock: lock,
        };
        let ns = lab.netns.clone();
        for line in [
            format!("link add {UPLINK} type veth peer name {PEER_IF} netns {ns}"),
            format!("addr add {HOST_ADDR}/24 dev {UPLINK}"),
            format!("link set {UPLINK} up"),
            format!("-n {ns} addr add {PEER_ADDR}/24 dev {PEER_IF}"),
            format!("-n {ns} link set {PEER_IF} up"),
            format!("-n {ns} link set lo up"),
        ] {
            must("ip", &line.split_whitespace().collect::<Vec<_>>());
        }
        let ifindex = std::fs::read_to_string(format!("/sys/class/net/{UPLINK}/ifindex"))
            .expect("uplink ifindex");
        lab.uplink_ifindex = ifindex.trim().parse().expect("ifindex");
        lab
    }

    /// The IFB kraald makes for the uplink's ingress (`kraal-ifb<ifindex>`).
    fn uplink_ifb(&self) -> String {
        format!("kraal-ifb{}", self.uplink_ifindex)
    }

    /// An iperf3 server at the far end of the uplink; returns once it listens.
    fn server(&mut self, port: u16) {
        let port_text = port.to_string();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                IPERF3,
                "-s",
                "-J",
                "-i",
                "0.25",
            ])
            .args(["-B", PEER_ADDR, "-p", &port_text])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 server");
        // `ip netns exec` execs the command itself: this pid is iperf3's.
        self.servers.push(child);
        let filter = format!("sport = :{port}");
        wait_listening(port, || {
            must(
                "ip",
                &["netns", "exec", &self.netns, "ss", "-Hltn", &filter],
            )
        });
    }

    /// Starts `flows` as containers of their pods, all released at once; [`Lab::finish`]
    /// collects each report.
    async fn start_flows(
        &mut self,
        k: &Kraald,
        image: &str,
        flows: &[(&Pod, Flow)],
    ) -> Vec<Running> {
        self.flows += 1;
        let gate = format!("gate{}", self.flows);
        let mut running = Vec::new();
        for (pod, flow) in flows {
            self.flows += 1;
            let name = format!("flow{}", self.flows);
            let script = format!(
                "while [ ! -e /out/{gate} ]; do usleep 5000; done; cat /proc/uptime > /out/{name}.up; exec /iperf3 {}",
                flow.args(&name)
            );
            let config = iperf_container(&name, image, &script, self.out.path());
            let container = k.run_container(&pod.id, &pod.config, config).await;
            running.push(Running {
                name,
                container,
                flow: flow.clone(),
            });
        }
        std::fs::write(self.out.path().join(&gate), b"").expect("open the gate");
        running
    }

    /// Waits for a flow to end and parses its report.
    async fn finish(&self, k: &Kraald, flow: Running) -> Report {
        let timeout = Duration::from_secs(u64::from(flow.flow.secs) + 30);
        let status = k.wait_exited(&flow.container, timeout).await;
        let json_path = self.out.path().join(format!("{}.json", flow.name));
        let text = std::fs::read_to_string(&json_path).unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let failed = parsed.as_ref().and_then(|v| v.get("error")).cloned();
        assert!(
            status.exit_code == 0 && parsed.is_some() && failed.is_none(),
            "iperf3 {} exited with {}: {text}",
            flow.flow.args(&flow.name),
            status.exit_code
        );
        let up = std::fs::read_to_string(self.out.path().join(format!("{}.up", flow.name)))
            .expect("the flow's start time");
        Report::parse(&parsed.expect("checked"), &flow.flow, parse_uptime(&up))
    }

    async fn run_flow(&mut self, k: &Kraald, image: &str, pod: &Pod, flow: Flow) -> Report {
        let mut started = self.start_flows(k, image, &[(pod, flow)]).await;
        self.finish(k, started.remove(0)).await
    }

    /// When a started flow's iperf3 began (uptime), waiting for it if need be.
    async fn started_at(&self, flow: &Running) -> f64 {
        let path = self.out.path().join(format!("{}.up", flow.name));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && !text.trim().is_empty()
            {
                return parse_uptime(&text);
            }
            assert!(Instant::now() < deadline, "{} never started", flow.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What kraald left on the uplink, lo and in IFBs (nothing, once its pods are gone).
    fn shaping_left(&self) -> Vec<String> {
        let mut left = Vec::new();
        for line in qdisc_lines(UPLINK) {
            if !line.starts_with("qdisc noqueue") {
                left.push(format!("{UPLINK}: {line}"));
            }
        }
        for line in tc(&format!("class show dev {UPLINK}")).lines() {
            left.push(format!("{UPLINK}: {line}"));
        }
        for line in qdisc_lines("lo").difference(&self.lo_before) {
            left.push(format!("lo: {line}"));
        }
        for ifb in kraal_ifbs().difference(&self.ifbs_before) {
            left.push(format!("device {ifb}"));
        }
        left
    }

    fn assert_clean(&self, k: &Kraald) {
        // kraald tears down after RemovePodSandbox has answered; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = self.shaping_left();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kraald left shaping behind after its last shaped pod went:\n{}\n--- kraald log (tail) ---\n{}",
                left.join("\n"),
                log_tail(k)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        // Deleting one end of a veth deletes both, at once (netns teardown is asynchronous).
        let _ = sh("ip", &["link", "del", UPLINK]);
        let _ = sh("ip", &["netns", "del", &self.netns]);
        // What kraald should have removed, when a test failed before it could.
        for ifb in kraal_ifbs().difference(&self.ifbs_before) {
            eprintln!("lab cleanup: removing {ifb}");
            let _ = sh("ip", &["link", "del", ifb]);
        }
        for line in qdisc_lines("lo").difference(&self.lo_before) {
            let kind = if line.starts_with("qdisc htb") {
                "root"
            } else if line.starts_with("qdisc clsact") {
                "clsact"
            } else if line.starts_with("qdisc ingress") {
                "ingress"
            } else {
                continue;
            };
            eprintln!("lab cleanup: removing lo's {line}");
            let _ = sh("tc", &["qdisc", "del", "dev", "lo", kind]);
        }
    }
}

fn wait_listening(port: u16, ss: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ss().trim().is_empty() {
        assert!(
            Instant::now() < deadline,
            "iperf3 server on port {port} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The end of kraald's log without the gRPC transport's frame-by-frame debug lines.
fn log_tail(k: &Kraald) -> String {
    let log = k.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("h2::")).collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// Pods and flows.
// ---------------------------------------------------------------------------------------------

struct Pod {
    id: String,
    config: cri::PodSandboxConfig,
}

async fn host_pod(k: &Kraald, name: &str, annotations: &[(&str, &str)]) -> Pod {
    let config = annotated(name, annotations);
    let id = k.run_pod(config.clone()).await.unwrap_or_else(|s| {
        panic!(
            "RunPodSandbox {name} {annotations:?}: {s:?}\n{}",
            log_tail(k)
        )
    });
    Pod { id, config }
}

fn annotated(name: &str, annotations: &[(&str, &str)]) -> cri::PodSandboxConfig {
    let mut config = pod_config(name, true);
    for (key, value) in annotations {
        config
            .annotations
            .insert(key.to_string(), value.to_string());
    }
    config
}

/// A busybox container with iperf3 at /iperf3 and `out` at /out (iperf3's temp files too).
fn iperf_container(name: &str, image: &str, script: &str, out: &Path) -> cri::ContainerConfig {
    let mut config = shell_container(name, image, script);
    config.mounts = host_binary_mounts(&[(IPERF3, "/iperf3")]);
    config.mounts.push(cri::Mount {
        container_path: "/out".into(),
        host_path: out.to_string_lossy().into_owned(),
        readonly: false,
        ..Default::default()
    });
    config.envs = vec![cri::KeyValue {
        key: "TMPDIR".into(),
        value: "/out".into(),
    }];
    config
}

/// A pod whose only container is an iperf3 server on 127.0.0.1:`port` (same-node flows);
/// returns once it listens.
async fn server_pod(k: &Kraald, lab: &Lab, image: &str, name: &str, port: u16) -> Pod {
    let pod = host_pod(k, name, &[]).await;
    let script = format!("exec /iperf3 -s -J -i 0.25 -B 127.0.0.1 -p {port}");
    let config = iperf_container("server", image, &script, lab.out.path());
    k.run_container(&pod.id, &pod.config, config).await;
    let filter = format!("sport = :{port}");
    wait_listening(port, || must("ss", &["-Hltn", &filter]));
    pod
}

/// One iperf3 client run from a pod.
#[derive(Clone, Debug)]
struct Flow {
    to: &'static str,
    port: u16,
    secs: u32,
    streams: u32,
    /// `-R`: the server sends, the pod receives (its ingress).
    reverse: bool,
    /// UDP at this many bits/s (goodput) instead of TCP.
    udp_bps: Option<u64>,
    /// The device the flow crosses, for its frame size.
    link: &'static str,
}

impl Flow {
    /// TCP from a pod to the lab's far end.
    fn uplink(port: u16, secs: u32) -> Flow {
        Flow {
            to: PEER_ADDR,
            port,
            secs,
            streams: 1,
            reverse: false,
            udp_bps: None,
            link: UPLINK,
        }
    }

    /// TCP from a pod to another pod of this node.
    fn loopback(port: u16, secs: u32) -> Flow {
        Flow {
            to: "127.0.0.1",
            link: "lo",
            ..Flow::uplink(port, secs)
        }
    }

    fn reverse(self) -> Flow {
        Flow {
            reverse: true,
            ..self
        }
    }

    fn args(&self, name: &str) -> String {
        let mut args = format!(
            "-c {} -p {} -t {} -P {} -i 0.25 -J --get-server-output --connect-timeout 3000 --logfile /out/{name}.json",
            self.to, self.port, self.secs, self.streams
        );
        if self.reverse {
            args.push_str(" -R");
        }
        if let Some(bps) = self.udp_bps {
            args.push_str(&format!(" -u -b {bps} -l {UDP_PAYLOAD}"));
        }
        args
    }

    /// Frame bytes per payload byte (see the module comment): TCP with timestamps has 52
    /// bytes of IP and TCP headers; UDP 28; both 14 of Ethernet.
    fn wire_factor(&self) -> f64 {
        if self.udp_bps.is_some() {
            return (UDP_PAYLOAD + 28 + 14) as f64 / UDP_PAYLOAD as f64;
        }
        let mtu: f64 = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", self.link))
            .expect("link mtu")
            .trim()
            .parse()
            .expect("mtu");
        (mtu + 14.0) / (mtu - 52.0)
    }
}

struct Running {
    name: String,
    container: String,
    flow: Flow,
}

/// One receiver interval: seconds since the test started, payload bytes.
#[derive(Clone, Copy, Debug)]
struct Interval {
    start: f64,
    end: f64,
    bytes: f64,
}

/// What the receiver of a flow measured, and the sender's retransmits.
#[derive(Debug)]
struct Report {
    /// Uptime at which the pod exec'd iperf3: the test starts a few ms later.
    start: f64,
    received_bps: f64,
    received_bytes: f64,
    sent_bps: f64,
    retransmits: u64,
    intervals: Vec<Interval>,
    factor: f64,
}

impl Report {
    fn parse(v: &Value, flow: &Flow, start: f64) -> Report {
        // The receiver's intervals: the client's own with -R, else the server's.
        let source = if flow.reverse {
            &v["intervals"]
        } else {
            &v["server_output_json"]["intervals"]
        };
        let intervals: Vec<Interval> = source
            .as_array()
            .unwrap_or_else(|| panic!("no receiver intervals in {v}"))
            .iter()
            .map(|i| Interval {
                start: i["sum"]["start"].as_f64().expect("start"),
                end: i["sum"]["end"].as_f64().expect("end"),
                bytes: i["sum"]["bytes"].as_f64().expect("bytes"),
            })
            .collect();
        let end = &v["end"];
        Report {
            start,
            received_bps: end["sum_received"]["bits_per_second"]
                .as_f64()
                .expect("sum_received"),
            received_bytes: end["sum_received"]["bytes"].as_f64().expect("bytes"),
            sent_bps: end["sum_sent"]["bits_per_second"].as_f64().unwrap_or(0.0),
            retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            intervals,
            factor: flow.wire_factor(),
        }
    }

    /// The average on the wire, bits/s.
    fn wire(&self) -> f64 {
        self.received_bps * self.factor
    }

    fn wire_of(&self, spans: &[Interval]) -> f64 {
        let secs: f64 = spans.iter().map(|i| i.end - i.start).sum();
        let bytes: f64 = spans.iter().map(|i| i.bytes).sum();
        bytes * 8.0 * self.factor / secs
    }

    /// Each whole second of the run on the wire, the first first (the short last interval
    /// iperf3 reports is left out).
    fn seconds(&self) -> Vec<f64> {
        self.intervals
            .chunks(4)
            .filter(|c| c.iter().map(|i| i.end - i.start).sum::<f64>() >= 0.9)
            .map(|c| self.wire_of(c))
            .collect()
    }

    /// Each interval on the wire, with its start in uptime.
    fn timeline(&self) -> Vec<(f64, f64, f64)> {
        self.intervals
            .iter()
            .filter(|i| i.end - i.start >= 0.2)
            .map(|i| {
                (
                    self.start + i.start,
                    self.start + i.end,
                    self.wire_of(std::slice::from_ref(i)),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// What kraald reports.
// ---------------------------------------------------------------------------------------------

async fn bandwidth(k: &Kraald, pod: &Pod) -> Value {
    let (_, info) = k.pod_status_verbose(&pod.id).await;
    info["bandwidth"].clone()
}

/// The pod's class in one direction: its id, and the counters that go up with traffic.
fn class<'a>(bw: &'a Value, direction: &str) -> &'a Value {
    let class = &bw[direction];
    assert!(
        class["class"].is_string(),
        "no {direction} class in the pod's bandwidth info: {bw}"
    );
    class
}

fn field(class: &Value, key: &str) -> u64 {
    class[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing from {class}"))
}

fn kraalctl_ok(k: &Kraald, args: &[&str]) -> String {
    let out = k.kraalctl(args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kraalctl {args:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `kraalctl pod update` that must be refused as InvalidArgument naming `value`.
fn kraalctl_refused(k: &Kraald, pod: &Pod, changes: &[&str], value: &str) {
    let mut args = vec!["pod", "update", &pod.id];
    args.extend_from_slice(changes);
    let out = k.kraalctl(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kraalctl {args:?} was accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("InvalidArgument") && err.contains(value),
        "kraalctl {args:?}: expected InvalidArgument naming {value:?}: {err}"
    );
}

/// Class ids (and their parents) in `tc class show` output: what a duplicate would add to.
fn class_ids(dev: &str) -> Vec<String> {
    let mut ids: Vec<String> = tc(&format!("class show dev {dev}"))
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.len() > 2 && words[0] == "class").then(|| words[2].to_string())
        })
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// The control: the lab's link and iperf3 in a container go far faster than any cap below,
/// so every rate the other tests see is the shaper's.
#[tokio::test]
async fn an_unshaped_host_network_pod_is_not_held_to_anything() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5300);
    let pod = host_pod(&k, "free", &[]).await;
    let r = lab.run_flow(&k, &image, &pod, Flow::uplink(5300, 2)).await;
    log(&format!(
        "unshaped hostNetwork pod to the lab, 2 s: {} Mbit/s on the wire (goodput {}), seconds {}",
        mbit(r.wire()),
        mbit(r.received_bps),
        mbits(&r.seconds())
    ));
    // Above the threshold: a node without shaped pods shapes nothing.
    assert!(r.wire() > 2.0 * THRESHOLD, "{} Mbit/s", mbit(r.wire()));
    assert!(
        bandwidth(&k, &pod).await["egress"].is_null(),
        "a pod without annotations got a class"
    );
    assert!(lab.shaping_left().is_empty(), "{:?}", lab.shaping_left());
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}

#[tokio::test]
async fn egress_cap_holds_for_one_and_four_flows_from_the_first_second() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5301);
    let cap = 50.0 * M;
    let pod = host_pod(&k, "cap", &[("kubernetes.io/egress-bandwidth", "50M")]).await;

    let bw = bandwidth(&k, &pod).await;
    let egress = class(&bw, "egress");
    let id = egress["class"].as_str().expect("class").to_string();
    assert!(id.starts_with("6b72:"), "{bw}");
    assert_eq!(field(egress, "ceilBps"), 50_000_000, "{bw}");
    assert!(
        bw["ingress"].is_null(),
        "an ingress class without an ingress annotation: {bw}"
    );
    let burst = field(egress, "burstBytes") as f64;
    let classes = tc(&format!("class show dev {UPLINK}"));
    assert!(
        classes.contains(&format!("class htb {id} ")) && classes.contains("ceil 50Mbit"),
        "{id} with ceil 50Mbit is not on {UPLINK}:\n{classes}"
    );
    // A second may carry the cap plus one burst; 2% for where the receiver's clock cuts it.
    let limit = (cap + 8.0 * burst) * 1.02;

    for (streams, name) in [(1, "1 flow"), (4, "4 flows")] {
        let before = field(class(&bandwidth(&k, &pod).await, "egress"), "shapedBytes");
        let flow = Flow {
            streams,
            ..Flow::uplink(5301, 10)
        };
        let r = lab.run_flow(&k, &image, &pod, flow).await;
        let counters = bandwidth(&k, &pod).await;
        let after = field(class(&counters, "egress"), "shapedBytes");
        assert!(field(class(&counters, "egress"), "bytes") > 0, "{counters}");
        let seconds = r.seconds();
        let counted = (after - before) as f64 / (r.received_bytes * r.factor);
        log(&format!(
            "egress cap 50M, {name}, 10 s: {} Mbit/s on the wire (goodput {}), seconds {}, limit per second {}, retransmits {}, class bytes / wire bytes {counted:.3}",
            mbit(r.wire()),
            mbit(r.received_bps),
            mbits(&seconds),
            mbit(limit),
            r.retransmits
        ));
        assert_within(name, r.wire(), cap, 0.05);
        assert!(seconds.len() >= 9, "{name}: {:?}", r.intervals);
        assert!(
            seconds[0] <= limit,
            "{name}: the first second carried {} Mbit (limit {})",
            mbit(seconds[0]),
            mbit(limit)
        );
        assert!(
            seconds.iter().all(|s| *s <= limit),
            "{name}: a second above cap + burst: {}",
            mbits(&seconds)
        );
        // kraald's shaped bytes are the class's count on the wire: everything the receiver
        // got, plus the handshakes and retransmits.
        assert!(
            (0.97..=1.1).contains(&counted),
            "{name}: the class counted {} bytes for {} on the wire",
            after - before,
            r.received_bytes * r.factor
        );
    }
    let policy = kraalctl_ok(&k, &["pod", "policy", &pod.id]);
    log(&format!("kraalctl pod policy:\n{policy}"));
    assert!(policy.contains("bandwidth:"), "{policy}");

    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}

#[tokio::test]
async fn udp_at_twice_the_cap_is_held_to_the_cap() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5311);
    let cap = 50.0 * M;
    let pod = host_pod(&k, "udp", &[("kubernetes.io/egress-bandwidth", "50M")]).await;
    let flow = Flow {
        udp_bps: Some(100_000_000),
        ..Flow::uplink(5311, 5)
    };
    let r = lab.run_flow(&k, &image, &pod, flow).await;
    let egress = bandwidth(&k, &pod).await["egress"].clone();
    // The sender may be held back by its socket buffer (a local qdisc pushes back on a UDP
    // socket) or see its datagrams dropped; either way the link must carry the cap.
    log(&format!(
        "UDP offered at 100M against a 50M cap, 5 s: received {} Mbit/s on the wire, sender wrote {} goodput, seconds {}, class {egress}",
        mbit(r.wire()),
        mbit(r.sent_bps),
        mbits(&r.seconds())
    ));
    assert_within("UDP", r.wire(), cap, 0.05);
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}

#[tokio::test]
async fn ingress_cap_holds_through_the_ifb() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5321);
    let cap = 30.0 * M;
    let pod = host_pod(&k, "in", &[("kubernetes.io/ingress-bandwidth", "30M")]).await;
    let bw = bandwidth(&k, &pod).await;
    let ingress = class(&bw, "ingress");
    assert_eq!(field(ingress, "ceilBps"), 30_000_000, "{bw}");
    assert!(
        bw["egress"].is_null(),
        "an egress class without an egress annotation: {bw}"
    );
    let ifb = lab.uplink_ifb();
    assert!(
        Path::new("/sys/class/net").join(&ifb).exists(),
        "no {ifb} for {UPLINK}'s ingress: {:?}",
        kraal_ifbs()
    );
    let r = lab
        .run_flow(&k, &image, &pod, Flow::uplink(5321, 5).reverse())
        .await;
    let after = bandwidth(&k, &pod).await;
    log(&format!(
        "ingress cap 30M through {ifb}, 5 s: {} Mbit/s on the wire (goodput {}), seconds {}, retransmits {}, class {}",
        mbit(r.wire()),
        mbit(r.received_bps),
        mbits(&r.seconds()),
        r.retransmits,
        after["ingress"]
    ));
    assert_within("ingress", r.wire(), cap, 0.10);
    assert!(
        field(class(&after, "ingress"), "shapedBytes") > 0,
        "{after}"
    );
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}

#[tokio::test]
async fn soft_and_hard_limits_under_the_machine_threshold() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    for port in [5331, 5332, 5333] {
        lab.server(port);
    }
    let a = host_pod(
        &k,
        "soft-a",
        &[("kraal.dev/egress-bandwidth", "min=20M,max=80M")],
    )
    .await;
    let b = host_pod(
        &k,
        "soft-b",
        &[("kraal.dev/egress-bandwidth", "min=50M,max=150M")],
    )
    .await;
    let bw = bandwidth(&k, &a).await;
    let ea = class(&bw, "egress");
    assert_eq!(
        (field(ea, "rateBps"), field(ea, "ceilBps")),
        (20_000_000, 80_000_000),
        "{bw}"
    );

    let alone = lab.run_flow(&k, &image, &a, Flow::uplink(5331, 5)).await;
    log(&format!(
        "A (min 20, max 80) alone, threshold 100M, 5 s: {} Mbit/s on the wire, seconds {}",
        mbit(alone.wire()),
        mbits(&alone.seconds())
    ));
    assert_within("A alone", alone.wire(), 80.0 * M, 0.05);

    let started = lab
        .start_flows(
            &k,
            &image,
            &[(&a, Flow::uplink(5332, 6)), (&b, Flow::uplink(5333, 6))],
        )
        .await;
    let mut reports = Vec::new();
    for flow in started {
        reports.push(lab.finish(&k, flow).await);
    }
    let (ra, rb) = (&reports[0], &reports[1]);
    let total = ra.wire() + rb.wire();
    log(&format!(
        "A (20/80) + B (50/150) together, threshold 100M, 6 s: A {}, B {}, total {} Mbit/s on the wire; A seconds {}, B seconds {}; started {:.2} s apart",
        mbit(ra.wire()),
        mbit(rb.wire()),
        mbit(total),
        mbits(&ra.seconds()),
        mbits(&rb.seconds()),
        (ra.start - rb.start).abs()
    ));
    assert!(ra.wire() >= 20.0 * M * 0.95, "A below its min");
    assert!(rb.wire() >= 50.0 * M * 0.95, "B below its min");
    assert_within("A + B", total, THRESHOLD, 0.05);
    for pod in [&a, &b] {
        k.remove_pod(&pod.id).await;
    }
    lab.assert_clean(&k);
}

#[tokio::test]
async fn an_offline_pod_gets_only_what_online_pods_leave() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5341);
    lab.server(5342);
    let online = host_pod(
        &k,
        "online",
        &[("kraal.dev/egress-bandwidth", "min=10M,max=60M")],
    )
    .await;
    let offline = host_pod(
        &k,
        "offline",
        &[
            ("kraal.dev/qos-class", "offline"),
            ("kraal.dev/egress-bandwidth", "max=100M"),
        ],
    )
    .await;
    let started = lab
        .start_flows(
            &k,
            &image,
            &[
                (&online, Flow::uplink(5341, 5)),
                (&offline, Flow::uplink(5342, 5)),
            ],
        )
        .await;
    let mut reports = Vec::new();
    for flow in started {
        reports.push(lab.finish(&k, flow).await);
    }
    let (on, off) = (&reports[0], &reports[1]);
    let bw = bandwidth(&k, &offline).await;
    log(&format!(
        "online (10/60) + offline (max 100), threshold 100M, 5 s: online {}, offline {}, total {} Mbit/s on the wire; online seconds {}, offline seconds {}; offline class {}",
        mbit(on.wire()),
        mbit(off.wire()),
        mbit(on.wire() + off.wire()),
        mbits(&on.seconds()),
        mbits(&off.seconds()),
        bw["egress"]
    ));
    // The online pod gets its ceiling as if it were alone; the offline one the rest.
    assert_within("online", on.wire(), 60.0 * M, 0.05);
    assert!(
        off.wire() <= THRESHOLD - on.wire() + 0.05 * THRESHOLD,
        "offline took {} Mbit/s next to online's {}",
        mbit(off.wire()),
        mbit(on.wire())
    );
    assert_within("online + offline", on.wire() + off.wire(), THRESHOLD, 0.05);
    for pod in [&online, &offline] {
        k.remove_pod(&pod.id).await;
    }
    lab.assert_clean(&k);
}

/// Same-node traffic of hostNetwork pods crosses lo, which the CNI bandwidth plugin never
/// sees: the sender's egress cap and the receiver's ingress cap hold there too.
#[tokio::test]
async fn a_same_node_pod_to_pod_flow_is_shaped() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    let port = 5391;
    let server = server_pod(&k, &lab, &image, "lo-server", port).await;
    let control = host_pod(&k, "lo-free", &[]).await;
    let a = host_pod(
        &k,
        "lo-a",
        &[
            ("kubernetes.io/egress-bandwidth", "50M"),
            ("kubernetes.io/ingress-bandwidth", "30M"),
        ],
    )
    .await;
    log(&format!("lo while shaped: {:?}", qdisc_lines("lo")));

    let sent = lab.run_flow(&k, &image, &a, Flow::loopback(port, 5)).await;
    let received = lab
        .run_flow(&k, &image, &a, Flow::loopback(port, 5).reverse())
        .await;
    let free = lab
        .run_flow(&k, &image, &control, Flow::loopback(port, 2))
        .await;
    log(&format!(
        "same node over lo, 5 s each: pod A (egress 50M) sending {} Mbit/s on the wire, seconds {}; A (ingress 30M) receiving {}, seconds {}; an unshaped pod sending {} (2 s)",
        mbit(sent.wire()),
        mbits(&sent.seconds()),
        mbit(received.wire()),
        mbits(&received.seconds()),
        mbit(free.wire())
    ));
    assert_within("A's egress over lo", sent.wire(), 50.0 * M, 0.05);
    assert_within("A's ingress over lo", received.wire(), 30.0 * M, 0.10);
    // Else the figures above could be the loopback path's own limit.
    assert!(
        free.wire() > 1.5 * 50.0 * M,
        "an unshaped pod gets only {} Mbit/s over lo",
        mbit(free.wire())
    );
    for pod in [&a, &control, &server] {
        k.remove_pod(&pod.id).await;
    }
    lab.assert_clean(&k);
}

#[tokio::test]
async fn kraalctl_changes_a_running_flow_within_a_second_and_refuses_bad_values() {
    let mut lab = Lab::new();
    let k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5351);
    let pod = host_pod(&k, "live", &[("kubernetes.io/egress-bandwidth", "50M")]).await;

    let mut started = lab
        .start_flows(&k, &image, &[(&pod, Flow::uplink(5351, 5))])
        .await;
    let flow = started.remove(0);
    let start = lab.started_at(&flow).await;
    let wait = start + 2.0 - uptime();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    // From the moment the command is issued: what a user sees.
    let changed = uptime();
    let shown = kraalctl_ok(
        &k,
        &[
            "pod",
            "update",
            &pod.id,
            "kubernetes.io/egress-bandwidth=20M",
        ],
    );
    let answered = uptime();
    let r = lab.finish(&k, flow).await;
    let timeline = r.timeline();
    log(&format!(
        "live update 50M -> 20M issued {:.2} s into the flow, kraalctl answered after {:.2} s; per 0.25 s on the wire: {}",
        changed - r.start,
        answered - changed,
        mbits(&timeline.iter().map(|t| t.2).collect::<Vec<_>>())
    ));
    assert!(shown.contains("bandwidth:"), "{shown}");
    let mut after = Vec::new();
    for (from, to, bps) in &timeline {
        if *from >= changed + 1.0 {
            assert!(
                *bps <= 20.0 * M * 1.1,
                "{} Mbit/s at {:.2} s, {:.2} s after the update",
                mbit(*bps),
                from - r.start,
                from - changed
            );
            after.push(*bps);
        } else if *to <= changed - 0.25 && *from >= r.start + 0.5 {
            assert!(
                *bps >= 50.0 * M * 0.9,
                "{} Mbit/s at {:.2} s, before the update",
                mbit(*bps),
                from - r.start
            );
        }
    }
    assert!(
        after.len() >= 4,
        "too few intervals after the update: {timeline:?}"
    );
    let mean = after.iter().sum::<f64>() / after.len() as f64;
    assert_within("after the update", mean, 20.0 * M, 0.10);
    assert_eq!(
        field(class(&bandwidth(&k, &pod).await, "egress"), "ceilBps"),
        20_000_000
    );

    // Refused values (creation-time refusals are in cri_policy.rs) leave the 20M in force.
    kraalctl_refused(&k, &pod, &["kubernetes.io/egress-bandwidth=-5M"], "-5M");
    kraalctl_refused(&k, &pod, &["kubernetes.io/egress-bandwidth=10Q"], "10Q");
    kraalctl_refused(
        &k,
        &pod,
        &[
            "kubernetes.io/egress-bandwidth-",
            "kraal.dev/egress-bandwidth=min=80M,max=20M",
        ],
        "min=80M,max=20M",
    );
    let bw = bandwidth(&k, &pod).await;
    assert_eq!(field(class(&bw, "egress"), "ceilBps"), 20_000_000, "{bw}");
    let policy = kraalctl_ok(&k, &["pod", "policy", &pod.id]);
    assert!(
        policy.contains("kubernetes.io/egress-bandwidth=20M"),
        "{policy}"
    );
    let r = lab.run_flow(&k, &image, &pod, Flow::uplink(5351, 3)).await;
    log(&format!(
        "after three refused updates, 3 s: {} Mbit/s on the wire, seconds {}",
        mbit(r.wire()),
        mbits(&r.seconds())
    ));
    assert_within("after refused updates", r.wire(), 20.0 * M, 0.05);
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}

#[tokio::test]
async fn a_restart_keeps_enforcing_and_duplicates_nothing() {
    let mut lab = Lab::new();
    let mut k = Kraald::start(&node_config()).await;
    let image = k.pull_busybox().await;
    lab.server(5361);
    let cap = 50.0 * M;
    let pod = host_pod(
        &k,
        "restart",
        &[
            ("kubernetes.io/egress-bandwidth", "50M"),
            ("kubernetes.io/ingress-bandwidth", "30M"),
        ],
    )
    .await;
    let ifb = lab.uplink_ifb();
    let state = || {
        (
            class_ids(UPLINK),
            class_ids(&ifb),
            class_ids("lo"),
            qdisc_lines(UPLINK).len(),
            tc(&format!("filter show dev {UPLINK}"))
                .matches(" bpf ")
                .count(),
            tc(&format!("filter show dev {ifb}"))
                .matches(" bpf ")
                .count(),
            kraal_ifbs(),
        )
    };
    let before = state();
    let info_before = bandwidth(&k, &pod).await;
    let burst = field(class(&info_before, "egress"), "burstBytes") as f64;

    let mut started = lab
        .start_flows(&k, &image, &[(&pod, Flow::uplink(5361, 7))])
        .await;
    let flow = started.remove(0);
    let start = lab.started_at(&flow).await;
    tokio::time::sleep(Duration::from_secs_f64((start + 2.0 - uptime()).max(0.0))).await;
    let t0 = uptime();
    k.restart().await;
    let restarted = uptime();
    let r = lab.finish(&k, flow).await;
    let after = state();
    let info_after = bandwidth(&k, &pod).await;
    let seconds = r.seconds();
    let limit = (cap + 8.0 * burst) * 1.02;
    log(&format!(
        "restart {:.2} s into a 7 s flow at a 50M cap (down {:.2} s): {} Mbit/s on the wire, seconds {}; classes before {:?}, after {:?}",
        t0 - r.start,
        restarted - t0,
        mbit(r.wire()),
        mbits(&seconds),
        before,
        after
    ));
    assert!(
        seconds.iter().all(|s| *s <= limit),
        "a second above cap + burst across the restart: {}",
        mbits(&seconds)
    );
    assert_within("across the restart", r.wire(), cap, 0.05);
    assert_eq!(
        before, after,
        "the shaping state changed across the restart"
    );
    assert_eq!(
        info_before["egress"]["class"], info_after["egress"]["class"],
        "{info_before} / {info_after}"
    );
    assert_eq!(
        info_before["ingress"]["class"], info_after["ingress"]["class"],
        "{info_before} / {info_after}"
    );
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}

#[tokio::test]
async fn pins_stay_with_a_shaped_pod_across_a_restart_and_go_with_the_last_one() {
    let lab = Lab::new();
    let mut k = Kraald::start(&node_config()).await;
    // Port ranges too: both loaders' trees share the pin root.
    let pod = host_pod(
        &k,
        "pins",
        &[
            ("kubernetes.io/egress-bandwidth", "50M"),
            ("kraal.dev/bind-ports", "20200-20299"),
        ],
    )
    .await;
    let root = k.bpf_pin_root();
    // The classifiers are pinned afresh by every loader (tc filters hold the instance they
    // were given); maps and pods' links must be the same objects after a restart.
    let progs = root.join("bandwidth/progs");
    let adopted = || {
        let mut files = pinned_files(&root);
        files.retain(|path, _| !path.starts_with(&progs));
        files
    };
    let before = adopted();
    for tree in [root.join("pods"), root.join("bandwidth/pods")] {
        assert!(
            before.keys().any(|p| p.starts_with(&tree)),
            "nothing pinned under {}: {before:?}",
            tree.display()
        );
    }

    // A running pod's pins are re-adopted by the next kraald, not made anew.
    k.restart().await;
    let info = bandwidth(&k, &pod).await;
    assert!(info["egress"]["class"].is_string(), "{info}");
    assert_eq!(adopted(), before, "the restart changed the pins");

    // The last pod gone and kraald stopped: nothing of kraal is left on bpffs.
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
    let status = k.stop();
    assert!(status.success(), "kraald exited with {status}");
    let left = pinned_files(&root);
    assert!(left.is_empty(), "pins left after the last pod: {left:?}");
    assert!(!root.exists(), "{} is still there", root.display());
}

#[tokio::test]
async fn a_node_with_bandwidth_disabled_refuses_annotated_pods() {
    let lab = Lab::new();
    let k = Kraald::start("[bandwidth]\nenabled = false\n").await;
    for (name, key, value) in [
        ("off-cap", "kubernetes.io/egress-bandwidth", "50M"),
        ("off-soft", "kraal.dev/ingress-bandwidth", "min=1M,max=2M"),
    ] {
        let refused = k.run_pod(annotated(name, &[(key, value)])).await;
        assert_code(refused, Code::FailedPrecondition, "bandwidth");
    }
    let pod = host_pod(&k, "off-plain", &[]).await;
    // Switching shaping on for a running pod is refused the same way.
    let out = k.kraalctl(&[
        "pod",
        "update",
        &pod.id,
        "kubernetes.io/egress-bandwidth=10M",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("FailedPrecondition"),
        "update on a node without bandwidth: {}{err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(lab.shaping_left().is_empty(), "{:?}", lab.shaping_left());
    k.remove_pod(&pod.id).await;
}

/// A bridge network of the test's own (CNI's bridge + host-local, Debian's plugins) whose
/// pods reach the lab's far end through the node: the lab routes the pods' subnet back over
/// the uplink. Removes its bridge and IPAM state, and puts `ip_forward` back, when dropped.
struct PodNetwork {
    dir: tempfile::TempDir,
    forwarding_before: String,
    lab_netns: String,
}

const POD_BRIDGE: &str = "kbtbr0";
const POD_SUBNET: &str = "10.214.7.0/24";

impl PodNetwork {
    fn new(lab: &Lab) -> PodNetwork {
        let dir = tempfile::Builder::new()
            .prefix("kbt-cni-")
            .tempdir()
            .expect("temp dir");
        let forwarding_before =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("ip_forward");
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "kbt-pods",
            "plugins": [{
                "type": "bridge",
                "bridge": POD_BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": POD_SUBNET }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": dir.path().join("ipam"),
                },
            }],
        });
        std::fs::create_dir(dir.path().join("conf")).expect("conf dir");
        std::fs::write(
            dir.path().join("conf/10-kbt.conflist"),
            serde_json::to_string(&conf).expect("JSON"),
        )
        .expect("write conflist");
        // The far end answers the pods through the node, which routes them over its bridge.
        must(
            "ip",
            &[
                "-n", &lab.netns, "route", "add", POD_SUBNET, "via", HOST_ADDR,
            ],
        );
        PodNetwork {
            dir,
            forwarding_before,
            lab_netns: lab.netns.clone(),
        }
    }

    fn config(&self) -> String {
        format!(
            "[cni]\nenabled = true\nconf_dir = {:?}\nbin_dirs = [\"/usr/lib/cni\"]\n",
            self.dir.path().join("conf")
        )
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // The bridge plugin never deletes its bridge; the pods' veths went with their DEL.
        let _ = sh("ip", &["link", "del", POD_BRIDGE]);
        let _ = sh("ip", &["-n", &self.lab_netns, "route", "del", POD_SUBNET]);
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forwarding_before);
    }
}

/// A pod with its own netns: its packets lose their priority when the node forwards them, so
/// the uplink's classifier finds the pod by the host end of its veth instead (recorded when
/// CNI has added the pod).
#[tokio::test]
async fn a_pod_with_its_own_network_namespace_is_shaped_on_the_uplink() {
    let mut lab = Lab::new();
    let net = PodNetwork::new(&lab);
    let k = Kraald::start(&format!("{}{}", node_config(), net.config())).await;
    let image = k.pull_busybox().await;
    lab.server(5361);
    let mut config = pod_config("netns-cap", false);
    config
        .annotations
        .insert("kubernetes.io/egress-bandwidth".into(), "50M".into());
    config
        .annotations
        .insert("kubernetes.io/ingress-bandwidth".into(), "30M".into());
    let id = k
        .run_pod(config.clone())
        .await
        .unwrap_or_else(|s| panic!("RunPodSandbox of a netns pod: {s:?}\n{}", log_tail(&k)));
    let pod = Pod { id, config };
    let (_, info) = k.pod_status_verbose(&pod.id).await;
    let host_if = info["network"]["hostInterface"]
        .as_str()
        .unwrap_or_else(|| panic!("no host interface for the pod: {info}"))
        .to_string();

    let r = lab.run_flow(&k, &image, &pod, Flow::uplink(5361, 5)).await;
    let bw = bandwidth(&k, &pod).await;
    log(&format!(
        "pod with its own netns (host side {host_if}), egress cap 50M, 5 s: {} Mbit/s on the wire (goodput {}), seconds {}, retransmits {}, class {}",
        mbit(r.wire()),
        mbit(r.received_bps),
        mbits(&r.seconds()),
        r.retransmits,
        class(&bw, "egress")
    ));
    assert_within("a netns pod's egress", r.wire(), 50.0 * M, 0.05);
    assert!(
        field(class(&bw, "egress"), "shapedBytes") > 0,
        "the pod's class saw nothing: {bw}"
    );
    // On the way in the uplink's IFB routes the packets on to the bridge; the classifier
    // finds the pod by their destination.
    let r = lab
        .run_flow(&k, &image, &pod, Flow::uplink(5361, 5).reverse())
        .await;
    log(&format!(
        "pod with its own netns, ingress cap 30M, 5 s: {} Mbit/s on the wire, seconds {}, retransmits {}",
        mbit(r.wire()),
        mbits(&r.seconds()),
        r.retransmits
    ));
    assert_within("a netns pod's ingress", r.wire(), 30.0 * M, 0.10);
    k.remove_pod(&pod.id).await;
    lab.assert_clean(&k);
}
