//! Socket probe run *inside* test containers (the tests mount it and the host's libc into a
//! busybox container): busybox's nc cannot hold hundreds of sockets, bind(0) UDP or IPv6, or
//! report errno. Every command prints one line per attempt, `ok <local port>` or
//! `err <errno>`, so the test can check each port against the pod's range.
//!
//! ```text
//! socktool bind <tcp|udp> <addr:port>       explicit bind (addr may be v4, v6 or v4-mapped)
//! socktool hold <n> <tcp|udp> <ip>          n × bind(ip:0), all held until the end
//! socktool connect <n> <addr:port>          n connections held until the end
//! socktool churn <n> <addr:port>            n connections, each closed at once (client first,
//!                                           then waiting for the server's close)
//! socktool callback <ip>                    FTP-active style: ephemeral listener, connect back
//! socktool sendto <addr:port>               UDP send from an unbound socket
//! socktool deny-loop <ms> <addr:port>       binds for ms milliseconds; exit 1 if one worked
//! socktool echo <addr:port>...              echo servers, a thread per connection, forever
//! socktool reply <addr:port> <text>         each connection gets text, then a close, forever
//! ```
//!
//! `echo` exists because busybox's `nc -ll -e cat` re-listens after each accept and resets the
//! connections still queued on the old socket, so parallel clients saw empty replies.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match run(&args) {
        Ok(code) => code,
        Err(usage) => {
            eprintln!("socktool: {usage}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[&str]) -> Result<ExitCode, String> {
    match args {
        ["bind", proto, addr] => {
            let addr = parse_addr(addr)?;
            report(bind(proto, addr)?.map(|held| held.port()));
        }
        ["hold", n, proto, ip] => {
            let ip: IpAddr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
            let mut held = Vec::new();
            for _ in 0..parse_n(n)? {
                let socket = bind(proto, SocketAddr::new(ip, 0))?;
                report(socket.as_ref().map(Held::port).map_err(clone_err));
                held.extend(socket.ok());
            }
        }
        ["connect", n, target] => {
            let target = parse_addr(target)?;
            let mut held = Vec::new();
            for _ in 0..parse_n(n)? {
                let stream = TcpStream::connect(target);
                report(local_port(&stream));
                held.extend(stream.ok());
            }
        }
        ["churn", n, target] => {
            let target = parse_addr(target)?;
            for _ in 0..parse_n(n)? {
                let stream = TcpStream::connect(target);
                report(local_port(&stream));
                if let Ok(stream) = stream {
                    close_first_and_wait(stream);
                }
            }
        }
        ["callback", ip] => {
            let ip: IpAddr = ip.parse().map_err(|e| format!("{ip}: {e}"))?;
            return Ok(callback(ip));
        }
        ["sendto", target] => {
            let target = parse_addr(target)?;
            report(unbound_sendto(target));
        }
        ["deny-loop", ms, target] => {
            let target = parse_addr(target)?;
            let until = Instant::now() + Duration::from_millis(parse_n(ms)? as u64);
            let (mut tries, mut allowed) = (0u64, 0u64);
            while Instant::now() < until {
                tries += 1;
                if TcpListener::bind(target).is_ok() {
                    allowed += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            println!("tries {tries} allowed {allowed}");
            return Ok(if allowed == 0 && tries > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        ["echo", addrs @ ..] if !addrs.is_empty() => {
            let listeners = addrs
                .iter()
                .map(|a| {
                    let addr = parse_addr(a)?;
                    TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))
                })
                .collect::<Result<Vec<_>, String>>()?;
            for listener in listeners {
                std::thread::spawn(move || echo_forever(listener));
            }
            println!("listening");
            loop {
                std::thread::park();
            }
        }
        ["reply", addr, text] => {
            let addr = parse_addr(addr)?;
            let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
            println!("listening");
            // Like busybox httpd's 404 or `nc -l -e echo`: the answer ends by closing, so a
            // forwarding client learns the end only from the close.
            for mut stream in listener.incoming().flatten() {
                let _ = stream.write_all(text.as_bytes());
            }
        }
        _ => return Err(format!("unknown command {args:?}")),
    }
    Ok(ExitCode::SUCCESS)
}

/// A bound socket kept open.
enum Held {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Held {
    fn port(&self) -> u16 {
        let addr = match self {
            Held::Tcp(s) => s.local_addr(),
            Held::Udp(s) => s.local_addr(),
        };
        addr.map(|a| a.port()).unwrap_or(0)
    }
}

fn bind(proto: &str, addr: SocketAddr) -> Result<std::io::Result<Held>, String> {
    match proto {
        "tcp" => Ok(TcpListener::bind(addr).map(Held::Tcp)),
        "udp" => Ok(UdpSocket::bind(addr).map(Held::Udp)),
        other => Err(format!("protocol {other:?}: expected tcp or udp")),
    }
}

fn local_port(stream: &std::io::Result<TcpStream>) -> std::io::Result<u16> {
    match stream {
        Ok(s) => s.local_addr().map(|a| a.port()),
        Err(e) => Err(clone_err(e)),
    }
}

fn clone_err(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::other(e.to_string()),
    }
}

fn report(result: std::io::Result<u16>) {
    match result {
        Ok(port) => println!("ok {port}"),
        Err(e) => println!("err {}", e.raw_os_error().unwrap_or(-1)),
    }
}

/// An active-mode data connection: listen on an ephemeral port, connect to it from a second
/// socket, pass a line both ways. Prints `listen <port>`, `connect <port>` and `done`.
fn callback(ip: IpAddr) -> ExitCode {
    let listener = match TcpListener::bind(SocketAddr::new(ip, 0)) {
        Ok(l) => l,
        Err(e) => {
            println!("listen err {}", e.raw_os_error().unwrap_or(-1));
            return ExitCode::FAILURE;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return ExitCode::FAILURE;
    };
    println!("listen {}", addr.port());
    let mut client = match TcpStream::connect(addr) {
        Ok(c) => c,
        Err(e) => {
            println!("connect err {}", e.raw_os_error().unwrap_or(-1));
            return ExitCode::FAILURE;
        }
    };
    println!(
        "connect {}",
        client.local_addr().map(|a| a.port()).unwrap_or(0)
    );
    let Ok((mut server, _)) = listener.accept() else {
        return ExitCode::FAILURE;
    };
    let mut line = [0u8; 5];
    let passed = client.write_all(b"hello").is_ok()
        && server.read_exact(&mut line).is_ok()
        && &line == b"hello"
        && server.write_all(b"bye").is_ok()
        && client.read_exact(&mut line[..3]).is_ok()
        && &line[..3] == b"bye";
    if passed {
        println!("done");
        ExitCode::SUCCESS
    } else {
        println!("transfer failed");
        ExitCode::FAILURE
    }
}

/// sendto() on a UDP socket that was never bound or connected: the kernel autobinds it.
/// Returns the port it got.
fn unbound_sendto(target: SocketAddr) -> std::io::Result<u16> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (family, raw, len) = sockaddr(target);
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: raw holds a sockaddr of `len` bytes.
    let sent = unsafe {
        libc::sendto(
            fd,
            b"x".as_ptr().cast(),
            1,
            0,
            (&raw as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let socket = UdpSocket::from(owned);
    socket.local_addr().map(|a| a.port())
}

fn sockaddr(addr: SocketAddr) -> (i32, libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                libc::AF_INET,
                storage,
                size_of::<libc::sockaddr_in>() as u32,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                libc::AF_INET6,
                storage,
                size_of::<libc::sockaddr_in6>() as u32,
            )
        }
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("{text:?}: {e}; expected ip:port or [ip6]:port"))
}

fn parse_n(text: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|e| format!("{text:?}: {e}; expected a count"))
}

/// Echoes every connection until its client half-closes, then closes it.
fn echo_forever(listener: TcpListener) {
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let Ok(mut reader) = stream.try_clone() else {
                return;
            };
            let mut writer = stream;
            let _ = std::io::copy(&mut reader, &mut writer);
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
    }
}

/// Sends our FIN first (so this side keeps the TIME_WAIT) and waits for the peer's, so a
/// churn goes at the server's pace: a server that lagged behind left hundreds of our ports in
/// FIN_WAIT2, which no later connection can reuse, and a busy machine saw the range run out.
fn close_first_and_wait(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.read_to_end(&mut Vec::new());
}
