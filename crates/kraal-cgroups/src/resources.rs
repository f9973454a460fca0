//! Changing a running cgroup's limits (CRI UpdateContainerResources): CPU weight, CFS
//! bandwidth, cpuset and the memory limit, written the v1 way where the controller is a v1
//! mount, the v2 way on pure v2 hosts.

use crate::{CgroupError, CgroupPath, Cgroups, Hierarchy, fs};

/// Limits to apply; `None` (or 0, as CRI writes "unset") leaves a value alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_shares: Option<u64>,
    pub cpu_quota_us: Option<i64>,
    pub cpu_period_us: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory_limit_bytes: Option<i64>,
}

/// cgroup v2's `cpu.weight` (1..10000) for a v1 `cpu.shares` (2..262144), the conversion
/// runc and the kubelet agree on.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

impl Cgroups {
    /// Applies `resources` to `rel`, which must exist.
    pub fn apply_resources(&self, rel: &str, resources: &Resources) -> Result<(), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        if self.hierarchy() == Hierarchy::V2 {
            return self.apply_v2(&path, resources);
        }
        if let Some(dir) = self.v1_dir("cpu", &path) {
            // The period first: a quota larger than the old period may otherwise be refused.
            if let Some(period) = resources.cpu_period_us {
                fs::write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            }
            if let Some(quota) = resources.cpu_quota_us {
                fs::write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            if let Some(shares) = resources.cpu_shares {
                fs::write(&dir.join("cpu.shares"), &shares.to_string())?;
            }
        }
        if let Some(dir) = self.v1_dir("cpuset", &path) {
            if let Some(cpus) = &resources.cpuset_cpus {
                fs::write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = &resources.cpuset_mems {
                fs::write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        if let (Some(dir), Some(limit)) =
            (self.v1_dir("memory", &path), resources.memory_limit_bytes)
        {
            let file = dir.join("memory.limit_in_bytes");
            // With swap accounting, memsw must stay >= the limit: raise it first when growing.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let _ = fs::write(&memsw, &limit.to_string());
                fs::write(&file, &limit.to_string())?;
                fs::write(&memsw, &limit.to_string())?;
            } else {
                fs::write(&file, &limit.to_string())?;
            }
        }
        Ok(())
    }

    fn apply_v2(&self, path: &CgroupPath, r: &Resources) -> Result<(), CgroupError> {
        let Some(dir) = self.unified_dir(path) else {
            return Ok(());
        };
        if let Some(shares) = r.cpu_shares {
            fs::write(
                &dir.join("cpu.weight"),
                &shares_to_weight(shares).to_string(),
            )?;
        }
        if r.cpu_quota_us.is_some() || r.cpu_period_us.is_some() {
            let quota = match r.cpu_quota_us {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = r.cpu_period_us.unwrap_or(100_000);
            fs::write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = &r.cpuset_cpus {
            fs::write(&dir.join("cpuset.cpus"), cpus)?;
        }
        if let Some(mems) = &r.cpuset_mems {
            fs::write(&dir.join("cpuset.mems"), mems)?;
        }
        if let Some(limit) = r.memory_limit_bytes {
            fs::write(&dir.join("memory.max"), &limit.to_string())?;
        }
        Ok(())
    }
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
}
