//! Pod and container cgroups for kraal on cgroup v1, v2 and hybrid hosts.
//!
//! [`Cgroups`] is the set of hierarchies mounted on this host, read from
//! `/proc/self/mountinfo`. Every operation takes a cgroupfs-form path such as
//! `/kubepods/besteffort/pod1234` (what kubelet passes as `cgroup_parent`) and applies it
//! to each hierarchy kraal uses: the v1 controller trees and, on v2 and hybrid hosts, the
//! unified tree — eBPF cgroup programs attach only to cgroup2, so on hybrid hosts kraal's
//! pods exist in both.
//!
//! Module map: `mountinfo` (detection), `path` (validation), `v1` / `v2` (per-version
//! creation, reclaim, OOM counters), `remove`, `stats`, `stat_file` (pure parsers), `fs`
//! (file access with errors that name the file), `resources` (limits and policy files,
//! with `resources/v1` / `resources/v2` holding the per-version files and write order),
//! `freezer` (freeze and thaw a subtree, v1 freezer or cgroup2 `cgroup.freeze`).

// Library code of a long-running daemon: unwrap/expect only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod freezer;
mod fs;
mod mountinfo;
mod path;
mod remove;
mod resources;
mod stat_file;
mod stats;
pub mod systemd;
mod v1;
mod v2;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;
use tracing::debug;

pub use error::CgroupError;
pub use freezer::{FreezerKind, FreezerState};
pub use path::CgroupPath;
pub use resources::{MemoryHigh, Resources, Written, shares_to_weight, weight_to_shares};
pub use stats::CgroupStats;

/// Where the kernel says what is mounted.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The v1 controllers kraal creates pod and container cgroups in, when mounted.
pub const MANAGED_V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices", "hugetlb",
];

/// The key of the cgroup2 tree in [`Cgroups::dirs`].
pub const UNIFIED_KEY: &str = "unified";

/// How the host's cgroups are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Hierarchy {
    /// Only v1 controller hierarchies.
    V1,
    /// Only the unified cgroup2 hierarchy.
    V2,
    /// v1 controllers plus a cgroup2 mount (usually without controllers), e.g.
    /// `/sys/fs/cgroup/unified`.
    Hybrid,
}

/// The cgroup hierarchies of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    /// v1 controller name -> mount directory; co-mounted controllers share a directory.
    v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount, if any.
    unified: Option<PathBuf>,
    /// cgroup2 is mounted with `memory_localevents`: `memory.events` is not hierarchical.
    unified_local_events: bool,
}

/// One directory tree kraal manages, and what it holds.
#[derive(Debug, Clone, Copy)]
struct Tree<'a> {
    mount: &'a Path,
    kind: TreeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreeKind {
    V1 { cpuset: bool, memory: bool },
    Unified,
}

impl Cgroups {
    /// Detects the hierarchies from [`MOUNTINFO`].
    pub fn detect() -> Result<Self, CgroupError> {
        let text = fs::read(Path::new(MOUNTINFO))?;
        let cgroups = Self::from_mountinfo(&text)?;
        debug!(hierarchy = ?cgroups.hierarchy(), v1 = ?cgroups.v1, unified = ?cgroups.unified, "detected cgroups");
        Ok(cgroups)
    }

    /// Builds from mountinfo text (testable form of [`Cgroups::detect`]).
    pub fn from_mountinfo(text: &str) -> Result<Self, CgroupError> {
        let mounts = mountinfo::parse(text).map_err(|reason| CgroupError::Parse {
            path: MOUNTINFO.into(),
            reason,
        })?;
        if mounts.v1.is_empty() && mounts.unified.is_none() {
            return Err(CgroupError::NoCgroups {
                path: MOUNTINFO.into(),
            });
        }
        let unified_local_events = mounts
            .unified
            .as_ref()
            .is_some_and(|m| m.super_options.iter().any(|o| o == "memory_localevents"));
        Ok(Cgroups {
            v1: mounts
                .v1
                .into_iter()
                .map(|(controller, m)| (controller, m.mount_point))
                .collect(),
            unified: mounts.unified.map(|m| m.mount_point),
            unified_local_events,
        })
    }

    pub fn hierarchy(&self) -> Hierarchy {
        match (self.v1.is_empty(), self.unified.is_some()) {
            (false, true) => Hierarchy::Hybrid,
            (false, false) => Hierarchy::V1,
            (true, _) => Hierarchy::V2,
        }
    }

    /// The cgroup driver this crate implements (paths are plain cgroupfs directories).
    pub fn driver_name(&self) -> &'static str {
        "cgroupfs"
    }

    /// The cgroup2 mount point, None on pure v1 hosts.
    pub fn unified_root(&self) -> Option<&Path> {
        self.unified.as_deref()
    }

    /// The mount point of one v1 controller, if mounted.
    pub fn v1_root(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }

    /// Creates `rel` (mkdir -p) in every v1 controller kraal uses that is mounted and in
    /// the unified tree. On v1 cpuset every level gets the parent's cpus and mems; on pure
    /// v2 each ancestor enables the cpu, cpuset, hugetlb, io, memory and pids controllers
    /// it has. On hybrid hosts no controller is enabled in the unified tree, which only
    /// carries membership (for eBPF), so processes may sit at any level. Idempotent.
    pub fn create(&self, rel: &str) -> Result<(), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        for tree in self.trees() {
            match tree.kind {
                TreeKind::V1 { cpuset, .. } => v1::create(tree.mount, &path, cpuset)?,
                TreeKind::Unified => {
                    v2::create(tree.mount, &path, self.hierarchy() == Hierarchy::V2)?
                }
            }
        }
        debug!(cgroup = %path, "cgroup ready");
        Ok(())
    }

    /// The cgroup2 directory of `rel` (under the unified mount: `/sys/fs/cgroup` on v2,
    /// e.g. `/sys/fs/cgroup/unified` on hybrid), None on pure v1. eBPF cgroup programs
    /// attach there.
    pub fn unified_path(&self, rel: &str) -> Result<Option<PathBuf>, CgroupError> {
        Ok(self.unified_dir(&CgroupPath::parse(rel)?))
    }

    /// The v1 directory of `rel` for one controller, None when it is not mounted.
    pub fn v1_path(&self, controller: &str, rel: &str) -> Result<Option<PathBuf>, CgroupError> {
        Ok(self.v1_dir(controller, &CgroupPath::parse(rel)?))
    }

    /// The directory of `rel` in every hierarchy kraal manages, keyed by hierarchy: each
    /// mounted v1 controller of [`MANAGED_V1_CONTROLLERS`] by its name (co-mounted ones,
    /// e.g. `cpu` and `cpuacct`, name the same directory) and the cgroup2 tree as
    /// [`UNIFIED_KEY`]. On pure v2 hosts that is the only key. The directories need not
    /// exist. This is where kraal reads and writes `rel`'s files, so status output and
    /// tests take it from here instead of guessing mount points.
    pub fn dirs(&self, rel: &str) -> Result<BTreeMap<String, PathBuf>, CgroupError> {
        let path = CgroupPath::parse(rel)?;
        let mut dirs: BTreeMap<String, PathBuf> = MANAGED_V1_CONTROLLERS
            .iter()
            .filter_map(|c| Some((c.to_string(), self.v1_dir(c, &path)?)))
            .collect();
        if let Some(dir) = self.unified_dir(&path) {
            dirs.insert(UNIFIED_KEY.to_string(), dir);
        }
        Ok(dirs)
    }

    /// Moves `pid` into `rel` of the unified tree. On hybrid hosts a runtime that knows
    /// only the v1 controllers leaves processes at the cgroup2 root, where the pod's eBPF
    /// programs do not see them. No-op on pure v1.
    pub fn add_to_unified(&self, rel: &str, pid: i32) -> Result<(), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        match self.unified_dir(&path) {
            Some(dir) => fs::write(&dir.join("cgroup.procs"), &pid.to_string()),
            None => Ok(()),
        }
    }

    /// Moves `pid` into `rel` in every hierarchy kraal manages (v1 controllers and
    /// unified), e.g. a pod's infra process.
    pub fn add_pid(&self, rel: &str, pid: i32) -> Result<(), CgroupError> {
        let path = CgroupPath::parse(rel)?;
        for tree in self.trees() {
            fs::write(
                &path.under(tree.mount).join("cgroup.procs"),
                &pid.to_string(),
            )?;
        }
        Ok(())
    }

    /// Every process in `rel` and below, sorted, from the `cgroup.procs` files of all
    /// managed hierarchies (a process may have been placed in only some of them). Empty
    /// when `rel` does not exist.
    pub fn pids(&self, rel: &str) -> Result<Vec<i32>, CgroupError> {
        self.pids_of(&CgroupPath::parse(rel)?)
    }

    fn pids_of(&self, path: &CgroupPath) -> Result<Vec<i32>, CgroupError> {
        let mut all = BTreeSet::new();
        for tree in self.trees() {
            for dir in fs::subtree_deepest_first(&path.under(tree.mount))? {
                all.extend(fs::procs(&dir)?);
            }
        }
        Ok(all.into_iter().collect())
    }

    /// The trees kraal manages: each mounted managed v1 controller once (co-mounted
    /// controllers share a tree), then the unified tree.
    fn trees(&self) -> Vec<Tree<'_>> {
        let mut trees: Vec<Tree<'_>> = Vec::new();
        for controller in MANAGED_V1_CONTROLLERS {
            let Some(mount) = self.v1.get(*controller) else {
                continue;
            };
            if trees.iter().any(|t| t.mount == mount.as_path()) {
                continue;
            }
            let holds = |c: &str| self.v1.get(c) == Some(mount);
            trees.push(Tree {
                mount,
                kind: TreeKind::V1 {
                    cpuset: holds("cpuset"),
                    memory: holds("memory"),
                },
            });
        }
        if let Some(mount) = &self.unified {
            trees.push(Tree {
                mount,
                kind: TreeKind::Unified,
            });
        }
        trees
    }

    fn v1_dir(&self, controller: &str, path: &CgroupPath) -> Option<PathBuf> {
        self.v1.get(controller).map(|mount| path.under(mount))
    }

    fn unified_dir(&self, path: &CgroupPath) -> Option<PathBuf> {
        self.unified.as_ref().map(|mount| path.under(mount))
    }

    /// NotFound unless `path` exists in at least one managed hierarchy.
    fn ensure_exists(&self, path: &CgroupPath) -> Result<(), CgroupError> {
        if self.trees().iter().any(|t| path.under(t.mount).is_dir()) {
            Ok(())
        } else {
            Err(CgroupError::NotFound {
                rel: path.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::tests::{HYBRID_COMOUNTED, HYBRID_SEPARATE, V1_ONLY, V2_ONLY};

    #[test]
    fn hierarchy_of_each_layout() {
        let h = |t| Cgroups::from_mountinfo(t).unwrap().hierarchy();
        assert_eq!(h(HYBRID_SEPARATE), Hierarchy::Hybrid);
        assert_eq!(h(HYBRID_COMOUNTED), Hierarchy::Hybrid);
        assert_eq!(h(V1_ONLY), Hierarchy::V1);
        assert_eq!(h(V2_ONLY), Hierarchy::V2);
    }

    #[test]
    fn paths_per_layout() {
        let rel = "/kubepods/pod1";
        let cg = Cgroups::from_mountinfo(HYBRID_SEPARATE).unwrap();
        assert_eq!(
            cg.unified_path(rel).unwrap().unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1")
        );
        assert_eq!(
            cg.v1_path("cpuacct", rel).unwrap().unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpuacct/kubepods/pod1")
        );
        assert_eq!(cg.v1_path("hugetlb", rel).unwrap(), None);
        assert_eq!(cg.driver_name(), "cgroupfs");

        let cg = Cgroups::from_mountinfo(V2_ONLY).unwrap();
        assert_eq!(
            cg.unified_path(rel).unwrap().unwrap(),
            PathBuf::from("/sys/fs/cgroup/kubepods/pod1")
        );
        assert_eq!(cg.v1_path("memory", rel).unwrap(), None);

        let cg = Cgroups::from_mountinfo(V1_ONLY).unwrap();
        assert_eq!(cg.unified_path(rel).unwrap(), None);
        assert_eq!(
            cg.v1_path("cpu", rel).unwrap().unwrap(),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1")
        );
    }

    #[test]
    fn dirs_name_every_managed_hierarchy() {
        let rel = "/kubepods/pod1";
        let dirs = Cgroups::from_mountinfo(HYBRID_COMOUNTED)
            .unwrap()
            .dirs(rel)
            .unwrap();
        let keys: Vec<&str> = dirs.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cpu", "cpuacct", "cpuset", "hugetlb", "memory", "pids", "unified"
            ]
        );
        assert_eq!(dirs["cpu"], dirs["cpuacct"]);
        assert_eq!(
            dirs["cpu"],
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1")
        );
        assert_eq!(
            dirs["unified"],
            PathBuf::from("/sys/fs/cgroup/unified/kubepods/pod1")
        );

        let dirs = Cgroups::from_mountinfo(V2_ONLY).unwrap().dirs(rel).unwrap();
        assert_eq!(
            dirs.into_iter().collect::<Vec<_>>(),
            [(
                "unified".to_string(),
                PathBuf::from("/sys/fs/cgroup/kubepods/pod1")
            )]
        );

        let dirs = Cgroups::from_mountinfo(V1_ONLY).unwrap().dirs(rel).unwrap();
        assert!(!dirs.contains_key(UNIFIED_KEY), "{dirs:?}");
        assert!(dirs.contains_key("memory"), "{dirs:?}");
        assert!(
            Cgroups::from_mountinfo(V1_ONLY)
                .unwrap()
                .dirs("rel")
                .is_err()
        );
    }

    #[test]
    fn invalid_paths_are_refused_everywhere() {
        let cg = Cgroups::from_mountinfo(HYBRID_SEPARATE).unwrap();
        assert!(matches!(
            cg.unified_path("/a/../b"),
            Err(CgroupError::InvalidPath { .. })
        ));
        assert!(matches!(
            cg.create("/"),
            Err(CgroupError::InvalidPath { .. })
        ));
        assert!(matches!(
            cg.remove("/"),
            Err(CgroupError::InvalidPath { .. })
        ));
        assert!(matches!(
            cg.remove("kubepods"),
            Err(CgroupError::InvalidPath { .. })
        ));
    }

    #[test]
    fn comounted_controllers_form_one_tree() {
        let cg = Cgroups::from_mountinfo(HYBRID_COMOUNTED).unwrap();
        let mounts: Vec<_> = cg.trees().iter().map(|t| t.mount.to_path_buf()).collect();
        assert_eq!(
            mounts,
            [
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/hugetlb",
                "/sys/fs/cgroup/unified",
            ]
            .map(PathBuf::from)
        );
        let kinds: Vec<_> = cg.trees().iter().map(|t| t.kind).collect();
        assert_eq!(
            kinds[1],
            TreeKind::V1 {
                cpuset: true,
                memory: false
            }
        );
        assert_eq!(
            kinds[2],
            TreeKind::V1 {
                cpuset: false,
                memory: true
            }
        );
        assert_eq!(kinds[5], TreeKind::Unified);
    }

    #[test]
    fn local_events_mount_option_is_noticed() {
        let text =
            "25 21 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate,memory_localevents\n";
        assert!(Cgroups::from_mountinfo(text).unwrap().unified_local_events);
        assert!(
            !Cgroups::from_mountinfo(V2_ONLY)
                .unwrap()
                .unified_local_events
        );
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let err = Cgroups::from_mountinfo("22 1 253:0 / / rw - ext4 /dev/vda rw\n").unwrap_err();
        assert!(matches!(err, CgroupError::NoCgroups { .. }), "{err}");
        let err = Cgroups::from_mountinfo("garbage\n").unwrap_err();
        assert!(err.to_string().contains("/proc/self/mountinfo"), "{err}");
    }
}
