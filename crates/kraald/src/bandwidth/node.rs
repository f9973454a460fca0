//! The node's side of bandwidth shaping: the HTB hierarchies on the devices pods' traffic
//! crosses (egress on each uplink and on loopback, ingress on an IFB per device) and the
//! eBPF programs that put pods' packets into their classes.
//!
//! Set up when the first pod needs shaping, so a node whose pods never ask for it keeps its
//! qdiscs as they were; taken down again when the last shaped pod is gone. Setup adopts
//! whatever an earlier kraald left (hierarchies, pinned programs) and removes the classes and
//! programs of pods kraal no longer knows, so a restart neither duplicates nor leaks.

use std::collections::BTreeSet;
use std::sync::Mutex;

use kraal_ebpf::{BandwidthPrograms, PodId};
use kraal_net::Netns;
use kraal_net::shaping::{
    ClassRates, Device, EGRESS_MAJOR, Hierarchy, INGRESS_MAJOR, IngressRedirect, NodeRates, Queue,
    free_minor,
};

use crate::config::{BandwidthConfig, Config};
use crate::runtime::Runtime;
use crate::state::{PodBandwidth, SandboxRecord};

const LOOPBACK: &str = "lo";
/// Loopback carries what the CPUs can copy. Its node class gets a capacity no pod's ceiling
/// reaches, so that on loopback only the pods' own limits apply: there is no NIC to protect.
const LOOPBACK_CAPACITY_BPS: u64 = 100_000_000_000;
/// The capacity of a device that reports no link speed (virtual devices) when the config
/// does not say.
const FALLBACK_CAPACITY_BPS: u64 = 10_000_000_000;

/// A direction of traffic, as seen from the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Egress,
    Ingress,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Egress, Direction::Ingress];

    pub fn name(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }

    fn major(self) -> u16 {
        match self {
            Direction::Egress => EGRESS_MAJOR,
            Direction::Ingress => INGRESS_MAJOR,
        }
    }

    fn index(self) -> usize {
        match self {
            Direction::Egress => 0,
            Direction::Ingress => 1,
        }
    }
}

/// Why shaping cannot be done: the node is not set up for it (its config, its devices), or a
/// step failed.
#[derive(Debug)]
pub enum ShapeError {
    Unavailable(String),
    Failed(String),
}

impl std::fmt::Display for ShapeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShapeError::Unavailable(m) | ShapeError::Failed(m) => f.write_str(m),
        }
    }
}

fn failed(what: impl std::fmt::Display) -> impl FnOnce(kraal_net::Error) -> ShapeError {
    move |e| ShapeError::Failed(format!("{what}: {e}"))
}

/// A class's counters summed over every device of its direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassTotals {
    pub bytes: u64,
    pub packets: u64,
    pub drops: u64,
    pub overlimits: u64,
    pub backlog_bytes: u64,
}

/// The hierarchies and programs kraald shapes with.
pub struct Shaper {
    programs: BandwidthPrograms,
    egress: Vec<Hierarchy>,
    ingress: Vec<(IngressRedirect, Hierarchy)>,
    /// Per direction, the largest capacity of its devices: the ceiling of a class that has no
    /// limit of its own (an offline pod that only yields).
    widest: [u64; 2],
}

impl Shaper {
    /// Sets the node up (or adopts what is there) and forgets pods that `records` do not
    /// hold. Anything half set up is taken down again on failure.
    fn open(config: &Config, records: &[SandboxRecord]) -> Result<Shaper, ShapeError> {
        let programs = load_programs(config).map_err(ShapeError::Unavailable)?;
        let mut shaper = Shaper {
            programs,
            egress: Vec::new(),
            ingress: Vec::new(),
            widest: [0, 0],
        };
        if let Err(e) = shaper.set_up_devices(&config.bandwidth) {
            shaper.take_down();
            return Err(e);
        }
        shaper.forget_unknown(records)?;
        Ok(shaper)
    }

    fn set_up_devices(&mut self, config: &BandwidthConfig) -> Result<(), ShapeError> {
        let mut devices = config.devices.clone();
        if devices.is_empty() {
            let found = kraal_net::link::default_route_device()
                .map_err(|e| ShapeError::Unavailable(format!("finding the default route: {e}")))?;
            devices.push(found.ok_or_else(|| {
                ShapeError::Unavailable(
                    "the node has no default route to take its device from; set [bandwidth] devices in kraald's config".into(),
                )
            })?);
        }
        let mut plan: Vec<(String, [u64; 2], f64)> = Vec::new();
        for name in devices {
            let speed = kraal_net::link::link_speed_bps(&name).unwrap_or(FALLBACK_CAPACITY_BPS);
            let capacity = |text: &str| {
                BandwidthConfig::capacity_bps(text)
                    .map(|c| c.unwrap_or(speed))
                    .map_err(ShapeError::Unavailable)
            };
            let capacities = [
                capacity(&config.egress_capacity)?,
                capacity(&config.ingress_capacity)?,
            ];
            plan.push((name, capacities, config.threshold));
        }
        if config.loopback && !plan.iter().any(|(name, ..)| name == LOOPBACK) {
            plan.push((LOOPBACK.into(), [LOOPBACK_CAPACITY_BPS; 2], 1.0));
        }
        for (name, capacities, threshold) in plan {
            let device = Device::new(Netns::Current, name.clone());
            device.ifindex().map_err(|e| {
                ShapeError::Unavailable(format!(
                    "[bandwidth] devices: {e}; expected the node's uplink devices"
                ))
            })?;
            let rates = |dir: Direction| {
                NodeRates::from_fraction(capacities[dir.index()], threshold).map_err(|e| {
                    ShapeError::Unavailable(format!("{} rates of {name}: {e}", dir.name()))
                })
            };
            let egress =
                Hierarchy::ensure(device.clone(), EGRESS_MAJOR, &rates(Direction::Egress)?)
                    .map_err(|e| ShapeError::Unavailable(format!("shaping {name}: {e}")))?;
            self.egress.push(egress.clone());
            egress
                .attach_classifier(self.programs.egress_classifier())
                .map_err(failed(format_args!("the egress classifier on {name}")))?;
            let redirect = IngressRedirect::ensure(device).map_err(|e| {
                ShapeError::Unavailable(format!("redirecting {name}'s ingress: {e}"))
            })?;
            let ingress = Hierarchy::ensure(
                redirect.ifb().clone(),
                INGRESS_MAJOR,
                &rates(Direction::Ingress)?,
            )
            .map_err(|e| ShapeError::Unavailable(format!("shaping {name}'s ingress: {e}")))?;
            self.ingress.push((redirect, ingress.clone()));
            ingress
                .attach_classifier(self.programs.ingress_classifier())
                .map_err(failed(format_args!("the ingress classifier on {name}")))?;
            for dir in Direction::ALL {
                let i = dir.index();
                self.widest[i] = self.widest[i].max(capacities[i]);
            }
        }
        Ok(())
    }

    /// Removes classes and programs of pods no record holds: left by a kraald that stopped
    /// between making them and saving the pod.
    fn forget_unknown(&mut self, records: &[SandboxRecord]) -> Result<(), ShapeError> {
        for dir in Direction::ALL {
            let known = minors(records, dir);
            for h in self.hierarchies(dir) {
                let classes = h.pod_classes().map_err(failed("listing pod classes"))?;
                for class in classes.iter().filter(|c| !known.contains(&c.id.minor)) {
                    tracing::warn!(device = %h.device(), class = %class.id, "removing the class of a pod kraal does not know");
                    h.remove_pod(class.id.minor)
                        .map_err(failed(format_args!("removing class {}", class.id)))?;
                }
            }
        }
        let known: BTreeSet<u64> = records
            .iter()
            .filter_map(|r| r.bandwidth.ebpf_pod)
            .collect();
        let attached = self
            .programs
            .list()
            .map_err(|e| ShapeError::Failed(format!("listing bandwidth programs: {e}")))?;
        for pod in attached.iter().filter(|p| !known.contains(&p.pod.0)) {
            tracing::warn!(
                pod = pod.pod.0,
                "detaching the bandwidth programs of a pod kraal does not know"
            );
            self.programs
                .detach(pod.pod)
                .map_err(|e| ShapeError::Failed(format!("detaching pod {}: {e}", pod.pod.0)))?;
        }
        Ok(())
    }

    fn hierarchies(&self, dir: Direction) -> Vec<&Hierarchy> {
        match dir {
            Direction::Egress => self.egress.iter().collect(),
            Direction::Ingress => self.ingress.iter().map(|(_, h)| h).collect(),
        }
    }

    pub fn programs(&mut self) -> &mut BandwidthPrograms {
        &mut self.programs
    }

    /// The largest capacity of the direction's devices.
    pub fn widest(&self, dir: Direction) -> u64 {
        self.widest[dir.index()]
    }

    /// The class handle a pod's class `minor` has in direction `dir`, for the eBPF programs.
    pub fn class_handle(dir: Direction, minor: u16) -> u32 {
        (u32::from(dir.major()) << 16) | u32::from(minor)
    }

    /// A minor no pod of `records` holds and no device has a class for.
    pub fn free_minor(&self, dir: Direction, records: &[SandboxRecord]) -> Result<u16, ShapeError> {
        let mut used = minors(records, dir);
        for h in self.hierarchies(dir) {
            let classes = h.pod_classes().map_err(failed("listing pod classes"))?;
            used.extend(classes.iter().map(|c| c.id.minor));
        }
        free_minor(&used).ok_or_else(|| {
            ShapeError::Unavailable(format!(
                "every {} class of the node is taken (one per shaped pod)",
                dir.name()
            ))
        })
    }

    /// Creates class `minor` on every device of `dir`, or changes it in place.
    pub fn set_class(
        &self,
        dir: Direction,
        minor: u16,
        rates: &ClassRates,
        host_network: bool,
    ) -> Result<(), ShapeError> {
        // A hostNetwork pod's egress leaves its own sockets, which TCP small queues hold back:
        // it keeps HTB's queue. Everything else has lost its socket and gets a short one.
        let queue = if dir == Direction::Egress && host_network {
            Queue::Default
        } else {
            Queue::Short
        };
        for h in self.hierarchies(dir) {
            h.set_pod_queue(minor, rates, queue)
                .map_err(failed(format_args!(
                    "setting the {} class on {}",
                    dir.name(),
                    h.device()
                )))?;
        }
        Ok(())
    }

    /// Removes class `minor` from every device of `dir`; absent classes are fine.
    pub fn remove_class(&self, dir: Direction, minor: u16) -> Result<(), ShapeError> {
        for h in self.hierarchies(dir) {
            h.remove_pod(minor).map_err(failed(format_args!(
                "removing the {} class from {}",
                dir.name(),
                h.device()
            )))?;
        }
        Ok(())
    }

    /// Class `minor`'s counters, summed over the devices of `dir`.
    pub fn class_totals(&self, dir: Direction, minor: u16) -> Result<ClassTotals, ShapeError> {
        let mut totals = ClassTotals::default();
        for h in self.hierarchies(dir) {
            if let Some(c) = h
                .class_stats(minor)
                .map_err(failed("reading class counters"))?
            {
                totals.bytes += c.bytes;
                totals.packets += c.packets;
                totals.drops += c.drops;
                totals.overlimits += c.overlimits;
                totals.backlog_bytes += c.backlog_bytes;
            }
        }
        Ok(totals)
    }

    /// No pod has a class or programs any more.
    fn is_idle(&self) -> bool {
        let no_classes = Direction::ALL.iter().all(|&dir| {
            self.hierarchies(dir)
                .iter()
                .all(|h| h.pod_classes().map(|c| c.is_empty()).unwrap_or(false))
        });
        no_classes && self.programs.list().map(|p| p.is_empty()).unwrap_or(false)
    }

    /// Gives the devices their own qdiscs back. Best effort: a device may be gone.
    fn take_down(&mut self) {
        for (redirect, _) in self.ingress.drain(..) {
            if let Err(e) = redirect.teardown() {
                tracing::warn!(error = %e, "removing an ingress redirect");
            }
        }
        for h in self.egress.drain(..) {
            let device = h.device().clone();
            if let Err(e) = h.teardown() {
                tracing::warn!(%device, error = %e, "removing an HTB hierarchy");
            }
        }
    }
}

/// The minors of direction `dir` that `records` hold.
fn minors(records: &[SandboxRecord], dir: Direction) -> BTreeSet<u16> {
    records
        .iter()
        .filter_map(|r| class_of(&r.bandwidth, dir).map(|c| c.minor))
        .collect()
}

/// The pod's class for `dir`, if it has one.
pub fn class_of(bandwidth: &PodBandwidth, dir: Direction) -> Option<&crate::state::PodClass> {
    match dir {
        Direction::Egress => bandwidth.egress.as_ref(),
        Direction::Ingress => bandwidth.ingress.as_ref(),
    }
}

/// Loads (or re-adopts) the bandwidth programs pinned under the config's bpffs directory.
fn load_programs(config: &Config) -> Result<BandwidthPrograms, String> {
    crate::runtime::bpf_pins::load(&config.bandwidth_pin_root(), |root| {
        BandwidthPrograms::load(root).map_err(|e| format!("loading the bandwidth programs: {e}"))
    })
}

/// The shaper, set up when a pod first needs it and taken down when none does.
#[derive(Default)]
pub struct LazyShaper {
    slot: Mutex<Option<Shaper>>,
}

impl LazyShaper {
    /// Runs `f` on the shaper, setting the node up first if needed. Calls are serialised: a
    /// pod's classes are allocated and made in one go.
    pub fn with<T>(
        &self,
        runtime: &Runtime,
        f: impl FnOnce(&mut Shaper) -> Result<T, ShapeError>,
    ) -> Result<T, ShapeError> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| ShapeError::Failed("the shaper lock is poisoned".into()))?;
        if slot.is_none() {
            *slot = Some(Shaper::open(&runtime.config, &runtime.state.sandboxes())?);
        }
        match slot.as_mut() {
            Some(shaper) => f(shaper),
            None => Err(ShapeError::Failed("the shaper vanished".into())),
        }
    }

    /// Takes the node's hierarchies down and removes the programs' pins if no pod is shaped
    /// any more. With the shaper not set up, only pins no pod holds are removed (left by an
    /// earlier kraald, or by [`LazyShaper::detach_programs_only`]).
    pub fn release_if_idle(&self, config: &Config) {
        let Ok(mut slot) = self.slot.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|s| !s.is_idle()) {
            return;
        }
        if let Some(mut shaper) = slot.take() {
            shaper.take_down();
            tracing::info!("no pod is shaped any more: the devices' own qdiscs are back");
        }
        crate::runtime::bpf_pins::release_unused(config, &config.bandwidth_pin_root());
    }

    /// Detaches a pod's programs without the devices: for a node whose shaping can no longer
    /// be set up (a device is gone), so that removing the pod still leaves nothing pinned.
    pub fn detach_programs_only(&self, config: &Config, pod: u64) -> Result<(), String> {
        let mut programs = load_programs(config)?;
        programs
            .detach(PodId(pod))
            .map(|_| ())
            .map_err(|e| format!("detaching the bandwidth programs: {e}"))
    }
}
