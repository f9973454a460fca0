//! Resources on pure v2 hosts: everything in the unified tree. The write order follows
//! the same kernel checks as on v1 (see `resources/v1.rs`): `cpu.max.burst` goes to 0
//! before `cpu.max` and to its value after it; `cpu.idle` 0 before `cpu.weight`, 1 after.

use std::path::Path;

use super::{Writer, check_burst, newer_kernel_file, shares_to_weight};
use crate::{CgroupError, CgroupPath, MemoryHigh, Resources, fs};

pub(super) fn apply(
    dir: &Path,
    path: &CgroupPath,
    r: &Resources,
    w: &mut Writer,
) -> Result<(), CgroupError> {
    cpu(dir, path, r, w)?;
    if let Some(cpus) = &r.cpuset_cpus {
        w.write(dir.join("cpuset.cpus"), cpus.clone())?;
    }
    if let Some(mems) = &r.cpuset_mems {
        w.write(dir.join("cpuset.mems"), mems.clone())?;
    }
    if let Some(limit) = r.memory_limit_bytes {
        w.write(dir.join("memory.max"), limit.to_string())?;
    }
    if let Some(high) = r.memory_high {
        let value = match high {
            MemoryHigh::Bytes(bytes) => bytes.to_string(),
            MemoryHigh::Unlimited => "max".to_string(),
        };
        w.write(dir.join("memory.high"), value)?;
    }
    Ok(())
}

fn cpu(dir: &Path, path: &CgroupPath, r: &Resources, w: &mut Writer) -> Result<(), CgroupError> {
    let burst_file = match r.cpu_burst_us {
        Some(_) => Some(newer_kernel_file(
            dir,
            "cpu.max.burst",
            "cpu.max",
            "CFS burst (cpu.max.burst)",
            "5.14",
        )?),
        None => None,
    };
    let idle_file = match r.cpu_idle {
        Some(_) => Some(newer_kernel_file(
            dir, "cpu.idle", "cpu.max", "cpu.idle", "5.15",
        )?),
        None => None,
    };
    let max = cpu_max_value(dir, r)?;
    if r.cpu_burst_us.is_some() || r.cpu_quota_us.is_some() {
        let burst = match r.cpu_burst_us {
            Some(burst) => burst,
            None => fs::read_u64_opt(&dir.join("cpu.max.burst"))?.unwrap_or(0),
        };
        let quota = match r.cpu_quota_us {
            Some(quota) => u64::try_from(quota).ok().filter(|q| *q > 0),
            None => current_quota(dir)?,
        };
        check_burst(path, quota, burst)?;
    }

    if let Some(file) = &burst_file {
        w.write(file.clone(), "0".into())?;
    }
    if let Some(max) = max {
        w.write(dir.join("cpu.max"), max)?;
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
        w.write(dir.join("cpu.weight"), shares_to_weight(shares).to_string())?;
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

/// What to write to `cpu.max` (`$QUOTA [$PERIOD]`, `max` for no quota), None when
/// neither quota nor period changes. The kernel keeps the period when only a quota is
/// given; a new period alone must repeat the current quota.
fn cpu_max_value(dir: &Path, r: &Resources) -> Result<Option<String>, CgroupError> {
    let quota_text = |q: i64| {
        if q > 0 {
            q.to_string()
        } else {
            "max".to_string()
        }
    };
    Ok(match (r.cpu_quota_us, r.cpu_period_us) {
        (None, None) => None,
        (Some(quota), None) => Some(quota_text(quota)),
        (Some(quota), Some(period)) => Some(format!("{} {period}", quota_text(quota))),
        (None, Some(period)) => {
            let current = match current_quota(dir)? {
                Some(quota) => quota.to_string(),
                None => "max".to_string(),
            };
            Some(format!("{current} {period}"))
        }
    })
}

/// The quota in `cpu.max` (`max 100000` or `50000 100000`), None for `max`.
fn current_quota(dir: &Path) -> Result<Option<u64>, CgroupError> {
    let file = dir.join("cpu.max");
    let text = fs::read(&file)?;
    fs::parse_at(&file, parse_cpu_max_quota(&text))
}

fn parse_cpu_max_quota(text: &str) -> Result<Option<u64>, String> {
    match text.split_whitespace().next() {
        Some("max") => Ok(None),
        Some(quota) => quota
            .parse()
            .map(Some)
            .map_err(|_| format!("expected \"max\" or a quota, found {quota:?}")),
        None => Err("empty".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_quota_parses() {
        assert_eq!(parse_cpu_max_quota("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max_quota("50000 100000\n"), Ok(Some(50_000)));
        assert!(parse_cpu_max_quota("lots 100000\n").is_err());
        assert!(parse_cpu_max_quota("").is_err());
    }
}
