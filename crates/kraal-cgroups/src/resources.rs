//! Changing a running cgroup's limits (CRI UpdateContainerResources and kraal's pod
//! policy): CPU weight, CFS bandwidth and burst, `cpu.idle`, cpuset, the memory limit
//! and the memory throttle point, written the v1 way where the controller is a v1 mount
//! (v1 and hybrid hosts), the v2 way on pure v2 hosts. The per-version file names and
//! write orders are in `resources/v1.rs` and `resources/v2.rs`.

mod v1;
mod v2;

use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::{debug, warn};

use crate::{CgroupError, CgroupPath, Cgroups, Hierarchy, fs};

/// Limits to apply; `None` leaves a value alone. (CRI's "0 means unset" is the caller's
/// to translate; here `Some(0)` is written as given.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    /// CFS quota per period; negative (-1) for no limit.
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    /// CFS burst: CPU time a cgroup may save up in quiet periods and spend above its quota
    /// later (v1 `cpu.cfs_burst_us`, v2 `cpu.max.burst`; Linux ≥ 5.14). At most the quota;
    /// `Some(0)` removes a burst.
    pub cpu_burst_us: Option<u64>,
    /// SCHED_IDLE for the whole cgroup: it runs only when nothing else wants the CPU
    /// (offline pods). Linux ≥ 5.15. While set, the kernel pins the weight to its minimum
    /// and refuses weight writes; clearing it resets the weight to the default (1024 /
    /// 100), not to what it was — pass `cpu_shares` along to restore it (see
    /// [`Cgroups::read_cpu_shares`]).
    pub cpu_idle: Option<bool>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_limit_bytes: Option<i64>,
    /// Where the kernel starts throttling and reclaiming, below the hard limit (v2
    /// `memory.high`; v1 `memory.soft_limit_in_bytes`, which only guides reclaim under
    /// global memory pressure).
    pub memory_high: Option<MemoryHigh>,
}

/// A value for `memory.high` / the v1 soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MemoryHigh {
    Bytes(u64),
    /// No throttle point: v2 `max`, v1 `-1`.
    Unlimited,
}

/// One control file [`Cgroups::apply_resources`] wrote, and the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Written {
    pub file: PathBuf,
    pub value: String,
}

/// cgroup v2's `cpu.weight` (1..10000) for a v1 `cpu.shares` (2..262144), the conversion
/// runc and the kubelet agree on.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The smallest `cpu.shares` that [`shares_to_weight`] maps to `weight`, so reading a
/// v2 weight as shares and writing it back changes nothing.
pub fn weight_to_shares(weight: u64) -> u64 {
    let weight = weight.clamp(1, 10_000);
    2 + ((weight - 1) * 262_142).div_ceil(9999)
}

impl Cgroups {
    /// Applies `resources` to `rel`, which must exist, and returns every file written, in
    /// order. Some writes happen in a particular order or more than once, because the
    /// kernel checks each against the current values (see `resources/v1.rs`).
    ///
    /// Checked before anything is written, so these errors leave the cgroup unchanged:
    /// a burst above the quota or without a quota ([`CgroupError::CpuBurst`]), and a
    /// burst or `cpu.idle` this kernel lacks ([`CgroupError::Unsupported`]). A write the
    /// kernel refuses later stops there; what was written before is logged.
    pub fn apply_resources(
        &self,
        rel: &str,
        resources: &Resources,
    ) -> Result<Vec<Written>, CgroupError> {
        let path = CgroupPath::parse(rel)?;
        let mut writer = Writer::default();
        let result = if self.hierarchy() == Hierarchy::V2 {
            match self.unified_dir(&path) {
                Some(dir) => v2::apply(&dir, &path, resources, &mut writer),
                None => Ok(()),
            }
        } else {
            v1::apply(self, &path, resources, &mut writer)
        };
        match result {
            Ok(()) => {
                debug!(cgroup = %path, written = ?writer.done, "resources applied");
                Ok(writer.done)
            }
            Err(err) => {
                if !writer.done.is_empty() {
                    warn!(cgroup = %path, error = %err, written = ?writer.done, "resources applied only in part");
                }
                Err(err)
            }
        }
    }

    /// The CPU weight of `rel` as v1 `cpu.shares`, so a caller can restore it after
    /// overriding it (e.g. with `cpu.idle`). v1 and hybrid hosts: `cpu.shares`. Pure v2:
    /// `cpu.weight` converted with [`weight_to_shares`], which writes back as the same
    /// weight. None when `rel` has no CPU controller file. While `cpu.idle` is set this
    /// reads the idle weight (v1: 3), so read it before setting idle.
    pub fn read_cpu_shares(&self, rel: &str) -> Result<Option<u64>, CgroupError> {
        let path = CgroupPath::parse(rel)?;
        self.ensure_exists(&path)?;
        if self.hierarchy() == Hierarchy::V2 {
            let Some(dir) = self.unified_dir(&path) else {
                return Ok(None);
            };
            Ok(fs::read_u64_opt(&dir.join("cpu.weight"))?.map(weight_to_shares))
        } else {
            match self.v1_dir("cpu", &path) {
                Some(dir) => fs::read_u64_opt(&dir.join("cpu.shares")),
                None => Ok(None),
            }
        }
    }
}

/// Writes control files and records each successful write.
#[derive(Debug, Default)]
struct Writer {
    done: Vec<Written>,
}

impl Writer {
    fn write(&mut self, file: PathBuf, value: String) -> Result<(), CgroupError> {
        fs::write(&file, &value)?;
        self.done.push(Written { file, value });
        Ok(())
    }
}

/// The kernel accepts a burst of at most the quota (and, though it takes a burst without
/// a quota, that burst means nothing and makes every later quota write fail). `quota_us`
/// None is no quota.
fn check_burst(path: &CgroupPath, quota_us: Option<u64>, burst_us: u64) -> Result<(), CgroupError> {
    match quota_us {
        _ if burst_us == 0 => Ok(()),
        Some(quota) if burst_us <= quota => Ok(()),
        _ => Err(CgroupError::CpuBurst {
            rel: path.to_string(),
            burst_us,
            quota_us,
        }),
    }
}

/// `dir/file` for a feature only newer kernels have. Unsupported when the controller is
/// there (`witness`, a file every kernel has, exists) but `file` is not; when `witness`
/// is missing too the cgroup or its controller is, and the write will say so.
fn newer_kernel_file(
    dir: &Path,
    file: &str,
    witness: &str,
    feature: &'static str,
    since: &'static str,
) -> Result<PathBuf, CgroupError> {
    let path = dir.join(file);
    if !path.exists() && dir.join(witness).exists() {
        return Err(CgroupError::Unsupported {
            path,
            feature,
            since,
        });
    }
    Ok(path)
}

/// A signed number file such as v1 `cpu.cfs_quota_us` (-1 for no limit).
fn read_i64(path: &Path) -> Result<i64, CgroupError> {
    let text = fs::read(path)?;
    let t = text.trim();
    fs::parse_at(
        path,
        t.parse()
            .map_err(|_| format!("expected one number, found {t:?}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_match_the_shares_they_come_from() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn every_weight_survives_a_round_trip_through_shares() {
        for weight in 1..=10_000 {
            let shares = weight_to_shares(weight);
            assert!((2..=262_144).contains(&shares), "{weight} -> {shares}");
            assert_eq!(shares_to_weight(shares), weight, "via {shares}");
        }
        assert_eq!(weight_to_shares(0), 2);
    }

    #[test]
    fn bursts_must_fit_under_a_quota() {
        let p = CgroupPath::parse("/pod").unwrap();
        assert!(check_burst(&p, None, 0).is_ok());
        assert!(check_burst(&p, Some(4000), 4000).is_ok());
        assert!(check_burst(&p, Some(4000), 0).is_ok());
        let err = check_burst(&p, Some(4000), 4001).unwrap_err();
        assert!(matches!(
            err,
            CgroupError::CpuBurst {
                burst_us: 4001,
                quota_us: Some(4000),
                ..
            }
        ));
        let err = check_burst(&p, None, 1).unwrap_err().to_string();
        assert!(err.contains("/pod") && err.contains("unlimited"), "{err}");
    }

    #[test]
    fn missing_newer_files_are_unsupported_only_when_the_controller_is_there() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = newer_kernel_file(dir, "cpu.idle", "cpu.shares", "cpu.idle", "5.15");
        // No controller files at all: not the kernel's fault; the write will say what.
        assert_eq!(err.unwrap(), dir.join("cpu.idle"));
        std::fs::write(dir.join("cpu.shares"), "1024\n").unwrap();
        let err = newer_kernel_file(dir, "cpu.idle", "cpu.shares", "cpu.idle", "5.15").unwrap_err();
        assert!(err.is_unsupported());
        let msg = err.to_string();
        assert!(
            msg.starts_with("cpu.idle is not supported by this kernel"),
            "{msg}"
        );
        assert!(msg.contains("5.15"), "{msg}");
        std::fs::write(dir.join("cpu.idle"), "0\n").unwrap();
        assert!(newer_kernel_file(dir, "cpu.idle", "cpu.shares", "cpu.idle", "5.15").is_ok());
    }
}
