//! What a helper process does: socket operations given in an env var, one result line each
//! (`KP ok <port>...` / `KP err <errno>`), sockets kept open until the process exits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};

use super::HELPER_ENV;

/// The helper's entry point; a no-op when run as an ordinary test.
#[test]
fn helper() {
    let Ok(ops) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut held: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut current: Option<UdpSocket> = None;
    for op in ops.split(';') {
        let words: Vec<&str> = op.split_whitespace().collect();
        match words.as_slice() {
            ["bind", proto, addr] => report(bind(proto, addr, &mut held)),
            ["bind0", proto, ip, n] => {
                for _ in 0..n.parse::<usize>().expect("count") {
                    report(bind(proto, &format!("{}:0", bracket(ip)), &mut held));
                }
            }
            ["connect", addr, n] => {
                for _ in 0..n.parse::<usize>().expect("count") {
                    report(connect(addr, &mut held));
                }
            }
            ["churn", addr, n] => churn(addr, n.parse().expect("count")),
            ["ftp", ip] => report(ftp(ip)),
            ["prejoin", procs, addr] => prejoin(procs, addr),
            ["sendto", how, to] => report(sendto(how, to, &mut held)),
            ["newsock"] => {
                let fd = udp_unbound_family(true);
                // SAFETY: fd is a new socket that nothing else owns.
                let s = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                report(cookie(fd).map(|c| c.to_string()));
                current = Some(s);
            }
            ["bindcur", a] => {
                let s = current.take().expect("newsock first");
                let r = bind_fd(std::os::fd::AsRawFd::as_raw_fd(&s), addr(a))
                    .and_then(|()| s.local_addr())
                    .map(|l| l.port().to_string());
                held.push(Box::new(s));
                report(r);
            }
            ["paused"] => {
                say("paused");
                let _ = std::io::stdin().read(&mut [0u8; 1]);
            }
            _ => panic!("unknown op {op}"),
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "KP {line}");
    let _ = out.flush();
}

fn report(r: std::io::Result<String>) {
    match r {
        Ok(s) => say(&format!("ok {s}")),
        Err(e) => say(&format!("err {}", e.raw_os_error().unwrap_or(-1))),
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("bad address {s}: {e}"))
}

fn bind(proto: &str, a: &str, held: &mut Vec<Box<dyn std::any::Any>>) -> std::io::Result<String> {
    let port = match proto {
        "tcp" => {
            let l = TcpListener::bind(addr(a))?;
            let port = l.local_addr()?.port();
            held.push(Box::new(l));
            port
        }
        "udp" => {
            let s = UdpSocket::bind(addr(a))?;
            let port = s.local_addr()?.port();
            held.push(Box::new(s));
            port
        }
        _ => panic!("bad proto {proto}"),
    };
    Ok(port.to_string())
}

fn connect(a: &str, held: &mut Vec<Box<dyn std::any::Any>>) -> std::io::Result<String> {
    let s = TcpStream::connect(addr(a))?;
    let port = s.local_addr()?.port();
    held.push(Box::new(s));
    Ok(port.to_string())
}

/// Opens `n` short connections one after the other, each closed once the server has closed
/// (the server closes first, as HTTP/1.0 does). Reports the failures and the port span.
///
/// Why not close first: the client socket then waits in FIN_WAIT2 for the server's FIN, and
/// its port is rightly held until then; a test server that lags under load would make the
/// range genuinely full and the failures would measure the scheduler, not the allocator.
fn churn(a: &str, n: usize) {
    let (mut fails, mut lo, mut hi) = (0, u16::MAX, 0);
    for _ in 0..n {
        match TcpStream::connect(addr(a)) {
            Ok(mut s) => {
                let p = s.local_addr().map(|l| l.port()).unwrap_or(0);
                lo = lo.min(p);
                hi = hi.max(p);
                let _ = s.read(&mut [0u8; 1]);
            }
            Err(e) => {
                fails += 1;
                say(&format!("fail {e}"));
            }
        }
    }
    say(&format!("ok {fails} {lo} {hi}"));
}

/// FTP active mode: an ephemeral listener, a connection back to it, a byte each way.
fn ftp(ip: &str) -> std::io::Result<String> {
    let l = TcpListener::bind(addr(&format!("{}:0", bracket(ip))))?;
    let data = l.local_addr()?;
    let mut client = TcpStream::connect(data)?;
    let (mut server, _) = l.accept()?;
    client.write_all(b"x")?;
    let mut b = [0u8; 1];
    server.read_exact(&mut b)?;
    server.write_all(b"y")?;
    client.read_exact(&mut b)?;
    Ok(format!("{} {}", data.port(), client.local_addr()?.port()))
}

/// A socket made before joining the pod is not the pod's: its bind is not checked.
fn prejoin(procs: &str, a: &str) {
    let before = udp_unbound();
    std::fs::write(procs, "0").expect("join pod cgroup");
    let after = udp_unbound();
    report(bind_fd(before, addr(a)).map(|()| "before".into()));
    report(bind_fd(after, addr(a)).map(|()| "after".into()));
}

fn udp_unbound() -> i32 {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    fd
}

fn bind_fd(fd: i32, a: SocketAddr) -> std::io::Result<()> {
    let SocketAddr::V4(a) = a else {
        panic!("v4 only")
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sin is a valid sockaddr_in of the given length.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A UDP datagram to `to` (with sendto) from a socket that is `unbound` (the kernel autobinds
/// it at the send), `bound` (bind to port 0 first) or `connected` (connect() first, which binds
/// it). Reports the local port it went out from.
fn sendto(how: &str, to: &str, held: &mut Vec<Box<dyn std::any::Any>>) -> std::io::Result<String> {
    let to = addr(to);
    let fd = udp_unbound_family(to.is_ipv4());
    // SAFETY: fd is a new socket that nothing else owns.
    let s = unsafe { <UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    match how {
        "unbound" => {}
        "bound" => {
            let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            bind_any_family(fd, addr(any))?;
        }
        "connected" => s.connect(to)?,
        _ => panic!("bad sendto mode {how}"),
    }
    s.send_to(b"x", to)?;
    let port = s.local_addr()?.port();
    held.push(Box::new(s));
    Ok(port.to_string())
}

/// The socket's cookie (SO_COOKIE), the key of its claim.
fn cookie(fd: i32) -> std::io::Result<u64> {
    let mut c = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: c and len are valid for the duration of the call and sized as SO_COOKIE needs.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut c as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(c)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn udp_unbound_family(v4: bool) -> i32 {
    let family = if v4 { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    fd
}

/// bind(2) of an existing socket to a v4 or v6 address.
fn bind_any_family(fd: i32, a: SocketAddr) -> std::io::Result<()> {
    let rc = match a {
        SocketAddr::V4(_) => return bind_fd(fd, a),
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sin6 is a valid sockaddr_in6 of the given length.
            unsafe {
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as u32,
                )
            }
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
