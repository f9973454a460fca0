//! What this node gives kraal, found once at start: the cgroup hierarchy, the cgroup driver
//! in force, and the kernel features kraal's policies need. kraald logs them in one line and
//! serves them in `Status` (verbose info `node`), which `kraalctl cri node` shows, so an
//! operator sees which kraal features this node cannot have and why before a pod asks.

use std::path::Path;

use kraal_cgroups::{Cgroups, FreezerKind, Hierarchy};
use serde::Serialize;

use crate::cgroup_driver::Driver;

/// The node facts, and the kraal features they rule out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeFacts {
    /// `v1`, `v2` or `hybrid`.
    pub hierarchy: &'static str,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: &'static str,
    pub kernel: String,
    pub probes: Probes,
    pub unavailable: Vec<Unavailable>,
}

/// What was looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probes {
    /// A cgroup2 mount exists: eBPF cgroup programs attach only there.
    pub cgroup2: bool,
    /// The kernel describes its own types (`/sys/kernel/btf/vmlinux`), which kraal's CO-RE
    /// programs need to load.
    pub btf: bool,
    /// `v1` (freezer controller) or `v2` (`cgroup.freeze`), None: nothing to freeze with.
    pub freezer: Option<String>,
    /// Pressure stall information (`/proc/pressure`).
    pub psi: bool,
}

/// A kraal feature this node cannot give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unavailable {
    pub feature: &'static str,
    pub reason: String,
}

impl NodeFacts {
    pub fn detect(cgroups: &Cgroups, driver: &Driver) -> Self {
        let probes = Probes {
            cgroup2: cgroups.unified_root().is_some(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            freezer: cgroups.freezer_kind().map(|k: FreezerKind| k.to_string()),
            psi: Path::new("/proc/pressure/cpu").exists(),
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        Self::from_probes(cgroups.hierarchy(), driver.name(), kernel, probes)
    }

    pub fn from_probes(
        hierarchy: Hierarchy,
        driver: &'static str,
        kernel: String,
        probes: Probes,
    ) -> Self {
        let mut unavailable = Vec::new();
        let mut lack = |feature: &'static str, reason: String| {
            unavailable.push(Unavailable { feature, reason })
        };
        if !probes.cgroup2 {
            for feature in ["pod port ranges (eBPF)", "pod bandwidth (eBPF)"] {
                lack(
                    feature,
                    "no cgroup2 mount: eBPF cgroup programs attach only to cgroup2".into(),
                );
            }
        } else if !probes.btf {
            for feature in ["pod port ranges (eBPF)", "pod bandwidth (eBPF)"] {
                lack(
                    feature,
                    "no kernel BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF): kraal's programs cannot be loaded".into(),
                );
            }
        }
        if probes.freezer.is_none() {
            lack(
                "pod freeze",
                "neither the v1 freezer controller nor cgroup2 is mounted".into(),
            );
        }
        if hierarchy != Hierarchy::V2 {
            lack(
                "offline pods' cpu.idle",
                "cgroup v1 controllers: offline pods get cpu.shares=2 instead (cpu.idle is kraal's tool on pure v2 only)".into(),
            );
            lack(
                "memory-high throttling",
                "cgroup v1 memory controller: memory.soft_limit_in_bytes only guides reclaim under node-wide pressure, it does not throttle".into(),
            );
        }
        if !probes.psi {
            lack(
                "pressure (PSI) in stats",
                "no /proc/pressure: kernel without CONFIG_PSI or booted with psi=0".into(),
            );
        }
        NodeFacts {
            hierarchy: match hierarchy {
                Hierarchy::V1 => "v1",
                Hierarchy::V2 => "v2",
                Hierarchy::Hybrid => "hybrid",
            },
            cgroup_driver: driver,
            kernel,
            probes,
            unavailable,
        }
    }

    /// The start-up line.
    pub fn log(&self) {
        let lacking: Vec<&str> = self.unavailable.iter().map(|u| u.feature).collect();
        tracing::info!(
            hierarchy = self.hierarchy,
            cgroup_driver = self.cgroup_driver,
            kernel = %self.kernel,
            bpf_cgroup_hooks = self.probes.cgroup2 && self.probes.btf,
            freezer = self.probes.freezer.as_deref().unwrap_or("none"),
            psi = self.probes.psi,
            unavailable = ?lacking,
            "node: cgroup {} with the {} driver",
            self.hierarchy,
            self.cgroup_driver,
        );
        for u in &self.unavailable {
            tracing::debug!(feature = u.feature, reason = %u.reason, "kraal feature unavailable on this node");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probes() -> Probes {
        Probes {
            cgroup2: true,
            btf: true,
            freezer: Some("v2".into()),
            psi: true,
        }
    }

    #[test]
    fn a_v2_node_with_everything_lacks_nothing() {
        let f = NodeFacts::from_probes(Hierarchy::V2, "systemd", "6.12".into(), probes());
        assert_eq!(f.hierarchy, "v2");
        assert!(f.unavailable.is_empty(), "{:?}", f.unavailable);
    }

    #[test]
    fn hybrid_nodes_lack_the_v2_only_policies_and_say_why() {
        let f = NodeFacts::from_probes(Hierarchy::Hybrid, "cgroupfs", "6.1".into(), probes());
        let names: Vec<_> = f.unavailable.iter().map(|u| u.feature).collect();
        assert_eq!(names, ["offline pods' cpu.idle", "memory-high throttling"]);
        assert!(f.unavailable[1].reason.contains("does not throttle"));
    }

    #[test]
    fn missing_kernel_features_are_named() {
        let p = Probes {
            cgroup2: true,
            btf: false,
            freezer: None,
            psi: false,
        };
        let f = NodeFacts::from_probes(Hierarchy::V2, "cgroupfs", "5.4".into(), p);
        let names: Vec<_> = f.unavailable.iter().map(|u| u.feature).collect();
        assert_eq!(
            names,
            [
                "pod port ranges (eBPF)",
                "pod bandwidth (eBPF)",
                "pod freeze",
                "pressure (PSI) in stats"
            ]
        );
        assert!(f.unavailable[0].reason.contains("BTF"));
        let f = NodeFacts::from_probes(
            Hierarchy::V1,
            "cgroupfs",
            "4.19".into(),
            Probes {
                cgroup2: false,
                ..probes()
            },
        );
        assert!(f.unavailable[0].reason.contains("no cgroup2 mount"));
    }
}
