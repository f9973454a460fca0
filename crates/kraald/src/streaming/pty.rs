//! A pseudo-terminal for `exec -t`: kraald keeps the master (non-blocking, polled by tokio)
//! and hands the slave to the exec helper as its stdin, stdout and stderr.
//!
//! The pty comes from the container's own devpts instance (its `/dev/pts`, mounted with
//! `newinstance`), as a runc exec's console does: inside the container the command's
//! terminal is then a `/dev/pts/N` that exists there, so `tty`, `ttyname` and programs
//! that reopen their terminal work. A pty of kraald's devpts is a file the container cannot
//! name (`tty` says "not a tty"); it is only the fallback for a container without a usable
//! devpts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use kraal_stream::TerminalSize;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::statfs::{DEVPTS_SUPER_MAGIC, fstatfs};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::runtime::{TrackedProcess, proc_start_time};

/// The master side; clones share the one descriptor.
#[derive(Clone)]
pub struct PtyMaster(Arc<AsyncFd<OwnedFd>>);

/// `/dev/pts/ptmx`'s device number: char 5:2 in every devpts instance.
const PTMX_MAJOR: u64 = 5;
const PTMX_MINOR: u64 = 2;

/// Opens a pty for an exec in the container whose init is `init`; returns the master and
/// the slave. From the container's devpts when it has a usable one, else from kraald's.
pub fn open_for(init: TrackedProcess) -> io::Result<(PtyMaster, OwnedFd)> {
    let (master, slave) = match container_pty(init) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(
                pid = init.pid,
                "exec: no pty from the container's devpts ({e}); using kraald's"
            );
            let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            (pty.master, pty.slave)
        }
    };
    let fd = master.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; no pointers involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the AsyncFd owns the master, which is neither replaced nor closed while
    // registered (it is closed when the AsyncFd drops, after deregistering).
    let master = unsafe { AsyncFd::register(master) }.map_err(|e| e.into_parts().1)?;
    Ok((PtyMaster(Arc::new(master)), slave))
}

/// A pty of the devpts mounted at the container's `/dev/pts`: its `ptmx` opened through the
/// container's root, the slave got from the master (TIOCGPTPEER), never by a path the
/// container could swap.
fn container_pty(init: TrackedProcess) -> io::Result<(OwnedFd, OwnedFd)> {
    let root_path = format!("/proc/{}/root", init.pid);
    let root = nix::fcntl::open(
        root_path.as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io::Error::other(format!("{root_path}: {e}")))?;
    // Checked after opening: the root we hold is the container's, not a reused pid's.
    if proc_start_time(init.pid)? != init.start_time {
        return Err(io::Error::other("the container's init is gone"));
    }
    // The container owns its /dev: resolve inside its root, no magic links (a
    // /proc/<pid>/fd/N there could point anywhere), and never block on what is not a
    // device (a FIFO put in ptmx's place).
    let how = OpenHow::new()
        .flags(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let master = openat2(&root, "dev/pts/ptmx", how)
        .map_err(|e| io::Error::other(format!("opening dev/pts/ptmx in the container: {e}")))?;
    let fs = fstatfs(&master)?;
    let st = nix::sys::stat::fstat(&master)?;
    let is_char = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR;
    let rdev = st.st_rdev;
    if fs.filesystem_type() != DEVPTS_SUPER_MAGIC
        || !is_char
        || libc::major(rdev) as u64 != PTMX_MAJOR
        || libc::minor(rdev) as u64 != PTMX_MINOR
    {
        return Err(io::Error::other(
            "the container's dev/pts/ptmx is not a devpts ptmx",
        ));
    }
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from the pointer, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the ioctl returned a fresh descriptor that nothing else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

impl PtyMaster {
    /// Sets the terminal size; the kernel sends SIGWINCH to the terminal's foreground
    /// process group.
    pub fn resize(&self, size: TerminalSize) -> io::Result<()> {
        let ws = libc::winsize {
            ws_row: size.height,
            ws_col: size.width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsyncRead for PtyMaster {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|fd| {
                // SAFETY: reads at most `unfilled.len()` bytes into memory we borrow mutably.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // EIO: every slave descriptor is closed (the command and whatever it left
                // behind are gone): end of output.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Poll::Ready(Ok(())),
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyMaster {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            let res = guard.try_io(|fd| {
                // SAFETY: writes at most `buf.len()` bytes from memory we borrow.
                let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
