//! Loading the port programs once, attaching them per pod, and the pin layout that lets
//! enforcement outlive the loader:
//!
//! ```text
//! <root>/maps/<map>          the maps, shared by every program instance ever loaded
//! <root>/pods/<pod-id>/<hook> one pinned link per hook of an attached pod
//! ```
//!
//! Links hold the program instance that was attached; a later loader loads fresh instances
//! that find the same maps through their pins, so all instances see one state.

#![allow(deprecated)] // CgroupStorage: see the `podrefs` field.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{Array, CgroupStorage, CgroupStorageKey, HashMap, MapData, MapError};
use aya::programs::links::{FdLink, LinkError};
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, SockOps};
use aya::{Ebpf, EbpfLoader};

use crate::abi::{self, KpCfg, KpClaim, KpPod, KpState};
use crate::error::{Error, Result, io};
use crate::fs::{open_cgroup2, open_cgroup2_by_id, require_bpffs};
use crate::hooks::{Hook, Kind};
use crate::{Counters, PodId, PodPorts};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ports.bpf.o"));

// Names differ from those of earlier layouts, whose pins may still sit in <root>/maps: a
// pinned map of the old layout must never be picked up by the new programs.
const MAP_PODS: &str = "kp_pods";
const MAP_STATES: &str = "kp_pod_states";
const MAP_HOOK_CFGS: &str = "kp_hook_cfgs";
const MAP_CLAIMS: &str = "kp_sock_claims";
const MAP_OVERFLOW: &str = "kp_claims_over";
const MAPS: [&str; 5] = [
    MAP_PODS,
    MAP_STATES,
    MAP_HOOK_CFGS,
    MAP_CLAIMS,
    MAP_OVERFLOW,
];

/// The order in which [`PortPrograms::update`] rewrites the hooks' copies of the lists. While
/// it does, a bind may be judged by the old lists in one hook and by the new in the next; with
/// post_bind (the safety net) first, a bind that the bind hook allowed under the old lists is
/// judged by post_bind under the new ones, so a widening update never refuses a port.
const UPDATE_ORDER: [Hook; 8] = [
    Hook::PostBind4,
    Hook::PostBind6,
    Hook::Bind4,
    Hook::Bind6,
    Hook::Connect4,
    Hook::Connect6,
    Hook::SendMsg4,
    Hook::SendMsg6,
];

/// A pod with port programs attached, as found in the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedPod {
    pub pod: PodId,
    /// Hooks with a pinned link: those its lists need ([`Hook::for_ports`]), unless an attach
    /// was interrupted, and those earlier lists needed.
    pub hooks: Vec<Hook>,
    /// The lists in force, if the pod's record exists.
    pub ports: Option<PodPorts>,
}

/// The loaded port programs and their maps; one per node agent.
pub struct PortPrograms {
    ebpf: Ebpf,
    root: PathBuf,
    /// Pod id -> slot, generation and lists: the record userspace keeps (no program reads it).
    pods: HashMap<MapData, u64, KpPod>,
    /// Allocator state and counters per slot.
    states: Array<MapData, KpState>,
    /// Deprecated in aya in favour of `CGRP_STORAGE`, which needs a `struct cgroup` pointer that
    /// socket hooks cannot obtain; the classic per-attachment storage is exactly what tells a
    /// program which pod's attachment is running. Each entry holds a copy of the pod's record.
    hook_cfgs: CgroupStorage<MapData, KpPod>,
    /// Claims that did not fit the direct-mapped table; cleaned of dead ones here.
    overflow: HashMap<MapData, u64, KpClaim>,
}

/// The generation after `g`; 0 means "not configured" to the programs.
fn next_gen(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn map_err(map: &'static str, what: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map {
        map,
        what,
        source: Box::new(source),
    }
}

fn prog_err(hook: Hook, what: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |source| Error::Program {
        program: hook.program(),
        what,
        source: Box::new(source),
    }
}

impl PortPrograms {
    /// Parses and loads the programs, creating the maps under `<root>/maps` or re-opening them
    /// if a previous loader pinned them there. `root` must be on bpffs. Attached pods found
    /// under `<root>/pods` keep running on their pinned links; nothing is attached twice.
    pub fn load(root: impl AsRef<Path>) -> Result<PortPrograms> {
        let root = root.as_ref().to_path_buf();
        let maps_dir = root.join("maps");
        std::fs::create_dir_all(&maps_dir).map_err(io("creating", &maps_dir))?;
        std::fs::create_dir_all(root.join("pods")).map_err(io("creating", root.join("pods")))?;
        require_bpffs(&root)?;

        let mut loader = EbpfLoader::new();
        for name in MAPS {
            loader.map_pin_path(name, maps_dir.join(name));
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| Error::Load(Box::new(e)))?;
        for hook in Hook::ALL {
            let prog = ebpf.program_mut(hook.program()).ok_or(Error::Missing {
                what: "program",
                name: hook.program(),
            })?;
            match hook.kind() {
                Kind::SockAddr => {
                    let p: &mut CgroupSockAddr = prog.try_into().map_err(prog_err(hook, "type"))?;
                    p.load().map_err(prog_err(hook, "loading"))?;
                }
                Kind::Sock => {
                    let p: &mut CgroupSock = prog.try_into().map_err(prog_err(hook, "type"))?;
                    p.load().map_err(prog_err(hook, "loading"))?;
                }
                Kind::SockOps => {
                    let p: &mut SockOps = prog.try_into().map_err(prog_err(hook, "type"))?;
                    p.load().map_err(prog_err(hook, "loading"))?;
                }
            }
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or(Error::Missing { what: "map", name })
        };
        let pods = HashMap::try_from(take(MAP_PODS)?).map_err(map_err(MAP_PODS, "type"))?;
        let states = Array::try_from(take(MAP_STATES)?).map_err(map_err(MAP_STATES, "type"))?;
        let hook_cfgs = CgroupStorage::try_from(take(MAP_HOOK_CFGS)?)
            .map_err(map_err(MAP_HOOK_CFGS, "type"))?;
        let overflow =
            HashMap::try_from(take(MAP_OVERFLOW)?).map_err(map_err(MAP_OVERFLOW, "type"))?;
        let mut programs = PortPrograms {
            ebpf,
            root,
            pods,
            states,
            hook_cfgs,
            overflow,
        };
        // A previous loader may have stopped between detaching a pod and cleaning up after it.
        programs.drop_dead_overflow()?;
        let pods = programs.list()?;
        tracing::info!(root = %programs.root.display(), adopted = pods.len(), "port programs loaded");
        Ok(programs)
    }

    fn pod_dir(&self, pod: PodId) -> PathBuf {
        self.root.join("pods").join(pod.0.to_string())
    }

    /// Restricts the pod whose cgroup2 directory is `cgroup_dir` to `ports`. Attaching a pod
    /// that is already attached (for instance by an earlier loader) updates its lists as
    /// [`PortPrograms::update`] does and re-attaches nothing; an interrupted attach is completed.
    pub fn attach(&mut self, cgroup_dir: impl AsRef<Path>, ports: &PodPorts) -> Result<PodId> {
        let cgroup_dir = cgroup_dir.as_ref();
        let cfg = ports.to_cfg()?;
        let cgroup = open_cgroup2(cgroup_dir)?;
        let pod = PodId(cgroup.metadata().map_err(io("stat", cgroup_dir))?.ino());

        // Slot and state first: a program that sees the pod must find them.
        let record = match self.pods.get(&pod.0, 0) {
            // Re-adopted pod: keep its slot and what its sockets hold.
            Ok(record) => KpPod { cfg, ..record },
            Err(e) if not_found(&e) => self.new_slot(pod, cfg)?,
            Err(e) => return Err(map_err(MAP_PODS, "lookup")(e)),
        };
        self.pods
            .insert(pod.0, record, 0)
            .map_err(map_err(MAP_PODS, "insert"))?;

        let dir = self.pod_dir(pod);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let attached = self.attach_missing(pod, &cgroup, ports, &record)?;
        self.rewrite_hook_cfgs(pod, &record)?;
        tracing::info!(pod = pod.0, cgroup = %cgroup_dir.display(), slot = record.slot, attached, ?ports, "port ranges attached");
        Ok(pod)
    }

    /// Attaches and pins the hooks `ports` needs that the pod does not have yet; returns how
    /// many. A new hook's entry is written before its link is pinned; from the attach until
    /// then the program lets everything through, as if the hook were not there yet.
    fn attach_missing(
        &mut self,
        pod: PodId,
        cgroup: &File,
        ports: &PodPorts,
        record: &KpPod,
    ) -> Result<usize> {
        let dir = self.pod_dir(pod);
        let mut attached = 0;
        for hook in Hook::for_ports(ports) {
            let pin = dir.join(hook.name());
            if pin.exists() {
                continue;
            }
            let link = self.attach_hook(hook, cgroup)?;
            self.write_hook_cfg(pod, hook, record)?;
            link.pin(&pin).map_err(|source| Error::Pin {
                path: pin.clone(),
                source: Box::new(source),
            })?;
            attached += 1;
        }
        Ok(attached)
    }

    /// Rewrites the lists in the entries of every hook the pod has, in [`UPDATE_ORDER`].
    fn rewrite_hook_cfgs(&mut self, pod: PodId, record: &KpPod) -> Result<()> {
        let dir = self.pod_dir(pod);
        for hook in UPDATE_ORDER {
            if dir.join(hook.name()).exists() {
                self.write_hook_cfg(pod, hook, record)?;
            }
        }
        Ok(())
    }

    /// Takes the lowest slot no attached pod uses and starts a new generation in it, so that
    /// claims left by the slot's previous pod are dead.
    fn new_slot(&mut self, pod: PodId, cfg: KpCfg) -> Result<KpPod> {
        let mut used = vec![false; abi::MAX_PODS as usize];
        for item in self.pods.iter() {
            let (_, record) = item.map_err(map_err(MAP_PODS, "iterating"))?;
            if let Some(u) = used.get_mut(record.slot as usize) {
                *u = true;
            }
        }
        let slot = used.iter().position(|u| !u).ok_or(Error::NoPodSlot {
            pod,
            max: abi::MAX_PODS,
        })? as u32;
        let previous = self
            .states
            .get(&slot, 0)
            .map_err(map_err(MAP_STATES, "lookup"))?;
        let gen_ = next_gen(previous.gen_);
        self.states
            .set(slot, KpState::new(gen_), 0)
            .map_err(map_err(MAP_STATES, "update"))?;
        Ok(KpPod { slot, gen_, cfg })
    }

    /// Writes the pod's record into the hook's per-attachment entry (swapped whole by the
    /// kernel, so a program sees either the old or the new lists).
    fn write_hook_cfg(&mut self, pod: PodId, hook: Hook, record: &KpPod) -> Result<()> {
        if !hook.has_podref() {
            return Ok(());
        }
        self.hook_cfgs
            .insert(CgroupStorageKey::new(pod.0, hook.attach_type()), record, 0)
            .map_err(map_err(MAP_HOOK_CFGS, "update"))
    }

    fn attach_hook(&mut self, hook: Hook, cgroup: &File) -> Result<FdLink> {
        let prog = self
            .ebpf
            .program_mut(hook.program())
            .ok_or(Error::Missing {
                what: "program",
                name: hook.program(),
            })?;
        let to_fd = |source: LinkError| Error::Link {
            program: hook.program(),
            source: Box::new(source),
        };
        // Single: the measured kernel refuses the multi modes for these links, and several
        // links on one hook still coexist.
        match hook.kind() {
            Kind::SockAddr => {
                let p: &mut CgroupSockAddr = prog.try_into().map_err(prog_err(hook, "type"))?;
                let id = p
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(prog_err(hook, "attaching"))?;
                let link = p.take_link(id).map_err(prog_err(hook, "taking link"))?;
                FdLink::try_from(link).map_err(to_fd)
            }
            Kind::Sock => {
                let p: &mut CgroupSock = prog.try_into().map_err(prog_err(hook, "type"))?;
                let id = p
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(prog_err(hook, "attaching"))?;
                let link = p.take_link(id).map_err(prog_err(hook, "taking link"))?;
                FdLink::try_from(link).map_err(to_fd)
            }
            Kind::SockOps => {
                let p: &mut SockOps = prog.try_into().map_err(prog_err(hook, "type"))?;
                let id = p
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(prog_err(hook, "attaching"))?;
                let link = p.take_link(id).map_err(prog_err(hook, "taking link"))?;
                FdLink::try_from(link).map_err(to_fd)
            }
        }
    }

    /// Replaces an attached pod's lists: one write per hook; hooks the new lists need are
    /// attached first (a bind list added to a connect-only pod gets the bind hooks), none is
    /// detached or re-attached, so enforcement never lapses. Hooks the new lists no longer need
    /// stay and let everything through. Ports its sockets hold stay held.
    pub fn update(&mut self, pod: PodId, ports: &PodPorts) -> Result<()> {
        let cfg = ports.to_cfg()?;
        let dir = self.pod_dir(pod);
        if !dir.exists() {
            return Err(Error::NotAttached(pod));
        }
        let record = match self.pods.get(&pod.0, 0) {
            Ok(record) => KpPod { cfg, ..record },
            Err(e) if not_found(&e) => return Err(Error::NotAttached(pod)),
            Err(e) => return Err(map_err(MAP_PODS, "lookup")(e)),
        };
        self.pods
            .insert(pod.0, record, 0)
            .map_err(map_err(MAP_PODS, "update"))?;
        let mut attached = 0;
        if Hook::for_ports(ports)
            .iter()
            .any(|h| !dir.join(h.name()).exists())
        {
            let cgroup = open_cgroup2_by_id(pod.0)?;
            attached = self.attach_missing(pod, &cgroup, ports, &record)?;
        }
        self.rewrite_hook_cfgs(pod, &record)?;
        tracing::info!(pod = pod.0, attached, ?ports, "port ranges updated");
        Ok(())
    }

    /// Detaches the pod (removing the pins drops the last reference to its links) and deletes
    /// its map entries. Returns false if nothing was attached.
    pub fn detach(&mut self, pod: PodId) -> Result<bool> {
        let dir = self.pod_dir(pod);
        let mut found = crate::pins::unpin_pod(&dir)?;
        match self.pods.get(&pod.0, 0) {
            Ok(record) => {
                // Sockets the pod leaves behind are no longer seen closing: a new generation
                // makes their claims dead and the slot free for the next pod.
                self.states
                    .set(record.slot, KpState::new(next_gen(record.gen_)), 0)
                    .map_err(map_err(MAP_STATES, "update"))?;
                match self.pods.remove(&pod.0) {
                    Ok(()) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(map_err(MAP_PODS, "remove")(e)),
                }
                self.drop_dead_overflow()?;
                found = true;
            }
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(map_err(MAP_PODS, "lookup")(e)),
        }
        tracing::info!(pod = pod.0, found, "port ranges detached");
        Ok(found)
    }

    /// Deletes overflow claims of detached pods. (Their entries' overflow counts stay raised,
    /// which only costs a lookup to sockets whose cookie maps there.)
    fn drop_dead_overflow(&mut self) -> Result<()> {
        let mut gens = std::collections::HashMap::new();
        let mut dead = Vec::new();
        for item in self.overflow.iter() {
            let (cookie, claim) = item.map_err(map_err(MAP_OVERFLOW, "iterating"))?;
            let (claim_gen, slot) = claim.pod();
            let live_gen = match gens.get(&slot) {
                Some(g) => *g,
                None => {
                    let g = self.states.get(&slot, 0).map(|st| st.gen_).unwrap_or(0);
                    gens.insert(slot, g);
                    g
                }
            };
            if live_gen != claim_gen {
                dead.push(cookie);
            }
        }
        for cookie in dead {
            match self.overflow.remove(&cookie) {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(e) => return Err(map_err(MAP_OVERFLOW, "remove")(e)),
            }
        }
        Ok(())
    }

    /// Pods with pinned links under this loader's root.
    pub fn list(&self) -> Result<Vec<AttachedPod>> {
        let pinned = crate::pins::pinned_pods(&self.root.join("pods"), Hook::from_name)?;
        Ok(pinned
            .into_iter()
            .map(|(id, hooks)| AttachedPod {
                pod: PodId(id),
                hooks,
                ports: self
                    .pods
                    .get(&id, 0)
                    .ok()
                    .map(|p| PodPorts::from_cfg(&p.cfg)),
            })
            .collect())
    }

    fn state(&self, pod: PodId) -> Result<KpState> {
        let record = self.pods.get(&pod.0, 0).map_err(|e| {
            if not_found(&e) {
                Error::NotAttached(pod)
            } else {
                map_err(MAP_PODS, "lookup")(e)
            }
        })?;
        self.states
            .get(&record.slot, 0)
            .map_err(map_err(MAP_STATES, "lookup"))
    }

    /// The pod's counters since it was attached.
    pub fn counters(&self, pod: PodId) -> Result<Counters> {
        let c = self.state(pod)?.counters;
        Ok(Counters {
            binds_allowed: c[abi::C_BIND_ALLOWED],
            binds_denied: c[abi::C_BIND_DENIED],
            ephemeral: c[abi::C_EPHEMERAL],
            failures: c[abi::C_FAILED],
            exhausted: c[abi::C_EXHAUSTED],
            unsteered_udp: c[abi::C_UNSTEERED],
        })
    }

    /// Ports the pod's sockets hold as far as the allocator knows.
    pub fn held_ports(&self, pod: PodId) -> Result<Vec<u16>> {
        let st = self.state(pod)?;
        let mut ports = Vec::new();
        for (w, word) in st.held.iter().enumerate() {
            for bit in 0..64 {
                if word & (1u64 << bit) != 0 {
                    // w < 1024 and bit < 64, so the port fits in u16.
                    ports.push((w * 64 + bit) as u16);
                }
            }
        }
        Ok(ports)
    }
}
