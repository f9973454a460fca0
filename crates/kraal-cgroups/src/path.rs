//! Validation of the cgroup paths kraal is handed.
//!
//! The path comes from kubelet (`cgroup_parent`) and is joined under every hierarchy's
//! mount point, where kraal later removes whole subtrees. A `..` or an empty component
//! could therefore point removal at someone else's cgroups, so anything but a plain
//! absolute path of normal names is refused up front, with the reason.

use std::path::{Path, PathBuf};

use crate::CgroupError;

/// A validated cgroupfs-form path below a hierarchy's root, e.g. `/kubepods/besteffort/pod1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupPath {
    raw: String,
}

impl CgroupPath {
    /// Validates `rel`: absolute, not the root itself, no empty, `.` or `..` components,
    /// no NUL byte.
    pub fn parse(rel: &str) -> Result<Self, CgroupError> {
        let invalid = |reason| CgroupError::InvalidPath {
            path: rel.to_string(),
            reason,
        };
        if rel.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let Some(rest) = rel.strip_prefix('/') else {
            return Err(invalid(
                "must be an absolute cgroupfs path such as /kubepods/pod1 (the cgroupfs driver does not take systemd slice names)",
            ));
        };
        if rest.is_empty() {
            // Removing "/" would mean every cgroup on the machine.
            return Err(invalid(
                "names the root cgroup; kraal only manages cgroups below it",
            ));
        }
        for component in rest.split('/') {
            match component {
                "" => return Err(invalid("has an empty component (// or a trailing /)")),
                "." | ".." => return Err(invalid("has a . or .. component")),
                _ => {}
            }
        }
        Ok(CgroupPath {
            raw: rel.to_string(),
        })
    }

    /// The path as given, with its leading slash.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The names from the top level down, e.g. `["kubepods", "pod1"]`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.raw[1..].split('/')
    }

    /// This cgroup's directory in the hierarchy mounted at `root`.
    pub fn under(&self, root: &Path) -> PathBuf {
        root.join(&self.raw[1..])
    }
}

impl std::fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(rel: &str) -> String {
        match CgroupPath::parse(rel) {
            Err(e) => e.to_string(),
            Ok(p) => panic!("{rel:?} accepted as {p:?}"),
        }
    }

    #[test]
    fn accepts_kubelet_cgroupfs_paths() {
        let p = CgroupPath::parse("/kubepods/besteffort/pod1234").unwrap();
        assert_eq!(p.as_str(), "/kubepods/besteffort/pod1234");
        assert_eq!(
            p.components().collect::<Vec<_>>(),
            ["kubepods", "besteffort", "pod1234"]
        );
        assert_eq!(
            p.under(Path::new("/sys/fs/cgroup/memory")),
            PathBuf::from("/sys/fs/cgroup/memory/kubepods/besteffort/pod1234")
        );
        assert!(CgroupPath::parse("/a").is_ok());
        assert!(CgroupPath::parse("/a.b/c..d/...").is_ok());
    }

    #[test]
    fn rejects_relative_and_systemd_form() {
        assert!(reason("kubepods/pod1").contains("absolute"));
        assert!(reason("kubepods-besteffort-pod1.slice").contains("systemd"));
        assert!(reason("").contains("absolute"));
    }

    #[test]
    fn rejects_root() {
        assert!(reason("/").contains("root cgroup"));
    }

    #[test]
    fn rejects_dot_dot_and_dot() {
        let msg = reason("/kubepods/../process_api");
        assert!(msg.contains("\"/kubepods/../process_api\""), "{msg}");
        assert!(msg.contains(".."), "{msg}");
        assert!(reason("/..").contains(".."));
        assert!(reason("/kubepods/./pod").contains(". or .."));
    }

    #[test]
    fn rejects_empty_components() {
        assert!(reason("/kubepods//pod1").contains("empty component"));
        assert!(reason("/kubepods/").contains("empty component"));
        assert!(reason("//").contains("empty component"));
    }

    #[test]
    fn rejects_nul() {
        assert!(reason("/kube\0pods").contains("NUL"));
    }
}
