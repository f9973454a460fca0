//! A pod's bandwidth (DESIGN §5): one HTB class per limited direction — rate = its soft limit
//! (guarantee), ceil = its hard limit, under a node class whose rate is the machine threshold
//! — and the eBPF programs on the pod's cgroup that put its packets into that class.
//!
//! Offline pods get a class even without limits of their own: no guarantee and the lowest
//! borrowing priority, so they get only what online pods and the node leave.

mod node;

use kraal_api::kraal::v1 as admin;
use kraal_ebpf::PodId;
use kraal_net::shaping::{ClassId, ClassRates, MIN_RATE_BPS, PRIO_OFFLINE, default_burst};
use kraal_policy::{PodPolicy, QosClass, Rates};
use tonic::Status;

pub use node::LazyShaper;
use node::{Direction, ShapeError, Shaper, class_of};

use crate::runtime::Runtime;
use crate::state::{PodBandwidth, PodClass, SandboxRecord};

/// How long a retired class keeps draining before it is deleted, when a pod moves to a fresh
/// class: what was queued in it leaves at the pod's old rates instead of being dropped.
const RETIRE_DRAIN: std::time::Duration = std::time::Duration::from_millis(100);

impl PodClass {
    fn new(minor: u16, rates: &ClassRates) -> PodClass {
        PodClass {
            minor,
            rate_bps: rates.rate_bps,
            ceil_bps: rates.ceil_bps,
            burst_bytes: rates.burst_bytes,
            prio: rates.prio,
        }
    }

    fn rates(&self) -> ClassRates {
        ClassRates {
            rate_bps: self.rate_bps,
            ceil_bps: self.ceil_bps,
            burst_bytes: self.burst_bytes,
            prio: self.prio,
        }
    }
}

fn slot(bandwidth: &mut PodBandwidth, dir: Direction) -> &mut Option<PodClass> {
    match dir {
        Direction::Egress => &mut bandwidth.egress,
        Direction::Ingress => &mut bandwidth.ingress,
    }
}

fn limits(policy: &PodPolicy, dir: Direction) -> Option<&Rates> {
    match dir {
        Direction::Egress => policy.egress(),
        Direction::Ingress => policy.ingress(),
    }
}

/// Whether the policy asks for any shaping: limits, or an offline pod that must yield.
fn wants_shaping(policy: &PodPolicy) -> bool {
    policy.egress().is_some() || policy.ingress().is_some() || policy.qos_class == QosClass::Offline
}

/// The class the policy asks for in `dir`; `widest` is the ceiling of a class without limits.
fn wanted(policy: &PodPolicy, dir: Direction, widest: u64) -> Option<ClassRates> {
    match (limits(policy, dir), policy.qos_class) {
        (Some(rates), qos) => Some(ClassRates::for_pod(rates, qos)),
        (None, QosClass::Offline) => Some(ClassRates {
            rate_bps: MIN_RATE_BPS,
            ceil_bps: widest,
            burst_bytes: default_burst(widest),
            prio: PRIO_OFFLINE,
        }),
        (None, _) => None,
    }
}

/// The eBPF settings for the pod's classes.
fn kernel_settings(bandwidth: &PodBandwidth) -> kraal_ebpf::PodBandwidth {
    let handle = |dir| class_of(bandwidth, dir).map_or(0, |c| Shaper::class_handle(dir, c.minor));
    kraal_ebpf::PodBandwidth {
        egress_class: handle(Direction::Egress),
        ingress_class: handle(Direction::Ingress),
        police_ingress: None,
    }
}

fn to_status(call: &str, e: ShapeError) -> Status {
    match e {
        ShapeError::Unavailable(m) => Status::failed_precondition(format!(
            "{call}: the pod asks for bandwidth shaping, but this node cannot shape: {m}"
        )),
        ShapeError::Failed(m) => Status::internal(format!("{call}: bandwidth: {m}")),
    }
}

/// Refuses bandwidth limits on a node with shaping off: for validation before anything of a
/// live change is applied.
pub fn refuse_if_disabled(runtime: &Runtime, call: &str, policy: &PodPolicy) -> Result<(), Status> {
    check_enabled(runtime, call, policy).map(|_| ())
}

/// Refuses limits on a node with shaping off; true if the pod is to be shaped.
fn check_enabled(runtime: &Runtime, call: &str, policy: &PodPolicy) -> Result<bool, Status> {
    if !wants_shaping(policy) {
        return Ok(false);
    }
    if runtime.config.bandwidth.enabled {
        return Ok(true);
    }
    if policy.egress().is_some() || policy.ingress().is_some() {
        return Err(Status::failed_precondition(format!(
            "{call}: the pod has bandwidth limits (kubernetes.io/<egress|ingress>-bandwidth or kraal.dev/<egress|ingress>-bandwidth), but bandwidth shaping is off on this node ([bandwidth] enabled = false in kraald's config)"
        )));
    }
    // An offline pod without limits still runs: it yields CPU, just not bandwidth here.
    Ok(false)
}

/// Gives a new pod its classes and attaches its programs, before any of its processes exist.
/// Each step is recorded in `record` as it is made, so a failure is undone exactly by
/// [`detach`].
pub fn attach(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    policy: &PodPolicy,
) -> Result<(), Status> {
    const CALL: &str = "RunPodSandbox";
    if !check_enabled(runtime, CALL, policy)? {
        return Ok(());
    }
    let cgroup = cgroup_dir(runtime, CALL, &record.cgroup_parent)?;
    runtime
        .shaper
        .with(runtime, |shaper| {
            let records = runtime.state.sandboxes();
            for dir in Direction::ALL {
                if let Some(rates) = wanted(policy, dir, shaper.widest(dir)) {
                    let minor = shaper.free_minor(dir, &records)?;
                    *slot(&mut record.bandwidth, dir) = Some(PodClass::new(minor, &rates));
                    shaper.set_class(dir, minor, &rates, record.host_network)?;
                }
            }
            let settings = kernel_settings(&record.bandwidth);
            let pod = shaper
                .programs()
                .attach(&cgroup, &settings)
                .map_err(|e| ShapeError::Failed(format!("attaching the programs: {e}")))?;
            record.bandwidth.ebpf_pod = Some(pod.0);
            Ok(())
        })
        .map_err(|e| to_status(CALL, e))
}

fn cgroup_dir(
    runtime: &Runtime,
    call: &str,
    cgroup_parent: &str,
) -> Result<std::path::PathBuf, Status> {
    crate::runtime::unified_dir(runtime, cgroup_parent).ok_or_else(|| {
        Status::failed_precondition(format!(
            "{call}: bandwidth shaping needs a cgroup2 hierarchy (v2 or hybrid); this host has only cgroup v1"
        ))
    })
}

/// Gives a running pod the classes its new policy asks for, without touching its
/// connections: rates change in place; a raised guarantee moves the pod to a fresh class
/// (HTB would keep the old class's token debt), the old one drained and then removed.
pub fn apply_live(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    policy: &PodPolicy,
) -> Result<(), String> {
    const CALL: &str = "UpdatePodPolicy";
    let shaped = check_enabled(runtime, CALL, policy).map_err(|s| s.message().to_string())?;
    if !shaped && record.bandwidth == PodBandwidth::default() {
        return Ok(());
    }
    let cgroup = if record.bandwidth.ebpf_pod.is_none() {
        Some(
            cgroup_dir(runtime, CALL, &record.cgroup_parent)
                .map_err(|s| s.message().to_string())?,
        )
    } else {
        None
    };
    runtime
        .shaper
        .with(runtime, |shaper| {
            let records = runtime.state.sandboxes();
            let mut retired = Vec::new();
            for dir in Direction::ALL {
                let new = if shaped {
                    wanted(policy, dir, shaper.widest(dir))
                } else {
                    None
                };
                let old = *slot(&mut record.bandwidth, dir);
                match (old, new) {
                    (None, None) => {}
                    (Some(old), None) => {
                        *slot(&mut record.bandwidth, dir) = None;
                        retired.push((dir, old.minor));
                    }
                    (Some(old), Some(rates)) if !old.rates().needs_fresh_class(&rates) => {
                        shaper.set_class(dir, old.minor, &rates, record.host_network)?;
                        *slot(&mut record.bandwidth, dir) = Some(PodClass::new(old.minor, &rates));
                    }
                    (old, Some(rates)) => {
                        let minor = shaper.free_minor(dir, &records)?;
                        *slot(&mut record.bandwidth, dir) = Some(PodClass::new(minor, &rates));
                        shaper.set_class(dir, minor, &rates, record.host_network)?;
                        retired.extend(old.map(|o| (dir, o.minor)));
                    }
                }
            }
            let settings = kernel_settings(&record.bandwidth);
            if let (Some(pod), Some(ifindex)) =
                (record.bandwidth.ebpf_pod, record.bandwidth.interface)
            {
                set_interface(shaper, pod, ifindex, &record.bandwidth.addresses, &settings)?;
            }
            match (record.bandwidth.ebpf_pod, &cgroup) {
                (Some(pod), _) => shaper
                    .programs()
                    .update(PodId(pod), &settings)
                    .map_err(|e| ShapeError::Failed(format!("updating the programs: {e}")))?,
                (None, Some(cgroup)) => {
                    let pod = shaper
                        .programs()
                        .attach(cgroup, &settings)
                        .map_err(|e| ShapeError::Failed(format!("attaching the programs: {e}")))?;
                    record.bandwidth.ebpf_pod = Some(pod.0);
                }
                (None, None) => {}
            }
            if !retired.is_empty() {
                // The programs point at the new classes now; what the old ones hold drains.
                std::thread::sleep(RETIRE_DRAIN);
                for (dir, minor) in retired {
                    shaper.remove_class(dir, minor)?;
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    runtime.shaper.release_if_idle(&runtime.config);
    Ok(())
}

fn set_interface(
    shaper: &mut Shaper,
    pod: u64,
    ifindex: u32,
    addresses: &[std::net::IpAddr],
    settings: &kraal_ebpf::PodBandwidth,
) -> Result<(), ShapeError> {
    let dev = kraal_ebpf::PodInterface {
        ifindex,
        pod: PodId(pod),
        egress_class: settings.egress_class,
        ingress_class: settings.ingress_class,
    };
    shaper
        .programs()
        .set_interface(&dev)
        .map_err(|e| ShapeError::Failed(format!("recording the pod's interface {ifindex}: {e}")))?;
    for &addr in addresses {
        shaper
            .programs()
            .set_address(addr, &dev)
            .map_err(|e| ShapeError::Failed(format!("recording the pod's address {addr}: {e}")))?;
    }
    Ok(())
}

/// Records the host-side interface and the addresses of a shaped pod with its own netns (the
/// host end of its veth and its IPs, from CNI), once its network is up: its packets lose
/// their priority when they are forwarded out of the pod's netns, and the uplinks'
/// classifier finds the pod by the interface they arrive on (routed networks) or, behind a
/// bridge, by their source address. Nothing to do for a pod that is not shaped.
pub fn pod_interface(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    host_ifname: &str,
    addresses: &[std::net::IpAddr],
) -> Result<(), Status> {
    const CALL: &str = "RunPodSandbox";
    let Some(pod) = record.bandwidth.ebpf_pod else {
        return Ok(());
    };
    let ifindex = kraal_net::shaping::Device::new(kraal_net::Netns::Current, host_ifname)
        .ifindex()
        .map_err(|e| Status::internal(format!("{CALL}: the pod's host interface: {e}")))?;
    let settings = kernel_settings(&record.bandwidth);
    runtime
        .shaper
        .with(runtime, |shaper| {
            set_interface(shaper, pod, ifindex, addresses, &settings)
        })
        .map_err(|e| to_status(CALL, e))?;
    record.bandwidth.interface = Some(ifindex);
    record.bandwidth.addresses = addresses.to_vec();
    Ok(())
}

/// Forgets the pod's host-side interface when its network goes (StopPodSandbox): the index
/// may be reused by another pod's interface. (The record keeps the index: a stopped pod's
/// network never comes back, and RemovePodSandbox forgets everything of the pod anyway.)
pub fn forget_interface(runtime: &Runtime, record: &SandboxRecord) -> Result<(), String> {
    let Some(ifindex) = record.bandwidth.interface else {
        return Ok(());
    };
    runtime
        .shaper
        .with(runtime, |shaper| {
            let programs = shaper.programs();
            programs
                .remove_interface(ifindex)
                .map_err(|e| ShapeError::Failed(format!("forgetting interface {ifindex}: {e}")))?;
            for &addr in &record.bandwidth.addresses {
                programs
                    .remove_address(addr)
                    .map_err(|e| ShapeError::Failed(format!("forgetting address {addr}: {e}")))?;
            }
            Ok(true)
        })
        .map_err(|e| e.to_string())
        .map(|_| ())
}

/// Removes the pod's classes and programs; nothing to do if it has none. When no shaped pod
/// is left, the devices get their own qdiscs back.
pub fn detach(runtime: &Runtime, record: &SandboxRecord) -> Result<(), String> {
    let bandwidth = &record.bandwidth;
    if *bandwidth == PodBandwidth::default() {
        return Ok(());
    }
    let done = runtime.shaper.with(runtime, |shaper| {
        if let Some(pod) = bandwidth.ebpf_pod {
            shaper
                .programs()
                .detach(PodId(pod))
                .map_err(|e| ShapeError::Failed(format!("detaching the programs: {e}")))?;
        }
        for dir in Direction::ALL {
            if let Some(class) = class_of(bandwidth, dir) {
                shaper.remove_class(dir, class.minor)?;
            }
        }
        Ok(())
    });
    match done {
        Ok(()) => {}
        // The node cannot be set up any more (a device is gone, and its classes with it):
        // the pod must still be removable, and nothing of it left pinned.
        Err(ShapeError::Unavailable(reason)) => {
            tracing::warn!(sandbox = %record.id, %reason, "bandwidth shaping is unavailable; detaching the pod's programs only");
            if let Some(pod) = bandwidth.ebpf_pod {
                runtime.shaper.detach_programs_only(&runtime.config, pod)?;
            }
        }
        Err(e) => return Err(format!("bandwidth: {e}")),
    }
    runtime.shaper.release_if_idle(&runtime.config);
    Ok(())
}

/// One direction's class and counters.
struct DirectionStatus {
    dir: Direction,
    class: PodClass,
    seen: kraal_ebpf::DirectionCounters,
    shaped: node::ClassTotals,
}

fn read_status(runtime: &Runtime, record: &SandboxRecord) -> Vec<DirectionStatus> {
    let bandwidth = &record.bandwidth;
    if bandwidth.egress.is_none() && bandwidth.ingress.is_none() {
        return Vec::new();
    }
    let read = runtime.shaper.with(runtime, |shaper| {
        let seen = match bandwidth.ebpf_pod {
            Some(pod) => shaper.programs().counters(PodId(pod)).unwrap_or_default(),
            None => Default::default(),
        };
        let mut out = Vec::new();
        for dir in Direction::ALL {
            if let Some(class) = class_of(bandwidth, dir) {
                out.push(DirectionStatus {
                    dir,
                    class: *class,
                    seen: match dir {
                        Direction::Egress => seen.egress,
                        Direction::Ingress => seen.ingress,
                    },
                    shaped: shaper.class_totals(dir, class.minor)?,
                });
            }
        }
        Ok(out)
    });
    read.unwrap_or_else(|e| {
        tracing::warn!(sandbox = %record.id, error = %e, "reading the pod's bandwidth counters");
        Vec::new()
    })
}

fn class_id(dir: Direction, minor: u16) -> String {
    ClassId::from_u32(Shaper::class_handle(dir, minor)).to_string()
}

/// The pod's classes and counters for PodSandboxStatus; None when it has no class.
pub fn status_json(runtime: &Runtime, record: &SandboxRecord) -> Option<serde_json::Value> {
    let read = read_status(runtime, record);
    if read.is_empty() {
        return None;
    }
    let mut out = serde_json::Map::new();
    for s in read {
        out.insert(
            s.dir.name().to_string(),
            serde_json::json!({
                "class": class_id(s.dir, s.class.minor),
                "rateBps": s.class.rate_bps,
                "ceilBps": s.class.ceil_bps,
                "burstBytes": s.class.burst_bytes,
                "prio": s.class.prio,
                "bytes": s.seen.bytes,
                "packets": s.seen.packets,
                "shapedBytes": s.shaped.bytes,
                "shapedPackets": s.shaped.packets,
                "heldBack": s.shaped.overlimits,
                "dropped": s.shaped.drops + s.seen.dropped_packets,
                "backlogBytes": s.shaped.backlog_bytes,
            }),
        );
    }
    Some(serde_json::Value::Object(out))
}

/// The pod's classes and counters for the admin API.
pub fn admin_status(runtime: &Runtime, record: &SandboxRecord) -> Vec<admin::BandwidthClass> {
    read_status(runtime, record)
        .into_iter()
        .map(|s| admin::BandwidthClass {
            direction: s.dir.name().to_string(),
            class_id: class_id(s.dir, s.class.minor),
            rate_bps: s.class.rate_bps,
            ceil_bps: s.class.ceil_bps,
            burst_bytes: s.class.burst_bytes,
            prio: s.class.prio.into(),
            bytes: s.seen.bytes,
            packets: s.seen.packets,
            shaped_bytes: s.shaped.bytes,
            shaped_packets: s.shaped.packets,
            held_back: s.shaped.overlimits,
            dropped: s.shaped.drops + s.seen.dropped_packets,
            backlog_bytes: s.shaped.backlog_bytes,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kraal_policy::PolicyOptions;
    use std::collections::BTreeMap;

    fn policy(pairs: &[(&str, &str)]) -> PodPolicy {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PodPolicy::from_annotations(&annotations, &PolicyOptions::default()).unwrap()
    }

    #[test]
    fn only_limits_and_offline_pods_are_shaped() {
        assert!(!wants_shaping(&policy(&[])));
        assert!(wants_shaping(&policy(&[(
            "kubernetes.io/egress-bandwidth",
            "50M"
        )])));
        assert!(wants_shaping(&policy(&[(
            "kraal.dev/qos-class",
            "offline"
        )])));
    }

    #[test]
    fn an_offline_pod_without_limits_yields_up_to_the_widest_device() {
        let p = policy(&[("kraal.dev/qos-class", "offline")]);
        let c = wanted(&p, Direction::Egress, 1_000_000_000).unwrap();
        assert_eq!(
            (c.rate_bps, c.ceil_bps, c.prio),
            (MIN_RATE_BPS, 1_000_000_000, PRIO_OFFLINE)
        );
        let capped = policy(&[
            ("kraal.dev/qos-class", "offline"),
            ("kubernetes.io/ingress-bandwidth", "20M"),
        ]);
        assert_eq!(
            wanted(&capped, Direction::Ingress, 1).unwrap().ceil_bps,
            20_000_000
        );
        let online = policy(&[("kraal.dev/egress-bandwidth", "min=20M,max=80M")]);
        let c = wanted(&online, Direction::Egress, 1).unwrap();
        assert_eq!((c.rate_bps, c.ceil_bps), (20_000_000, 80_000_000));
        assert_eq!(wanted(&online, Direction::Ingress, 1), None);
    }

    #[test]
    fn kernel_settings_carry_full_class_handles() {
        let bandwidth = PodBandwidth {
            egress: Some(PodClass {
                minor: 0x10,
                rate_bps: 1,
                ceil_bps: 1,
                burst_bytes: 1,
                prio: 1,
            }),
            ingress: None,
            ebpf_pod: None,
            interface: None,
            addresses: Vec::new(),
        };
        let s = kernel_settings(&bandwidth);
        assert_eq!(s.egress_class, 0x6b72_0010);
        assert_eq!(s.ingress_class, 0);
    }
}
