//! A pod's local port ranges on the node side: `auto:<count>` blocks from the node's pool,
//! and a pod network namespace's `ip_local_port_range`, which puts every ephemeral port of a
//! pod with its own netns in its range. (Binds in hostNetwork pods need eBPF: kraal-ebpf.)

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

use kraal_api::kraal::v1 as admin;
use kraal_policy::{PodPolicy, PortRange, PortSpec, allocate_block};
use tonic::Status;

use kraal_ebpf::{PodId, PortPrograms};

use crate::config::{Config, PortsConfig, UnsteeredUdp};
use crate::runtime::Runtime;
use crate::state::{PodPorts, SandboxRecord, SandboxState};

const HOST_EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
/// What a new network namespace starts with; a pod whose lists go away gets it back.
const NETNS_DEFAULT_RANGE: (u16, u16) = (32768, 60999);

/// Blocks handed out to pods still being created (not yet in a saved record), so two
/// concurrent RunPodSandbox calls never get the same block.
#[derive(Default)]
pub struct PortBlocks {
    inflight: Mutex<HashMap<String, Vec<PortRange>>>,
}

/// What a pod asks of its ports, for [`PortBlocks::resolve`].
pub struct PortsRequest<'a> {
    /// The CRI or admin call, for messages.
    pub call: &'a str,
    pub sandbox_id: &'a str,
    pub policy: &'a PodPolicy,
    pub host_network: bool,
    /// The policy and ports of a running pod whose policy changes: a side whose annotation
    /// did not change keeps what it had (an `auto:` block is not moved under the pod's open
    /// sockets); one that changed is resolved anew.
    pub previous: Option<(&'a PodPolicy, &'a PodPorts)>,
}

/// One side (bind or connect) of a pod's ports, as asked and as it was before.
struct Side<'a> {
    key: &'static str,
    spec: &'a Option<PortSpec>,
    kept: Option<&'a Option<Vec<(u16, u16)>>>,
}

impl PortBlocks {
    /// Resolves the pod's port annotations: lists as they are, `auto:` blocks allocated.
    /// Call [`PortBlocks::settle`] once the sandbox record is saved (or creation failed).
    pub fn resolve(
        &self,
        config: &PortsConfig,
        sandboxes: &[SandboxRecord],
        request: PortsRequest<'_>,
    ) -> Result<PodPorts, Status> {
        let PortsRequest {
            call,
            sandbox_id,
            policy,
            host_network,
            previous,
        } = request;
        if host_network && config.host_network_requires_ranges && policy.bind_ports.is_none() {
            return Err(Status::invalid_argument(format!(
                "{call}: this node requires hostNetwork pods to declare their ports: add kraal.dev/bind-ports (a list like \"20000-20999\" or \"auto:<count>\")",
            )));
        }
        // A new hostNetwork pod that declares nothing may get the node's default, one list
        // for both sides. (A running pod keeps what it was given: its sides are unchanged.)
        let default = if host_network
            && previous.is_none()
            && policy.bind_ports.is_none()
            && policy.connect_ports.is_none()
        {
            config.host_network_default()
        } else {
            None
        };
        let sides = [
            Side {
                key: "kraal.dev/bind-ports",
                spec: if default.is_some() {
                    &default
                } else {
                    &policy.bind_ports
                },
                kept: previous
                    .filter(|(old, _)| old.bind_ports == policy.bind_ports)
                    .map(|(_, ports)| &ports.bind),
            },
            Side {
                key: "kraal.dev/connect-ports",
                spec: &policy.connect_ports,
                kept: previous
                    .filter(|(old, _)| old.connect_ports == policy.connect_ports)
                    .map(|(_, ports)| &ports.connect),
            },
        ];
        let mut inflight = self
            .inflight
            .lock()
            .map_err(|_| Status::internal(format!("{call}: the port block table is poisoned")))?;
        let mut taken: Vec<PortRange> = sandboxes
            .iter()
            .filter(|s| s.state == SandboxState::Ready && s.id != sandbox_id)
            .flat_map(|s| blocks_of(&s.ports))
            .collect();
        taken.extend(inflight.values().flatten().copied());
        if let Some(host) = host_ephemeral_range() {
            taken.push(host);
        }
        // What the pod keeps is still its own: a block resolved anew must not overlap it.
        let mut mine: Vec<PortRange> = sides
            .iter()
            .filter_map(|side| side.kept)
            .flatten()
            .flatten()
            .filter_map(|&(start, end)| PortRange::new(start, end).ok())
            .collect();
        let mut resolved = Vec::with_capacity(2);
        for side in &sides {
            let ranges = match (side.kept, side.spec) {
                (Some(kept), _) => kept.clone(),
                (None, None) => None,
                (None, Some(PortSpec::List(list))) => {
                    Some(list.ranges().iter().map(|r| (r.start(), r.end())).collect())
                }
                (None, Some(PortSpec::Auto { count })) => {
                    let pool = config.pool_range().map_err(|e| {
                        Status::failed_precondition(format!("{call}: ports.pool: {e}"))
                    })?;
                    let unavailable: Vec<PortRange> =
                        taken.iter().chain(mine.iter()).copied().collect();
                    let block = allocate_block(pool, *count, &unavailable).ok_or_else(|| {
                        Status::resource_exhausted(format!(
                            "{call}: {}: \"auto:{count}\": no free block of {count} ports left in the node's pool {}-{} (other pods' blocks and the host's ephemeral range are excluded); ask for fewer ports or free some pods",
                            side.key,
                            pool.start(),
                            pool.end()
                        ))
                    })?;
                    mine.push(block);
                    Some(vec![(block.start(), block.end())])
                }
            };
            resolved.push(ranges);
        }
        if !mine.is_empty() {
            inflight.insert(sandbox_id.to_string(), mine);
        }
        let mut connect = resolved.pop().flatten();
        let bind = resolved.pop().flatten();
        if default.is_some() {
            connect = bind.clone();
        }
        Ok(PodPorts {
            bind,
            connect,
            netns_range: previous.and_then(|(_, ports)| ports.netns_range),
            ebpf_pod: previous.and_then(|(_, ports)| ports.ebpf_pod),
        })
    }

    /// Forgets the in-flight blocks of `sandbox_id`: its record now holds them, or it failed.
    pub fn settle(&self, sandbox_id: &str) {
        if let Ok(mut inflight) = self.inflight.lock() {
            inflight.remove(sandbox_id);
        }
    }
}

fn blocks_of(ports: &PodPorts) -> Vec<PortRange> {
    [&ports.bind, &ports.connect]
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|&(start, end)| PortRange::new(start, end).ok())
        .collect()
}

/// The host's own ephemeral range, which no pod block may overlap.
fn host_ephemeral_range() -> Option<PortRange> {
    let text = std::fs::read_to_string(HOST_EPHEMERAL_RANGE).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<u16>());
    match (parts.next(), parts.next()) {
        (Some(Ok(start)), Some(Ok(end))) => PortRange::new(start, end).ok(),
        _ => None,
    }
}

/// The port programs, loaded (or re-adopted from their pins) on first use: a node whose pods
/// never ask for port ranges pays nothing at start-up, and pinned links keep enforcing on
/// their own until kraald needs to change them. A failed load is retried on the next use.
#[derive(Default)]
pub struct LazyPrograms {
    slot: Mutex<Option<PortPrograms>>,
}

impl LazyPrograms {
    /// Runs `f` on the loaded programs, loading them first if needed.
    fn with<T>(
        &self,
        config: &Config,
        f: impl FnOnce(&mut PortPrograms) -> T,
    ) -> Result<T, String> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| "the port programs lock is poisoned".to_string())?;
        let programs = match slot.take() {
            Some(programs) => programs,
            None => load_programs(config)?,
        };
        Ok(f(slot.insert(programs)))
    }

    /// Unloads the programs and removes their pins once no pod is attached: a node whose
    /// pods no longer ask for port ranges keeps nothing of them. The next pod that does
    /// loads them again.
    pub fn release_if_idle(&self, config: &Config) {
        let mut slot = match self.slot.lock() {
            Ok(slot) => slot,
            Err(_) => return,
        };
        if let Some(programs) = slot.as_ref() {
            match programs.list() {
                Ok(pods) if pods.is_empty() => {}
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "listing the pods of the port programs");
                    return;
                }
            }
        }
        // Dropped first: the next loader must create fresh maps, not share unpinned ones.
        *slot = None;
        crate::runtime::bpf_pins::release_unused(config, &config.bpf_pin_root());
    }
}

/// Loads (or re-adopts) the port programs pinned under the config's bpffs directory.
fn load_programs(config: &Config) -> Result<PortPrograms, String> {
    crate::runtime::bpf_pins::load(&config.bpf_pin_root(), |root| {
        PortPrograms::load(root).map_err(|e| format!("loading the port programs: {e}"))
    })
}

/// Attaches the port programs to the pod's cgroup2 directory with its lists, before any of
/// its processes exist. Pods without port annotations get nothing attached.
pub fn attach(runtime: &Runtime, record: &mut SandboxRecord) -> Result<(), Status> {
    let lists = kernel_lists(&runtime.config.ports, &record.ports);
    record.ports.ebpf_pod = attach_lists(runtime, "RunPodSandbox", &record.cgroup_parent, &lists)?;
    Ok(())
}

/// Attaches the programs with `lists` to the cgroup2 directory of `cgroup_parent`; returns the
/// pod's id in the programs, or None (nothing attached) when both lists are empty.
fn attach_lists(
    runtime: &Runtime,
    call: &str,
    cgroup_parent: &str,
    lists: &kraal_ebpf::PodPorts,
) -> Result<Option<u64>, Status> {
    if lists.bind.is_empty() && lists.connect.is_empty() {
        return Ok(None);
    }
    let dir = crate::runtime::unified_dir(runtime, cgroup_parent).ok_or_else(|| {
        Status::failed_precondition(format!(
            "{call}: port ranges need a cgroup2 hierarchy (v2 or hybrid); this host has only cgroup v1"
        ))
    })?;
    let pod = runtime
        .port_programs
        .with(&runtime.config, |programs| programs.attach(&dir, lists))
        .map_err(|reason| {
            Status::failed_precondition(format!(
                "{call}: the pod has kraal.dev port ranges, but this node cannot enforce them: {reason}"
            ))
        })?
        .map_err(|e| {
            Status::internal(format!(
                "{call}: attaching the port programs to {}: {e}",
                dir.display()
            ))
        })?;
    Ok(Some(pod.0))
}

/// The lists as the kernel programs take them.
fn kernel_lists(config: &PortsConfig, ports: &PodPorts) -> kraal_ebpf::PodPorts {
    kraal_ebpf::PodPorts {
        bind: ports.bind.clone().unwrap_or_default(),
        connect: ports.connect.clone().unwrap_or_default(),
        allocator: kraal_ebpf::Allocator::Tracking,
        count_unsteered: config.unsteered_udp != UnsteeredUdp::Ignore,
        deny_unsteered: config.unsteered_udp == UnsteeredUdp::Deny,
    }
}

/// Gives a running pod new port lists (from [`PortBlocks::resolve`] with its old ones as
/// `previous`): one map update when its programs are attached, an attach when it had no lists
/// before (its sockets opened until now stay unrestricted), and its netns sysctl rewritten.
/// Programs stay attached when the lists go away: empty lists leave the pod unrestricted, and
/// the links go with the pod.
pub fn apply_live(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    mut ports: PodPorts,
) -> Result<(), String> {
    let lists = kernel_lists(&runtime.config.ports, &ports);
    match record.ports.ebpf_pod {
        Some(pod) => runtime
            .port_programs
            .with(&runtime.config, |programs| {
                programs.update(PodId(pod), &lists)
            })?
            .map_err(|e| format!("updating the port ranges: {e}"))?,
        None => {
            // Recorded at once: if a later step fails, undoing it must find these links.
            record.ports.ebpf_pod =
                attach_lists(runtime, "UpdatePodPolicy", &record.cgroup_parent, &lists)
                    .map_err(|status| status.message().to_string())?;
        }
    }
    ports.ebpf_pod = record.ports.ebpf_pod;
    if let Some(netns) = &record.net_ns {
        let range = netns_range(&ports);
        let value = range.unwrap_or(NETNS_DEFAULT_RANGE);
        set_netns_port_range(netns, value).map_err(|e| {
            format!(
                "setting net.ipv4.ip_local_port_range {}-{} in the pod's network namespace: {e}",
                value.0, value.1
            )
        })?;
        ports.netns_range = range;
    }
    record.ports = ports;
    Ok(())
}

/// Detaches the pod's port programs and forgets its map entries; nothing to do if none.
pub fn detach(runtime: &Runtime, record: &SandboxRecord) -> Result<(), String> {
    let Some(pod) = record.ports.ebpf_pod else {
        return Ok(());
    };
    runtime
        .port_programs
        .with(&runtime.config, |programs| programs.detach(PodId(pod)))?
        .map_err(|e| format!("detaching the port programs: {e}"))?;
    runtime.port_programs.release_if_idle(&runtime.config);
    Ok(())
}

/// The pod's counters from the kernel programs; None when none are attached.
fn read_counters(runtime: &Runtime, record: &SandboxRecord) -> Option<kraal_ebpf::Counters> {
    let pod = record.ports.ebpf_pod?;
    runtime
        .port_programs
        .with(&runtime.config, |programs| programs.counters(PodId(pod)))
        .ok()?
        .ok()
}

/// The pod's port counters, for PodSandboxStatus.
pub fn counters(runtime: &Runtime, record: &SandboxRecord) -> Option<serde_json::Value> {
    let c = read_counters(runtime, record)?;
    Some(serde_json::json!({
        "bindsAllowed": c.binds_allowed,
        "bindsDenied": c.binds_denied,
        "ephemeralPorts": c.ephemeral,
        "failures": c.failures,
        "exhausted": c.exhausted,
        "unsteeredUdp": c.unsteered_udp,
    }))
}

/// The pod's ports for the admin API; None when it has no lists.
pub fn admin_status(runtime: &Runtime, record: &SandboxRecord) -> Option<admin::PodPorts> {
    let ports = &record.ports;
    if ports.bind.is_none() && ports.connect.is_none() && ports.ebpf_pod.is_none() {
        return None;
    }
    let spans = |list: &Option<Vec<(u16, u16)>>| -> Vec<admin::PortSpan> {
        list.iter().flatten().map(|&range| span(range)).collect()
    };
    Some(admin::PodPorts {
        bind: spans(&ports.bind),
        connect: spans(&ports.connect),
        netns_range: ports.netns_range.map(span),
        enforced: ports.ebpf_pod.is_some(),
        counters: read_counters(runtime, record).map(|c| admin::PortCounters {
            binds_allowed: c.binds_allowed,
            binds_denied: c.binds_denied,
            ephemeral_ports: c.ephemeral,
            failures: c.failures,
            exhausted: c.exhausted,
            unsteered_udp: c.unsteered_udp,
        }),
    })
}

fn span((first, last): (u16, u16)) -> admin::PortSpan {
    admin::PortSpan {
        first: first.into(),
        last: last.into(),
    }
}

/// The range a pod netns's `ip_local_port_range` gets: the connect list if there is one,
/// else the bind list; the sysctl holds one range, so a list of several gets its largest.
pub fn netns_range(ports: &PodPorts) -> Option<(u16, u16)> {
    let list = ports.connect.as_ref().or(ports.bind.as_ref())?;
    list.iter()
        .copied()
        .max_by_key(|&(start, end)| u32::from(end) - u32::from(start))
}

/// Writes `net.ipv4.ip_local_port_range` inside the network namespace pinned at `netns`.
/// A new thread joins the namespace and ends with the write, so no thread of kraald is left
/// in a pod's namespace.
pub fn set_netns_port_range(netns: &Path, (start, end): (u16, u16)) -> std::io::Result<()> {
    let file = std::fs::File::open(netns)?;
    let value = format!("{start} {end}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)?;
                std::fs::write(HOST_EPHEMERAL_RANGE, &value)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the netns thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sysctl_gets_the_connect_list_else_the_largest_bind_range() {
        let ports = PodPorts {
            bind: Some(vec![(8080, 8080), (20000, 20999), (30000, 30099)]),
            connect: None,
            netns_range: None,
            ebpf_pod: None,
        };
        assert_eq!(netns_range(&ports), Some((20000, 20999)));
        let ports = PodPorts {
            connect: Some(vec![(40000, 40099)]),
            ..ports
        };
        assert_eq!(netns_range(&ports), Some((40000, 40099)));
        assert_eq!(netns_range(&PodPorts::default()), None);
    }
}
