//! cgroup v1: one directory tree per mounted controller (or per group of co-mounted
//! controllers such as `cpu,cpuacct`).

use std::path::Path;

use tracing::{debug, warn};

use crate::{CgroupError, CgroupPath, fs, stat_file};

/// mkdir -p of `path` under one v1 mount. For the cpuset hierarchy every level also gets
/// cpus and mems (see [`inherit_cpuset`]).
pub(crate) fn create(mount: &Path, path: &CgroupPath, cpuset: bool) -> Result<(), CgroupError> {
    let mut dir = mount.to_path_buf();
    for name in path.components() {
        let parent = dir.clone();
        dir.push(name);
        if fs::mkdir(&dir)? {
            debug!(dir = %dir.display(), "created cgroup");
        }
        if cpuset {
            inherit_cpuset(&parent, &dir)?;
        }
    }
    Ok(())
}

/// A new v1 cpuset starts with empty `cpuset.cpus` and `cpuset.mems`, and no task can
/// join it until both are set (ENOSPC) — nor can anything below it get cpus. Copy the
/// parent's values into every empty level, existing ones included: a level someone else
/// left empty would block everything kraal creates below it.
fn inherit_cpuset(parent: &Path, dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = fs::read(&dir.join(file))?;
        if !own.trim().is_empty() {
            continue;
        }
        let inherited = fs::read(&parent.join(file))?;
        let value = inherited.trim();
        if value.is_empty() {
            warn!(parent = %parent.display(), file, "parent cpuset is empty too; cannot fill it in");
            continue;
        }
        fs::write(&dir.join(file), value)?;
    }
    Ok(())
}

/// Reclaims the memory charged to `dir` and below (page cache mostly; the processes are
/// gone). Without it, a removed cgroup lingers as a "dying" memcg for as long as any of
/// its pages stay cached.
pub(crate) fn force_empty(dir: &Path) -> Result<(), CgroupError> {
    fs::write(&dir.join("memory.force_empty"), "0")
}

/// OOM kills in `dir` and below. v1 counts a kill only in the victim's own memcg (the
/// counter does not propagate to ancestors as it does on v2), so sum the subtree.
pub(crate) fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    let mut total = 0u64;
    for d in fs::subtree_deepest_first(dir)? {
        if let Some(text) = fs::read_opt(&d.join("memory.oom_control"))? {
            total = total.saturating_add(stat_file::flat_keyed(&text, "oom_kill").unwrap_or(0));
        }
    }
    Ok(total)
}
