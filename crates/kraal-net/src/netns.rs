//! Acting inside a network namespace without moving the daemon into it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

/// A network namespace to act in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Netns {
    /// The calling process's (the node's, for kraald).
    #[default]
    Current,
    /// The namespace behind a file: a pinned (bind-mounted) namespace, `/proc/<pid>/ns/net`,
    /// or `/run/netns/<name>`.
    Pinned(PathBuf),
}

impl Netns {
    pub fn pinned(path: impl Into<PathBuf>) -> Netns {
        Netns::Pinned(path.into())
    }

    fn open(path: &Path) -> Result<File> {
        File::open(path).map_err(|source| Error::Netns {
            path: path.into(),
            source,
        })
    }

    /// Runs `f` in this namespace. For a pinned one, `f` runs on a new thread that enters the
    /// namespace and ends with `f`, so no thread of the caller is left in it. Sockets made by
    /// `f` (netlink included) stay bound to the namespace after it returns.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let Netns::Pinned(path) = self else {
            return f();
        };
        let file = Netns::open(path)?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Netns {
                        path: path.clone(),
                        source: e.into(),
                    })?;
                    f()
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(Error::Netns {
                        path: path.clone(),
                        source: std::io::Error::other("the thread working in it panicked"),
                    })
                })
        })
    }

    /// Runs `cmd` to completion inside this namespace. Unlike `ip netns exec`, nothing but the
    /// network namespace changes: the command sees the caller's mounts (bpffs pins included).
    pub(crate) fn output(&self, cmd: &mut Command) -> Result<Output> {
        let shown = shown(cmd);
        let file = match self {
            Netns::Current => None,
            Netns::Pinned(path) => Some(Netns::open(path)?),
        };
        if let Some(file) = &file {
            let fd = file.as_raw_fd();
            // SAFETY: only setns(2) runs between fork and exec; `file` outlives the spawn.
            unsafe {
                cmd.pre_exec(move || {
                    let fd = BorrowedFd::borrow_raw(fd);
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
                });
            }
        }
        let out = cmd.output().map_err(|source| Error::Spawn {
            command: shown,
            source,
        });
        drop(file);
        out
    }
}

pub(crate) fn shown(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}
