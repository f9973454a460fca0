//! Kernel tests of the bandwidth programs: root, a real cgroup2 directory and bpffs pin root
//! per test, traffic from a helper process (this binary re-executed) placed in the pod cgroup.
//! The shaping itself (HTB with iperf3 traffic) is tested in kraal-net.

use std::fs::{File, OpenOptions};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kraal_ebpf::{BandwidthHook, BandwidthPrograms, PodBandwidth, PodInterface, Police};

const HELPER_ENV: &str = "KRAAL_BW_TEST_HELPER";

/// The helper's entry point: a no-op as an ordinary test.
///
/// `echo <n> <size>`: sends n datagrams to its own loopback socket, reading each back
/// (20 ms at most), and prints `KB got <k>`. `send <addr> <n> <size>`: sends n datagrams to addr.
#[test]
fn helper() {
    let Ok(op) = std::env::var(HELPER_ENV) else {
        return;
    };
    let w: Vec<&str> = op.split_whitespace().collect();
    match w.as_slice() {
        ["echo", n, size] => {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let to = s.local_addr().unwrap();
            let buf = vec![7u8; size.parse().unwrap()];
            let n: usize = n.parse().unwrap();
            let mut got = 0;
            let mut rbuf = vec![0u8; 65536];
            // One at a time: a burst would overflow the socket's receive buffer.
            for _ in 0..n {
                s.send_to(&buf, to).unwrap();
                if s.recv(&mut rbuf).is_ok() {
                    got += 1;
                }
            }
            println!("KB got {got}");
        }
        ["send", addr, n, size] => {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let buf = vec![7u8; size.parse().unwrap()];
            for _ in 0..n.parse::<usize>().unwrap() {
                s.send_to(&buf, addr).unwrap();
            }
        }
        _ => panic!("unknown op {op}"),
    }
}

/// One test's pod cgroup and pin root, removed on drop.
struct Env {
    cgroup: PathBuf,
    pins: PathBuf,
    netns: Vec<String>,
}

impl Env {
    fn new(name: &str) -> Env {
        kraal_ebpf::ensure_bpffs(Path::new("/sys/fs/bpf")).expect("bpffs");
        let pid = std::process::id();
        // The cgroup2 mount as kraal sees it (v2: /sys/fs/cgroup, hybrid: .../unified).
        let cgroup = kraal_cgroups::Cgroups::detect()
            .expect("detecting the cgroup hierarchies")
            .unified_root()
            .expect("no cgroup2 mount")
            .join(format!("kraal-bw-ebpf-test-{pid}"))
            .join(name);
        std::fs::create_dir_all(&cgroup).expect("create test cgroup");
        let pins = Path::new("/sys/fs/bpf")
            .join(format!("kraal-bw-ebpf-test-{pid}"))
            .join(name);
        Env {
            cgroup,
            pins,
            netns: Vec::new(),
        }
    }

    /// Runs a helper op inside the pod cgroup (and netns `netns` if given); returns stdout.
    fn run(&self, op: &str, netns: Option<&str>) -> String {
        let procs = OpenOptions::new()
            .write(true)
            .open(self.cgroup.join("cgroup.procs"))
            .expect("cgroup.procs");
        let ns = netns.map(|n| File::open(Path::new("/run/netns").join(n)).expect("netns"));
        let (procs_fd, ns_fd) = (procs.as_raw_fd(), ns.as_ref().map(|f| f.as_raw_fd()));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "helper", "--nocapture", "--test-threads=1"])
            .env(HELPER_ENV, op);
        // SAFETY: only setns(2) and write(2) between fork and exec; the files outlive it.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = ns_fd
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().expect("helper");
        drop((procs, ns));
        assert!(
            out.status.success(),
            "helper {op}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn netns(&mut self, suffix: &str) -> String {
        let name = format!("kbe{}{suffix}", std::process::id());
        sh(&format!("ip netns add {name}"));
        self.netns.push(name.clone());
        name
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        if let Some(parent) = self.pins.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(parent) = self.cgroup.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn sh(line: &str) -> String {
    let mut w = line.split_whitespace();
    let out = Command::new(w.next().unwrap()).args(w).output().unwrap();
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn got(out: &str) -> usize {
    out.lines()
        .find_map(|l| {
            l.find("KB got ")
                .map(|at| l[at + 7..].trim().parse().unwrap())
        })
        .expect("helper result")
}

fn attached(dir: &Path) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(dir)
        .output()
        .unwrap();
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().map(Vec::len).unwrap_or(0)
}

#[test]
fn attach_count_update_detach_and_readopt() {
    let env = Env::new("lifecycle");
    let settings = PodBandwidth {
        egress_class: 0x6b72_0010,
        ingress_class: 0x6b73_0010,
        police_ingress: None,
    };
    let pod = {
        let mut progs = BandwidthPrograms::load(&env.pins).unwrap();
        assert!(progs.egress_classifier().exists() && progs.ingress_classifier().exists());
        let pod = progs.attach(&env.cgroup, &settings).unwrap();
        assert_eq!(attached(&env.cgroup), 2);
        assert_eq!(progs.counters(pod).unwrap().egress.packets, 0);

        assert_eq!(got(&env.run("echo 100 1000", None)), 100);
        let c = progs.counters(pod).unwrap();
        assert_eq!((c.egress.packets, c.ingress.packets), (100, 100), "{c:?}");
        // From the IP header on: 1000 bytes of payload + 8 UDP + 20 IP.
        assert_eq!(c.egress.bytes, 100 * 1028);
        assert_eq!(c.ingress.bytes, 100 * 1028);
        pod
    }; // the loader exits; the pinned links keep counting.
    assert_eq!(got(&env.run("echo 10 100", None)), 10);

    let mut progs = BandwidthPrograms::load(&env.pins).unwrap();
    let listed = progs.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].pod, pod);
    assert_eq!(listed[0].hooks, BandwidthHook::ALL.to_vec());
    assert_eq!(listed[0].settings, Some(settings));
    assert_eq!(progs.counters(pod).unwrap().egress.packets, 110);
    // Adopting again attaches nothing new and keeps the counters.
    assert_eq!(progs.attach(&env.cgroup, &settings).unwrap(), pod);
    assert_eq!(attached(&env.cgroup), 2);
    assert_eq!(progs.counters(pod).unwrap().egress.packets, 110);

    let changed = PodBandwidth {
        egress_class: 0x6b72_0011,
        ..settings
    };
    progs.update(pod, &changed).unwrap();
    assert_eq!(progs.list().unwrap()[0].settings, Some(changed));

    let dev = PodInterface {
        ifindex: 4242,
        pod,
        egress_class: 0x6b72_0011,
        ingress_class: 0x6b73_0011,
    };
    progs.set_interface(&dev).unwrap();
    assert_eq!(progs.interfaces().unwrap(), vec![dev]);

    assert!(progs.detach(pod).unwrap());
    assert_eq!(attached(&env.cgroup), 0);
    assert!(
        progs.interfaces().unwrap().is_empty(),
        "a pod's interfaces go with it"
    );
    assert!(!progs.detach(pod).unwrap());
    assert!(progs.update(pod, &settings).is_err());
    assert!(progs.counters(pod).is_err());
}

#[test]
fn policing_fallback_drops_ingress_above_the_rate() {
    let env = Env::new("police");
    let mut progs = BandwidthPrograms::load(&env.pins).unwrap();
    // 8 kbit/s with a 10 KB bucket: of 100 datagrams of 1000 bytes sent at once, about ten fit.
    let settings = PodBandwidth {
        police_ingress: Some(Police {
            rate_bps: 8_000,
            burst_bytes: 10_000,
        }),
        ..Default::default()
    };
    let pod = progs.attach(&env.cgroup, &settings).unwrap();
    let n = got(&env.run("echo 100 1000", None));
    let c = progs.counters(pod).unwrap();
    assert!((8..=11).contains(&n), "{n} got through");
    assert_eq!(c.ingress.packets, n as u64);
    assert_eq!(c.ingress.dropped_packets, 100 - n as u64);
    assert_eq!(c.egress.packets, 100, "egress is not policed");
    progs.update(pod, &PodBandwidth::default()).unwrap();
    assert_eq!(got(&env.run("echo 100 1000", None)), 100);
    progs.detach(pod).unwrap();
}

#[test]
fn the_egress_class_lands_in_skb_priority_and_htb_uses_it() {
    let mut env = Env::new("priority");
    let (a, b) = (env.netns("a"), env.netns("b"));
    sh(&format!(
        "ip -n {a} link add v0 type veth peer name v1 netns {b}"
    ));
    sh(&format!("ip -n {a} addr add 10.79.0.1/24 dev v0"));
    sh(&format!("ip -n {b} addr add 10.79.0.2/24 dev v1"));
    sh(&format!("ip -n {a} link set v0 up"));
    sh(&format!("ip -n {b} link set v1 up"));
    sh(&format!(
        "tc -n {a} qdisc add dev v0 root handle 6b72: htb default fffe"
    ));
    for (class, parent) in [
        ("6b72:1", "6b72:"),
        ("6b72:10", "6b72:1"),
        ("6b72:fffe", "6b72:1"),
    ] {
        sh(&format!(
            "tc -n {a} class add dev v0 parent {parent} classid {class} htb rate 100mbit quantum 30000"
        ));
    }
    let class_packets = |class: &str| -> u64 {
        let out = sh(&format!("tc -n {a} -s class show dev v0 classid {class}"));
        let at = out.find("bytes ").expect("stats") + 6;
        out[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };

    let mut progs = BandwidthPrograms::load(&env.pins).unwrap();
    let pod = progs
        .attach(
            &env.cgroup,
            &PodBandwidth {
                egress_class: 0x6b72_0010,
                ..Default::default()
            },
        )
        .unwrap();
    env.run("send 10.79.0.2:9 50 500", Some(&a));
    assert_eq!(
        class_packets("6b72:10"),
        50,
        "the pod's packets take its class"
    );
    progs
        .update(
            pod,
            &PodBandwidth {
                egress_class: 0,
                ..Default::default()
            },
        )
        .unwrap();
    let before = class_packets("6b72:fffe");
    env.run("send 10.79.0.2:9 20 500", Some(&a));
    assert_eq!(class_packets("6b72:10"), 50);
    assert!(
        class_packets("6b72:fffe") >= before + 20,
        "no class: the default one"
    );
}
