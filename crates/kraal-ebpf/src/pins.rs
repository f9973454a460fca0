//! The pin layout both loaders share: `<root>/pods/<pod id>/<hook>`, one pinned link per hook
//! a pod has. The pins are what keeps a pod's enforcement alive without a loader, and what a
//! new loader finds the pods by.

use std::path::Path;

use crate::error::{Result, io};

/// The pods with a directory under `pods_dir` and the hooks pinned in each (sorted, by pod),
/// naming hooks with `hook`; entries it does not know are skipped.
pub(crate) fn pinned_pods<H: Ord>(
    pods_dir: &Path,
    hook: impl Fn(&str) -> Option<H>,
) -> Result<Vec<(u64, Vec<H>)>> {
    let mut pods = Vec::new();
    for entry in std::fs::read_dir(pods_dir).map_err(io("listing", pods_dir))? {
        let entry = entry.map_err(io("listing", pods_dir))?;
        let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let mut hooks = Vec::new();
        for pin in std::fs::read_dir(entry.path()).map_err(io("listing", entry.path()))? {
            let pin = pin.map_err(io("listing", entry.path()))?;
            if let Some(h) = pin.file_name().to_str().and_then(&hook) {
                hooks.push(h);
            }
        }
        hooks.sort();
        pods.push((id, hooks));
    }
    pods.sort_by_key(|(id, _)| *id);
    Ok(pods)
}

/// Detaches and unpins every link of a pod's pin directory and removes it. Returns false if
/// there was none.
pub(crate) fn unpin_pod(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let path = entry.map_err(io("listing", dir))?.path();
        // The link may already be detached (its cgroup removed): unpinning still frees it.
        if let Err(e) = crate::sys::detach_pinned_link(&path) {
            tracing::debug!(pin = %path.display(), error = %e, "link detach");
        }
        std::fs::remove_file(&path).map_err(io("unpinning", &path))?;
    }
    std::fs::remove_dir(dir).map_err(io("removing", dir))?;
    Ok(true)
}
