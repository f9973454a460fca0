//! `kraal-monitor delete`: force-delete a container (kill its processes, remove its
//! libcontainer state and cgroup). Deleting a missing container succeeds.

use std::fs;
use std::path::Path;

use libcontainer::container::Container;

use super::config::validate_id;
use super::libcontainer_error;

/// Entry point of `kraal-monitor delete --root <root> --id <id>`.
pub(crate) fn run(root: &Path, id: &str) -> i32 {
    match delete(root, id) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kraal-monitor delete: {e}");
            1
        }
    }
}

fn delete(root: &Path, id: &str) -> Result<(), String> {
    validate_id(id).map_err(|e| e.to_string())?;
    let dir = root.join(id);
    if !dir.exists() {
        return Ok(());
    }
    if !dir.join("state.json").exists() {
        // Creation died before libcontainer wrote any state: nothing runs, only the
        // directory is left.
        return fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()));
    }
    let mut container = Container::load(dir)
        .map_err(|e| format!("loading container {id:?}: {}", libcontainer_error(&e)))?;
    container
        .delete(true)
        .map_err(|e| format!("deleting container {id:?}: {}", libcontainer_error(&e)))
}
