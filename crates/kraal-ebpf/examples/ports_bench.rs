//! Benchmark of the port programs (root; loopback only). Prints:
//! - ns per socket operation in four set-ups, measured in alternating rounds so that the noise
//!   of a shared machine shows:
//!   - `bare`: nothing attached anywhere by this bench;
//!   - `other`: the programs attached to a pod with lists, the worker in a sibling cgroup (what
//!     an unrestricted pod pays on a node where other pods are restricted);
//!   - `idle`: the hooks of `lists` attached to the worker's pod, its lists emptied since (the
//!     cost of running the hooks at all: each program returns at once);
//!   - `lists`: the worker's pod has a bind and a connect list;
//!
//!   medians over the rounds of the worker thread's CPU time and of wall-clock time, the spread
//!   of the bare runs, and the overhead of each set-up as the median (and quartiles) of the
//!   per-round ratios to the bare run of the same round;
//! - with `sysctl kernel.bpf_stats_enabled=1`: per program, runs per operation and ns per run
//!   (from the kernel's own accounting, which itself adds ~20-40 ns per run);
//! - the bind(0) failure rate versus range occupancy, tracking allocator against the
//!   random-choice baseline.
//!
//! `cargo run --release -p kraal-ebpf --example ports_bench [iterations] [rounds]`
//! (defaults 5000 and 15; `KRAAL_BENCH_OPS=tcp-bind0,udp-bind` runs a subset,
//! `KRAAL_BENCH_LISTS=bind` or `connect` gives the pod only that list).
//!
//! For profiling, `ports_bench --hold <bare|other|idle|lists>` sets one set-up up, prints the
//! cgroup to run in and waits for a line (or the end) of its stdin; a worker is then
//! `ports_bench --worker <operation> <udp-or-tcp-target> <iterations>` (prints CPU and wall ns).
//!
//! The measuring runs in child processes (this binary re-executed) placed in scratch cgroup2
//! directories; the cgroups and pins are removed at the end.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kraal_ebpf::{Allocator, PodId, PodPorts, PortPrograms};

// Below the default ephemeral range (32768-60999), so that no autobind of the bare runs, nor
// of anything else on the host, takes a port the explicit binds need.
const RANGE: (u16, u16) = (10000, 10999);
/// The port of the explicit binds: inside RANGE.
const EXPLICIT: u16 = 10500;
const OCC_RANGE: (u16, u16) = (11000, 11099);
const OCCUPANCY: [u32; 7] = [10, 25, 50, 75, 85, 90, 95];
const TRIALS: usize = 2000;

/// What a worker times, per iteration.
const OPS: [(&str, &str); 8] = [
    ("tcp-bind0", "socket+bind(0)+close, TCP"),
    ("tcp-bind", "socket+bind(port in list)+close, TCP"),
    ("udp-bind0", "socket+bind(0)+close, UDP"),
    ("udp-bind", "socket+bind(port in list)+close, UDP"),
    (
        "tcp-connect",
        "socket+connect()+close, TCP (excl. waiting for the peer's FIN)",
    ),
    ("udp-connect", "socket+connect()+close, UDP"),
    ("udp-sendto", "sendto() on a bound UDP socket"),
    (
        "udp-sendto0",
        "socket+sendto()+close, UDP never bound (autobind)",
    ),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Setup {
    Bare,
    Other,
    Idle,
    Lists,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Bare => "bare",
            Setup::Other => "other",
            Setup::Idle => "idle",
            Setup::Lists => "lists",
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker(&args[2..]);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--hold") {
        if let Err(e) = hold(&args[2..]) {
            eprintln!("ports_bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let iterations: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5000);
    let rounds: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(15);
    if let Err(e) = run(iterations, rounds.max(1)) {
        eprintln!("ports_bench: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn run(iterations: usize, rounds: usize) -> Res<()> {
    kraal_ebpf::ensure_bpffs(Path::new("/sys/fs/bpf"))?;
    let pid = std::process::id();
    let cgroup = PathBuf::from(format!("/sys/fs/cgroup/unified/kraal-ebpf-bench-{pid}"));
    let sibling = PathBuf::from(format!(
        "/sys/fs/cgroup/unified/kraal-ebpf-bench-{pid}-other"
    ));
    let pins = PathBuf::from(format!("/sys/fs/bpf/kraal-ebpf-bench-{pid}"));
    let _cleanup = Cleanup {
        cgroups: [cgroup.clone(), sibling.clone()],
        pins: pins.clone(),
    };
    std::fs::create_dir_all(&cgroup)?;
    std::fs::create_dir_all(&sibling)?;
    measure(iterations, rounds, [&cgroup, &sibling], &pins)
}

/// Removes the pins (which detaches) and then the cgroups, also when measuring fails.
struct Cleanup {
    cgroups: [PathBuf; 2],
    pins: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        for cgroup in &self.cgroups {
            let _ = std::fs::remove_dir(cgroup);
        }
    }
}

/// Sets one set-up up and waits, so that a worker can be profiled in it.
fn hold(args: &[String]) -> Res<()> {
    let [setup] = args else {
        return Err("--hold <bare|other|idle|lists>".into());
    };
    let pid = std::process::id();
    let cgroup = PathBuf::from(format!("/sys/fs/cgroup/unified/kraal-ebpf-bench-{pid}"));
    let sibling = PathBuf::from(format!(
        "/sys/fs/cgroup/unified/kraal-ebpf-bench-{pid}-other"
    ));
    let pins = PathBuf::from(format!("/sys/fs/bpf/kraal-ebpf-bench-{pid}"));
    let _cleanup = Cleanup {
        cgroups: [cgroup.clone(), sibling.clone()],
        pins: pins.clone(),
    };
    std::fs::create_dir_all(&cgroup)?;
    std::fs::create_dir_all(&sibling)?;
    kraal_ebpf::ensure_bpffs(Path::new("/sys/fs/bpf"))?;
    let mut progs = PortPrograms::load(&pins)?;
    let run_in = match setup.as_str() {
        "bare" => &cgroup,
        "other" | "lists" => {
            progs.attach(&cgroup, &lists())?;
            if setup == "other" { &sibling } else { &cgroup }
        }
        "idle" => {
            let pod = progs.attach(&cgroup, &lists())?;
            progs.update(pod, &PodPorts::default())?;
            &cgroup
        }
        _ => return Err(format!("unknown set-up {setup}").into()),
    };
    println!("{}", run_in.display());
    std::io::stdin().read_line(&mut String::new())?;
    Ok(())
}

fn lists() -> PodPorts {
    let only = std::env::var("KRAAL_BENCH_LISTS").unwrap_or_default();
    PodPorts {
        bind: if only == "connect" {
            vec![]
        } else {
            vec![RANGE]
        },
        connect: if only == "bind" { vec![] } else { vec![RANGE] },
        ..Default::default()
    }
}

/// Per-program kernel accounting: run_time_ns and run_cnt by program name.
type ProgStats = BTreeMap<String, (u64, u64)>;

struct Bench<'a> {
    n: usize,
    /// The pod's cgroup and its sibling, where `other` runs.
    cgroups: [&'a Path; 2],
    tcp_target: String,
    udp_target: String,
    stats: bool,
    /// KRAAL_BENCH_OPS: a comma-separated subset of the operations to run (for profiling).
    only: Vec<String>,
    /// ns per op, by (clock, op, setup), one value per round; clock 0 is the worker thread's
    /// CPU time, 1 the wall-clock time.
    times: BTreeMap<(usize, usize, Setup), Vec<f64>>,
    /// Program accounting summed over the runs with programs, by (op, setup).
    progs: BTreeMap<(usize, Setup), ProgStats>,
}

impl Bench<'_> {
    fn run_all(&mut self, setup: Setup) -> Res<()> {
        for (i, (op, _)) in OPS.iter().enumerate() {
            if !self.only.is_empty() && !self.only.iter().any(|o| o == op) {
                continue;
            }
            let target = match *op {
                "tcp-connect" => self.tcp_target.as_str(),
                _ => self.udp_target.as_str(),
            };
            let cgroup = self.cgroups[usize::from(setup == Setup::Other)];
            let before = self.prog_stats(setup)?;
            let ns = spawn(cgroup, &[op, target, &self.n.to_string()])?;
            let after = self.prog_stats(setup)?;
            for (clock, v) in ns.into_iter().enumerate().take(2) {
                self.times.entry((clock, i, setup)).or_default().push(v);
            }
            let acc = self.progs.entry((i, setup)).or_default();
            for (name, (t, c)) in after {
                let (t0, c0) = before.get(&name).copied().unwrap_or((t, c));
                let e = acc.entry(name).or_default();
                e.0 += t - t0;
                e.1 += c - c0;
            }
        }
        Ok(())
    }

    fn prog_stats(&self, setup: Setup) -> Res<ProgStats> {
        if !self.stats || setup == Setup::Bare {
            return Ok(ProgStats::new());
        }
        prog_stats(self.cgroups[0])
    }
}

fn measure(n: usize, rounds: usize, cgroups: [&Path; 2], pins: &Path) -> Res<()> {
    let cgroup = cgroups[0];
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let tcp_target = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    // Datagrams to it queue up until its buffer is full and are dropped after; sendto() still
    // succeeds, which is all that is timed.
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let udp_target = sink.local_addr()?.to_string();
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false);

    let mut progs = PortPrograms::load(pins)?;
    let mut bench = Bench {
        n,
        cgroups,
        tcp_target,
        udp_target,
        stats,
        only: std::env::var("KRAAL_BENCH_OPS")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        times: BTreeMap::new(),
        progs: BTreeMap::new(),
    };
    // Alternating rounds, the order reversed every other round so that a slow drift of the
    // machine's load weighs on every set-up alike.
    for round in 0..rounds {
        eprint!("round {}/{rounds}\r", round + 1);
        // `idle` keeps the hooks that the lists needed (update() never detaches).
        if round % 2 == 0 {
            bench.run_all(Setup::Bare)?;
            let p = progs.attach(cgroup, &lists())?;
            bench.run_all(Setup::Lists)?;
            bench.run_all(Setup::Other)?;
            progs.update(p, &PodPorts::default())?;
            bench.run_all(Setup::Idle)?;
            progs.detach(p)?;
        } else {
            let p = progs.attach(cgroup, &lists())?;
            progs.update(p, &PodPorts::default())?;
            bench.run_all(Setup::Idle)?;
            progs.update(p, &lists())?;
            bench.run_all(Setup::Other)?;
            bench.run_all(Setup::Lists)?;
            progs.detach(p)?;
            bench.run_all(Setup::Bare)?;
        }
    }
    eprintln!();
    println!("{n} iterations per run, {rounds} alternating rounds; ns per operation, medians");
    println!("worker thread CPU time (not inflated by other load preempting the worker):");
    print_table(&bench, 0);
    println!("wall-clock time:");
    print_table(&bench, 1);
    println!("operations:");
    for (op, what) in OPS {
        println!("  {op:<12} {what}");
    }
    if stats {
        print_prog_stats(&bench, rounds);
    }

    let pod = progs.attach(cgroup, &lists())?;
    occupancy(&mut progs, pod, cgroup)?;
    progs.detach(pod)?;
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// The p-th percentile (0..=100) by nearest rank.
fn percentile(v: &[f64], p: usize) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() - 1) * p + 50) / 100;
    s.get(i).copied().unwrap_or(f64::NAN)
}

fn print_table(b: &Bench, clock: usize) {
    println!(
        "{:<12} {:>7} {:>13} {:>7} {:>7} {:>7} {:>7} {:>15}",
        "operation", "bare", "bare min-max", "other", "idle", "lists", "lists", "lists p25..p75"
    );
    println!(
        "{:<12} {:>7} {:>13} {:>7} {:>7} {:>7} {:>7} {:>15}",
        "", "ns", "ns", "%", "%", "ns", "%", "%"
    );
    for (i, (op, _)) in OPS.iter().enumerate() {
        if !b.times.contains_key(&(clock, i, Setup::Bare)) {
            continue;
        }
        let get = |s| b.times.get(&(clock, i, s)).cloned().unwrap_or_default();
        let bare = get(Setup::Bare);
        let ratios = |s| -> Vec<f64> {
            bare.iter()
                .zip(&get(s))
                .map(|(b, w)| (w - b) / b * 100.0)
                .collect()
        };
        let lists = ratios(Setup::Lists);
        println!(
            "{:<12} {:>7.0} {:>13} {:>+6.1}% {:>+6.1}% {:>7.0} {:>+6.1}% {:>15}",
            op,
            median(&bare),
            format!("{:.0}-{:.0}", percentile(&bare, 0), percentile(&bare, 100)),
            median(&ratios(Setup::Other)),
            median(&ratios(Setup::Idle)),
            median(&get(Setup::Lists)),
            median(&lists),
            format!(
                "{:+.1}..{:+.1}",
                percentile(&lists, 25),
                percentile(&lists, 75)
            ),
        );
    }
}

fn print_prog_stats(b: &Bench, rounds: usize) {
    println!("programs, from the kernel's accounting (kernel.bpf_stats_enabled=1):");
    println!(
        "{:<12} {:<6} {:<16} {:>8} {:>8} {:>8}",
        "operation", "setup", "program", "runs/op", "ns/run", "ns/op"
    );
    let ops = (b.n * rounds) as f64;
    for ((i, setup), st) in &b.progs {
        if *setup == Setup::Bare || *setup == Setup::Other {
            continue;
        }
        let op = OPS[*i].0;
        let setup = setup.name();
        let mut total = 0.0;
        for (name, (t, c)) in st {
            if *c == 0 {
                continue;
            }
            let per_op = *t as f64 / ops;
            total += per_op;
            println!(
                "{:<12} {:<6} {:<16} {:>8.2} {:>8.0} {:>8.0}",
                op,
                setup,
                name,
                *c as f64 / ops,
                *t as f64 / *c as f64,
                per_op
            );
        }
        println!(
            "{:<12} {:<6} {:<16} {:>8} {:>8} {:>8.0}",
            op, setup, "all", "", "", total
        );
    }
}

/// run_time_ns/run_cnt of the programs attached to `cgroup`, from bpftool.
fn prog_stats(cgroup: &Path) -> Res<ProgStats> {
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()?;
    let attached: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut stats = ProgStats::new();
    for prog in attached.as_array().into_iter().flatten() {
        let Some(id) = prog["id"].as_u64() else {
            continue;
        };
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .output()?;
        let p: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let name = p["name"].as_str().unwrap_or("?").to_string();
        let t = p["run_time_ns"].as_u64().unwrap_or(0);
        let c = p["run_cnt"].as_u64().unwrap_or(0);
        stats.insert(name, (t, c));
    }
    Ok(stats)
}

fn occupancy(progs: &mut PortPrograms, pod: PodId, cgroup: &Path) -> Res<()> {
    println!(
        "bind(0) failure rate vs occupancy of a {}-port range ({TRIALS} trials each):",
        OCC_RANGE.1 - OCC_RANGE.0 + 1
    );
    println!("occupancy  tracking  random");
    for occ in OCCUPANCY {
        let mut rates = Vec::new();
        for allocator in [Allocator::Tracking, Allocator::Random] {
            progs.update(
                pod,
                &PodPorts {
                    bind: vec![OCC_RANGE],
                    allocator,
                    ..Default::default()
                },
            )?;
            let r = spawn(cgroup, &["occupy", &occ.to_string(), &TRIALS.to_string()])?;
            rates.push(r[0]);
        }
        println!("{occ:>8}%  {:>7.1}%  {:>5.1}%", rates[0], rates[1]);
    }
    println!("counters: {:?}", progs.counters(pod)?);
    Ok(())
}

/// Runs a worker inside the cgroup and returns the numbers it prints.
fn spawn(cgroup: &Path, args: &[&str]) -> Res<Vec<f64>> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    let fd = procs.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--worker").args(args).stdout(Stdio::piped());
    // SAFETY: only write(2) between fork and exec; "0" moves the calling process.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(procs);
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut numbers = Vec::new();
    for line in BufReader::new(out).lines() {
        for word in line?.split_whitespace() {
            numbers.push(word.parse()?);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("worker {args:?}: {status}").into());
    }
    Ok(numbers)
}

fn worker(args: &[String]) {
    let t = match args {
        [op, occ, trials] if op == "occupy" => {
            let rate = occupy(occ.parse().unwrap_or(50), trials.parse().unwrap_or(1000));
            println!("{rate}");
            return;
        }
        [op, target, n] => {
            let n = n.parse().unwrap_or(1000);
            let Ok(std::net::SocketAddr::V4(t)) = target.parse() else {
                eprintln!("bad target {target}");
                std::process::exit(2);
            };
            match op.as_str() {
                "tcp-bind0" => bind_loop(libc::SOCK_STREAM, 0, n),
                "tcp-bind" => bind_loop(libc::SOCK_STREAM, EXPLICIT, n),
                "udp-bind0" => bind_loop(libc::SOCK_DGRAM, 0, n),
                "udp-bind" => bind_loop(libc::SOCK_DGRAM, EXPLICIT, n),
                "tcp-connect" => tcp_connect_loop(t.port(), n),
                "udp-connect" => udp_connect_loop(t.port(), n),
                "udp-sendto" => sendto_loop(t.port(), n),
                "udp-sendto0" => sendto0_loop(t.port(), n),
                _ => None,
            }
        }
        _ => None,
    };
    match t {
        Some(t) => println!("{} {}", t.cpu, t.wall),
        None => {
            eprintln!("worker {args:?}: bad arguments or a failed operation");
            std::process::exit(2);
        }
    }
}

/// A point in time on both clocks.
#[derive(Clone, Copy)]
struct Stamp {
    wall: Instant,
    cpu: u128,
}

fn thread_cpu_ns() -> u128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            wall: Instant::now(),
            cpu: thread_cpu_ns(),
        }
    }
}

/// Time accumulated over timed sections, then ns per operation.
#[derive(Default)]
struct Times {
    wall: f64,
    cpu: f64,
}

impl Times {
    fn add(&mut self, since: Stamp) {
        self.wall += since.wall.elapsed().as_nanos() as f64;
        self.cpu += (thread_cpu_ns() - since.cpu) as f64;
    }

    fn per_op(mut self, n: usize) -> Times {
        self.wall /= n as f64;
        self.cpu /= n as f64;
        self
    }

    fn since(start: Stamp, n: usize) -> Times {
        let mut t = Times::default();
        t.add(start);
        t.per_op(n)
    }
}

fn socket(kind: i32) -> i32 {
    // SAFETY: plain socket(2).
    unsafe { libc::socket(libc::AF_INET, kind, 0) }
}

fn sockaddr(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn bind_port(fd: i32, port: u16) -> bool {
    let sa = sockaddr(port);
    // SAFETY: sa is a valid sockaddr_in of the given length.
    unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), 16) == 0 }
}

fn connect_port(fd: i32, port: u16) -> bool {
    let sa = sockaddr(port);
    // SAFETY: sa is a valid sockaddr_in of the given length.
    unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), 16) == 0 }
}

fn sendto_port(fd: i32, port: u16) -> bool {
    let sa = sockaddr(port);
    // SAFETY: one valid byte and a valid sockaddr_in of the given length.
    unsafe {
        libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            16,
        ) == 1
    }
}

fn close(fd: i32) {
    // SAFETY: fd is owned by the caller and not used afterwards.
    unsafe { libc::close(fd) };
}

/// socket()+bind(port)+close(); None if a bind fails.
fn bind_loop(kind: i32, port: u16, n: usize) -> Option<Times> {
    let start = Stamp::now();
    let mut ok = true;
    for _ in 0..n {
        let fd = socket(kind);
        ok &= bind_port(fd, port);
        close(fd);
    }
    let t = Times::since(start, n);
    ok.then_some(t)
}

/// socket()+connect()+close() to the local listener, without the wait for the listener to
/// accept and close (which measures the scheduler). Closed with RST after the peer's FIN, so
/// no TIME_WAIT piles up.
fn tcp_connect_loop(port: u16, n: usize) -> Option<Times> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let mut t = Times::default();
    for _ in 0..n {
        let start = Stamp::now();
        let fd = socket(libc::SOCK_STREAM);
        if !connect_port(fd, port) {
            return None;
        }
        t.add(start);
        // SAFETY: valid linger struct of the given length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as u32,
            )
        };
        // SAFETY: fd is a connected TCP socket we own; the stream only borrows it here.
        let mut s = std::mem::ManuallyDrop::new(unsafe {
            <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
        });
        let _ = s.read(&mut [0u8; 1]);
        let start = Stamp::now();
        close(fd);
        t.add(start);
    }
    Some(t.per_op(n))
}

/// socket()+connect()+close() of a UDP socket (autobind, no packet).
fn udp_connect_loop(port: u16, n: usize) -> Option<Times> {
    let start = Stamp::now();
    for _ in 0..n {
        let fd = socket(libc::SOCK_DGRAM);
        if !connect_port(fd, port) {
            return None;
        }
        close(fd);
    }
    Some(Times::since(start, n))
}

/// sendto() of one byte from a UDP socket bound once (bind(0)).
fn sendto_loop(port: u16, n: usize) -> Option<Times> {
    let fd = socket(libc::SOCK_DGRAM);
    if !bind_port(fd, 0) {
        return None;
    }
    let start = Stamp::now();
    for _ in 0..n {
        sendto_port(fd, port);
    }
    let t = Times::since(start, n);
    close(fd);
    Some(t)
}

/// socket()+sendto()+close() of a UDP socket that is never bound (kernel autobind).
fn sendto0_loop(port: u16, n: usize) -> Option<Times> {
    let start = Stamp::now();
    for _ in 0..n {
        let fd = socket(libc::SOCK_DGRAM);
        sendto_port(fd, port);
        close(fd);
    }
    Some(Times::since(start, n))
}

/// Holds `occ`% of the occupancy range (explicit binds at pseudo-random ports), then runs
/// bind(0) trials, each closed at once. Returns the failure rate in percent.
fn occupy(occ: u32, trials: usize) -> f64 {
    let size = u32::from(OCC_RANGE.1 - OCC_RANGE.0) + 1;
    let want = (size * occ / 100) as usize;
    let mut ports: Vec<u16> = (OCC_RANGE.0..=OCC_RANGE.1).collect();
    // Deterministic shuffle (xorshift) so both allocators see the same held set.
    let mut x: u32 = 0x9e37_79b9;
    for i in (1..ports.len()).rev() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        ports.swap(i, x as usize % (i + 1));
    }
    let held: Vec<i32> = ports[..want]
        .iter()
        .map(|&p| {
            let fd = socket(libc::SOCK_STREAM);
            bind_port(fd, p);
            fd
        })
        .collect();
    let mut failures = 0;
    for _ in 0..trials {
        let fd = socket(libc::SOCK_STREAM);
        if !bind_port(fd, 0) {
            failures += 1;
        }
        close(fd);
    }
    held.into_iter().for_each(close);
    failures as f64 * 100.0 / trials as f64
}
