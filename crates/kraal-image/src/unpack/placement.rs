//! Placing objects inside the layer root without ever following a symlink.
//!
//! The layer root is a fresh directory under the store's `tmp/` that only this unpack
//! writes to, so checking each existing parent with `lstat` before creating something is
//! free of races: nothing else can swap a directory for a symlink between the check and
//! the use. The final component is never followed either: existing objects are removed
//! (not written through), files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a placement failed: a rule of the layer format was broken, or the local file
/// system failed.
#[derive(Debug)]
pub(crate) enum PlaceError {
    Refused(String),
    Io(String, io::Error),
}

/// Makes sure every directory on the way to `rel` (exclusive) exists inside `root` and
/// is a real directory; missing ones are created with mode 0755 as Docker does.
pub(crate) fn ensure_parents(root: &Path, rel: &Path) -> Result<(), PlaceError> {
    match rel.parent() {
        Some(parent) => ensure_dirs(root, parent),
        None => Ok(()),
    }
}

/// Like [`ensure_parents`], but `rel` itself must end up a directory too.
pub(crate) fn ensure_dirs(root: &Path, rel: &Path) -> Result<(), PlaceError> {
    let mut current = root.to_path_buf();
    let mut shown = PathBuf::new();
    for component in rel.components() {
        current.push(component);
        shown.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(PlaceError::Refused(format!(
                    "its parent {} is a symlink, which unpacking never follows",
                    shown.display()
                )));
            }
            Ok(_) => {
                return Err(PlaceError::Refused(format!(
                    "its parent {} is not a directory",
                    shown.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&current).map_err(|e| {
                    PlaceError::Io(format!("creating parent directory {}", shown.display()), e)
                })?;
                set_mode(&current, 0o755).map_err(|e| {
                    PlaceError::Io(format!("setting mode of {}", shown.display()), e)
                })?;
            }
            Err(e) => {
                return Err(PlaceError::Io(format!("inspecting {}", shown.display()), e));
            }
        }
    }
    Ok(())
}

/// Checks that an existing entry can be reached from `root` through real directories
/// only (the entry itself may be anything but a directory): the rule for hard link
/// targets, which must not escape through a symlink.
pub(crate) fn check_link_target(root: &Path, rel: &Path) -> Result<PathBuf, PlaceError> {
    let mut current = root.to_path_buf();
    let mut shown = PathBuf::new();
    let count = rel.components().count();
    for (i, component) in rel.components().enumerate() {
        current.push(component);
        shown.push(component);
        let meta = match fs::symlink_metadata(&current) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PlaceError::Refused(format!(
                    "hard link target {} does not exist in this layer",
                    rel.display()
                )));
            }
            Err(e) => return Err(PlaceError::Io(format!("inspecting {}", shown.display()), e)),
        };
        let last = i + 1 == count;
        if !last && meta.file_type().is_symlink() {
            return Err(PlaceError::Refused(format!(
                "hard link target {} goes through symlink {}",
                rel.display(),
                shown.display()
            )));
        }
        if !last && !meta.file_type().is_dir() {
            return Err(PlaceError::Refused(format!(
                "hard link target {}: {} is not a directory",
                rel.display(),
                shown.display()
            )));
        }
        if last && meta.file_type().is_dir() {
            return Err(PlaceError::Refused(format!(
                "hard link target {} is a directory",
                rel.display()
            )));
        }
    }
    Ok(current)
}

/// What is at a path before an entry is placed there.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    Nothing,
    /// A directory, kept because the new entry is a directory too (tar semantics:
    /// a repeated directory entry updates its metadata, the contents stay).
    KeptDirectory,
}

/// Clears the way for a new entry at `path` (whose parents are already checked):
/// an earlier entry of the same layer at this path is replaced, never written through.
pub(crate) fn clear_target(path: &Path, new_is_dir: bool) -> io::Result<Existing> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_dir() => {
            if new_is_dir {
                Ok(Existing::KeptDirectory)
            } else {
                // std's remove_dir_all does not follow symlinks inside the tree.
                fs::remove_dir_all(path)?;
                Ok(Existing::Nothing)
            }
        }
        Ok(_) => {
            fs::remove_file(path)?;
            Ok(Existing::Nothing)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(e) => Err(e),
    }
}

/// chmod of a path known not to be a symlink.
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn creates_missing_parents_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        ensure_parents(root, Path::new("a/b/c")).unwrap();
        assert!(root.join("a/b").is_dir());
        assert!(!root.join("a/b/c").exists());

        symlink("/etc", root.join("a/link")).unwrap();
        match ensure_parents(root, Path::new("a/link/passwd")) {
            Err(PlaceError::Refused(msg)) => assert!(msg.contains("a/link is a symlink"), "{msg}"),
            other => panic!("{other:?}"),
        }
        fs::write(root.join("a/file"), b"x").unwrap();
        match ensure_dirs(root, Path::new("a/file/x")) {
            Err(PlaceError::Refused(msg)) => assert!(msg.contains("not a directory"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn link_targets_must_not_traverse_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"x").unwrap();
        symlink("d", root.join("s")).unwrap();
        assert!(check_link_target(root, Path::new("d/f")).is_ok());
        // A link to the symlink itself is fine: it is not followed.
        assert!(check_link_target(root, Path::new("s")).is_ok());
        assert!(matches!(
            check_link_target(root, Path::new("s/f")),
            Err(PlaceError::Refused(_))
        ));
        assert!(matches!(
            check_link_target(root, Path::new("d")),
            Err(PlaceError::Refused(_))
        ));
        assert!(matches!(
            check_link_target(root, Path::new("nope")),
            Err(PlaceError::Refused(_))
        ));
    }

    #[test]
    fn clear_target_replaces_but_keeps_directories_for_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/f"), b"x").unwrap();
        assert_eq!(
            clear_target(&root.join("d"), true).unwrap(),
            Existing::KeptDirectory
        );
        assert!(root.join("d/f").exists());
        assert_eq!(
            clear_target(&root.join("d"), false).unwrap(),
            Existing::Nothing
        );
        assert!(!root.join("d").exists());
        symlink("/etc/passwd", root.join("l")).unwrap();
        clear_target(&root.join("l"), false).unwrap();
        assert!(fs::symlink_metadata(root.join("l")).is_err());
        assert!(Path::new("/etc/passwd").exists());
    }
}
