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
