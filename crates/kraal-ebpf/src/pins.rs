//! The pin layout both loaders share: `<root>/pods/<pod id>/<hook>`, one pinned link per hook
//! a pod has. The pins are what keeps a pod's enforcement alive without a loader, and what a
//! new loader finds the pods by.

use std::io::ErrorKind;
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

/// The directories a loader keeps under its root: maps, classifiers, pods' links.
const LOADER_DIRS: [&str; 3] = ["maps", "progs", "pods"];

/// Removes a loader's pin tree (`<root>/{maps,progs,pods}`, then `root` itself if nothing
/// else is in it) when no pod is pinned under `<root>/pods`: with no pod attached nothing
/// needs the maps, and a node with nothing to enforce should keep nothing pinned. A root
/// that does not exist is fine. Returns whether `root` is gone; false when a pod still
/// holds it (then nothing is touched) or it holds something else.
///
/// The caller must make sure no loader of this root attaches a pod meanwhile, and drop any
/// loaded instance first: its maps would no longer be found by the next loader.
pub fn remove_unused_pins(root: &Path) -> Result<bool> {
    let pods = root.join("pods");
    match std::fs::read_dir(&pods) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Ok(false);
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io("listing", &pods)(e)),
    }
    for name in LOADER_DIRS {
        remove_pin_dir(&root.join(name))?;
    }
    match std::fs::remove_dir(root) {
        Ok(()) => {
            tracing::info!(root = %root.display(), "no pod is attached: pins removed");
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(io("removing", root)(e)),
    }
}

/// Unpins every object in `dir` (on bpffs, unlinking a pin drops its reference) and removes it.
fn remove_pin_dir(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io("listing", dir))?.path();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io("unpinning", &path)(e)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_without_pods_is_removed_and_one_with_a_pod_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        for sub in ["maps", "progs", "pods/7"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("maps/m"), b"").unwrap();
        std::fs::write(root.join("pods/7/egress"), b"").unwrap();
        assert!(!remove_unused_pins(&root).unwrap());
        assert!(root.join("maps/m").exists(), "a pod's maps were removed");

        std::fs::remove_dir_all(root.join("pods/7")).unwrap();
        assert!(remove_unused_pins(&root).unwrap());
        assert!(!root.exists());
        assert!(remove_unused_pins(&root).unwrap(), "a missing root is fine");

        // Something else in the root (another loader's tree) keeps the root itself.
        std::fs::create_dir_all(root.join("bandwidth/maps")).unwrap();
        std::fs::create_dir_all(root.join("maps")).unwrap();
        assert!(!remove_unused_pins(&root).unwrap());
        assert!(!root.join("maps").exists());
        assert!(root.join("bandwidth/maps").exists());
    }
}
