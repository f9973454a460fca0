//! cgroup v2: the single unified hierarchy (the whole of `/sys/fs/cgroup` on v2 hosts, a
//! second controller-less tree such as `/sys/fs/cgroup/unified` on hybrid hosts).

use std::path::Path;

use tracing::{debug, warn};

use crate::{CgroupError, CgroupPath, fs, stat_file};

/// The controllers kraal's pod and container settings use.
const WANTED_CONTROLLERS: &[&str] = &["cpu", "cpuset", "hugetlb", "io", "memory", "pids"];

/// mkdir -p of `path` under the unified mount.
///
/// With `enable` (pure v2 hosts) the wanted controllers are enabled in every ancestor on
/// the way down: a v2 controller's files appear in a cgroup only when its parent lists it
/// in `cgroup.subtree_control`, and a parent can only enable what its own parent enabled,
/// hence top-down.
///
/// On hybrid hosts (`enable` false) the unified tree only carries membership for eBPF
/// programs; resources are controlled in v1. Enabling anything there (a controller not
/// mounted in v1, e.g. hugetlb, may be bound to cgroup2) would subject the pod cgroup to
/// the no-internal-process rule, and a process placed at pod level next to container
/// cgroups would get EBUSY. It would also change the host's unified root.
pub(crate) fn create(mount: &Path, path: &CgroupPath, enable: bool) -> Result<(), CgroupError> {
    let mut dir = mount.to_path_buf();
    for name in path.components() {
        if enable {
            enable_controllers(&dir)?;
        }
        dir.push(name);
        if fs::mkdir(&dir)? {
            debug!(dir = %dir.display(), "created cgroup");
        }
    }
    Ok(())
}

/// Enables each wanted controller that `dir` has but has not yet enabled for its
/// children.
///
/// A controller that cannot be enabled is logged, not fatal: the cgroup is still usable,
/// and setting a limit of that controller later fails naming the missing file. (Typical
/// causes: processes in a non-root `dir` — the "no internal processes" rule — or a
/// controller reserved by another manager.)
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let Some(available) = fs::read_opt(&dir.join("cgroup.controllers"))? else {
        warn!(dir = %dir.display(), "no cgroup.controllers: not a cgroup2 directory?");
        return Ok(());
    };
    let control = dir.join("cgroup.subtree_control");
    let enabled = fs::read_opt(&control)?.unwrap_or_default();
    let available = stat_file::controllers(&available);
    let enabled = stat_file::controllers(&enabled);
    for controller in WANTED_CONTROLLERS {
        if !available.contains(controller) || enabled.contains(controller) {
            continue;
        }
        // One write per controller, so one refusal does not block the others.
        match fs::write(&control, &format!("+{controller}")) {
            Ok(()) => debug!(dir = %dir.display(), controller, "enabled controller"),
            Err(error) => warn!(%error, "controller not enabled for child cgroups"),
        }
    }
    Ok(())
}

/// Reclaims the memory charged to `dir` and below before it is removed (see
/// `v1::force_empty` for why). Asks for the whole current usage; the kernel answers
/// EAGAIN when it could not reclaim all of it (kernel memory, pages freed meanwhile),
/// which is expected. No memory controller or no `memory.reclaim` (Linux < 5.19): nothing
/// to do.
pub(crate) fn reclaim(dir: &Path) -> Result<(), CgroupError> {
    let Some(current) = fs::read_u64_opt(&dir.join("memory.current"))? else {
        return Ok(());
    };
    if current == 0 {
        return Ok(());
    }
    match fs::write(&dir.join("memory.reclaim"), &current.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            debug!(dir = %dir.display(), "memory.reclaim could not reclaim everything");
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// OOM kills in `dir` and below: the `oom_kill` count of `memory.events`, which is
/// hierarchical — unless cgroup2 is mounted with `memory_localevents`, in which case the
/// subtree is summed.
pub(crate) fn oom_kills(dir: &Path, local_events: bool) -> Result<u64, CgroupError> {
    let count = |d: &Path| -> Result<u64, CgroupError> {
        Ok(fs::read_opt(&d.join("memory.events"))?
            .and_then(|text| stat_file::flat_keyed(&text, "oom_kill"))
            .unwrap_or(0))
    };
    if !local_events {
        return count(dir);
    }
    let mut total = 0u64;
    for d in fs::subtree_deepest_first(dir)? {
        total = total.saturating_add(count(&d)?);
    }
    Ok(total)
}
