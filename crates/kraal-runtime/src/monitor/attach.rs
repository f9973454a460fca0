//! Attach: clients (kraald, for the CRI `Attach` call) that asked `attach` on the control
//! socket keep their connection, receive the container's output as frames and may send
//! stdin. Output is also written to the CRI log as before; a client never slows the
//! container down: what it does not take is buffered up to a bound, then it is dropped.
//!
//! Frames, both ways: one type byte, the payload length as a big-endian u32, the payload.
//! Monitor to client: [`FRAME_STDOUT`], [`FRAME_STDERR`]. Client to monitor: [`FRAME_STDIN`],
//! [`FRAME_STDIN_CLOSE`], [`FRAME_RESIZE`]. The connection ends when the container's output
//! is drained after its exit (the monitor exits) or when the client detaches (closes it).
//!
//! A tty container's output is its pty master, all of it sent as [`FRAME_STDOUT`] (the
//! terminal merges stderr); stdin goes to the master, and a resize frame sets the
//! terminal's size (the kernel then signals SIGWINCH to its foreground process group).
//! Resize frames for a container without a terminal are ignored, as unknown frames are.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::sys;
use crate::log::Stream;

pub const FRAME_STDOUT: u8 = 1;
pub const FRAME_STDERR: u8 = 2;
pub const FRAME_STDIN: u8 = 3;
pub const FRAME_STDIN_CLOSE: u8 = 4;
/// Terminal size: width (columns) then height (rows), each a big-endian u16.
pub const FRAME_RESIZE: u8 = 5;
/// The EOF character of a terminal in its default settings (Ctrl-D).
const VEOF: u8 = 0x04;
/// Frame header: type byte and u32 length.
pub const FRAME_HEADER: usize = 5;
/// The largest frame accepted from a client.
pub const MAX_FRAME: usize = 64 * 1024;

/// Output buffered for one client before it is dropped as too slow.
const MAX_BUFFERED: usize = 4 * 1024 * 1024;
/// Stdin buffered for the container before clients stop being read.
const MAX_STDIN_PENDING: usize = 256 * 1024;
/// At exit, how long the last output may take to reach the clients.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Appends one frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends a [`FRAME_RESIZE`] frame.
pub fn encode_resize(out: &mut Vec<u8>, width: u16, height: u16) {
    let mut payload = [0u8; 4];
    payload[..2].copy_from_slice(&width.to_be_bytes());
    payload[2..].copy_from_slice(&height.to_be_bytes());
    encode_frame(out, FRAME_RESIZE, &payload);
}

/// Width and height of a [`FRAME_RESIZE`] payload; `None` if it is not 4 bytes long.
pub fn decode_resize(payload: &[u8]) -> Option<(u16, u16)> {
    match payload {
        [w0, w1, h0, h1] => Some((
            u16::from_be_bytes([*w0, *w1]),
            u16::from_be_bytes([*h0, *h1]),
        )),
        _ => None,
    }
}

/// Splits a complete frame off the front of `buf`: `Ok(None)` while more bytes are needed.
pub fn take_frame(buf: &mut Vec<u8>) -> io::Result<Option<(u8, Vec<u8>)>> {
    if buf.len() < FRAME_HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("attach frame of {len} bytes (at most {MAX_FRAME})"),
        ));
    }
    if buf.len() < FRAME_HEADER + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[FRAME_HEADER..FRAME_HEADER + len].to_vec();
    buf.drain(..FRAME_HEADER + len);
    Ok(Some((kind, payload)))
}

struct Client {
    conn: UnixStream,
    /// Frames not yet written to the client.
    out: Vec<u8>,
    /// Bytes read from the client, up to a complete frame.
    inbuf: Vec<u8>,
    wants_stdin: bool,
    gone: bool,
}

/// The attached clients and the container's stdin.
pub(crate) struct Attachers {
    clients: Vec<Client>,
    /// Write end of the container's stdin pipe, or its pty master (non-blocking); `None`:
    /// no stdin, or closed.
    stdin: Option<OwnedFd>,
    /// A tty container's pty master, for resizing (a descriptor of its own: `stdin` is
    /// dropped when stdin closes, the terminal stays).
    terminal: Option<OwnedFd>,
    stdin_once: bool,
    stdin_pending: Vec<u8>,
    /// Close stdin once `stdin_pending` is written.
    close_stdin: bool,
}

impl Attachers {
    pub(crate) fn new(stdin: Option<OwnedFd>, stdin_once: bool, terminal: Option<OwnedFd>) -> Self {
        if let Some(fd) = &stdin
            && let Err(e) = sys::set_nonblocking(fd.as_fd(), true)
        {
            tracing::warn!("stdin pipe O_NONBLOCK: {e}");
        }
        Attachers {
            clients: Vec::new(),
            stdin,
            terminal,
            stdin_once,
            stdin_pending: Vec::new(),
            close_stdin: false,
        }
    }

    /// Takes a control connection that asked `attach` (already answered `ok`).
    pub(crate) fn add(&mut self, conn: UnixStream, wants_stdin: bool) {
        if let Err(e) = conn.set_nonblocking(true) {
            tracing::warn!("attach: O_NONBLOCK: {e}");
            return;
        }
        let wants_stdin = wants_stdin && self.stdin.is_some();
        tracing::info!(
            clients = self.clients.len() + 1,
            wants_stdin,
            "client attached"
        );
        self.clients.push(Client {
            conn,
            out: Vec::new(),
            inbuf: Vec::new(),
            wants_stdin,
            gone: false,
        });
    }

    /// Whether the container has a stdin pipe that is still open.
    pub(crate) fn has_stdin(&self) -> bool {
        self.stdin.is_some()
    }

    /// Queues container output for every client and writes what their sockets take now.
    pub(crate) fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let kind = match stream {
            Stream::Stdout => FRAME_STDOUT,
            Stream::Stderr => FRAME_STDERR,
        };
        for c in &mut self.clients {
            encode_frame(&mut c.out, kind, data);
            if c.out.len() > MAX_BUFFERED {
                tracing::warn!(
                    "attached client takes output too slowly ({} bytes pending); detaching it",
                    c.out.len()
                );
                c.gone = true;
                continue;
            }
            flush(c);
        }
        // Clients that left are removed in `handle` only: the descriptor list polled last
        // must keep matching `clients` until then.
    }

    /// The descriptors to poll: every client (and stdin when output to it is pending).
    pub(crate) fn poll_fds(&self) -> Vec<libc::pollfd> {
        let read_clients = self.stdin_pending.len() < MAX_STDIN_PENDING;
        let mut fds: Vec<libc::pollfd> = self
            .clients
            .iter()
            .map(|c| {
                let mut events = 0;
                if read_clients {
                    events |= libc::POLLIN;
                }
                if !c.out.is_empty() {
                    events |= libc::POLLOUT;
                }
                libc::pollfd {
                    fd: c.conn.as_raw_fd(),
                    events,
                    revents: 0,
                }
            })
            .collect();
        if let Some(stdin) = &self.stdin
            && !self.stdin_pending.is_empty()
        {
            fds.push(libc::pollfd {
                fd: stdin.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        fds
    }

    /// Acts on what `poll` reported for the descriptors of [`Self::poll_fds`].
    pub(crate) fn handle(&mut self, fds: &[libc::pollfd]) {
        let n = self.clients.len();
        for (i, fd) in fds.iter().enumerate().take(n) {
            if fd.revents == 0 {
                continue;
            }
            if fd.revents & libc::POLLOUT != 0 {
                flush(&mut self.clients[i]);
            }
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                self.read_client(i);
            }
        }
        if fds.len() > n {
            self.write_stdin();
        }
        self.sweep();
    }

    fn read_client(&mut self, i: usize) {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let c = &mut self.clients[i];
            match c.conn.read(&mut chunk) {
                Ok(0) => {
                    c.gone = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.gone = true;
                    break;
                }
            }
            if c.inbuf.len() >= MAX_STDIN_PENDING {
                break;
            }
        }
        loop {
            let c = &mut self.clients[i];
            let frame = match take_frame(&mut c.inbuf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("attached client: {e}; detaching it");
                    c.gone = true;
                    break;
                }
            };
            let wants_stdin = c.wants_stdin;
            match frame {
                (FRAME_STDIN, data) if wants_stdin && !self.close_stdin => {
                    self.stdin_pending.extend_from_slice(&data);
                }
                (FRAME_STDIN_CLOSE, _) if wants_stdin && self.stdin_once => {
                    self.request_stdin_close()
                }
                (FRAME_RESIZE, data) => self.resize(&data),
                _ => {}
            }
        }
        self.write_stdin();
    }

    /// Writes pending stdin as far as the pipe takes it; closes stdin when asked to.
    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_pending.clear();
            return;
        };
        while !self.stdin_pending.is_empty() {
            // SAFETY: writes from memory we borrow, at most its length.
            let n = unsafe {
                libc::write(
                    fd.as_raw_fd(),
                    self.stdin_pending.as_ptr().cast(),
                    self.stdin_pending.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => continue,
                    _ => {
                        // EPIPE: the container closed its stdin; nobody will read more.
                        tracing::debug!("writing the container's stdin: {e}");
                        self.stdin_pending.clear();
                        self.stdin = None;
                        return;
                    }
                }
            }
            self.stdin_pending.drain(..n as usize);
        }
        if self.close_stdin {
            tracing::info!("closing the container's stdin (stdin_once)");
            self.stdin = None;
        }
    }

    /// Drops clients that left; the first stdin client leaving closes stdin for
    /// `stdin_once` containers.
    fn sweep(&mut self) {
        let before = self.clients.len();
        let mut stdin_client_left = false;
        self.clients.retain(|c| {
            if c.gone && c.wants_stdin {
                stdin_client_left = true;
            }
            !c.gone
        });
        if self.clients.len() != before {
            tracing::info!(clients = self.clients.len(), "client detached");
        }
        if stdin_client_left && self.stdin_once && self.stdin.is_some() {
            self.request_stdin_close();
            self.write_stdin();
        }
    }

    /// stdin_once: stdin closes once what is pending is written. A terminal cannot be
    /// closed for input only (its master also carries the output, and the shell keeps the
    /// slave), so the container gets what a user typing Ctrl-D gives: the EOF character,
    /// which ends a read at the start of a line with end-of-file.
    fn request_stdin_close(&mut self) {
        if self.close_stdin {
            return;
        }
        if self.terminal.is_some() {
            self.stdin_pending.push(VEOF);
        }
        self.close_stdin = true;
    }

    /// Sets the terminal size of a tty container; ignored without a terminal.
    fn resize(&mut self, payload: &[u8]) {
        let Some(master) = &self.terminal else {
            return;
        };
        let Some((width, height)) = decode_resize(payload) else {
            tracing::debug!(
                len = payload.len(),
                "attach: malformed resize frame ignored"
            );
            return;
        };
        match sys::set_window_size(master.as_fd(), width, height) {
            Ok(()) => tracing::debug!(width, height, "terminal resized"),
            Err(e) => tracing::warn!(width, height, "resizing the terminal: {e}"),
        }
    }

    /// At exit: gives each client a moment to take the last output, then drops them all.
    pub(crate) fn finish(&mut self) {
        for c in &mut self.clients {
            if c.out.is_empty() {
                continue;
            }
            if c.conn.set_nonblocking(false).is_ok()
                && c.conn.set_write_timeout(Some(FINAL_FLUSH)).is_ok()
            {
                let _ = c.conn.write_all(&c.out);
            }
        }
        self.clients.clear();
    }
}

/// Writes what the client's socket takes now.
fn flush(c: &mut Client) {
    while !c.out.is_empty() {
        match c.conn.write(&c.out) {
            Ok(0) => {
                c.gone = true;
                return;
            }
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.gone = true;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_split() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, FRAME_STDIN, b"hello");
        encode_frame(&mut buf, FRAME_STDIN_CLOSE, b"");
        let mut partial = buf[..3].to_vec();
        assert_eq!(take_frame(&mut partial).expect("ok"), None);
        assert_eq!(
            take_frame(&mut buf).expect("ok"),
            Some((FRAME_STDIN, b"hello".to_vec()))
        );
        assert_eq!(
            take_frame(&mut buf).expect("ok"),
            Some((FRAME_STDIN_CLOSE, Vec::new()))
        );
        assert!(buf.is_empty());
        let mut huge = vec![FRAME_STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(take_frame(&mut huge).is_err());
    }

    #[test]
    fn resize_frames() {
        let mut buf = Vec::new();
        encode_resize(&mut buf, 132, 43);
        let (kind, payload) = take_frame(&mut buf).expect("ok").expect("a frame");
        assert_eq!(kind, FRAME_RESIZE);
        assert_eq!(decode_resize(&payload), Some((132, 43)));
        assert_eq!(decode_resize(&payload[..3]), None);
    }

    /// A resize frame from a client reaches the pty; stdin_once on a terminal sends EOF.
    #[test]
    fn terminal_resize_and_eof() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let master = pty.master;
        let stdin = master.try_clone().expect("dup");
        let terminal = master.try_clone().expect("dup");
        let mut attachers = Attachers::new(Some(stdin), true, Some(terminal));
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        attachers.add(theirs, true);
        let mut frames = Vec::new();
        encode_resize(&mut frames, 100, 30);
        encode_frame(&mut frames, FRAME_STDIN, b"x");
        encode_frame(&mut frames, FRAME_STDIN_CLOSE, b"");
        (&ours).write_all(&frames).expect("send frames");
        let fds = attachers.poll_fds();
        let mut fds = fds;
        sys::poll(&mut fds, 1000).expect("poll");
        attachers.handle(&fds);
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize to a pointer that outlives the call.
        let r = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, 0);
        assert_eq!((ws.ws_col, ws.ws_row), (100, 30));
        // The slave reads "x" then end-of-file (canonical mode: EOF at the start of the
        // line after "x" flushes it, the next read returns 0).
        let mut slave = std::fs::File::from(pty.slave);
        let mut buf = [0u8; 16];
        let n = slave.read(&mut buf).expect("read x");
        assert_eq!(&buf[..n], b"x");
        assert!(!attachers.has_stdin(), "stdin_once closed stdin");
        drop(master);
    }
}
