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

use aya::maps::{CgroupStorage, CgroupStorageKey, HashMap, MapData, MapError};
use aya::programs::links::{FdLink, LinkError};
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr, ProgramError, SockOps};
use aya::{Ebpf, EbpfLoader};

use crate::abi::{self, KpCfg, KpPodref, KpState};
use crate::error::{Error, Result, io};
use crate::fs::{open_cgroup2, require_bpffs};
use crate::hooks::{Hook, Kind};
use crate::{Counters, PodId, PodPorts};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/ports.bpf.o"));

const MAP_CFGS: &str = "kp_cfgs";
const MAP_STATES: &str = "kp_states";
const MAP_PODREFS: &str = "kp_podrefs";
const MAP_CLAIMS: &str = "kp_claims";
const MAPS: [&str; 4] = [MAP_CFGS, MAP_STATES, MAP_PODREFS, MAP_CLAIMS];

/// `BPF_NOEXIST`: create only.
const NOEXIST: u64 = 1;

/// A pod with port programs attached, as found in the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedPod {
    pub pod: PodId,
    /// Hooks with a pinned link; all of [`Hook::ALL`] unless an attach was interrupted.
    pub hooks: Vec<Hook>,
    /// The lists in force, if the pod's entry exists in the ranges map.
    pub ports: Option<PodPorts>,
}

/// The loaded port programs and their maps; one per node agent.
pub struct PortPrograms {
    ebpf: Ebpf,
    root: PathBuf,
    cfgs: HashMap<MapData, u64, KpCfg>,
    states: HashMap<MapData, u64, KpState>,
    /// Deprecated in aya in favour of `CGRP_STORAGE`, which needs a `struct cgroup` pointer that
    /// socket hooks cannot obtain; the classic per-attachment storage is exactly what tells a
    /// program which pod's attachment is running.
    podrefs: CgroupStorage<MapData, KpPodref>,
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
        let cfgs = HashMap::try_from(take(MAP_CFGS)?).map_err(map_err(MAP_CFGS, "type"))?;
        let states = HashMap::try_from(take(MAP_STATES)?).map_err(map_err(MAP_STATES, "type"))?;
        let podrefs =
            CgroupStorage::try_from(take(MAP_PODREFS)?).map_err(map_err(MAP_PODREFS, "type"))?;
        let programs = PortPrograms {
            ebpf,
            root,
            cfgs,
            states,
            podrefs,
        };
        let pods = programs.list()?;
        tracing::info!(root = %programs.root.display(), adopted = pods.len(), "port programs loaded");
        Ok(programs)
    }

    fn pod_dir(&self, pod: PodId) -> PathBuf {
        self.root.join("pods").join(pod.0.to_string())
    }

    /// Restricts the pod whose cgroup2 directory is `cgroup_dir` to `ports`. Attaching a pod
    /// that is already attached (for instance by an earlier loader) only updates its lists and
    /// re-attaches nothing; an interrupted attach is completed.
    pub fn attach(&mut self, cgroup_dir: impl AsRef<Path>, ports: &PodPorts) -> Result<PodId> {
        let cgroup_dir = cgroup_dir.as_ref();
        let cfg = ports.to_cfg()?;
        let cgroup = open_cgroup2(cgroup_dir)?;
        let pod = PodId(cgroup.metadata().map_err(io("stat", cgroup_dir))?.ino());

        // Ranges and state first: a program that sees the pod must find them.
        self.cfgs
            .insert(pod.0, cfg, 0)
            .map_err(map_err(MAP_CFGS, "insert"))?;
        match self.states.insert(pod.0, KpState::ZERO, NOEXIST) {
            Ok(()) => {}
            // Re-adopted pod: keep what its sockets hold.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(map_err(MAP_STATES, "insert")(e)),
        }

        let dir = self.pod_dir(pod);
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        let mut attached = 0;
        for hook in Hook::ALL {
            let pin = dir.join(hook.name());
            if pin.exists() {
                continue;
            }
            let link = self.attach_hook(hook, &cgroup)?;
            // The slot exists once the link does; until written the programs let all through.
            if hook.has_podref() {
                self.podrefs
                    .insert(
                        CgroupStorageKey::new(pod.0, hook.attach_type()),
                        KpPodref { pod_id: pod.0 },
                        0,
                    )
                    .map_err(map_err(MAP_PODREFS, "insert"))?;
            }
            link.pin(&pin).map_err(|source| Error::Pin {
                path: pin.clone(),
                source: Box::new(source),
            })?;
            attached += 1;
        }
        tracing::info!(pod = pod.0, cgroup = %cgroup_dir.display(), attached, ?ports, "port ranges attached");
        Ok(pod)
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

    /// Replaces an attached pod's lists: one map update, no re-attach. Ports its sockets hold
    /// stay held.
    pub fn update(&mut self, pod: PodId, ports: &PodPorts) -> Result<()> {
        let cfg = ports.to_cfg()?;
        if !self.pod_dir(pod).exists() {
            return Err(Error::NotAttached(pod));
        }
        self.cfgs
            .insert(pod.0, cfg, 0)
            .map_err(map_err(MAP_CFGS, "update"))?;
        tracing::info!(pod = pod.0, ?ports, "port ranges updated");
        Ok(())
    }

    /// Detaches the pod (removing the pins drops the last reference to its links) and deletes
    /// its map entries. Returns false if nothing was attached.
    pub fn detach(&mut self, pod: PodId) -> Result<bool> {
        let dir = self.pod_dir(pod);
        let mut found = false;
        if dir.exists() {
            for entry in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
                let path = entry.map_err(io("listing", &dir))?.path();
                // The link may already be detached (its cgroup removed): unpinning still frees it.
                if let Err(e) = crate::sys::detach_pinned_link(&path) {
                    tracing::debug!(pin = %path.display(), error = %e, "link detach");
                }
                std::fs::remove_file(&path).map_err(io("unpinning", &path))?;
            }
            std::fs::remove_dir(&dir).map_err(io("removing", &dir))?;
            found = true;
        }
        for (map, result) in [
            (MAP_CFGS, self.cfgs.remove(&pod.0)),
            (MAP_STATES, self.states.remove(&pod.0)),
        ] {
            match result {
                Ok(()) => found = true,
                Err(MapError::KeyNotFound) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(map_err(map, "remove")(e)),
            }
        }
        tracing::info!(pod = pod.0, found, "port ranges detached");
        Ok(found)
    }

    /// Pods with pinned links under this loader's root.
    pub fn list(&self) -> Result<Vec<AttachedPod>> {
        let pods_dir = self.root.join("pods");
        let mut pods = Vec::new();
        for entry in std::fs::read_dir(&pods_dir).map_err(io("listing", &pods_dir))? {
            let entry = entry.map_err(io("listing", &pods_dir))?;
            let Some(id) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let mut hooks = Vec::new();
            for pin in std::fs::read_dir(entry.path()).map_err(io("listing", entry.path()))? {
                let pin = pin.map_err(io("listing", entry.path()))?;
                if let Some(hook) = pin.file_name().to_str().and_then(Hook::from_name) {
                    hooks.push(hook);
                }
            }
            hooks.sort();
            let ports = self.cfgs.get(&id, 0).ok().map(|c| PodPorts::from_cfg(&c));
            pods.push(AttachedPod {
                pod: PodId(id),
                hooks,
                ports,
            });
        }
        pods.sort_by_key(|p| p.pod);
        Ok(pods)
    }

    fn state(&self, pod: PodId) -> Result<KpState> {
        self.states.get(&pod.0, 0).map_err(|e| match e {
            MapError::KeyNotFound => Error::NotAttached(pod),
            e => map_err(MAP_STATES, "lookup")(e),
        })
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
