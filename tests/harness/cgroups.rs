//! A pod's or container's cgroup as kraal sees it, and the files to read there.
//!
//! kraald reports, in the verbose info of PodSandboxStatus and ContainerStatus,
//! `"cgroupDirs"`: the directory it uses in each hierarchy (v1 controllers by name, cgroup2
//! as `"unified"`; on a cgroup v2 host only `"unified"`). Tests take the directories from
//! there, never from a guessed `/sys/fs/cgroup/...`, and read the file the kernel has for
//! the hierarchy they run on: v1 names where kraal uses a v1 controller (v1 and hybrid
//! hosts), v2 names on v2. For a cgroup that does not exist (yet, or any more)
//! [`CgroupDirs::of`] asks `kraal_cgroups` directly, which is the same view.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Kraald, cri};

/// The key of the cgroup2 tree in `"cgroupDirs"`.
pub const UNIFIED: &str = kraal_cgroups::UNIFIED_KEY;

/// The directories of one cgroup, per hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDirs {
    dirs: BTreeMap<String, PathBuf>,
}

impl CgroupDirs {
    /// `info["cgroupDirs"]` of a verbose status; panics with the info when it is missing.
    pub fn from_info(info: &serde_json::Value) -> CgroupDirs {
        let map = info["cgroupDirs"]
            .as_object()
            .unwrap_or_else(|| panic!("the verbose info has no \"cgroupDirs\" map: {info}"));
        let dirs: BTreeMap<String, PathBuf> = map
            .iter()
            .map(|(key, dir)| {
                let dir = dir
                    .as_str()
                    .unwrap_or_else(|| panic!("cgroupDirs.{key} is not a path: {info}"));
                (key.clone(), PathBuf::from(dir))
            })
            .collect();
        assert!(!dirs.is_empty(), "cgroupDirs is empty: {info}");
        CgroupDirs { dirs }
    }

    /// The directories kraal uses for the cgroupfs path `rel` on this host, from
    /// `kraal_cgroups` (for a cgroup no status can show: never created, or removed).
    pub fn of(rel: &str) -> CgroupDirs {
        let cgroups = kraal_cgroups::Cgroups::detect().expect("detecting the cgroup hierarchies");
        CgroupDirs {
            dirs: cgroups
                .dirs(rel)
                .unwrap_or_else(|e| panic!("cgroup dirs of {rel}: {e}")),
        }
    }

    /// Pure cgroup v2: kraal uses no v1 controller, only the unified tree.
    pub fn is_v2(&self) -> bool {
        self.dirs.keys().all(|k| k == UNIFIED)
    }

    /// Every distinct directory (co-mounted v1 controllers share one).
    pub fn all(&self) -> Vec<&Path> {
        let mut all: Vec<&Path> = self.dirs.values().map(PathBuf::as_path).collect();
        all.sort();
        all.dedup();
        all
    }

    /// Those of [`CgroupDirs::all`] that exist.
    pub fn existing(&self) -> Vec<PathBuf> {
        self.all()
            .into_iter()
            .filter(|d| d.exists())
            .map(Path::to_path_buf)
            .collect()
    }

    /// The v1 directory of `controller`, when kraal uses that v1 controller here.
    pub fn v1(&self, controller: &str) -> Option<&Path> {
        (controller != UNIFIED)
            .then(|| self.dirs.get(controller))
            .flatten()
            .map(PathBuf::as_path)
    }

    /// The cgroup2 directory (v2 and hybrid hosts).
    pub fn unified(&self) -> Option<&Path> {
        self.dirs.get(UNIFIED).map(PathBuf::as_path)
    }

    /// Where `controller`'s files are, as kraal reads and writes them: its v1 directory
    /// where it is a v1 controller, the unified directory on v2. Panics when neither.
    pub fn controller(&self, controller: &str) -> &Path {
        if let Some(dir) = self.v1(controller) {
            return dir;
        }
        match self.unified() {
            Some(dir) if self.is_v2() => dir,
            _ => panic!("kraal uses no {controller} controller for this cgroup: {self:?}"),
        }
    }

    /// `controller`'s file named `v1` on a v1 controller, `v2` on cgroup v2.
    pub fn file(&self, controller: &str, v1: &str, v2: &str) -> PathBuf {
        let name = if self.v1(controller).is_some() {
            v1
        } else {
            v2
        };
        self.controller(controller).join(name)
    }

    /// The directory of a cgroup below this one (`sub` relative, e.g. `kraal-<id>`).
    pub fn child(&self, sub: &str) -> CgroupDirs {
        CgroupDirs {
            dirs: self
                .dirs
                .iter()
                .map(|(k, d)| (k.clone(), d.join(sub)))
                .collect(),
        }
    }

    /// The processes directly in this cgroup, from the cpu controller's directory (the
    /// unified one on v2).
    pub fn procs(&self) -> Vec<i32> {
        read_procs(&self.controller("cpu").join("cgroup.procs"))
    }

    /// CPU time charged to the cgroup and below: v1 `cpuacct.usage`, v2 `usage_usec` of
    /// `cpu.stat`.
    pub fn cpu_usage(&self) -> Duration {
        if let Some(dir) = self.v1("cpuacct") {
            Duration::from_nanos(read_number(&dir.join("cpuacct.usage")))
        } else {
            let stat = self.controller("cpu").join("cpu.stat");
            let usec = keyed(&stat, "usage_usec")
                .unwrap_or_else(|| panic!("no usage_usec in {}", stat.display()));
            Duration::from_micros(usec)
        }
    }

    /// The file CPU time is read from (for messages).
    pub fn cpu_usage_file(&self) -> PathBuf {
        match self.v1("cpuacct") {
            Some(dir) => dir.join("cpuacct.usage"),
            None => self.controller("cpu").join("cpu.stat"),
        }
    }

    /// Memory charged to the cgroup and below: v1 `memory.usage_in_bytes`, v2
    /// `memory.current`.
    pub fn memory_usage(&self) -> u64 {
        read_number(&self.memory_usage_file())
    }

    pub fn memory_usage_file(&self) -> PathBuf {
        self.file("memory", "memory.usage_in_bytes", "memory.current")
    }

    /// A key of `memory.stat`, by its v1 name (hierarchical `total_*`) or its v2 name.
    pub fn memory_stat(&self, v1_key: &str, v2_key: &str) -> Option<u64> {
        let key = if self.v1("memory").is_some() {
            v1_key
        } else {
            v2_key
        };
        keyed(&self.controller("memory").join("memory.stat"), key)
    }

    /// A key of the cpu controller's `cpu.stat` (`nr_throttled`, `nr_bursts`: the same
    /// names on v1 and v2).
    pub fn cpu_stat(&self, key: &str) -> Option<u64> {
        keyed(&self.controller("cpu").join("cpu.stat"), key)
    }

    /// The CFS bandwidth as (quota, period) in µs, quota None for no limit: v1
    /// `cpu.cfs_quota_us` and `cpu.cfs_period_us`, v2 `cpu.max`.
    pub fn cpu_max(&self) -> (Option<u64>, u64) {
        if let Some(dir) = self.v1("cpu") {
            let quota = read_trimmed(&dir.join("cpu.cfs_quota_us"));
            let period = read_number(&dir.join("cpu.cfs_period_us"));
            (quota.parse().ok().filter(|_| quota != "-1"), period)
        } else {
            let file = self.controller("cpu").join("cpu.max");
            let text = read_trimmed(&file);
            let (quota, period) = text
                .split_once(' ')
                .unwrap_or_else(|| panic!("{} holds {text:?}", file.display()));
            let period = period
                .parse()
                .unwrap_or_else(|_| panic!("{} holds {text:?}", file.display()));
            (quota.parse().ok(), period)
        }
    }

    /// The CFS burst file: v1 `cpu.cfs_burst_us`, v2 `cpu.max.burst` (both µs).
    pub fn cpu_burst_file(&self) -> PathBuf {
        self.file("cpu", "cpu.cfs_burst_us", "cpu.max.burst")
    }

    /// The freezer as kraal uses it: the v1 freezer controller where it is mounted, else
    /// cgroup2's own freezer. "FROZEN", "FREEZING" or "THAWED" (v2 has no freezing state
    /// to read: asked but not yet frozen reads "FREEZING" like v1).
    pub fn freezer_state(&self) -> String {
        if let Some(dir) = self.v1("freezer") {
            return read_trimmed(&dir.join("freezer.state"));
        }
        let dir = self
            .unified()
            .unwrap_or_else(|| panic!("no freezer for this cgroup: {self:?}"));
        let events = dir.join("cgroup.events");
        let frozen = keyed(&events, "frozen")
            .unwrap_or_else(|| panic!("no frozen key in {}", events.display()));
        let asked = read_trimmed(&dir.join("cgroup.freeze"));
        match (frozen, asked.as_str()) {
            (1, _) => "FROZEN".into(),
            (_, "1") => "FREEZING".into(),
            _ => "THAWED".into(),
        }
    }

    /// Cgroups at or below this one, in every hierarchy, that have child cgroups and yet
    /// hold processes themselves, with the pids. v2 forbids that outright once children
    /// use controllers; kraal never does it anywhere.
    pub fn interior_processes(&self) -> Vec<(PathBuf, Vec<i32>)> {
        let mut found = Vec::new();
        for top in self.existing() {
            let mut stack = vec![top];
            while let Some(dir) = stack.pop() {
                let children: Vec<PathBuf> = std::fs::read_dir(&dir)
                    .map(|entries| {
                        entries
                            .flatten()
                            .map(|e| e.path())
                            .filter(|p| p.is_dir())
                            .collect()
                    })
                    .unwrap_or_default();
                if !children.is_empty() {
                    let pids = read_procs(&dir.join("cgroup.procs"));
                    if !pids.is_empty() {
                        found.push((dir.clone(), pids));
                    }
                }
                stack.extend(children);
            }
        }
        found
    }
}

impl Kraald {
    /// ContainerStatus with `verbose`, and its `info` JSON parsed.
    pub async fn container_status_verbose(
        &self,
        id: &str,
    ) -> (cri::ContainerStatus, serde_json::Value) {
        let response = self
            .runtime()
            .await
            .container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .expect("ContainerStatus")
            .into_inner();
        let info = serde_json::from_str(&response.info["info"]).expect("info is JSON");
        (response.status.expect("status"), info)
    }

    /// The container's cgroup directories, as kraald reports them.
    pub async fn container_cgroup(&self, id: &str) -> CgroupDirs {
        CgroupDirs::from_info(&self.container_status_verbose(id).await.1)
    }

    /// The pod cgroup's directories, as kraald reports them.
    pub async fn pod_cgroup(&self, id: &str) -> CgroupDirs {
        CgroupDirs::from_info(&self.pod_status_verbose(id).await.1)
    }
}

pub fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn read_number(path: &Path) -> u64 {
    let text = read_trimmed(path);
    text.parse()
        .unwrap_or_else(|e| panic!("{} holds {text:?}, not a number: {e}", path.display()))
}

fn read_procs(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// One `name value` line of a flat keyed file (cpu.stat, memory.stat, memory.events).
pub fn keyed(path: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok()).flatten()
        })
}
