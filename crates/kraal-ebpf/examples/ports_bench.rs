//! Benchmark of the port programs (root; loopback only). Prints:
//! - ns per socket()+bind(0)+close() and per connect(), with and without the programs;
//! - the bind(0) failure rate versus range occupancy, tracking allocator against the
//!   random-choice baseline.
//!
//! `cargo run --release -p kraal-ebpf --example ports_bench [iterations]`
//!
//! The measuring runs in a child process (this binary re-executed) placed in a scratch cgroup2
//! directory; the cgroup and pins are removed at the end.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use kraal_ebpf::{Allocator, PodPorts, PortPrograms};

const BIND_RANGE: (u16, u16) = (40000, 40999);
const OCC_RANGE: (u16, u16) = (41000, 41099);
const OCCUPANCY: [u32; 7] = [10, 25, 50, 75, 85, 90, 95];
const TRIALS: usize = 2000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        worker(&args[2..]);
        return;
    }
    let iterations: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20000);
    if let Err(e) = run(iterations) {
        eprintln!("ports_bench: {e}");
        std::process::exit(1);
    }
}

fn run(iterations: usize) -> Result<(), Box<dyn std::error::Error>> {
    kraal_ebpf::ensure_bpffs(Path::new("/sys/fs/bpf"))?;
    let pid = std::process::id();
    let cgroup = PathBuf::from(format!("/sys/fs/cgroup/unified/kraal-ebpf-bench-{pid}"));
    let pins = PathBuf::from(format!("/sys/fs/bpf/kraal-ebpf-bench-{pid}"));
    std::fs::create_dir_all(&cgroup)?;
    let _cleanup = Cleanup {
        cgroup: cgroup.clone(),
        pins: pins.clone(),
    };
    measure(iterations, &cgroup, &pins)
}

/// Removes the pins (which detaches) and then the cgroup, also when measuring panics.
struct Cleanup {
    cgroup: PathBuf,
    pins: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

fn measure(n: usize, cgroup: &Path, pins: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let target = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let n_s = n.to_string();

    let bare_bind = spawn(cgroup, &["bind", &n_s])?;
    let bare_conn = spawn(cgroup, &["connect", &target, &n_s])?;

    let mut progs = PortPrograms::load(pins)?;
    let all = PodPorts {
        bind: vec![BIND_RANGE],
        connect: vec![BIND_RANGE],
        allocator: Allocator::Tracking,
    };
    let pod = progs.attach(cgroup, &PodPorts::default())?;
    let idle_bind = spawn(cgroup, &["bind", &n_s])?;
    progs.update(pod, &all)?;
    let prog_bind = spawn(cgroup, &["bind", &n_s])?;
    let prog_conn = spawn(cgroup, &["connect", &target, &n_s])?;
    println!("iterations: {n}");
    println!(
        "socket+bind(0)+close: {:.0} ns bare, {:.0} ns with programs ({:+.1}%)",
        bare_bind[0],
        prog_bind[0],
        pct(bare_bind[0], prog_bind[0])
    );
    println!(
        "socket+bind(0)+close: {:.0} ns with programs attached but the pod unrestricted ({:+.1}%)",
        idle_bind[0],
        pct(bare_bind[0], idle_bind[0])
    );
    println!(
        "connect():            {:.0} ns bare, {:.0} ns with programs ({:+.1}%)",
        bare_conn[0],
        prog_conn[0],
        pct(bare_conn[0], prog_conn[0])
    );

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
                    connect: vec![],
                    allocator,
                },
            )?;
            let r = spawn(cgroup, &["occupy", &occ.to_string(), &TRIALS.to_string()])?;
            rates.push(r[0]);
        }
        println!("{occ:>8}%  {:>7.1}%  {:>5.1}%", rates[0], rates[1]);
    }
    println!("counters: {:?}", progs.counters(pod)?);
    progs.detach(pod)?;
    Ok(())
}

fn pct(base: f64, with: f64) -> f64 {
    (with - base) / base * 100.0
}

/// Runs a worker inside the cgroup and returns the numbers it prints.
fn spawn(cgroup: &Path, args: &[&str]) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
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
        numbers.push(line?.trim().parse()?);
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("worker {args:?}: {status}").into());
    }
    Ok(numbers)
}

fn worker(args: &[String]) {
    match args {
        [op, n] if op == "bind" => println!("{}", bind_loop(n.parse().unwrap_or(1000))),
        [op, target, n] if op == "connect" => {
            println!("{}", connect_loop(target, n.parse().unwrap_or(1000)))
        }
        [op, occ, trials] if op == "occupy" => println!(
            "{}",
            occupy(occ.parse().unwrap_or(50), trials.parse().unwrap_or(1000))
        ),
        _ => eprintln!("bad worker args {args:?}"),
    }
}

fn tcp_socket() -> i32 {
    // SAFETY: plain socket(2).
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }
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

fn close(fd: i32) {
    // SAFETY: fd is owned by the caller and not used afterwards.
    unsafe { libc::close(fd) };
}

/// ns per socket()+bind(0)+close().
fn bind_loop(n: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        let fd = tcp_socket();
        bind_port(fd, 0);
        close(fd);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// ns per connect() to the local listener; closed with RST so no TIME_WAIT piles up.
fn connect_loop(target: &str, n: usize) -> f64 {
    let Ok(std::net::SocketAddr::V4(t)) = target.parse() else {
        return f64::NAN;
    };
    let sa = sockaddr(t.port());
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let mut total = 0u128;
    for _ in 0..n {
        let fd = tcp_socket();
        let start = Instant::now();
        // SAFETY: valid sockaddr_in.
        let rc = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), 16) };
        total += start.elapsed().as_nanos();
        if rc == 0 {
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
            let mut s = unsafe_stream(fd);
            let _ = s.read(&mut [0u8; 1]);
        } else {
            close(fd);
        }
    }
    total as f64 / n as f64
}

fn unsafe_stream(fd: i32) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: fd is a connected TCP socket we own; the stream closes it.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
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
            let fd = tcp_socket();
            bind_port(fd, p);
            fd
        })
        .collect();
    let mut failures = 0;
    for _ in 0..trials {
        let fd = tcp_socket();
        if !bind_port(fd, 0) {
            failures += 1;
        }
        close(fd);
    }
    held.into_iter().for_each(close);
    failures as f64 * 100.0 / trials as f64
}
