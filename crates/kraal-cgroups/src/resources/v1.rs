//! Resources on v1 controllers (v1 and hybrid hosts): each controller's own tree; a
//! controller that is not mounted is skipped.
//!
//! Write order, because the kernel checks every write against the values already there:
//! - The burst must stay at most the quota at every step (a quota write below the current
//!   burst is refused, as is a burst above the current quota). So when a burst is being
//!   set it goes to 0 first and to its value last, after period and quota.
//! - Period before quota, as before: a quota is checked against the period it comes with.
//! - While `cpu.idle` is 1 the kernel refuses `cpu.shares` writes, and clearing idle
//!   resets the shares to 1024: so idle 0 goes before the shares, idle 1 after them.

use std::path::Path;

use super::{Writer, check_burst, newer_kernel_file, read_i64};
use crate::{CgroupError, CgroupPath, Cgroups, MemoryHigh, Resources, fs};

pub(super) fn apply(
    cg: &Cgroups,
    path: &CgroupPath,
    r: &Resources,
    w: &mut Writer,
) -> Result<(), CgroupError> {
    // cpu first: its checks run before anything at all is written.
    if let Some(dir) = cg.v1_dir("cpu", path) {
        cpu(&dir, path, r, w)?;
    }
    if let Some(dir) = cg.v1_dir("cpuset", path) {
        if let Some(cpus) = &r.cpuset_cpus {
            w.write(dir.join("cpuset.cpus"), cpus.clone())?;
        }
        if let Some(mems) = &r.cpuset_mems {
            w.write(dir.join("cpuset.mems"), mems.clone())?;
        }
    }
    if let Some(dir) = cg.v1_dir("memory", path) {
        memory(&dir, r, w)?;
    }
    Ok(())
}

fn cpu(dir: &Path, path: &CgroupPath, r: &Resources, w: &mut Writer) -> Result<(), CgroupError> {
    let burst_file = match r.cpu_burst_us {
        Some(_) => Some(newer_kernel_file(
            dir,
            "cpu.cfs_burst_us",
            "cpu.shares",
            "CFS burst (cpu.cfs_burst_us)",
            "5.14",
        )?),
        None => None,
    };
    let idle_file = match r.cpu_idle {
        Some(_) => Some(newer_kernel_file(
            dir,
            "cpu.idle",
            "cpu.shares",
            "cpu.idle",
            "5.15",
        )?),
        None => None,
    };
    check_bandwidth(dir, path, r)?;

    if let Some(file) = &burst_file {
        w.write(file.clone(), "0".into())?;
    }
    if let Some(period) = r.cpu_period_us {
        w.write(dir.join("cpu.cfs_period_us"), period.to_string())?;
    }
    if let Some(quota) = r.cpu_quota_us {
        w.write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
    }
    // Idle 0 before a new weight: also when idle is wanted and already on (a re-apply),
    // since the kernel refuses weight writes to an idle group.
    if let Some(file) = &idle_file
        && (r.cpu_idle == Some(false)
            || (r.cpu_shares.is_some() && fs::read_u64_opt(file)?.unwrap_or(0) == 1))
    {
        w.write(file.clone(), "0".into())?;
    }
    if let Some(shares) = r.cpu_shares {
        w.write(dir.join("cpu.shares"), shares.to_string())?;
    }
    if let (Some(file), Some(true)) = (&idle_file, r.cpu_idle) {
        w.write(file.clone(), "1".into())?;
    }
    if let (Some(file), Some(burst)) = (burst_file, r.cpu_burst_us)
        && burst > 0
    {
        w.write(file, burst.to_string())?;
    }
    Ok(())
}

/// The burst that will be in place (new, or the current one) must fit under the quota
/// that will be in place. Reads the current values only when one side is not given.
fn check_bandwidth(dir: &Path, path: &CgroupPath, r: &Resources) -> Result<(), CgroupError> {
    if r.cpu_burst_us.is_none() && r.cpu_quota_us.is_none() {
        return Ok(());
    }
    let burst = match r.cpu_burst_us {
        Some(burst) => burst,
        // No burst file: an older kernel, where there is no burst to collide with.
        None => fs::read_u64_opt(&dir.join("cpu.cfs_burst_us"))?.unwrap_or(0),
    };
    if burst == 0 {
        return Ok(());
    }
    let quota = match r.cpu_quota_us {
        Some(quota) => quota,
        None => read_i64(&dir.join("cpu.cfs_quota_us"))?,
    };
    check_burst(path, u64::try_from(quota).ok(), burst)
}

fn memory(dir: &Path, r: &Resources, w: &mut Writer) -> Result<(), CgroupError> {
    if let Some(limit) = r.memory_limit_bytes {
        let file = dir.join("memory.limit_in_bytes");
        // With swap accounting, memsw must stay >= the limit: raise it first when growing
        // (refused when shrinking, which is fine: then it is lowered after the limit).
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            let _ = w.write(memsw.clone(), limit.to_string());
            w.write(file, limit.to_string())?;
            w.write(memsw, limit.to_string())?;
        } else {
            w.write(file, limit.to_string())?;
        }
    }
    if let Some(high) = r.memory_high {
        let value = match high {
            MemoryHigh::Bytes(bytes) => bytes.to_string(),
            MemoryHigh::Unlimited => "-1".to_string(),
        };
        w.write(dir.join("memory.soft_limit_in_bytes"), value)?;
    }
    Ok(())
}
