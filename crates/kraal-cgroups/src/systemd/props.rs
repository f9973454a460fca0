//! kraal's cgroup limits as systemd unit properties.
//!
//! systemd owns the control files of the units it manages and writes them again from its own
//! records whenever it re-applies a unit (`systemctl daemon-reload`, a sibling's change), so
//! every limit systemd has a property for is also given to systemd; kraal writes the files
//! systemd has no property for (`cpu.max.burst`, `cpu.idle` before systemd 254) itself, and
//! systemd leaves those alone.

use crate::resources::{MemoryHigh, Resources, shares_to_weight};

/// systemd's "no limit" for usec and byte properties (UINT64_MAX).
pub const INFINITY: u64 = u64::MAX;

/// A D-Bus value kraal passes to systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    U64(u64),
    Str(String),
    /// `au`, e.g. `PIDs`.
    U32s(Vec<u32>),
    /// `ay`, e.g. the CPU bitmask of `AllowedCPUs`.
    Bytes(Vec<u8>),
}

/// One `(name, value)` pair of StartTransientUnit / SetUnitProperties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub value: Value,
}

impl Property {
    pub fn new(name: &'static str, value: Value) -> Self {
        Property { name, value }
    }
}

/// systemd's `CPUWeight=idle` (CGROUP_WEIGHT_IDLE), systemd 252 and later: it writes
/// `cpu.idle` 1 instead of a weight.
pub const CPU_WEIGHT_IDLE: u64 = 0;

/// The first systemd with `CPUWeight=idle`. From then on systemd writes `cpu.idle` itself
/// (0 for every unit whose weight is not idle) whenever it applies a unit.
pub const IDLE_WEIGHT_SINCE: u32 = 252;

/// The properties for `r`'s limits; fields that are None give none. Limits systemd cannot
/// express (burst) are left to kraal's file writes. `idle_weight`: this systemd has
/// `CPUWeight=idle` ([`IDLE_WEIGHT_SINCE`]); an idle cgroup gets it, since such a systemd
/// would otherwise write `cpu.idle` 0 back. Without it no weight is given for an idle cgroup
/// (the kernel refuses weight writes while `cpu.idle` is set, and that systemd leaves
/// `cpu.idle` alone).
pub fn resource_properties(r: &Resources, idle_weight: bool) -> Result<Vec<Property>, String> {
    let mut out = Vec::new();
    match (r.cpu_idle, r.cpu_shares) {
        (Some(true), _) if idle_weight => {
            out.push(Property::new("CPUWeight", Value::U64(CPU_WEIGHT_IDLE)))
        }
        (Some(true), _) => {}
        (_, Some(shares)) => out.push(Property::new(
            "CPUWeight",
            Value::U64(shares_to_weight(shares)),
        )),
        (_, None) => {}
    }
    if let Some(period) = r.cpu_period_us.filter(|p| *p > 0) {
        out.push(Property::new("CPUQuotaPeriodUSec", Value::U64(period)));
    }
    if let Some(quota) = r.cpu_quota_us {
        let per_sec = match u64::try_from(quota) {
            Ok(q) if q > 0 => {
                quota_per_sec(q, r.cpu_period_us.filter(|p| *p > 0).unwrap_or(100_000))
            }
            _ => INFINITY,
        };
        out.push(Property::new("CPUQuotaPerSecUSec", Value::U64(per_sec)));
    }
    if let Some(cpus) = &r.cpuset_cpus {
        out.push(Property::new(
            "AllowedCPUs",
            Value::Bytes(cpu_list_mask(cpus)?),
        ));
    }
    if let Some(mems) = &r.cpuset_mems {
        out.push(Property::new(
            "AllowedMemoryNodes",
            Value::Bytes(cpu_list_mask(mems)?),
        ));
    }
    if let Some(limit) = r.memory_limit_bytes {
        let bytes = u64::try_from(limit)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(INFINITY);
        out.push(Property::new("MemoryMax", Value::U64(bytes)));
    }
    if let Some(high) = r.memory_high {
        let bytes = match high {
            MemoryHigh::Bytes(b) => b,
            MemoryHigh::Unlimited => INFINITY,
        };
        out.push(Property::new("MemoryHigh", Value::U64(bytes)));
    }
    Ok(out)
}

/// The leading number of systemd's version string (`252.39-1~deb12u2` -> 252).
pub fn major_version(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `TasksMax` for a pids limit (<= 0: none).
pub fn tasks_max(limit: i64) -> Property {
    let v = u64::try_from(limit)
        .ok()
        .filter(|l| *l > 0)
        .unwrap_or(INFINITY);
    Property::new("TasksMax", Value::U64(v))
}

/// CPU time per second for `quota` µs per `period` µs, rounded up: systemd writes
/// `per_sec * period / 1s` into `cpu.max`, and rounding down would lose a microsecond of
/// quota each time it does (e.g. 10000/30000).
pub fn quota_per_sec(quota: u64, period: u64) -> u64 {
    (u128::from(quota) * 1_000_000)
        .div_ceil(u128::from(period.max(1)))
        .try_into()
        .unwrap_or(INFINITY)
}

/// A cpuset list (`0-3,6`) as the little-endian bitmask systemd's `AllowedCPUs` takes.
pub fn cpu_list_mask(list: &str) -> Result<Vec<u8>, String> {
    let mut mask: Vec<u8> = Vec::new();
    let list = list.trim();
    if list.is_empty() {
        return Ok(mask);
    }
    for part in list.split(',') {
        let bad = || format!("cpuset list {list:?}: {part:?} is not N or N-M");
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.trim().parse::<usize>(), part.trim().parse::<usize>()),
        };
        let (lo, hi) = (lo.map_err(|_| bad())?, hi.map_err(|_| bad())?);
        // 8192 CPUs is far above any machine kraal runs on, and bounds the allocation.
        if lo > hi || hi >= 8192 {
            return Err(bad());
        }
        for cpu in lo..=hi {
            let byte = cpu / 8;
            if mask.len() <= byte {
                mask.resize(byte + 1, 0);
            }
            mask[byte] |= 1 << (cpu % 8);
        }
    }
    Ok(mask)
}

/// The properties every kraal scope starts with. Delegate: the scope's subtree is kraal's
/// (libcontainer may make children, and kraal writes the files systemd has no property for).
/// The accounting switches make systemd enable the cpu, memory, io and pids controllers all
/// the way down to the scope, and keep them enabled when it recomputes its parents'
/// `cgroup.subtree_control`. No default dependencies: a container scope must not be
/// stopped by a shutdown ordering kraal did not ask for before kraal stops it. TasksMax
/// infinity: systemd otherwise gives every scope its DefaultTasksMax (15% of pid_max, seen
/// as "Tasks: 1 (limit: 9489)" in the test guest), a limit no one asked the container for;
/// a pod's pids limit is kubelet's, on the pod cgroup.
pub fn scope_properties(slice: &str, description: String, pid: u32) -> Vec<Property> {
    let mut props = vec![
        Property::new("Description", Value::Str(description)),
        Property::new("Slice", Value::Str(slice.to_string())),
        Property::new("Delegate", Value::Bool(true)),
        Property::new("PIDs", Value::U32s(vec![pid])),
        Property::new("DefaultDependencies", Value::Bool(false)),
        Property::new("TasksMax", Value::U64(INFINITY)),
    ];
    props.extend(accounting());
    props
}

/// The properties of a pod slice kraal makes (kubelet makes its own).
pub fn slice_properties(description: String) -> Vec<Property> {
    let mut props = vec![
        Property::new("Description", Value::Str(description)),
        Property::new("DefaultDependencies", Value::Bool(false)),
    ];
    props.extend(accounting());
    props
}

fn accounting() -> [Property; 4] {
    [
        Property::new("CPUAccounting", Value::Bool(true)),
        Property::new("MemoryAccounting", Value::Bool(true)),
        Property::new("IOAccounting", Value::Bool(true)),
        Property::new("TasksAccounting", Value::Bool(true)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(props: &'a [Property], name: &str) -> Option<&'a Value> {
        props.iter().find(|p| p.name == name).map(|p| &p.value)
    }

    #[test]
    fn cpu_limits_map_to_systemd_units() {
        let r = Resources {
            cpu_shares: Some(1024),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_burst_us: Some(20_000),
            cpu_idle: Some(true),
            ..Default::default()
        };
        let p = resource_properties(&r, true).unwrap();
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(500_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(100_000)));
        // An idle cgroup is CPUWeight=idle where systemd has it; the burst has no property.
        assert_eq!(get(&p, "CPUWeight"), Some(&Value::U64(CPU_WEIGHT_IDLE)));
        assert_eq!(p.len(), 3, "{p:?}");
        let p = resource_properties(&r, false).unwrap();
        assert_eq!(
            get(&p, "CPUWeight"),
            None,
            "no weight for an idle group before 252"
        );
        let online = Resources {
            cpu_idle: Some(false),
            ..r
        };
        let p = resource_properties(&online, true).unwrap();
        assert_eq!(get(&p, "CPUWeight"), Some(&Value::U64(39)));
    }

    #[test]
    fn systemd_versions_are_their_leading_number() {
        assert_eq!(major_version("252.39-1~deb12u2"), Some(252));
        assert_eq!(major_version("256"), Some(256));
        assert_eq!(major_version("v1"), None);
    }

    #[test]
    fn unlimited_values_are_systemd_infinity() {
        let r = Resources {
            cpu_quota_us: Some(-1),
            memory_limit_bytes: Some(0),
            memory_high: Some(MemoryHigh::Unlimited),
            ..Default::default()
        };
        let p = resource_properties(&r, true).unwrap();
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "MemoryHigh"), Some(&Value::U64(INFINITY)));
        assert_eq!(tasks_max(-1).value, Value::U64(INFINITY));
        assert_eq!(tasks_max(64).value, Value::U64(64));
    }

    #[test]
    fn memory_limits_are_bytes() {
        let r = Resources {
            memory_limit_bytes: Some(64 << 20),
            memory_high: Some(MemoryHigh::Bytes(48 << 20)),
            ..Default::default()
        };
        let p = resource_properties(&r, true).unwrap();
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(64 << 20)));
        assert_eq!(get(&p, "MemoryHigh"), Some(&Value::U64(48 << 20)));
    }

    #[test]
    fn quota_per_second_rounds_up_so_cpu_max_comes_back_whole() {
        assert_eq!(quota_per_sec(50_000, 100_000), 500_000);
        assert_eq!(quota_per_sec(10_000, 30_000), 333_334);
        // systemd's own arithmetic for cpu.max: per_sec * period / 1s.
        assert_eq!(333_334u64 * 30_000 / 1_000_000, 10_000);
        assert_eq!(quota_per_sec(1, 0), 1_000_000);
    }

    #[test]
    fn cpusets_become_bitmasks() {
        assert_eq!(cpu_list_mask("0").unwrap(), vec![0b1]);
        assert_eq!(cpu_list_mask("0-3,6").unwrap(), vec![0b0100_1111]);
        assert_eq!(cpu_list_mask("9").unwrap(), vec![0, 0b10]);
        assert_eq!(cpu_list_mask("").unwrap(), Vec::<u8>::new());
        for bad in ["a", "3-1", "1-", "99999"] {
            assert!(cpu_list_mask(bad).is_err(), "{bad}");
        }
        let r = Resources {
            cpuset_cpus: Some("0-1".into()),
            cpuset_mems: Some("0".into()),
            ..Default::default()
        };
        let p = resource_properties(&r, true).unwrap();
        assert_eq!(get(&p, "AllowedCPUs"), Some(&Value::Bytes(vec![0b11])));
        assert_eq!(get(&p, "AllowedMemoryNodes"), Some(&Value::Bytes(vec![1])));
    }

    #[test]
    fn scopes_are_delegated_and_hold_their_pid() {
        let p = scope_properties("kraal-podab.slice", "kraal container x".into(), 42);
        assert_eq!(get(&p, "Delegate"), Some(&Value::Bool(true)));
        assert_eq!(
            get(&p, "Slice"),
            Some(&Value::Str("kraal-podab.slice".into()))
        );
        assert_eq!(get(&p, "PIDs"), Some(&Value::U32s(vec![42])));
        assert_eq!(get(&p, "CPUAccounting"), Some(&Value::Bool(true)));
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(INFINITY)));
        let s = slice_properties("pod".into());
        assert_eq!(get(&s, "Delegate"), None);
        assert_eq!(get(&s, "MemoryAccounting"), Some(&Value::Bool(true)));
    }
}
