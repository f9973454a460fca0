//! Thin system-call helpers for the monitor: poll, pidfd, fd hygiene, signal dispositions.
//! Everything here is small and synchronous; the monitor is one thread.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};

/// `poll(2)` over `fds` for at most `timeout_ms` (negative: forever). `EINTR` is returned
/// as an error of kind `Interrupted` for the caller to retry.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A `pollfd` asking for readability of `fd`.
pub(crate) fn pollin(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// `pidfd_open(2)`: a file descriptor that refers to exactly this process, immune to pid
/// reuse; it polls readable once the process has exited.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new, owned file descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sets or clears `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let mut flags = OFlag::from_bits_retain(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// `TIOCSWINSZ` on a pty (master or slave): the terminal's size in columns and rows.
pub(crate) fn set_window_size(fd: BorrowedFd<'_>, width: u16, height: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is a pty master (`TIOCGPTN` answers only on a master).
pub(crate) fn is_pty_master(fd: BorrowedFd<'_>) -> bool {
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int to a pointer that outlives the call.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) == 0 }
}

/// Receives one file descriptor sent with `SCM_RIGHTS` on `conn` (blocking, within the
/// socket's read timeout). Any further descriptors in the message are closed.
pub(crate) fn recv_fd(conn: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let msg = loop {
        match recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let mut received: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS installed these descriptors in this process just now;
            // nothing else owns them.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    received.into_iter().next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no descriptor in the message ({} bytes)", msg.bytes),
        )
    })
}

/// Closes every file descriptor from 3 up, except those in `keep`.
pub(crate) fn close_fds_except(keep: &[RawFd]) -> io::Result<()> {
    // Collect first: closing while iterating /proc/self/fd would close the iterator's own fd.
    let mut fds: Vec<RawFd> = Vec::new();
    for entry in fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            fds.push(fd);
        }
    }
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing descriptors this process inherited and owns no Rust object
            // for; the directory iterator's own fd is already closed, so EBADF is fine.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Gives children the signal state a freshly exec'd program expects: no signal ignored
/// and an empty signal mask. An ignored disposition survives `execve`, and libcontainer
/// clones the container's processes from this process without resetting anything. What
/// this process may have ignored: SIGPIPE (the Rust runtime does that), and glibc's
/// internal signals 32 and 33, which glibc's `posix_spawn` — behind Rust's `Command`, so
/// behind how kraald starts the monitor — leaves ignored in the spawned program.
/// Raw `rt_sigaction` because glibc refuses to touch its internal signals.
pub(crate) fn reset_signals_for_children() -> io::Result<()> {
    const SIG_IGN: u64 = 1;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // Large enough for the kernel's `struct sigaction` on 64-bit targets (handler,
        // flags, restorer, 64-bit mask); all zero is SIG_DFL with no flags.
        let mut old = [0u64; 4];
        // SAFETY: query only; `old` is writable and big enough; sigsetsize is 8 bytes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<u64>(),
                old.as_mut_ptr(),
                8usize,
            )
        };
        if r != 0 || old[0] != SIG_IGN {
            continue;
        }
        let default = [0u64; 4];
        // SAFETY: installs SIG_DFL, which runs no code in this process.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// Ignores `sig` in this process.
pub(crate) fn ignore_signal(sig: Signal) -> io::Result<()> {
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) }
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Opens `path` for appending (creating it and its parent directories), close-on-exec.
pub(crate) fn open_append(path: &Path, mode: u32) -> io::Result<File> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

/// Raw fd of anything that has one, for `pollfd`s.
pub(crate) fn raw<F: AsRawFd>(f: &F) -> RawFd {
    f.as_raw_fd()
}

/// The parent pid of `pid`, from `/proc/<pid>/stat` (field 4).
pub(crate) fn parent_pid(pid: i32) -> io::Result<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let field = super::stat_field(&stat, 4)?;
    field
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("ppid {field:?}: {e}")))
}

/// All descendants of `pid` (children, grandchildren, …) found by walking `/proc`.
/// Processes that were already orphaned and re-parented elsewhere are not found.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut parents: Vec<(i32, i32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Ok(pp) = parent_pid(p) {
                parents.push((p, pp));
            }
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, pp) in &parents {
            if pp == parent && !found.contains(&child) && child != pid {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Drops this process's resident pages of read-only, private file mappings that hold no
/// anonymous (copied-on-write) pages: program text and read-only data, of the binary and
/// its libraries. They are identical to the file, so the kernel faults them back in from
/// the page cache when touched. The monitor touches most of libcontainer once, to create
/// the container, and then runs a small loop for days: this keeps its RSS to what the loop
/// uses. Returns the number of bytes of mappings advised.
pub(crate) fn drop_clean_file_pages() -> io::Result<usize> {
    let smaps = fs::read_to_string("/proc/self/smaps")?;
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping header: "start-end perms offset dev inode [path]".
            current = None;
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            let perms = words.next().unwrap_or("").as_bytes();
            let path = words.nth(3).unwrap_or("");
            let private_read_only = perms.len() == 4 && perms[1] == b'-' && perms[3] == b'p';
            if private_read_only && path.starts_with('/') {
                current = Some((start, end));
            }
        } else if first == "Anonymous:"
            && let Some(range) = current.take()
            && words.next() == Some("0")
        {
            ranges.push(range);
        }
    }
    let mut total = 0;
    for (start, end) in ranges {
        // SAFETY: the range is a private, non-writable file mapping without anonymous
        // pages: discarding its pages only makes later accesses re-read the same file
        // contents. Nothing in it is unmapped or changed.
        let r =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if r == 0 {
            total += end - start;
        }
    }
    Ok(total)
}
