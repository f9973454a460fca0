//! Per-pod bandwidth classification and counters (kraal issue 6): loading the programs of
//! `bpf/bandwidth.bpf.c` once, attaching them per pod, and the pin layout that lets them
//! outlive the loader:
//!
//! ```text
//! <root>/maps/<map>                  the maps, shared by every program instance ever loaded
//! <root>/pods/<pod-id>/{egress,ingress}  one pinned cgroup_skb link per direction
//! <root>/progs/<classifier>          the current instance of each tc classifier, for
//!                                    `tc filter ... bpf da object-pinned <pin>`
//! ```
//!
//! The shaping is HTB's (kraal-net sets the qdiscs and classes up); these programs only say
//! which class a packet belongs to, and count. A pod in the host netns gets its egress class
//! through `skb->priority`; a pod with its own netns through the host-side interface its
//! packets arrive on ([`BandwidthPrograms::set_interface`]), read by the uplink's classifier;
//! ingress through the IFB's classifier (routed on to a pod interface, or for a local socket of
//! a pod). See the C file for why each mechanism was chosen.

#![allow(deprecated)] // CgroupStorage: see PortPrograms, the same per-attachment slot is used.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{CgroupStorage, CgroupStorageKey, HashMap, MapData, MapError, PerCpuHashMap};
use aya::programs::links::{FdLink, LinkError};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SchedClassifier,
};
use aya::{Ebpf, EbpfLoader, Pod};

use crate::PodId;
use crate::error::{Error, Result, io};
use crate::fs::{open_cgroup2, require_bpffs};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bandwidth.bpf.o"));

const MAP_PODS: &str = "kb_pods";
const MAP_DEVS: &str = "kb_devs";
const MAP_ADDRS: &str = "kb_addrs";
const MAP_STATS: &str = "kb_stats";
const MAP_BUCKETS: &str = "kb_buckets";
const MAP_SOCKS: &str = "kb_socks";
const MAP_PODREFS: &str = "kb_podrefs";
const MAPS: [&str; 7] = [
    MAP_PODS,
    MAP_DEVS,
    MAP_ADDRS,
    MAP_STATS,
    MAP_BUCKETS,
    MAP_SOCKS,
    MAP_PODREFS,
];

const PROG_EGRESS: &str = "kb_egress";
const PROG_INGRESS: &str = "kb_ingress";
const PROG_CLASSIFY_EGRESS: &str = "kb_classify_egress";
const PROG_CLASSIFY_INGRESS: &str = "kb_classify_ingress";

const F_POLICE_INGRESS: u32 = 1;
const EGRESS: usize = 0;
const INGRESS: usize = 1;

/// `enum bpf_attach_type`: BPF_CGROUP_INET_INGRESS and BPF_CGROUP_INET_EGRESS.
const ATTACH_INGRESS: u32 = 0;
const ATTACH_EGRESS: u32 = 1;

// Mirrors of bpf/bandwidth.h. Keep both in sync; the size assertions catch most drift.

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct KbPodref {
    pod_id: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct KbPod {
    egress_class: u32,
    ingress_class: u32,
    flags: u32,
    pad: u32,
    police_rate: u64,
    police_burst: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct KbDev {
    pod_id: u64,
    egress_class: u32,
    ingress_class: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct KbStats {
    bytes: [u64; 2],
    packets: [u64; 2],
    dropped_bytes: [u64; 2],
    dropped_packets: [u64; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct KbBucket {
    /// `struct bpf_spin_lock`; the kernel never copies it from or to userspace.
    lock: u32,
    pad: u32,
    tokens: u64,
    last_ns: u64,
}

// SAFETY: plain `repr(C)` integers without padding; valid for any bit pattern.
unsafe impl Pod for KbPodref {}
// SAFETY: as above.
unsafe impl Pod for KbPod {}
// SAFETY: as above.
unsafe impl Pod for KbDev {}
// SAFETY: as above.
unsafe impl Pod for KbStats {}
// SAFETY: as above.
unsafe impl Pod for KbBucket {}

const _: () = assert!(size_of::<KbPodref>() == 8);
const _: () = assert!(size_of::<KbPod>() == 32);
const _: () = assert!(size_of::<KbDev>() == 16);
const _: () = assert!(size_of::<KbStats>() == 64);
const _: () = assert!(size_of::<KbBucket>() == 24);

/// A cgroup hook of the bandwidth programs; each pod gets a link on both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BandwidthHook {
    /// `cgroup_skb/egress`: sets the egress class, counts, tags sockets.
    Egress,
    /// `cgroup_skb/ingress`: counts, tags sockets, polices when asked to.
    Ingress,
}

impl BandwidthHook {
    pub const ALL: [BandwidthHook; 2] = [BandwidthHook::Egress, BandwidthHook::Ingress];

    /// The name of the link's pin file in the pod's pin directory.
    pub fn name(self) -> &'static str {
        match self {
            BandwidthHook::Egress => "egress",
            BandwidthHook::Ingress => "ingress",
        }
    }

    pub fn from_name(name: &str) -> Option<BandwidthHook> {
        BandwidthHook::ALL.into_iter().find(|h| h.name() == name)
    }

    fn program(self) -> &'static str {
        match self {
            BandwidthHook::Egress => PROG_EGRESS,
            BandwidthHook::Ingress => PROG_INGRESS,
        }
    }

    fn attach_type(self) -> CgroupSkbAttachType {
        match self {
            BandwidthHook::Egress => CgroupSkbAttachType::Egress,
            BandwidthHook::Ingress => CgroupSkbAttachType::Ingress,
        }
    }

    /// Half of the cgroup storage key.
    fn attach_type_id(self) -> u32 {
        match self {
            BandwidthHook::Egress => ATTACH_EGRESS,
            BandwidthHook::Ingress => ATTACH_INGRESS,
        }
    }
}

/// Dropping ingress above a rate in the pod's `cgroup_skb/ingress` program: the fallback for
/// nodes without IFB. HTB on an IFB measured far better (no retransmits); see kraal-net.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Police {
    pub rate_bps: u64,
    pub burst_bytes: u64,
}

/// What a pod's programs enforce. Class handles are tc handles, major in the upper 16 bits
/// (`0x6b72_0010` is `6b72:10`); 0 means "no class".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodBandwidth {
    /// Put in `skb->priority` of every packet the pod sends, which makes HTB pick that class
    /// on any device whose HTB holds it (the uplinks), with no tc filter.
    pub egress_class: u32,
    /// The pod's class in the node's ingress hierarchy, for packets to its local sockets.
    pub ingress_class: u32,
    pub police_ingress: Option<Police>,
}

impl PodBandwidth {
    fn to_kb(self) -> KbPod {
        let (flags, police_rate, police_burst) = match self.police_ingress {
            Some(p) => (F_POLICE_INGRESS, p.rate_bps / 8, p.burst_bytes),
            None => (0, 0, 0),
        };
        KbPod {
            egress_class: self.egress_class,
            ingress_class: self.ingress_class,
            flags,
            pad: 0,
            police_rate,
            police_burst,
        }
    }

    fn from_kb(kb: &KbPod) -> PodBandwidth {
        PodBandwidth {
            egress_class: kb.egress_class,
            ingress_class: kb.ingress_class,
            police_ingress: (kb.flags & F_POLICE_INGRESS != 0).then_some(Police {
                rate_bps: kb.police_rate.saturating_mul(8),
                burst_bytes: kb.police_burst,
            }),
        }
    }
}

/// Traffic of one direction, as the pod's sockets see it (before any qdisc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionCounters {
    /// Bytes from the IP header on.
    pub bytes: u64,
    /// Wire packets (a GSO packet counts as its segments).
    pub packets: u64,
    /// Dropped by the policing fallback.
    pub dropped_bytes: u64,
    pub dropped_packets: u64,
}

/// A pod's counters since it was attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BandwidthCounters {
    pub egress: DirectionCounters,
    pub ingress: DirectionCounters,
}

/// A pod with bandwidth programs attached, as found in the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedBandwidthPod {
    pub pod: PodId,
    /// Hooks with a pinned link; both unless an attach was interrupted.
    pub hooks: Vec<BandwidthHook>,
    /// The settings in force, if the pod's entry exists.
    pub settings: Option<PodBandwidth>,
}

/// The host-side interface of a pod with its own netns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodInterface {
    pub ifindex: u32,
    pub pod: PodId,
    /// Class (on the uplinks' HTB) of packets that arrive from the pod on this interface.
    pub egress_class: u32,
    /// Class (on the IFB's HTB) of packets that will be routed to the pod by this interface.
    pub ingress_class: u32,
}

/// The loaded bandwidth programs and their maps; one per node agent.
pub struct BandwidthPrograms {
    ebpf: Ebpf,
    root: PathBuf,
    pods: HashMap<MapData, u64, KbPod>,
    devs: HashMap<MapData, u32, KbDev>,
    addrs: HashMap<MapData, [u8; 16], KbDev>,
    stats: PerCpuHashMap<MapData, u64, KbStats>,
    buckets: HashMap<MapData, u64, KbBucket>,
    podrefs: CgroupStorage<MapData, KbPodref>,
    egress_classifier: PathBuf,
    ingress_classifier: PathBuf,
}

fn map_err(map: &'static str, what: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map {
        map,
        what,
        source: Box::new(source),
    }
}

fn prog_err(program: &'static str, what: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |source| Error::Program {
        program,
        what,
        source: Box::new(source),
    }
}

fn is_errno(e: &MapError, errno: i32) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}

/// Removing an absent key is not an error here.
fn removed(result: Result<(), MapError>, map: &'static str) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) if is_errno(&e, libc::ENOENT) => Ok(false),
        Err(e) => Err(map_err(map, "remove")(e)),
    }
}

impl BandwidthPrograms {
    /// Parses and loads the programs, creating the maps under `<root>/maps` or re-opening them
    /// if a previous loader pinned them there, and pins the classifiers under `<root>/progs`
    /// (replacing an earlier loader's pins; tc filters that still use an earlier instance keep
    /// working, as all instances share the maps). `root` must be on bpffs. Pods found under
    /// `<root>/pods` keep running on their pinned links; nothing is attached twice.
    pub fn load(root: impl AsRef<Path>) -> Result<BandwidthPrograms> {
        let root = root.as_ref().to_path_buf();
        let maps_dir = root.join("maps");
        let progs_dir = root.join("progs");
        for dir in [&maps_dir, &progs_dir, &root.join("pods")] {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        require_bpffs(&root)?;

        let mut loader = EbpfLoader::new();
        for name in MAPS {
            loader.map_pin_path(name, maps_dir.join(name));
        }
        let mut ebpf = loader
            .load(OBJECT)
            .map_err(|e| Error::LoadBandwidth(Box::new(e)))?;
        for hook in BandwidthHook::ALL {
            let p: &mut CgroupSkb = program(&mut ebpf, hook.program())?
                .try_into()
                .map_err(prog_err(hook.program(), "type"))?;
            p.load().map_err(prog_err(hook.program(), "loading"))?;
        }
        let egress_classifier =
            load_and_pin_classifier(&mut ebpf, PROG_CLASSIFY_EGRESS, &progs_dir)?;
        let ingress_classifier =
            load_and_pin_classifier(&mut ebpf, PROG_CLASSIFY_INGRESS, &progs_dir)?;
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(Error::Missing { what: "map", name })
        };
        let pods = HashMap::try_from(take(MAP_PODS)?).map_err(map_err(MAP_PODS, "type"))?;
        let devs = HashMap::try_from(take(MAP_DEVS)?).map_err(map_err(MAP_DEVS, "type"))?;
        let addrs = HashMap::try_from(take(MAP_ADDRS)?).map_err(map_err(MAP_ADDRS, "type"))?;
        let stats =
            PerCpuHashMap::try_from(take(MAP_STATS)?).map_err(map_err(MAP_STATS, "type"))?;
        let buckets =
            HashMap::try_from(take(MAP_BUCKETS)?).map_err(map_err(MAP_BUCKETS, "type"))?;
        let podrefs =
            CgroupStorage::try_from(take(MAP_PODREFS)?).map_err(map_err(MAP_PODREFS, "type"))?;
        let programs = BandwidthPrograms {
            ebpf,
            root,
            pods,
            devs,
            addrs,
            stats,
            buckets,
            podrefs,
            egress_classifier,
            ingress_classifier,
        };
        let adopted = programs.list()?.len();
        tracing::info!(root = %programs.root.display(), adopted, "bandwidth programs loaded");
        Ok(programs)
    }

    /// The pinned classifier for the uplinks' HTB: packets forwarded from a pod interface.
    /// Attach it with the qdisc's major as the filter's classid (cls_bpf takes the major from
    /// there and only the minor from the program).
    pub fn egress_classifier(&self) -> &Path {
        &self.egress_classifier
    }

    /// The pinned classifier for the IFB's HTB (the node's ingress).
    pub fn ingress_classifier(&self) -> &Path {
        &self.ingress_classifier
    }

    fn pod_dir(&self, pod: PodId) -> PathBuf {
        self.root.join("pods").join(pod.0.to_string())
    }

    /// Attaches the pod whose cgroup2 directory is `cgroup_dir` with `settings`. Attaching a pod
    /// that is already attached (for instance by an earlier loader) only updates its settings
    /// and keeps its counters; an interrupted attach is completed.
    pub fn attach(
        &mut self,
        cgroup_dir: impl AsRef<Path>,
        settings: &PodBandwidth,
    ) -> Result<PodId> {
        let cgroup_dir = cgroup_dir.as_ref();
        let cgroup = open_cgroup2(cgroup_dir)?;
        let pod = PodId(cgroup.metadata().map_err(io("stat", cgroup_dir))?.ino());

        // Settings, counters and bucket first: a program that sees the pod must find them.
        self.write_settings(pod, settings)?;
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| io("reading", "/sys/devices/system/cpu/possible")(e))?;
        let zero = aya::maps::PerCpuValues::try_from(vec![KbStats::default(); nr_cpus])
            .map_err(io("building per-CPU counters for", MAP_STATS))?;
        match self.stats.insert(pod.0, zero, NOEXIST) {
            Ok(()) => {}
            // Re-adopted pod: keep its counters.
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => return Err(map_err(MAP_STATS, "insert")(e)),
        }

        let dir = self.pod_dir(pod);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let mut attached = 0;
        for hook in BandwidthHook::ALL {
            let pin = dir.join(hook.name());
            if pin.exists() {
                continue;
            }
            let link = self.attach_hook(hook, &cgroup)?;
            // The slot exists once the link does; until written the programs let all through.
            self.podrefs
                .insert(
                    CgroupStorageKey::new(pod.0, hook.attach_type_id()),
                    KbPodref { pod_id: pod.0 },
                    0,
                )
                .map_err(map_err(MAP_PODREFS, "insert"))?;
            link.pin(&pin).map_err(|source| Error::Pin {
                path: pin.clone(),
                source: Box::new(source),
            })?;
            attached += 1;
        }
        tracing::info!(pod = pod.0, cgroup = %cgroup_dir.display(), attached, ?settings, "bandwidth programs attached");
        Ok(pod)
    }

    fn attach_hook(&mut self, hook: BandwidthHook, cgroup: &File) -> Result<FdLink> {
        let p: &mut CgroupSkb = program(&mut self.ebpf, hook.program())?
            .try_into()
            .map_err(prog_err(hook.program(), "type"))?;
        // Single: the measured kernel refuses the multi modes for these links, and several
        // links on one hook (the port programs' and ours) still coexist.
        let id = p
            .attach(cgroup, hook.attach_type(), CgroupAttachMode::Single)
            .map_err(prog_err(hook.program(), "attaching"))?;
        let link = p
            .take_link(id)
            .map_err(prog_err(hook.program(), "taking link"))?;
        FdLink::try_from(link).map_err(|source: LinkError| Error::Link {
            program: hook.program(),
            source: Box::new(source),
        })
    }

    fn write_settings(&mut self, pod: PodId, settings: &PodBandwidth) -> Result<()> {
        let kb = settings.to_kb();
        if settings.police_ingress.is_some() {
            // A fresh bucket starts full; an existing one keeps its level across updates.
            let full = KbBucket {
                tokens: kb.police_burst,
                ..KbBucket::default()
            };
            match self.buckets.insert(pod.0, full, NOEXIST) {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(map_err(MAP_BUCKETS, "insert")(e)),
            }
        }
        self.pods
            .insert(pod.0, kb, 0)
            .map_err(map_err(MAP_PODS, "insert"))?;
        if settings.police_ingress.is_none() {
            removed(self.buckets.remove(&pod.0), MAP_BUCKETS)?;
        }
        Ok(())
    }

    /// Replaces an attached pod's settings: one map update, effective on the next packet.
    pub fn update(&mut self, pod: PodId, settings: &PodBandwidth) -> Result<()> {
        if !self.pod_dir(pod).exists() {
            return Err(Error::NoBandwidth(pod));
        }
        self.write_settings(pod, settings)?;
        tracing::info!(pod = pod.0, ?settings, "bandwidth settings updated");
        Ok(())
    }

    /// Detaches the pod and deletes its map entries, including its interfaces. Returns false if
    /// nothing was there.
    pub fn detach(&mut self, pod: PodId) -> Result<bool> {
        let dir = self.pod_dir(pod);
        let mut found = crate::pins::unpin_pod(&dir)?;
        found |= removed(self.pods.remove(&pod.0), MAP_PODS)?;
        found |= removed(self.stats.remove(&pod.0), MAP_STATS)?;
        removed(self.buckets.remove(&pod.0), MAP_BUCKETS)?;
        for dev in self.interfaces()? {
            if dev.pod == pod {
                found |= self.remove_interface(dev.ifindex)?;
            }
        }
        for (addr, owner) in self.addresses()? {
            if owner.pod == pod {
                found |= self.remove_address(addr)?;
            }
        }
        tracing::info!(pod = pod.0, found, "bandwidth programs detached");
        Ok(found)
    }

    /// Pods with pinned links under this loader's root.
    pub fn list(&self) -> Result<Vec<AttachedBandwidthPod>> {
        let pinned = crate::pins::pinned_pods(&self.root.join("pods"), BandwidthHook::from_name)?;
        Ok(pinned
            .into_iter()
            .map(|(id, hooks)| AttachedBandwidthPod {
                pod: PodId(id),
                hooks,
                settings: self
                    .pods
                    .get(&id, 0)
                    .ok()
                    .map(|kb| PodBandwidth::from_kb(&kb)),
            })
            .collect())
    }

    /// The pod's counters since it was attached, summed over CPUs.
    pub fn counters(&self, pod: PodId) -> Result<BandwidthCounters> {
        let per_cpu = self.stats.get(&pod.0, 0).map_err(|e| match e {
            MapError::KeyNotFound => Error::NoBandwidth(pod),
            e => map_err(MAP_STATS, "lookup")(e),
        })?;
        let mut c = BandwidthCounters::default();
        for st in per_cpu.iter() {
            for (dir, out) in [(EGRESS, &mut c.egress), (INGRESS, &mut c.ingress)] {
                out.bytes += st.bytes[dir];
                out.packets += st.packets[dir];
                out.dropped_bytes += st.dropped_bytes[dir];
                out.dropped_packets += st.dropped_packets[dir];
            }
        }
        Ok(c)
    }

    /// Records the host-side interface of a pod with its own netns (for instance the host end
    /// of its veth): traffic arriving on it is the pod's egress, traffic routed to it the pod's
    /// ingress. Replaces an earlier entry for the same interface.
    pub fn set_interface(&mut self, dev: &PodInterface) -> Result<()> {
        let kb = KbDev {
            pod_id: dev.pod.0,
            egress_class: dev.egress_class,
            ingress_class: dev.ingress_class,
        };
        self.devs
            .insert(dev.ifindex, kb, 0)
            .map_err(map_err(MAP_DEVS, "insert"))?;
        tracing::info!(?dev, "pod interface recorded");
        Ok(())
    }

    /// Forgets a pod interface. Returns false if it was not recorded.
    pub fn remove_interface(&mut self, ifindex: u32) -> Result<bool> {
        removed(self.devs.remove(&ifindex), MAP_DEVS)
    }

    /// Records an address of a pod with its own netns behind a bridge: its forwarded packets
    /// arrive on the bridge, not on an interface of its own, and are classified by their
    /// source address (by their destination, on the way in). `dev.ifindex` is not used.
    pub fn set_address(&mut self, addr: std::net::IpAddr, dev: &PodInterface) -> Result<()> {
        let kb = KbDev {
            pod_id: dev.pod.0,
            egress_class: dev.egress_class,
            ingress_class: dev.ingress_class,
        };
        self.addrs
            .insert(addr_key(addr), kb, 0)
            .map_err(map_err(MAP_ADDRS, "insert"))?;
        tracing::info!(%addr, pod = dev.pod.0, "pod address recorded");
        Ok(())
    }

    /// Forgets a pod address. Returns false if it was not recorded.
    pub fn remove_address(&mut self, addr: std::net::IpAddr) -> Result<bool> {
        removed(self.addrs.remove(&addr_key(addr)), MAP_ADDRS)
    }

    /// Every recorded pod address, with its pod and classes (`ifindex` 0).
    pub fn addresses(&self) -> Result<Vec<(std::net::IpAddr, PodInterface)>> {
        let mut out = Vec::new();
        for item in self.addrs.iter() {
            let (key, kb) = item.map_err(map_err(MAP_ADDRS, "iterating"))?;
            let v6 = std::net::Ipv6Addr::from(key);
            let addr = match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(v6),
            };
            out.push((
                addr,
                PodInterface {
                    ifindex: 0,
                    pod: PodId(kb.pod_id),
                    egress_class: kb.egress_class,
                    ingress_class: kb.ingress_class,
                },
            ));
        }
        Ok(out)
    }

    /// Every recorded pod interface.
    pub fn interfaces(&self) -> Result<Vec<PodInterface>> {
        let mut out = Vec::new();
        for item in self.devs.iter() {
            let (ifindex, kb) = item.map_err(map_err(MAP_DEVS, "iterating"))?;
            out.push(PodInterface {
                ifindex,
                pod: PodId(kb.pod_id),
                egress_class: kb.egress_class,
                ingress_class: kb.ingress_class,
            });
        }
        out.sort_by_key(|d| d.ifindex);
        Ok(out)
    }
}

/// The map key of an address: IPv4 as IPv4-mapped IPv6, as the classifiers build it.
fn addr_key(addr: std::net::IpAddr) -> [u8; 16] {
    match addr {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// `BPF_NOEXIST`: create only.
const NOEXIST: u64 = 1;

/// Loads a tc classifier and pins it as `<dir>/<name>`, replacing an earlier loader's pin.
fn load_and_pin_classifier(ebpf: &mut Ebpf, name: &'static str, dir: &Path) -> Result<PathBuf> {
    let p: &mut SchedClassifier = program(ebpf, name)?
        .try_into()
        .map_err(prog_err(name, "type"))?;
    p.load().map_err(prog_err(name, "loading"))?;
    let pin = dir.join(name);
    match std::fs::remove_file(&pin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("unpinning", &pin)(e)),
    }
    p.pin(&pin).map_err(|source| Error::Pin {
        path: pin.clone(),
        source: Box::new(source),
    })?;
    Ok(pin)
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).ok_or(Error::Missing {
        what: "program",
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_the_kernel_layout() {
        let s = PodBandwidth {
            egress_class: 0x6b72_0010,
            ingress_class: 0x6b73_0010,
            police_ingress: Some(Police {
                rate_bps: 50_000_000,
                burst_bytes: 2 << 20,
            }),
        };
        let kb = s.to_kb();
        assert_eq!(kb.police_rate, 6_250_000);
        assert_eq!(kb.flags, F_POLICE_INGRESS);
        assert_eq!(PodBandwidth::from_kb(&kb), s);
        let plain = PodBandwidth::default();
        assert_eq!(PodBandwidth::from_kb(&plain.to_kb()), plain);
    }

    #[test]
    fn hook_names_round_trip() {
        for h in BandwidthHook::ALL {
            assert_eq!(BandwidthHook::from_name(h.name()), Some(h));
        }
        assert_eq!(BandwidthHook::from_name("bind4"), None);
    }
}
