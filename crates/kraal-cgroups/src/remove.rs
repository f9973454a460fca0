//! Removing cgroups: wait briefly for processes to leave, reclaim page cache, rmdir
//! deepest first, in every hierarchy.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::{CgroupError, CgroupPath, Cgroups, TreeKind, fs, v1, v2};

/// How long `remove` waits for processes to leave. Killed processes leave their cgroups
/// as they exit, a moment after the kill; anything still there after this is alive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// rmdir can report EBUSY for a short while after the last task left (the kernel drops
/// its references asynchronously); retry that long.
const RMDIR_TIMEOUT: Duration = Duration::from_millis(500);
const FIRST_DELAY: Duration = Duration::from_millis(10);
const MAX_DELAY: Duration = Duration::from_millis(100);

impl Cgroups {
    /// Removes `rel` and everything below it, deepest first, in every hierarchy.
    ///
    /// Before each rmdir the memory charged to the cgroup is reclaimed (v1
    /// `memory.force_empty`, v2 `memory.reclaim`), so usage really drops and no dying
    /// cgroups pile up; a failed reclaim is logged, not fatal. Missing directories are
    /// fine, so removing twice succeeds. If processes are still in `rel` or below after
    /// a short wait, nothing is removed and the error ([`CgroupError::Busy`]) names the
    /// cgroup and the pids.
    pub fn remove(&self, rel: &str) -> Result<(), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        self.wait_until_empty(&path)?;
        for tree in self.trees() {
            for dir in fs::subtree_deepest_first(&path.under(tree.mount))? {
                if let Err(error) = reclaim_one(tree.kind, &dir) {
                    warn!(%error, "page cache not reclaimed before removing the cgroup");
                }
                rmdir_with_retry(&dir)?;
                debug!(dir = %dir.display(), "removed cgroup");
            }
        }
        Ok(())
    }

    /// Reclaims the page cache charged to `rel` and below, in the memory hierarchy (v1
    /// memory controller, or the unified tree when it has the memory controller). The
    /// kernel reclaims hierarchically, so one write covers the subtree.
    pub fn reclaim(&self, rel: &str) -> Result<(), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        if let Some(dir) = self.v1_dir("memory", &path) {
            v1::force_empty(&dir)
        } else if let Some(dir) = self.unified_dir(&path) {
            v2::reclaim(&dir)
        } else {
            Ok(())
        }
    }

    /// Waits up to [`DRAIN_TIMEOUT`] until no process is in `path` or below, in any
    /// hierarchy.
    fn wait_until_empty(&self, path: &CgroupPath) -> Result<(), CgroupError> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut delay = FIRST_DELAY;
        loop {
            let Some((dir, pids)) = self.first_populated(path)? else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy { path: dir, pids });
            }
            sleep(delay);
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// The deepest cgroup at or below `path` that holds processes, with its pids.
    fn first_populated(
        &self,
        path: &CgroupPath,
    ) -> Result<Option<(PathBuf, Vec<i32>)>, CgroupError> {
        for tree in self.trees() {
            for dir in fs::subtree_deepest_first(&path.under(tree.mount))? {
                let pids = fs::procs(&dir)?;
                if !pids.is_empty() {
                    return Ok(Some((dir, pids)));
                }
            }
        }
        Ok(None)
    }
}

fn reclaim_one(kind: TreeKind, dir: &Path) -> Result<(), CgroupError> {
    match kind {
        TreeKind::V1 { memory: true, .. } => v1::force_empty(dir),
        TreeKind::V1 { .. } => Ok(()),
        TreeKind::Unified => v2::reclaim(dir),
    }
}

/// rmdir, tolerating a directory that is already gone and retrying a transient EBUSY.
fn rmdir_with_retry(dir: &Path) -> Result<(), CgroupError> {
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    let mut delay = FIRST_DELAY;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(delay);
                delay = (delay * 2).min(MAX_DELAY);
            }
            Err(err) => {
                return Err(CgroupError::Remove {
                    path: dir.to_path_buf(),
                    err,
                });
            }
        }
    }
}
