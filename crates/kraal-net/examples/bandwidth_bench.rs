//! Issue 6's benchmark: a pod capped at the same rate by kraal and by the CNI `bandwidth`
//! plugin, side by side in one run. For each case and direction a saturating TCP flow (iperf3)
//! and, beside it from the same pod, a request/response flow on one connection (64-byte
//! requests at a fixed rate, 64-byte replies) whose per-request latency shows how long the
//! pod's queue is. Printed: goodput and goodput/cap, sender retransmits, the receiver's first
//! second, drops in the node's qdiscs, and p50/p99/max request latency; egress in one table,
//! ingress in another.
//!
//! ```text
//!  far netns (remote)           peer netns           node netns                 pod netns
//!  eth0 10.79.0.2 ──veth── fw0 | dn0 10.77.0.2 ──veth── up0 10.77.0.1 (uplink)
//!  iperf3 servers/clients,     (a router)            pv1 10.78.1.1 ──veth── eth0 10.78.1.2
//!  request/response server                                                  iperf3, requests
//! ```
//!
//! The remote end is a routed hop behind the node's neighbour, as on a real network: its
//! packets reach the node without their socket, so TCP small queues cannot hold a remote
//! sender back while its packets wait in the node's queues (with the neighbour as the sender
//! they would, and ingress queues would look far shorter than they are).
//!
//! Cases (`--cases`, comma-separated):
//! - `kraal`: as kraal-net and kraal-ebpf do it for a pod with its own netns. Egress: the
//!   node's HTB on the uplink, the pod's class chosen by `kb_classify_egress` from the host-side
//!   interface the packets came in on. Ingress: the uplink redirected to an IFB with the same
//!   kind of HTB, the class chosen by `kb_classify_ingress` (route lookup to the pod interface).
//!   The pod's classes and their leaf queues as `Hierarchy::set_pod` makes them.
//! - `kraal-host`: a hostNetwork pod (processes in the node netns, in a cgroup with the
//!   `cgroup_skb` programs): egress class from `skb->priority`, ingress from the socket's tag.
//! - `cni`: `/usr/lib/cni/bandwidth` called as a chained plugin for the pod's veth with the
//!   burst containerd passes for `kubernetes.io/*-bandwidth` (2^32-1 bits, whatever the rate).
//! - `cni-fair`: the same plugin with kraal's burst (`default_burst`), to separate the
//!   mechanism from containerd's choice of burst.
//! - `none`: no shaping, for reference.
//!
//! `--leaf` replaces the leaf qdisc of the pod's kraal classes after kraal-net set them up, one
//! set of kraal rows per entry: `as-set` (kraal-net's own), `pfifo:<packets>` (`pfifo:1000` is
//! HTB's default leaf on these devices), `bfifo:<bytes>`, `bfifo:<ms>ms` and `tbf:<ms>ms` (a
//! TBF far above the cap that splits every GSO packet) holding that long at the cap.
//!
//! Root only; everything runs in network namespaces it creates and removes (iperf3 needed).
//! `bandwidth_bench [--secs 10] [--cap 50M] [--rr-rate 200] [--cc cubic] [--flows 1]
//! [--cases kraal,cni,cni-fair,kraal-host] [--leaf as-set]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kraal_ebpf::{BandwidthPrograms, PodBandwidth, PodInterface};
use kraal_net::shaping::{
    ClassRates, Device, EGRESS_MAJOR, Hierarchy, INGRESS_MAJOR, IngressRedirect, NodeRates,
    default_burst,
};
use kraal_policy::{QosClass, Rates};
use support::{Client, Lab, NODE_ADDR, Proc, Report, iperf_server};

type Res<T> = Result<T, Box<dyn Error>>;

const M: u64 = 1_000_000;
/// The request/response server's port in the remote netns.
const RR_PORT: u16 = 7007;
/// Bytes of a request and of its reply: one small segment each way.
const RR_SIZE: usize = 64;
/// How long the request client waits for replies after its last request: long enough for
/// the deepest queue measured here to drain once the saturating flow has stopped.
const RR_GRACE: Duration = Duration::from_secs(3);
/// The pod's class in both of kraal's hierarchies.
const POD_MINOR: u16 = 0x10;
/// What containerd passes to the plugin as ingressBurst/egressBurst, in bits, for any rate
/// (`toCNIBandWidth`: `math.MaxUint32`).
const CONTAINERD_BURST_BITS: u64 = u32::MAX as u64;
const CNI_PLUGIN: &str = "/usr/lib/cni/bandwidth";

// --- command line ----------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaf {
    /// Whatever kraal-net's `Hierarchy::set_pod` left there.
    AsSet,
    Pfifo(u32),
    Bfifo(u64),
    /// bfifo holding this many milliseconds at the cap.
    BfifoMs(u64),
    /// A TBF far above the cap with a one-frame bucket, holding this many milliseconds at
    /// the cap: a byte-limited FIFO that splits every GSO packet, so a drop costs a segment.
    TbfMs(u64),
}

impl Leaf {
    fn parse(s: &str) -> Res<Leaf> {
        let leaf = match s.split_once(':') {
            None if s == "as-set" => Leaf::AsSet,
            Some(("pfifo", n)) => Leaf::Pfifo(n.parse()?),
            Some(("bfifo", n)) => match n.strip_suffix("ms") {
                Some(ms) => Leaf::BfifoMs(ms.parse()?),
                None => Leaf::Bfifo(n.parse()?),
            },
            Some(("tbf", n)) => Leaf::TbfMs(
                n.strip_suffix("ms")
                    .ok_or_else(|| format!("tbf:<N>ms, not {s:?}"))?
                    .parse()?,
            ),
            _ => return Err(format!("unknown leaf {s:?}").into()),
        };
        Ok(leaf)
    }

    /// The `tc qdisc` kind and options, None for [`Leaf::AsSet`].
    fn tc_args(self, cap_bps: u64) -> Option<String> {
        match self {
            Leaf::AsSet => None,
            Leaf::Pfifo(n) => Some(format!("pfifo limit {n}")),
            Leaf::Bfifo(b) => Some(format!("bfifo limit {b}")),
            Leaf::BfifoMs(ms) => Some(format!("bfifo limit {}", cap_bps / 8 * ms / 1000)),
            Leaf::TbfMs(ms) => Some(format!(
                "tbf rate 100gbit burst 1756 limit {}",
                (cap_bps / 8 * ms / 1000).max(3512)
            )),
        }
    }

    fn label(self, cap_bps: u64) -> String {
        match self.tc_args(cap_bps) {
            None => String::new(),
            Some(a) => format!(", leaf {a}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Kraal,
    KraalHost,
    Cni,
    CniFair,
    None,
}

impl Case {
    fn parse(s: &str) -> Res<Case> {
        Ok(match s {
            "kraal" => Case::Kraal,
            "kraal-host" => Case::KraalHost,
            "cni" => Case::Cni,
            "cni-fair" => Case::CniFair,
            "none" => Case::None,
            _ => return Err(format!("unknown case {s:?}").into()),
        })
    }

    fn is_kraal(self) -> bool {
        matches!(self, Case::Kraal | Case::KraalHost)
    }
}

struct Opts {
    secs: f64,
    cap_bps: u64,
    /// Requests per second beside the saturating flow.
    rr_rate: f64,
    /// Congestion control of every TCP socket of the bench. Default cubic, Linux's default:
    /// the namespaces of this machine default to bbr, which paces itself and keeps queues
    /// short whatever the qdisc, where most pods and remote senders run cubic.
    cc: String,
    /// Parallel flows of the saturating iperf3 run.
    flows: u32,
    cases: Vec<Case>,
    leaves: Vec<Leaf>,
}

const USAGE: &str = "usage: bandwidth_bench [--secs S] [--cap RATE] [--rr-rate PER_SEC] \
    [--cc ALGO] [--flows N] [--cases kraal,kraal-host,cni,cni-fair,none] \
    [--leaf as-set,pfifo:N,bfifo:BYTES,bfifo:MSms,tbf:MSms]";

fn parse_opts(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        secs: 10.0,
        cap_bps: 50 * M,
        rr_rate: 200.0,
        cc: "cubic".into(),
        flows: 1,
        cases: vec![Case::Kraal, Case::Cni, Case::CniFair, Case::KraalHost],
        leaves: vec![Leaf::AsSet],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--secs" => o.secs = value.parse()?,
            "--cap" => o.cap_bps = Rates::parse_cap(value)?.max_bps,
            "--rr-rate" => o.rr_rate = value.parse()?,
            "--cc" => o.cc = value.clone(),
            "--flows" => o.flows = value.parse()?,
            "--cases" => o.cases = value.split(',').map(Case::parse).collect::<Res<_>>()?,
            "--leaf" => o.leaves = value.split(',').map(Leaf::parse).collect::<Res<_>>()?,
            _ => return Err(format!("unknown option {flag}\n{USAGE}").into()),
        }
    }
    if !(o.secs >= 2.0 && o.rr_rate > 0.0 && o.flows > 0) {
        return Err(format!("need --secs >= 2, --rr-rate > 0, --flows > 0\n{USAGE}").into());
    }
    Ok(o)
}

// --- request/response flow -------------------------------------------------------------

/// Sets the socket's congestion control. Per socket because a namespace other than the
/// host's may only default to the host's "allowed" algorithms, and root may pick any here.
fn set_congestion(sock: &impl AsRawFd, cc: &str) -> Res<()> {
    // SAFETY: a valid socket and a buffer of the given length, read only.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            cc.as_ptr().cast(),
            cc.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("TCP_CONGESTION {cc}: {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// `rr-server ADDR PORT CC`: echoes every 64-byte request on every connection. Prints one
/// line once it listens.
fn rr_server(addr: &str, port: &str, cc: &str) -> Res<()> {
    let listener = TcpListener::bind(format!("{addr}:{port}"))?;
    // Accepted connections inherit it.
    set_congestion(&listener, cc)?;
    println!("listening");
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let mut s = stream?;
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; RR_SIZE];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// `rr-client ADDR PORT RATE SECS CC`: sends a request every 1/RATE s on one connection for SECS
/// and times each reply from the moment its request was written (requests are not held back
/// by late replies, so a deep queue shows in full). Prints `sent <n>`, then one latency in µs
/// per reply.
fn rr_client(addr: &str, port: &str, rate: &str, secs: &str, cc: &str) -> Res<()> {
    let rate: f64 = rate.parse()?;
    let secs: f64 = secs.parse()?;
    let to: SocketAddr = format!("{addr}:{port}").parse()?;
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    stream.set_nodelay(true)?;
    set_congestion(&stream, cc)?;
    let mut writer = stream.try_clone()?;
    let start = Instant::now();
    let total = (rate * secs).round() as u64;
    let sender = std::thread::spawn(move || -> std::io::Result<u64> {
        for seq in 0..total {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut msg = [0u8; RR_SIZE];
            msg[..8].copy_from_slice(&seq.to_le_bytes());
            let now = start.elapsed().as_nanos() as u64;
            msg[8..16].copy_from_slice(&now.to_le_bytes());
            writer.write_all(&msg)?;
        }
        Ok(total)
    });
    // Reads with a timeout so the deadline is noticed; a partial reply is kept across reads.
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = start + Duration::from_secs_f64(secs) + RR_GRACE;
    let mut latencies_us = Vec::with_capacity(total as usize);
    let mut buf = [0u8; RR_SIZE];
    let mut have = 0;
    while (latencies_us.len() as u64) < total && Instant::now() < deadline {
        match stream.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => {
                have += n;
                if have == RR_SIZE {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&buf[8..16]);
                    let now = start.elapsed().as_nanos() as u64;
                    latencies_us.push(now.saturating_sub(u64::from_le_bytes(sent)) / 1000);
                    have = 0;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let sent = sender.join().map_err(|_| "request sender panicked")??;
    let mut out = std::io::stdout().lock();
    writeln!(out, "sent {sent}")?;
    for l in latencies_us {
        writeln!(out, "{l}")?;
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
struct RrStats {
    sent: u64,
    /// Sorted.
    latencies_us: Vec<u64>,
}

impl RrStats {
    fn parse(text: &str) -> Res<RrStats> {
        let mut lines = text.lines();
        let sent = lines
            .next()
            .and_then(|l| l.strip_prefix("sent "))
            .ok_or_else(|| format!("request client printed {text:?}"))?
            .parse()?;
        let mut latencies_us = lines.map(str::parse).collect::<Result<Vec<u64>, _>>()?;
        latencies_us.sort_unstable();
        Ok(RrStats { sent, latencies_us })
    }

    /// The q-quantile in ms; requests without a reply count as slower than any reply.
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.sent == 0 {
            return None;
        }
        let rank = ((self.sent as f64 * q).ceil() as usize).max(1) - 1;
        self.latencies_us.get(rank).map(|us| *us as f64 / 1000.0)
    }

    fn max_ms(&self) -> Option<f64> {
        self.latencies_us.last().map(|us| *us as f64 / 1000.0)
    }
}

/// A running request client; [`RrRun::wait`] gives its figures. Killed if dropped unwaited.
struct RrRun(Option<Child>);

impl Drop for RrRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl RrRun {
    fn wait(mut self) -> Res<RrStats> {
        let child = self.0.take().ok_or("request client already waited for")?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("request client: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        RrStats::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

fn self_exe() -> Res<String> {
    Ok(std::env::current_exe()?.to_string_lossy().into_owned())
}

/// Starts the request/response server in `netns` and waits until it listens.
fn start_rr_server(netns: &str, addr: &str, cc: &str) -> Res<Proc> {
    let args = [
        "rr-server".to_string(),
        addr.into(),
        RR_PORT.to_string(),
        cc.into(),
    ];
    let (mut cmd, files) = support::command(netns, None, &self_exe()?, &args);
    let mut child = cmd.stdout(Stdio::piped()).spawn()?;
    drop(files);
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let proc = Proc::new(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "listening" {
        return Err(format!("request server did not start: {line:?}").into());
    }
    Ok(proc)
}

fn start_rr_client(opts: &Opts, to: &str, netns: &str, cgroup: Option<&Path>) -> Res<RrRun> {
    let args = [
        "rr-client".to_string(),
        to.into(),
        RR_PORT.to_string(),
        opts.rr_rate.to_string(),
        opts.secs.to_string(),
        opts.cc.clone(),
    ];
    let (mut cmd, files) = support::command(netns, cgroup, &self_exe()?, &args);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    drop(files);
    Ok(RrRun(Some(child)))
}

// --- shaping setups ----------------------------------------------------------------------

fn tc(netns: &str, args: &str) -> Res<String> {
    let out = Command::new("tc")
        .args(["-n", netns])
        .args(args.split_whitespace())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "tc -n {netns} {args}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packets dropped by the node's queues: the drops of every leaf qdisc (one nothing hangs
/// under), hidden default ones included, so that each drop counts once whether the parent
/// (HTB, TBF) also counts it or not. A GSO packet dropped whole counts once.
fn node_drops(node: &str) -> Res<u64> {
    let v: serde_json::Value = serde_json::from_str(&tc(node, "-s -j qdisc show invisible")?)?;
    let qdiscs = v.as_array().ok_or("tc printed no list")?;
    let major = |handle: &str| handle.split(':').next().unwrap_or("").to_string();
    let parents: std::collections::HashSet<(String, String)> = qdiscs
        .iter()
        .filter_map(|q| Some((q["dev"].as_str()?.to_string(), major(q["parent"].as_str()?))))
        .collect();
    Ok(qdiscs
        .iter()
        .filter(|q| {
            let dev = q["dev"].as_str().unwrap_or("").to_string();
            let handle = major(q["handle"].as_str().unwrap_or(""));
            !parents.contains(&(dev, handle))
        })
        .filter_map(|q| q["drops"].as_u64())
        .sum())
}

/// kraal's state for one case; dropped before the lab (its namespaces).
struct Kraal {
    _progs: BandwidthPrograms,
    _egress: Hierarchy,
    _ingress: Hierarchy,
    _redirect: IngressRedirect,
}

/// A node whose uplink allows far more than the pod's cap, so that only the pod's class
/// limits it.
fn node_rates(cap_bps: u64) -> NodeRates {
    let capacity_bps = (10 * cap_bps).max(1000 * M);
    NodeRates {
        capacity_bps,
        threshold_bps: capacity_bps,
        default_rate_bps: M,
    }
}

/// Sets the node up as kraald will: both hierarchies with their classifiers, the pod's class in
/// each, its cgroup programs, and for a netns pod its host-side interface.
fn setup_kraal(
    lab: &Lab,
    cgroup: &Path,
    host_if: Option<&str>,
    cap_bps: u64,
    leaf: Leaf,
) -> Res<Kraal> {
    let mut progs = BandwidthPrograms::load(&lab.pins)?;
    let egress = Hierarchy::ensure(lab.uplink(), EGRESS_MAJOR, &node_rates(cap_bps))?;
    egress.attach_classifier(progs.egress_classifier())?;
    let redirect = IngressRedirect::ensure(lab.uplink())?;
    let ingress = Hierarchy::ensure(redirect.ifb().clone(), INGRESS_MAJOR, &node_rates(cap_bps))?;
    ingress.attach_classifier(progs.ingress_classifier())?;
    // The annotation `kubernetes.io/*-bandwidth: <cap>` as kraal reads it.
    let class = ClassRates::for_pod(&Rates::new(0, cap_bps, None)?, QosClass::Online);
    let e = egress.set_pod(POD_MINOR, &class)?;
    let i = ingress.set_pod(POD_MINOR, &class)?;
    if let Some(args) = leaf.tc_args(cap_bps) {
        for (h, id) in [(&egress, e), (&ingress, i)] {
            tc(
                &lab.node,
                &format!("qdisc replace dev {} parent {id} {args}", h.device().name),
            )?;
        }
    }
    let pod = progs.attach(
        cgroup,
        &PodBandwidth {
            egress_class: e.to_u32(),
            ingress_class: i.to_u32(),
            ..Default::default()
        },
    )?;
    if let Some(host_if) = host_if {
        let ifindex = Device::new(lab.node_netns(), host_if).ifindex()?;
        progs.set_interface(&PodInterface {
            ifindex,
            pod,
            egress_class: e.to_u32(),
            ingress_class: i.to_u32(),
        })?;
    }
    Ok(Kraal {
        _progs: progs,
        _egress: egress,
        _ingress: ingress,
        _redirect: redirect,
    })
}

/// The CNI bandwidth plugin's setup for the pod's veth; DEL on drop.
struct Cni {
    node: String,
    env: Vec<(String, String)>,
    config: String,
}

impl Cni {
    fn add(lab: &Lab, pod: &support::PodNet, case_tag: &str, rate: u64, burst: u64) -> Res<Cni> {
        let sandbox = Lab::netns_path(&pod.netns).to_string_lossy().into_owned();
        // As a runtime chains it after ptp/bridge: prevResult lists the host-side veth (no
        // sandbox) and the pod's end; the plugin finds the host side as the peer of CNI_IFNAME.
        let config = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "kraal-bench",
            "type": "bandwidth",
            "runtimeConfig": {"bandwidth": {
                "ingressRate": rate, "ingressBurst": burst,
                "egressRate": rate, "egressBurst": burst,
            }},
            "prevResult": {
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": pod.host_if},
                    {"name": "eth0", "sandbox": sandbox},
                ],
                "ips": [{"address": format!("{}/24", pod.addr), "interface": 1}],
            },
        })
        .to_string();
        let env = [
            ("CNI_CONTAINERID", format!("kraal-bench-{}", case_tag)),
            ("CNI_NETNS", sandbox),
            ("CNI_IFNAME", "eth0".into()),
            ("CNI_PATH", "/usr/lib/cni".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cni = Cni {
            node: lab.node.clone(),
            env,
            config,
        };
        let result = cni.call("ADD")?;
        eprintln!(
            "  plugin ADD result: {}",
            result.split_whitespace().collect::<String>()
        );
        Ok(cni)
    }

    /// Runs the plugin in the node's netns (where the host-side veth and its IFB live).
    fn call(&self, command: &str) -> Res<String> {
        let (mut cmd, files) = support::command(&self.node, None, CNI_PLUGIN, &[]);
        cmd.env("CNI_COMMAND", command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        drop(files);
        child
            .stdin
            .take()
            .ok_or("no stdin")?
            .write_all(self.config.as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "{CNI_PLUGIN} {command} failed: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        Ok(stdout)
    }
}

impl Drop for Cni {
    fn drop(&mut self) {
        if let Err(e) = self.call("DEL") {
            eprintln!("  {e}");
        }
    }
}

// --- measuring ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Egress,
    Ingress,
}

/// Where the pod's processes run.
struct PodEnd {
    netns: String,
    addr: String,
    cgroup: PathBuf,
}

struct Measurement {
    report: Report,
    rr: RrStats,
    drops: u64,
}

struct Row {
    case: String,
    dir: Dir,
    m: Measurement,
}

fn measure(opts: &Opts, lab: &Lab, pod: &PodEnd, dir: Dir, port: u16) -> Res<Measurement> {
    let drops_before = node_drops(&lab.node)?;
    // The sender is always iperf3's client, so sum_sent.retransmits are the sender's own.
    let (_server, mut client) = match dir {
        Dir::Egress => {
            let server = iperf_server(&lab.remote, None, &lab.remote_addr, port);
            let mut c = Client::new(&pod.netns, &lab.remote_addr, port, opts.secs);
            c.cgroup = Some(pod.cgroup.clone());
            (server, c)
        }
        Dir::Ingress => {
            let server = iperf_server(&pod.netns, Some(&pod.cgroup), &pod.addr, port);
            (server, Client::new(&lab.remote, &pod.addr, port, opts.secs))
        }
    };
    client.server_output = true;
    client.flows = opts.flows;
    client.congestion = Some(opts.cc.clone());
    let flow = client.start();
    let rr = start_rr_client(opts, &lab.remote_addr, &pod.netns, Some(&pod.cgroup))?;
    let report = flow.wait();
    let rr = rr.wait()?;
    let drops = node_drops(&lab.node)?.saturating_sub(drops_before);
    Ok(Measurement { report, rr, drops })
}

fn run_case(opts: &Opts, case: Case, leaf: Leaf, n: usize) -> Res<Vec<Row>> {
    let tag = format!("c{n}");
    let mut lab = Lab::routed(&tag);
    let cap = opts.cap_bps;
    let cgroup = lab.cgroup("pod");
    let podnet = (case != Case::KraalHost).then(|| lab.pod_netns(1));
    let pod = match &podnet {
        Some(p) => PodEnd {
            netns: p.netns.clone(),
            addr: p.addr.clone(),
            cgroup: cgroup.clone(),
        },
        None => PodEnd {
            netns: lab.node.clone(),
            addr: NODE_ADDR.into(),
            cgroup: cgroup.clone(),
        },
    };
    let fair_burst_bits = default_burst(cap) * 8;
    let label = match case {
        Case::Kraal => format!("kraal{}", leaf.label(cap)),
        Case::KraalHost => format!("kraal, hostNetwork pod{}", leaf.label(cap)),
        Case::Cni => "CNI bandwidth, burst 2^32-1 bit (containerd)".into(),
        Case::CniFair => format!("CNI bandwidth, burst {fair_burst_bits} bit (kraal's)"),
        Case::None => "no shaping".into(),
    };
    eprintln!("case: {label}");
    // Declared after the lab, so dropped before its namespaces go.
    let mut _kraal = None;
    let mut _cni = None;
    match case {
        Case::Kraal | Case::KraalHost => {
            let host_if = podnet.as_ref().map(|p| p.host_if.as_str());
            _kraal = Some(setup_kraal(&lab, &cgroup, host_if, cap, leaf)?);
        }
        Case::Cni | Case::CniFair => {
            let p = podnet.as_ref().ok_or("the plugin needs a pod netns")?;
            let burst = if case == Case::Cni {
                CONTAINERD_BURST_BITS
            } else {
                fair_burst_bits
            };
            _cni = Some(Cni::add(
                &lab,
                p,
                &format!("{}{tag}", std::process::id()),
                cap,
                burst,
            )?);
        }
        Case::None => {}
    }
    for line in tc(&lab.node, "qdisc show")?.lines() {
        eprintln!("  {line}");
    }
    let _rr_server = start_rr_server(&lab.remote, &lab.remote_addr, &opts.cc)?;
    let mut rows = Vec::new();
    for (dir, port) in [(Dir::Egress, 5201), (Dir::Ingress, 5202)] {
        let m = measure(opts, &lab, &pod, dir, port)?;
        eprintln!(
            "  {dir:?}: {:.2} Mbit/s, {} retransmits, {} drops, request p99 {} ms",
            m.report.mbps(),
            m.report.retransmits,
            m.drops,
            ms(m.rr.quantile_ms(0.99))
        );
        rows.push(Row {
            case: label.clone(),
            dir,
            m,
        });
    }
    Ok(rows)
}

// --- output ------------------------------------------------------------------------------

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "-".into(),
    }
}

fn print_table(rows: &[Row], dir: Dir, cap: f64) {
    println!();
    println!(
        "{}",
        match dir {
            Dir::Egress => "Egress (pod -> remote)",
            Dir::Ingress => "Ingress (remote -> pod)",
        }
    );
    println!(
        "| case | Mbit/s | achieved/requested | retransmits | first s Mbit/s | qdisc drops | req p50 ms | req p99 ms | req max ms | replies |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows.iter().filter(|r| r.dir == dir) {
        let m = &r.m;
        let first = m
            .report
            .server_intervals
            .first()
            .map(|b| format!("{:.1}", b / 1e6))
            .unwrap_or_else(|| "-".into());
        println!(
            "| {} | {:.2} | {:.3} | {} | {} | {} | {} | {} | {} | {}/{} |",
            r.case,
            m.report.mbps(),
            m.report.received_bps / cap,
            m.report.retransmits,
            first,
            m.drops,
            ms(m.rr.quantile_ms(0.5)),
            ms(m.rr.quantile_ms(0.99)),
            ms(m.rr.max_ms()),
            m.rr.latencies_us.len(),
            m.rr.sent
        );
    }
}

fn bench(opts: &Opts) -> Res<()> {
    let mut rows = Vec::new();
    let mut n = 0;
    for &case in &opts.cases {
        let leaves: &[Leaf] = if case.is_kraal() {
            &opts.leaves
        } else {
            &[Leaf::AsSet]
        };
        for &leaf in leaves {
            rows.extend(run_case(opts, case, leaf, n)?);
            n += 1;
        }
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cap = opts.cap_bps as f64;
    println!(
        "kraal bandwidth bench, Linux {}: one pod capped at {:.0} Mbit/s each way; {} TCP flow(s) ({}) for {} s \
         and beside them, from the same pod, {} requests/s on one connection.",
        kernel.trim(),
        cap / 1e6,
        opts.flows,
        opts.cc,
        opts.secs,
        opts.rr_rate
    );
    println!(
        "Mbit/s: goodput (TCP payload; the caps count whole frames, so at 1500 MTU goodput is at most 0.956 of the cap). \
         first s: what the receiver got in its first second. retransmits: the sender's. qdisc drops: by the node's \
         leaf queues (a GSO packet dropped whole counts once). req: from writing a request to reading its reply; \
         unanswered requests count as slower than any."
    );
    print_table(&rows, Dir::Egress, cap);
    print_table(&rows, Dir::Ingress, cap);
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        // The bench runs itself in the namespaces for its request/response flow.
        Some("rr-server") if args.len() == 4 => rr_server(&args[1], &args[2], &args[3]),
        Some("rr-client") if args.len() == 6 => {
            rr_client(&args[1], &args[2], &args[3], &args[4], &args[5])
        }
        _ => {
            if !nix::unistd::Uid::effective().is_root() {
                return Err("the bench needs root (network namespaces, tc, eBPF)".into());
            }
            bench(&parse_opts(&args)?)
        }
    }
}
