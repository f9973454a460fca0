//! Small wrappers over cgroupfs reads and writes that turn `io::Error` into a
//! [`CgroupError`] naming the file and the action.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::CgroupError;
use crate::stat_file;

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|err| CgroupError::Read {
        path: path.to_path_buf(),
        err,
    })
}

/// Like [`read`], but a missing file is `None`: many files exist only when a controller
/// is enabled or the kernel is new enough.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(CgroupError::Read {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// A file holding one number, e.g. `memory.usage_in_bytes`; missing is `None`.
pub(crate) fn read_u64_opt(path: &Path) -> Result<Option<u64>, CgroupError> {
    read_opt(path)?
        .map(|text| parse_at(path, stat_file::single_u64(&text)))
        .transpose()
}

/// Pids listed in `dir/cgroup.procs`; a directory that vanished meanwhile has none.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    match read_opt(&path)? {
        Some(text) => parse_at(&path, stat_file::pids(&text)),
        None => Ok(Vec::new()),
    }
}

pub(crate) fn parse_at<T>(path: &Path, parsed: Result<T, String>) -> Result<T, CgroupError> {
    parsed.map_err(|reason| CgroupError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes `value` in a single write(2), as cgroupfs expects. Never creates the file: a
/// missing control file means a missing controller, and that must be an error.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|err| CgroupError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            err,
        })
}

/// Creates one directory level; true when it was created now, false when it existed.
pub(crate) fn mkdir(path: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(err) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            err,
        }),
    }
}

/// Child cgroups of `dir` (its subdirectories); none when `dir` does not exist.
pub(crate) fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let list_err = |err| CgroupError::List {
        path: dir.to_path_buf(),
        err,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(list_err(err)),
    };
    let mut dirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(list_err)?;
        if entry.file_type().map_err(list_err)?.is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// `dir` and every cgroup below it, children before their parents, so the list can be
/// removed front to back (rmdir of a cgroup with children fails).
pub(crate) fn subtree_deepest_first(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    // Iterative post-order, so a deep tree cannot overflow the stack.
    let mut stack = vec![(dir.to_path_buf(), false)];
    while let Some((d, expanded)) = stack.pop() {
        if expanded {
            out.push(d);
            continue;
        }
        let children = subdirs(&d)?;
        stack.push((d, true));
        stack.extend(children.into_iter().map(|c| (c, false)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_lists_children_before_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pod");
        for d in ["pod/a/x", "pod/a/y", "pod/b"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        std::fs::write(root.join("cgroup.procs"), "").unwrap();
        let list = subtree_deepest_first(&root).unwrap();
        let rel: Vec<_> = list
            .iter()
            .map(|p| {
                p.strip_prefix(tmp.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(rel.len(), 5);
        let pos = |n: &str| rel.iter().position(|r| r == n).unwrap();
        assert!(pos("pod/a/x") < pos("pod/a"));
        assert!(pos("pod/a/y") < pos("pod/a"));
        assert!(pos("pod/a") < pos("pod"));
        assert!(pos("pod/b") < pos("pod"));
        assert_eq!(rel.last().unwrap(), "pod");
        assert!(
            subtree_deepest_first(&tmp.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn mkdir_is_idempotent_but_not_over_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("c");
        assert!(mkdir(&d).unwrap());
        assert!(!mkdir(&d).unwrap());
        let f = tmp.path().join("cgroup.procs");
        std::fs::write(&f, "").unwrap();
        let err = mkdir(&f).unwrap_err().to_string();
        assert!(err.starts_with("creating cgroup "), "{err}");
    }

    #[test]
    fn write_never_creates_files() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("memory.reclaim");
        let err = write(&f, "1").unwrap_err();
        assert!(err.is_not_found());
        assert!(!f.exists());
    }
}
