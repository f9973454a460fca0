//! Resources from CRI `LinuxContainerResources`: CPU, cpuset, memory and swap, hugepages,
//! raw cgroup v2 files, and the process's `oom_score_adj`. Zero or empty means unset.

use std::collections::HashMap;

use kraal_api::runtime::v1 as cri;
use oci_spec::runtime::{
    LinuxCpu, LinuxCpuBuilder, LinuxHugepageLimit, LinuxHugepageLimitBuilder, LinuxMemory,
    LinuxMemoryBuilder,
};

use super::{HostFacts, SpecError, oci};

/// The resource parts of `linux.resources` (devices come from the device module).
#[derive(Debug, Default)]
pub(crate) struct Resources {
    pub cpu: Option<LinuxCpu>,
    pub memory: Option<LinuxMemory>,
    pub hugepage_limits: Vec<LinuxHugepageLimit>,
    pub unified: Option<HashMap<String, String>>,
}

fn field(name: &str) -> String {
    format!("container config: linux.resources.{name}")
}

fn non_negative(name: &str, v: i64) -> Result<i64, SpecError> {
    if v < 0 {
        return Err(SpecError::invalid(format!(
            "{} {v}: expected 0 (unset) or a positive number",
            field(name)
        )));
    }
    Ok(v)
}

/// Checks a cpuset list (`0-3,5,7-8`).
fn cpuset(name: &str, s: &str) -> Result<String, SpecError> {
    let bad = || {
        SpecError::invalid(format!(
            "{} {s:?}: expected a list like \"0-3,5\"",
            field(name)
        ))
    };
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u32 = a.parse().map_err(|_| bad())?;
        let b: u32 = b.parse().map_err(|_| bad())?;
        if a > b {
            return Err(bad());
        }
    }
    Ok(s.replace(' ', ""))
}

/// CPU, memory, hugepages and unified from the CRI resources.
pub(crate) fn build(
    r: &cri::LinuxContainerResources,
    host: HostFacts,
    warnings: &mut Vec<String>,
) -> Result<Resources, SpecError> {
    let mut out = Resources::default();

    let shares = non_negative("cpu_shares", r.cpu_shares)?;
    let period = non_negative("cpu_period", r.cpu_period)?;
    // Quota may be -1 (no limit), as in the cgroup file.
    if r.cpu_quota < -1 {
        return Err(SpecError::invalid(format!(
            "{} {}: expected -1 (no limit), 0 (unset) or a positive number of microseconds",
            field("cpu_quota"),
            r.cpu_quota
        )));
    }
    if r.cpu_quota > 0 && r.cpu_quota < 1000 {
        return Err(SpecError::invalid(format!(
            "{} {}: the kernel's minimum is 1000 microseconds",
            field("cpu_quota"),
            r.cpu_quota
        )));
    }
    if shares != 0
        || period != 0
        || r.cpu_quota != 0
        || !r.cpuset_cpus.is_empty()
        || !r.cpuset_mems.is_empty()
    {
        let mut cpu = LinuxCpuBuilder::default();
        if shares != 0 {
            cpu = cpu.shares(shares as u64);
        }
        if period != 0 {
            cpu = cpu.period(period as u64);
        }
        if r.cpu_quota != 0 {
            cpu = cpu.quota(r.cpu_quota);
        }
        if !r.cpuset_cpus.is_empty() {
            cpu = cpu.cpus(cpuset("cpuset_cpus", &r.cpuset_cpus)?);
        }
        if !r.cpuset_mems.is_empty() {
            cpu = cpu.mems(cpuset("cpuset_mems", &r.cpuset_mems)?);
        }
        out.cpu = Some(oci("linux.resources.cpu", cpu.build())?);
    }

    let limit = non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)?;
    let swap = r.memory_swap_limit_in_bytes;
    if swap < -1 {
        return Err(SpecError::invalid(format!(
            "{} {swap}: expected -1 (unlimited), 0 (unset) or a number of bytes",
            field("memory_swap_limit_in_bytes")
        )));
    }
    if swap > 0 && limit > 0 && swap < limit {
        return Err(SpecError::invalid(format!(
            "{} {swap}: memory plus swap must be at least memory_limit_in_bytes {limit}",
            field("memory_swap_limit_in_bytes")
        )));
    }
    if limit != 0 || swap != 0 {
        let mut mem = LinuxMemoryBuilder::default();
        if limit != 0 {
            mem = mem.limit(limit);
        }
        // containerd: memory+swap = memory when unset, so a limited container does not
        // swap; only where the kernel accounts swap (otherwise the write would fail).
        let swap_value = if swap != 0 {
            Some(swap)
        } else if limit != 0 {
            Some(limit)
        } else {
            None
        };
        match swap_value {
            Some(v) if host.swap_accounting => mem = mem.swap(v),
            Some(_) if swap != 0 => warnings.push(format!(
                "linux.resources.memory_swap_limit_in_bytes {swap} ignored: this host does not \
                 account swap"
            )),
            _ => {}
        }
        out.memory = Some(oci("linux.resources.memory", mem.build())?);
    }

    let mut limits = Vec::new();
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if h.page_size.is_empty() {
            return Err(SpecError::invalid(format!(
                "{}[{i}].page_size is empty: expected a size like \"2MB\"",
                field("hugepage_limits")
            )));
        }
        let limit = i64::try_from(h.limit).map_err(|_| {
            SpecError::invalid(format!(
                "{}[{i}].limit {}: too large",
                field("hugepage_limits"),
                h.limit
            ))
        })?;
        limits.push(oci(
            "linux.resources.hugepageLimits",
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(limit)
                .build(),
        )?);
    }

    // kubelet sends a limit (0 unless requested) for every page size the kernel has, so a
    // node whose hugetlb controller libcontainer cannot use would refuse every container.
    // containerd (tolerate_missing_hugetlb_controller, on by default) drops the limits then,
    // with a warning, and so does kraal. Limits for other controllers are not dropped: runc
    // refuses a limit its cgroup manager cannot apply, so such a container does not run on
    // containerd either, and kraal says why rather than running it unlimited.
    if !limits.is_empty() {
        if host.hugetlb {
            out.hugepage_limits = limits;
        } else {
            let sizes: Vec<String> = limits
                .iter()
                .map(|l| format!("{}={}", l.page_size(), l.limit()))
                .collect();
            warnings.push(format!(
                "linux.resources.hugepage_limits ({}) ignored: the hugetlb cgroup controller \
                 is not available to kraal's cgroup manager on this host",
                sizes.join(", ")
            ));
        }
    }

    if !r.unified.is_empty() {
        if host.cgroup_v2 {
            for k in r.unified.keys() {
                if k.is_empty() || k.contains('/') || k.starts_with('.') {
                    return Err(SpecError::invalid(format!(
                        "{} key {k:?}: expected a cgroup file name like \"memory.high\"",
                        field("unified")
                    )));
                }
            }
            out.unified = Some(r.unified.clone());
        } else {
            let mut keys: Vec<_> = r.unified.keys().cloned().collect();
            keys.sort();
            warnings.push(format!(
                "linux.resources.unified ({}) ignored: this host's resources are cgroup v1",
                keys.join(", ")
            ));
        }
    }
    Ok(out)
}

/// The process's `oom_score_adj`: unset without resources; raised to `floor` (with a
/// warning) when the host does not let kraal set a lower one.
pub(crate) fn oom_score_adj(
    r: Option<&cri::LinuxContainerResources>,
    floor: i32,
    warnings: &mut Vec<String>,
) -> Result<Option<i32>, SpecError> {
    let Some(r) = r else { return Ok(None) };
    let v = r.oom_score_adj;
    if !(-1000..=1000).contains(&v) {
        return Err(SpecError::invalid(format!(
            "{} {v}: expected -1000 to 1000",
            field("oom_score_adj")
        )));
    }
    let v = v as i32;
    if v < floor {
        warnings.push(format!(
            "linux.resources.oom_score_adj {v} raised to {floor}: this host does not let kraal \
             set a lower value"
        ));
        return Ok(Some(floor));
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: HostFacts = HostFacts {
        cgroup_v2: false,
        swap_accounting: true,
        hugetlb: true,
        capability_bound: u64::MAX,
    };
    const V2: HostFacts = HostFacts {
        cgroup_v2: true,
        ..V1
    };

    fn res() -> cri::LinuxContainerResources {
        cri::LinuxContainerResources::default()
    }

    #[test]
    fn empty_is_unset() {
        let r = build(&res(), V1, &mut Vec::new()).unwrap();
        assert!(r.cpu.is_none() && r.memory.is_none() && r.unified.is_none());
        assert!(r.hugepage_limits.is_empty());
    }

    #[test]
    fn cpu_and_memory() {
        let mut c = res();
        c.cpu_shares = 512;
        c.cpu_period = 100_000;
        c.cpu_quota = 50_000;
        c.cpuset_cpus = "0-1,3".into();
        c.cpuset_mems = "0".into();
        c.memory_limit_in_bytes = 64 << 20;
        let r = build(&c, V1, &mut Vec::new()).unwrap();
        let cpu = r.cpu.unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = r.memory.unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), Some(64 << 20), "no swap by default");
        c.memory_swap_limit_in_bytes = 128 << 20;
        assert_eq!(
            build(&c, V1, &mut Vec::new())
                .unwrap()
                .memory
                .unwrap()
                .swap(),
            Some(128 << 20)
        );
        c.memory_swap_limit_in_bytes = -1;
        assert_eq!(
            build(&c, V1, &mut Vec::new())
                .unwrap()
                .memory
                .unwrap()
                .swap(),
            Some(-1)
        );
        // Without swap accounting: no swap value, a warning when one was asked for.
        let no_swap = HostFacts {
            swap_accounting: false,
            ..V1
        };
        let mut w = Vec::new();
        c.memory_swap_limit_in_bytes = 128 << 20;
        let mem = build(&c, no_swap, &mut w).unwrap().memory.unwrap();
        assert_eq!(mem.swap(), None);
        assert_eq!(w.len(), 1);
        c.memory_swap_limit_in_bytes = 1;
        assert!(build(&c, V1, &mut Vec::new()).is_err());
    }

    #[test]
    fn invalid_values() {
        for f in [
            |c: &mut cri::LinuxContainerResources| c.cpu_shares = -1,
            |c: &mut cri::LinuxContainerResources| c.cpu_period = -5,
            |c: &mut cri::LinuxContainerResources| c.cpu_quota = -2,
            |c: &mut cri::LinuxContainerResources| c.cpu_quota = 10,
            |c: &mut cri::LinuxContainerResources| c.memory_limit_in_bytes = -1,
            |c: &mut cri::LinuxContainerResources| c.cpuset_cpus = "0-".into(),
            |c: &mut cri::LinuxContainerResources| c.cpuset_mems = "3-1".into(),
        ] {
            let mut c = res();
            f(&mut c);
            let e = build(&c, V1, &mut Vec::new()).unwrap_err();
            assert!(
                e.message()
                    .starts_with("container config: linux.resources."),
                "{e}"
            );
        }
        let mut c = res();
        c.cpu_quota = -1;
        assert_eq!(
            build(&c, V1, &mut Vec::new()).unwrap().cpu.unwrap().quota(),
            Some(-1)
        );
    }

    #[test]
    fn hugepages_and_unified() {
        let mut c = res();
        c.hugepage_limits = vec![cri::HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }];
        c.unified = HashMap::from([("memory.high".to_owned(), "100M".to_owned())]);
        let mut w = Vec::new();
        let r = build(&c, V1, &mut w).unwrap();
        assert_eq!(r.hugepage_limits[0].page_size(), "2MB");
        assert_eq!(r.hugepage_limits[0].limit(), 4 << 20);
        assert!(r.unified.is_none());
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("memory.high"), "{w:?}");
        let r = build(&c, V2, &mut Vec::new()).unwrap();
        assert_eq!(r.unified.unwrap()["memory.high"], "100M");
        c.unified = HashMap::from([("../x".to_owned(), "1".to_owned())]);
        assert!(build(&c, V2, &mut Vec::new()).is_err());
    }

    #[test]
    fn hugepages_without_the_controller_are_dropped() {
        // kubelet's request on a node with 2 MiB and 1 GiB pages: a 0 limit for each.
        let mut c = res();
        c.hugepage_limits = ["2MB", "1GB"]
            .map(|size| cri::HugepageLimit {
                page_size: size.into(),
                limit: 0,
            })
            .to_vec();
        let without = HostFacts {
            hugetlb: false,
            ..V1
        };
        let mut w = Vec::new();
        let r = build(&c, without, &mut w).unwrap();
        assert!(r.hugepage_limits.is_empty());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("2MB=0, 1GB=0") && w[0].contains("hugetlb"),
            "{w:?}"
        );
        // Still validated: a request that is wrong on its own terms is refused either way.
        c.hugepage_limits[0].page_size.clear();
        assert!(build(&c, without, &mut Vec::new()).is_err());
        // With the controller they are kept, without a warning.
        c.hugepage_limits[0].page_size = "2MB".into();
        let mut w = Vec::new();
        assert_eq!(build(&c, V1, &mut w).unwrap().hugepage_limits.len(), 2);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn oom_clamp() {
        let mut c = res();
        c.oom_score_adj = -997;
        let mut w = Vec::new();
        assert_eq!(oom_score_adj(Some(&c), -500, &mut w).unwrap(), Some(-500));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("-997 raised to -500"), "{w:?}");
        let mut w = Vec::new();
        assert_eq!(oom_score_adj(Some(&c), -1000, &mut w).unwrap(), Some(-997));
        assert!(w.is_empty());
        assert_eq!(oom_score_adj(None, 0, &mut w).unwrap(), None);
        c.oom_score_adj = 1001;
        assert!(oom_score_adj(Some(&c), 0, &mut w).is_err());
    }
}
