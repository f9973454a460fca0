//! The one error type of this crate. Every variant names the file or directory it was
//! working on and what it was doing, because "Device or resource busy" alone tells an
//! operator nothing.

use std::io;
use std::path::PathBuf;

/// Why a cgroup operation failed.
///
/// The underlying `io::Error` is part of the message rather than exposed as `source()`,
/// so error chains printed with `{:#}` do not repeat it; use [`CgroupError::raw_os_error`]
/// to inspect the errno.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup path given by the caller (e.g. kubelet's `cgroup_parent`) is unusable.
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },

    #[error("reading {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },

    #[error("writing {value} to {}: {err}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        err: io::Error,
    },

    #[error("creating cgroup {}: {err}", path.display())]
    Create { path: PathBuf, err: io::Error },

    #[error("removing cgroup {}: {err}", path.display())]
    Remove { path: PathBuf, err: io::Error },

    #[error("listing cgroup {}: {err}", path.display())]
    List { path: PathBuf, err: io::Error },

    /// The cgroup (or one below it) still holds processes after waiting for them to go.
    #[error(
        "removing cgroup {}: still has processes {pids:?} (Device or resource busy); stop them first",
        path.display()
    )]
    Busy { path: PathBuf, pids: Vec<i32> },

    /// A cgroup or kernel file had unexpected contents.
    #[error("parsing {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },

    /// `rel` exists in none of the mounted hierarchies.
    #[error("cgroup {rel} does not exist in any cgroup hierarchy")]
    NotFound { rel: String },

    /// Neither a cgroup v1 controller nor a cgroup2 hierarchy is mounted.
    #[error("no cgroup v1 controller and no cgroup2 mount found in {}", path.display())]
    NoCgroups { path: PathBuf },
}

impl CgroupError {
    /// The errno behind this error, if it came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Read { err, .. }
            | CgroupError::Write { err, .. }
            | CgroupError::Create { err, .. }
            | CgroupError::Remove { err, .. }
            | CgroupError::List { err, .. } => err.raw_os_error(),
            CgroupError::Busy { .. } => Some(libc::EBUSY),
            CgroupError::NotFound { .. } => Some(libc::ENOENT),
            _ => None,
        }
    }

    /// True when the cgroup could not be removed because processes are still in it.
    pub fn is_busy(&self) -> bool {
        self.raw_os_error() == Some(libc::EBUSY)
    }

    /// True when the cgroup or file does not exist.
    pub fn is_not_found(&self) -> bool {
        self.raw_os_error() == Some(libc::ENOENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_error_names_value_path_and_errno() {
        let e = CgroupError::Write {
            path: "/sys/fs/cgroup/memory/kubepods/pod1/memory.force_empty".into(),
            value: "0".into(),
            err: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "writing 0 to /sys/fs/cgroup/memory/kubepods/pod1/memory.force_empty: Device or resource busy"
            ),
            "{msg}"
        );
        assert!(e.is_busy());
    }

    #[test]
    fn busy_names_the_cgroup_and_pids() {
        let e = CgroupError::Busy {
            path: "/sys/fs/cgroup/memory/kubepods/pod1".into(),
            pids: vec![42],
        };
        let msg = e.to_string();
        assert!(msg.contains("/sys/fs/cgroup/memory/kubepods/pod1"), "{msg}");
        assert!(msg.contains("[42]"), "{msg}");
        assert!(e.is_busy());
    }
}
