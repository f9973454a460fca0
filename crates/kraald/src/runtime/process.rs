//! Processes kraald did not fork (containers' inits and monitors), tracked by (pid, start
//! time) and signalled through a pidfd, so a recycled pid can never be hit by mistake.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub use kraal_runtime::monitor::proc_start_time;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackedProcess {
    pub pid: i32,
    pub start_time: u64,
}

impl TrackedProcess {
    /// A pidfd for the process if it is still the same process (checked after opening the
    /// pidfd, so the answer cannot go stale through pid reuse).
    pub fn pidfd(&self) -> Option<OwnedFd> {
        if self.pid <= 0 {
            return None;
        }
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        match proc_start_time(self.pid) {
            Ok(start) if start == self.start_time => Some(fd),
            _ => None,
        }
    }

    /// Running (not exited). A process that exited but is not yet reaped — monitors are
    /// daemonized, so their reaper is PID 1, which may take its time — counts as gone.
    pub fn is_alive(&self) -> bool {
        self.pidfd().is_some_and(|fd| !exited(&fd, 0))
    }

    /// Waits up to `timeout` for the process to exit; true once it has (or was gone).
    pub fn wait_exit(&self, timeout: std::time::Duration) -> bool {
        match self.pidfd() {
            None => true,
            Some(fd) => exited(&fd, timeout.as_millis().min(i32::MAX as u128) as i32),
        }
    }

    /// Sends `signal`; Ok(false) when the process is already gone.
    pub fn signal(&self, signal: i32) -> io::Result<bool> {
        let Some(fd) = self.pidfd() else {
            return Ok(false);
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        // SAFETY: pidfd_send_signal(2) with a valid pidfd, no siginfo, no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                raw,
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ESRCH) {
                return Ok(false);
            }
            return Err(err);
        }
        Ok(true)
    }
}

/// A pidfd polls readable once its process has exited, reaped or not.
fn exited(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut poll = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(fd),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd for the duration of the call.
        let rc = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
        if rc >= 0 {
            return rc > 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// Signal number of a name as images write it (`SIGTERM`, `TERM`, `15`).
pub fn parse_signal(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let sig: nix::sys::signal::Signal = format!("SIG{bare}").parse().ok()?;
    Some(sig as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("SIGQUIT"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn a_process_is_tracked_by_pid_and_start_time() {
        let me = std::process::id() as i32;
        let start = proc_start_time(me).unwrap();
        let tracked = TrackedProcess {
            pid: me,
            start_time: start,
        };
        assert!(tracked.is_alive());
        let imposter = TrackedProcess {
            pid: me,
            start_time: start + 1,
        };
        assert!(!imposter.is_alive(), "same pid, other start time: not ours");
    }
}
