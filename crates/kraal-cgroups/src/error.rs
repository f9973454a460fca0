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

    /// The tasks of `rel` did not all stop in time. The cgroup was thawed again, so
    /// nothing is left half-frozen.
    #[error(
        "freezing cgroup {rel}: its tasks did not stop within {waited_ms} ms (a task may be stuck in the kernel, e.g. in uninterruptible I/O); the cgroup was thawed again"
    )]
    FreezeTimeout { rel: String, waited_ms: u64 },

    /// No hierarchy can freeze: no v1 freezer controller and no cgroup2 mount.
    #[error(
        "cannot freeze: the cgroup v1 freezer controller is not mounted and there is no cgroup2 hierarchy"
    )]
    FreezerUnavailable,

    /// A control file this kernel does not have (the cgroup and its controller exist).
    /// Callers may treat this as a warning and apply the rest without the feature.
    #[error(
        "{feature} is not supported by this kernel: {} does not exist (needs Linux {since} or later)",
        path.display()
    )]
    Unsupported {
        path: PathBuf,
        feature: &'static str,
        since: &'static str,
    },

    /// A CFS burst the kernel cannot combine with the CPU quota: the burst may be at most
    /// the quota, and without a quota there is nothing to burst above.
    #[error("cgroup {rel}: {}", burst_reason(*.burst_us, *.quota_us))]
    CpuBurst {
        rel: String,
        burst_us: u64,
        /// The quota the burst would sit on, None for no quota (-1 / `max`).
        quota_us: Option<u64>,
    },
}

fn burst_reason(burst_us: u64, quota_us: Option<u64>) -> String {
    match quota_us {
        None => format!(
            "a cpu burst of {burst_us} µs needs a cpu quota, but the quota is unlimited (-1); set a quota of at least {burst_us} µs or a burst of 0"
        ),
        Some(quota) => format!(
            "a cpu burst of {burst_us} µs exceeds the cpu quota of {quota} µs; the kernel allows a burst of at most the quota"
        ),
    }
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

    /// True when the kernel lacks a feature that was asked for ([`CgroupError::Unsupported`]),
    /// which callers usually report as a warning.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, CgroupError::Unsupported { .. })
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

    #[test]
    fn freeze_timeout_says_what_happened() {
        let e = CgroupError::FreezeTimeout {
            rel: "/kubepods/pod1".into(),
            waited_ms: 1000,
        };
        let msg = e.to_string();
        assert!(msg.contains("/kubepods/pod1"), "{msg}");
        assert!(msg.contains("within 1000 ms"), "{msg}");
        assert!(msg.contains("thawed again"), "{msg}");
    }

    #[test]
    fn burst_errors_name_burst_and_quota() {
        let e = CgroupError::CpuBurst {
            rel: "/pod".into(),
            burst_us: 5000,
            quota_us: None,
        };
        let msg = e.to_string();
        assert!(
            msg.contains("5000 µs") && msg.contains("unlimited (-1)"),
            "{msg}"
        );
        let e = CgroupError::CpuBurst {
            rel: "/pod".into(),
            burst_us: 5000,
            quota_us: Some(4000),
        };
        let msg = e.to_string();
        assert!(msg.contains("5000 µs") && msg.contains("4000 µs"), "{msg}");
    }
}
