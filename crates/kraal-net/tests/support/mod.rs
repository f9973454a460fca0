//! A small lab per test: network namespaces for the node, a remote peer and pods, veths
//! between them, cgroup2 directories for pods, a bpffs pin root, and iperf3 runs placed in a
//! pod's cgroup and namespace. Everything is named after this process's pid and removed on
//! drop, also when the test fails.
//!
//! ```text
//!  peer netns                node netns                      pod netns <i>
//!  dn0 10.77.0.2 ──veth── up0 10.77.0.1   (the "uplink")
//!                          pv<i> 10.78.<i>.1 ──veth── eth0 10.78.<i>.2
//! ```

#![allow(dead_code)] // each test binary uses a different part

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kraal_net::Netns;
use kraal_net::shaping::Device;

const BPFFS: &str = "/sys/fs/bpf";

pub const NODE_UPLINK: &str = "up0";
pub const NODE_ADDR: &str = "10.77.0.1";
pub const PEER_ADDR: &str = "10.77.0.2";
/// The far end's address in a [`Lab::routed`] lab.
pub const FAR_ADDR: &str = "10.79.0.2";

static TRAFFIC: Mutex<()> = Mutex::new(());

/// Serialises the tests that measure rates: two at once on two cores measure each other.
pub fn traffic_lock() -> MutexGuard<'static, ()> {
    TRAFFIC.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &str) {
    run(Command::new("ip").args(args.split_whitespace()));
}

/// Sets a sysctl inside network namespace `netns` (the `net.*` ones are per namespace).
pub fn sysctl(netns: &str, key: &str, value: &str) {
    run(Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "sysctl",
        "-qw",
        &format!("{key}={value}"),
    ]));
}

/// A pod with its own network namespace, wired to the node by a veth.
pub struct PodNet {
    pub netns: String,
    /// The pod's address.
    pub addr: String,
    /// The node-side end of the veth.
    pub host_if: String,
}

pub struct Lab {
    pub prefix: String,
    pub node: String,
    /// The namespace at the other end of the uplink.
    pub peer: String,
    /// Where remote traffic starts and ends: the peer itself, or in a [`Lab::routed`] lab the
    /// namespace one hop behind it.
    pub remote: String,
    pub remote_addr: String,
    netns: Vec<String>,
    cgroups: Vec<PathBuf>,
    cgroup_root: PathBuf,
    pub pins: PathBuf,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let prefix = format!("kbw{}{tag}", std::process::id());
        let pins = Path::new(BPFFS)
            .join(format!("kraal-bw-test-{}", std::process::id()))
            .join(tag);
        // The cgroup2 mount as kraal sees it (v2: /sys/fs/cgroup, hybrid: .../unified).
        let cgroup_root = kraal_cgroups::Cgroups::detect()
            .expect("detecting the cgroup hierarchies")
            .unified_root()
            .expect("this host has no cgroup2 mount, which the shaping programs need")
            .join(format!("kraal-bw-test-{}", std::process::id()));
        let mut lab = Lab {
            node: format!("{prefix}n"),
            peer: format!("{prefix}r"),
            remote: format!("{prefix}r"),
            remote_addr: PEER_ADDR.into(),
            prefix,
            netns: Vec::new(),
            cgroups: Vec::new(),
            cgroup_root,
            pins,
        };
        kraal_ebpf::ensure_bpffs(Path::new(BPFFS)).expect("bpffs");
        for ns in [lab.node.clone(), lab.peer.clone()] {
            ip(&format!("netns add {ns}"));
            lab.netns.push(ns.clone());
            ip(&format!("-n {ns} link set lo up"));
        }
        let (n, r) = (&lab.node, &lab.peer);
        ip(&format!(
            "-n {n} link add {NODE_UPLINK} type veth peer name dn0 netns {r}"
        ));
        ip(&format!("-n {n} addr add {NODE_ADDR}/24 dev {NODE_UPLINK}"));
        ip(&format!("-n {n} link set {NODE_UPLINK} up"));
        ip(&format!("-n {r} addr add {PEER_ADDR}/24 dev dn0"));
        ip(&format!("-n {r} link set dn0 up"));
        ip(&format!("-n {r} route add 10.78.0.0/16 via {NODE_ADDR}"));
        sysctl(n, "net.ipv4.ip_forward", "1");
        lab
    }

    /// A lab whose remote end sits one routed hop behind the peer:
    ///
    /// ```text
    ///  far netns                 peer netns (router)                 node netns
    ///  eth0 10.79.0.2 ──veth── fw0 10.79.0.1, dn0 10.77.0.2 ──veth── up0 10.77.0.1
    /// ```
    ///
    /// As on a real network, packets of a remote sender reach the node without their socket:
    /// the router's IP receive path orphans them. With the peer as the sender, its packets
    /// would still belong to its socket while they wait in the node's IFB, and TCP small
    /// queues would hold it back as if that queue were its own.
    pub fn routed(tag: &str) -> Lab {
        let mut lab = Lab::new(tag);
        let far = format!("{}f", lab.prefix);
        ip(&format!("netns add {far}"));
        lab.netns.push(far.clone());
        let r = &lab.peer;
        ip(&format!("-n {far} link set lo up"));
        ip(&format!(
            "-n {r} link add fw0 type veth peer name eth0 netns {far}"
        ));
        ip(&format!("-n {r} addr add 10.79.0.1/24 dev fw0"));
        ip(&format!("-n {r} link set fw0 up"));
        ip(&format!("-n {far} addr add {FAR_ADDR}/24 dev eth0"));
        ip(&format!("-n {far} link set eth0 up"));
        ip(&format!("-n {far} route add default via 10.79.0.1"));
        ip(&format!(
            "-n {} route add 10.79.0.0/24 via {PEER_ADDR}",
            lab.node
        ));
        sysctl(r, "net.ipv4.ip_forward", "1");
        lab.remote = far;
        lab.remote_addr = FAR_ADDR.into();
        lab
    }

    pub fn netns_path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }

    pub fn node_netns(&self) -> Netns {
        Netns::pinned(Lab::netns_path(&self.node))
    }

    pub fn uplink(&self) -> Device {
        Device::new(self.node_netns(), NODE_UPLINK)
    }

    /// A pod netns numbered `i` (1..=200), routed through the node.
    pub fn pod_netns(&mut self, i: u8) -> PodNet {
        let ns = format!("{}p{i}", self.prefix);
        ip(&format!("netns add {ns}"));
        self.netns.push(ns.clone());
        let n = &self.node;
        let host_if = format!("pv{i}");
        ip(&format!("-n {ns} link set lo up"));
        ip(&format!(
            "-n {n} link add {host_if} type veth peer name eth0 netns {ns}"
        ));
        ip(&format!("-n {n} addr add 10.78.{i}.1/24 dev {host_if}"));
        ip(&format!("-n {n} link set {host_if} up"));
        ip(&format!("-n {ns} addr add 10.78.{i}.2/24 dev eth0"));
        ip(&format!("-n {ns} link set eth0 up"));
        ip(&format!("-n {ns} route add default via 10.78.{i}.1"));
        PodNet {
            netns: ns,
            addr: format!("10.78.{i}.2"),
            host_if,
        }
    }

    /// A pod cgroup2 directory.
    pub fn cgroup(&mut self, name: &str) -> PathBuf {
        let dir = self.cgroup_root.join(&self.prefix).join(name);
        std::fs::create_dir_all(&dir).expect("create pod cgroup");
        self.cgroups.push(dir.clone());
        dir
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Unpinning detaches the cgroup programs; deleting a netns deletes its devices, the
        // IFB and qdiscs included.
        let _ = std::fs::remove_dir_all(&self.pins);
        if let Some(parent) = self.pins.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        for ns in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for dir in self.cgroups.iter().rev() {
            // The last processes may still be exiting.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir(self.cgroup_root.join(&self.prefix));
        let _ = std::fs::remove_dir(&self.cgroup_root);
    }
}

/// A process of the test that is killed if the test ends early.
pub struct Proc(Option<Child>);

impl Proc {
    /// Takes over a child process started some other way.
    pub fn new(child: Child) -> Proc {
        Proc(Some(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or(0)
    }

    fn take(&mut self) -> Child {
        self.0.take().expect("process already waited for")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// A command to run in network namespace `netns` and, if given, in the cgroup `cgroup`
/// (joined before exec, so every socket it makes is the pod's).
pub fn command(
    netns: &str,
    cgroup: Option<&Path>,
    program: &str,
    args: &[String],
) -> (Command, Vec<File>) {
    let ns = File::open(Lab::netns_path(netns)).expect("open netns");
    let procs = cgroup.map(|c| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(c.join("cgroup.procs"))
            .expect("open cgroup.procs")
    });
    let ns_fd = ns.as_raw_fd();
    let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: only setns(2) and write(2) between fork and exec; the files outlive the spawn
    // (the caller keeps the returned Vec until then).
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(
                BorrowedFd::borrow_raw(ns_fd),
                nix::sched::CloneFlags::CLONE_NEWNET,
            )
            .map_err(std::io::Error::from)?;
            if let Some(fd) = procs_fd {
                // "0": the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut files = vec![ns];
    files.extend(procs);
    (cmd, files)
}

/// An iperf3 server for one test, in `netns` and the pod cgroup `cgroup`, listening on
/// `addr:port`; returns once it listens. It reports in JSON, so that a client with
/// [`Client::server_output`] gets the receiver's own intervals.
pub fn iperf_server(netns: &str, cgroup: Option<&Path>, addr: &str, port: u16) -> Proc {
    let args: Vec<String> = ["-s", "-1", "-J", "-B", addr, "-p", &port.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (mut cmd, files) = command(netns, cgroup, "iperf3", &args);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn iperf3 server");
    drop(files);
    let proc = Proc(Some(child));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (mut ss, files) = command(
            netns,
            None,
            "ss",
            &["-Hltn".to_string(), format!("sport = :{port}")],
        );
        let out = ss.output().expect("ss");
        drop(files);
        if !out.stdout.is_empty() {
            return proc;
        }
        assert!(
            Instant::now() < deadline,
            "iperf3 server on {addr}:{port} never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What an iperf3 client reported.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Received, over the whole run, bits/s.
    pub received_bps: f64,
    /// Sent (TCP: written into the socket), bits/s.
    pub sent_bps: f64,
    /// TCP retransmits of the sender.
    pub retransmits: u64,
    /// Per interval, as measured by the client (the receiver with `-R`), bits/s.
    pub intervals: Vec<f64>,
    pub interval_secs: f64,
    /// Per interval as the server measured it, with [`Client::server_output`], bits/s.
    pub server_intervals: Vec<f64>,
}

impl Report {
    pub fn mbps(&self) -> f64 {
        self.received_bps / 1e6
    }
}

/// Options of one iperf3 client run.
#[derive(Clone, Debug)]
pub struct Client {
    pub netns: String,
    pub server: String,
    pub port: u16,
    pub secs: f64,
    pub flows: u32,
    /// `-R`: the server (the pod) sends.
    pub reverse: bool,
    /// UDP at this rate (bits/s) instead of TCP.
    pub udp_bps: Option<u64>,
    pub interval: f64,
    /// Run the client itself inside this pod cgroup (the pod opens the connection).
    pub cgroup: Option<PathBuf>,
    /// Ask for the server's report too (`--get-server-output`): without `-R` the server is
    /// the receiver, and only its intervals say what arrived when.
    pub server_output: bool,
    /// `-C`: the sender's congestion control (the namespace default otherwise).
    pub congestion: Option<String>,
}

impl Client {
    pub fn new(netns: &str, server: &str, port: u16, secs: f64) -> Client {
        Client {
            netns: netns.into(),
            server: server.into(),
            port,
            secs,
            flows: 1,
            reverse: false,
            udp_bps: None,
            interval: 1.0,
            cgroup: None,
            server_output: false,
            congestion: None,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-c".into(),
            self.server.clone(),
            "-p".into(),
            self.port.to_string(),
            "-t".into(),
            self.secs.to_string(),
            "-P".into(),
            self.flows.to_string(),
            "-i".into(),
            self.interval.to_string(),
            "--connect-timeout".into(),
            "3000".into(),
            "--json".into(),
        ];
        if self.reverse {
            a.push("-R".into());
        }
        if self.server_output {
            a.push("--get-server-output".into());
        }
        if let Some(cc) = &self.congestion {
            a.extend(["-C".into(), cc.clone()]);
        }
        if let Some(bps) = self.udp_bps {
            a.extend([
                "-u".into(),
                "-b".into(),
                bps.to_string(),
                "-l".into(),
                "1400".into(),
            ]);
        }
        a
    }

    /// Starts the client; [`Running::wait`] gives the report.
    pub fn start(&self) -> Running {
        let (mut cmd, files) = command(&self.netns, self.cgroup.as_deref(), "iperf3", &self.args());
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iperf3 client");
        drop(files);
        Running {
            proc: Proc(Some(child)),
            interval: self.interval,
        }
    }

    pub fn run(&self) -> Report {
        self.start().wait()
    }
}

pub struct Running {
    proc: Proc,
    interval: f64,
}

impl Running {
    pub fn wait(mut self) -> Report {
        let child = self.proc.take();
        let out = child.wait_with_output().expect("iperf3 client");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("iperf3 output is not JSON ({e}): {text}"));
        if let Some(err) = v.get("error") {
            panic!("iperf3 failed: {err}");
        }
        let end = &v["end"];
        let received_bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        let sent_bps = end["sum_sent"]["bits_per_second"].as_f64().unwrap_or(0.0);
        let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        let intervals = |v: &serde_json::Value| -> Vec<f64> {
            v["intervals"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                        .collect()
                })
                .unwrap_or_default()
        };
        Report {
            received_bps,
            sent_bps,
            retransmits,
            intervals: intervals(&v),
            interval_secs: self.interval,
            server_intervals: intervals(&v["server_output_json"]),
        }
    }
}

/// Appends a line to the measurement log named by `KRAAL_BW_LOG`, if set (for reports).
pub fn log(line: &str) {
    eprintln!("{line}");
    if let Ok(path) = std::env::var("KRAAL_BW_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Asserts `got` is within `tol` (a fraction) of `want`.
pub fn assert_near(what: &str, got: f64, want: f64, tol: f64) {
    let lo = want * (1.0 - tol);
    let hi = want * (1.0 + tol);
    assert!(
        got >= lo && got <= hi,
        "{what}: {:.2} Mbit/s, want {:.2} ±{:.0}% ({:.2}..{:.2})",
        got / 1e6,
        want / 1e6,
        tol * 100.0,
        lo / 1e6,
        hi / 1e6
    );
}
