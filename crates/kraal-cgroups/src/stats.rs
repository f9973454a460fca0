//! Resource usage of a cgroup, as CRI's `ContainerStats`/`PodSandboxStats` report it.
//!
//! Where a resource is accounted depends on the host: on hybrid hosts the v1 controllers
//! hold the numbers and the unified tree holds none, so each figure comes from the v1
//! controller when it is mounted and from the unified tree otherwise.

use serde::Serialize;

use crate::{CgroupError, CgroupPath, Cgroups, fs, stat_file, v1, v2};

/// Usage of one cgroup, including everything below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CgroupStats {
    /// v1 `cpuacct.usage`; v2 `usage_usec` of `cpu.stat` × 1000.
    pub cpu_usage_ns: u64,
    /// v1 `memory.usage_in_bytes`; v2 `memory.current`.
    pub memory_usage_bytes: u64,
    /// Usage minus inactive page cache, what kubelet evicts on. Page cache stays charged
    /// after its reader exits, so usage alone overstates what the pod needs.
    pub memory_working_set_bytes: u64,
    /// v1 `total_rss`; v2 `anon`.
    pub memory_rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// Tasks (`pids.current`), or the number of processes when no pids controller is there.
    pub pids: u64,
}

/// The memory part of [`CgroupStats`]; pure so it can be tested on file samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryStats {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

impl MemoryStats {
    /// From v1 `memory.usage_in_bytes` and `memory.stat`; the `total_` keys include the
    /// cgroups below, matching usage_in_bytes, which is hierarchical.
    pub(crate) fn from_v1(usage: u64, stat: &str) -> Self {
        let key = |k| stat_file::flat_keyed(stat, k).unwrap_or(0);
        MemoryStats {
            usage,
            working_set: usage.saturating_sub(key("total_inactive_file")),
            rss: key("total_rss"),
            page_faults: key("total_pgfault"),
            major_page_faults: key("total_pgmajfault"),
        }
    }

    /// From v2 `memory.current` and `memory.stat` (hierarchical already).
    pub(crate) fn from_v2(current: u64, stat: &str) -> Self {
        let key = |k| stat_file::flat_keyed(stat, k).unwrap_or(0);
        MemoryStats {
            usage: current,
            working_set: current.saturating_sub(key("inactive_file")),
            rss: key("anon"),
            page_faults: key("pgfault"),
            major_page_faults: key("pgmajfault"),
        }
    }
}

/// CPU time in ns from v2 `cpu.stat` (which has it in µs).
pub(crate) fn cpu_ns_from_v2(cpu_stat: &str) -> Option<u64> {
    stat_file::flat_keyed(cpu_stat, "usage_usec").map(|us| us.saturating_mul(1000))
}

impl Cgroups {
    /// Usage of `rel` and everything below it. Figures whose files are absent (controller
    /// not mounted or not enabled) are 0; a cgroup that exists nowhere is an error.
    pub fn stats(&self, rel: &str) -> Result<CgroupStats, CgroupError> {
        let path = CgroupPath::parse(rel)?;
        self.ensure_exists(&path)?;

        let cpu_usage_ns = if let Some(dir) = self.v1_dir("cpuacct", &path) {
            fs::read_u64_opt(&dir.join("cpuacct.usage"))?.unwrap_or(0)
        } else if let Some(dir) = self.unified_dir(&path) {
            fs::read_opt(&dir.join("cpu.stat"))?
                .and_then(|text| cpu_ns_from_v2(&text))
                .unwrap_or(0)
        } else {
            0
        };

        let memory = if let Some(dir) = self.v1_dir("memory", &path) {
            let usage = fs::read_u64_opt(&dir.join("memory.usage_in_bytes"))?;
            let stat = fs::read_opt(&dir.join("memory.stat"))?.unwrap_or_default();
            MemoryStats::from_v1(usage.unwrap_or(0), &stat)
        } else if let Some(dir) = self.unified_dir(&path) {
            let current = fs::read_u64_opt(&dir.join("memory.current"))?;
            let stat = fs::read_opt(&dir.join("memory.stat"))?.unwrap_or_default();
            MemoryStats::from_v2(current.unwrap_or(0), &stat)
        } else {
            MemoryStats::default()
        };

        let pids_dir = self
            .v1_dir("pids", &path)
            .or_else(|| self.unified_dir(&path));
        let pids = match pids_dir {
            Some(dir) => fs::read_u64_opt(&dir.join("pids.current"))?,
            None => None,
        };
        let pids = match pids {
            Some(n) => n,
            None => self.pids_of(&path)?.len() as u64,
        };

        Ok(CgroupStats {
            cpu_usage_ns,
            memory_usage_bytes: memory.usage,
            memory_working_set_bytes: memory.working_set,
            memory_rss_bytes: memory.rss,
            page_faults: memory.page_faults,
            major_page_faults: memory.major_page_faults,
            pids,
        })
    }

    /// OOM kills in `rel` and below so far (v1: `oom_kill` of `memory.oom_control`, summed
    /// over the subtree; v2: `oom_kill` of `memory.events`). 0 when no memory controller
    /// accounts for `rel` or the kernel does not count kills.
    pub fn oom_kills(&self, rel: &str) -> Result<u64, CgroupError> {
        let path = CgroupPath::parse(rel)?;
        if let Some(dir) = self.v1_dir("memory", &path) {
            v1::oom_kills(&dir)
        } else if let Some(dir) = self.unified_dir(&path) {
            v2::oom_kills(&dir, self.unified_local_events)
        } else {
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_memory_uses_total_keys() {
        let stat = "\
cache 100
rss 5
inactive_file 100
pgfault 1
total_cache 4096
total_rss 1000
total_pgfault 70
total_pgmajfault 2
total_inactive_file 4000
total_active_file 96
";
        let m = MemoryStats::from_v1(6000, stat);
        assert_eq!(
            m,
            MemoryStats {
                usage: 6000,
                working_set: 2000,
                rss: 1000,
                page_faults: 70,
                major_page_faults: 2,
            }
        );
    }

    #[test]
    fn v2_memory_keys() {
        let stat = "\
anon 1048576
file 8388608
kernel 65536
inactive_anon 1048576
active_anon 0
inactive_file 8388608
active_file 0
pgfault 300
pgmajfault 4
";
        let m = MemoryStats::from_v2(9_502_720, stat);
        assert_eq!(m.usage, 9_502_720);
        assert_eq!(m.working_set, 9_502_720 - 8_388_608);
        assert_eq!(m.rss, 1_048_576);
        assert_eq!((m.page_faults, m.major_page_faults), (300, 4));
    }

    #[test]
    fn working_set_saturates_at_zero() {
        // usage_in_bytes is batched per CPU and can lag behind memory.stat.
        let m = MemoryStats::from_v1(100, "total_inactive_file 4096\n");
        assert_eq!(m.working_set, 0);
        let m = MemoryStats::from_v2(0, "inactive_file 10\n");
        assert_eq!(m.working_set, 0);
    }

    #[test]
    fn missing_keys_are_zero() {
        assert_eq!(
            MemoryStats::from_v1(7, ""),
            MemoryStats {
                usage: 7,
                working_set: 7,
                ..Default::default()
            }
        );
    }

    #[test]
    fn v2_cpu_usage_in_ns() {
        assert_eq!(
            cpu_ns_from_v2("usage_usec 1523\nuser_usec 1000\n"),
            Some(1_523_000)
        );
        assert_eq!(cpu_ns_from_v2("nr_periods 0\n"), None);
        assert_eq!(
            cpu_ns_from_v2(&format!("usage_usec {}\n", u64::MAX)),
            Some(u64::MAX)
        );
    }
}
