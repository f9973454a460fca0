//! The bpffs pin trees of kraald's loaders: the port programs' at the pin root, the bandwidth
//! programs' beside them in `<root>/bandwidth`. Made when a loader first loads, and removed
//! again once no pod is attached, so a node with nothing to enforce keeps nothing pinned;
//! while a pod is attached its pins stay, also across a kraald restart, which re-adopts them.

use std::path::Path;
use std::sync::Mutex;

use crate::config::Config;

const BPFFS: &str = "/sys/fs/bpf";
/// Where kraald's default pin roots live (see [`Config::bpf_pin_root`]).
const DEFAULT_PARENT: &str = "/sys/fs/bpf/kraal";

/// Held while a pin tree is made and loaded into, or removed: a loader must never find its
/// root taken away between making it and pinning into it. Taken after a loader's own lock.
static PIN_TREES: Mutex<()> = Mutex::new(());

/// Makes `root` ready (bpffs mounted on /sys/fs/bpf when `root` is under it, the directory
/// created) and loads from it with `load`.
pub fn load<T>(root: &Path, load: impl FnOnce(&Path) -> Result<T, String>) -> Result<T, String> {
    let _trees = PIN_TREES.lock().unwrap_or_else(|p| p.into_inner());
    if root.starts_with(BPFFS) {
        kraal_ebpf::ensure_bpffs(Path::new(BPFFS))
            .map_err(|e| format!("mounting bpffs on {BPFFS}: {e}"))?;
    }
    std::fs::create_dir_all(root).map_err(|e| format!("creating {}: {e}", root.display()))?;
    load(root)
}

/// Removes the pin tree `tree` (the port programs' root or the bandwidth programs') if no
/// pod is attached to it, then the pin root and the default roots' parent once empty. The
/// caller holds the lock of the tree's loader, with any loaded instance dropped: only that
/// loader could attach a pod meanwhile. Best effort: a failure is logged, and the next
/// release (or a later kraald's) tries again.
pub fn release_unused(config: &Config, tree: &Path) {
    let _trees = PIN_TREES.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = kraal_ebpf::remove_unused_pins(tree) {
        tracing::warn!(root = %tree.display(), error = %e, "removing unused pins");
        return;
    }
    // Kept while the other loader's tree is in it; the last one out removes it.
    let root = config.bpf_pin_root();
    if tree != root {
        let _ = std::fs::remove_dir(&root);
    }
    if root.parent() == Some(Path::new(DEFAULT_PARENT)) {
        // Shared by every kraald of the node: only removed when it is empty.
        let _ = std::fs::remove_dir(DEFAULT_PARENT);
    }
}
