//! What the RuntimeService calls share: the state store, the image store, the node's
//! cgroups, the event stream, and where the per-container monitors and their files live.
//! The calls themselves are in `crate::cri`, one file each.

pub mod bpf_pins;
mod events;
mod exec_helper;
mod exit_watch;
mod ids;
mod keyed_locks;
mod layout;
mod oom_floor;
mod process;
mod recovery;
mod status;

use std::path::PathBuf;
use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use kraal_cgroups::Cgroups;
use kraal_image::ImageStore;

use crate::config::Config;
use crate::state::{ContainerRecord, SandboxRecord, StateStore};
use tonic::Status;

pub use events::Events;
pub use exec_helper::ExecFiles;
pub use ids::new_id;
pub use keyed_locks::KeyedLocks;
pub use layout::Layout;
pub use process::{TrackedProcess, parse_signal, proc_start_time};
pub use status::{internal, io_status};

/// The cgroup2 dir of a cgroupfs path, when the host has a unified tree.
pub fn unified_dir(runtime: &Runtime, rel: &str) -> Option<PathBuf> {
    runtime.cgroups.unified_path(rel).ok().flatten()
}

pub struct Runtime {
    pub config: Config,
    pub state: Arc<StateStore>,
    pub images: Arc<ImageStore>,
    pub cgroups: Cgroups,
    /// kubelet's cgroup driver in force: cgroupfs, or systemd's slices and scopes.
    pub driver: crate::cgroup_driver::Driver,
    /// What this node gives kraal (hierarchy, driver, kernel features), found at start.
    pub node: crate::node_facts::NodeFacts,
    pub events: Events,
    pub layout: Layout,
    /// The `kraal-monitor` binary every container runs under.
    pub monitor_bin: PathBuf,
    /// The lowest oom_score_adj this host lets kraal give a container (some hosts refuse to
    /// lower it below kraald's own); specs clamp up to it.
    pub oom_score_adj_floor: i32,
    /// cgroup facts the OCI spec depends on.
    pub host_facts: kraal_runtime::spec::HostFacts,
    /// One lock per sandbox or container id, so calls on one object never interleave.
    pub locks: KeyedLocks,
    /// `auto:` port blocks of pods being created.
    pub port_blocks: crate::ports::PortBlocks,
    /// The port-range programs, loaded when a pod first needs them.
    pub port_programs: crate::ports::LazyPrograms,
    /// The bandwidth hierarchies and programs, set up when a pod first needs them.
    pub shaper: crate::bandwidth::LazyShaper,
    /// The node's pod CIDR from kubelet (UpdateRuntimeConfig).
    pub pod_cidr: crate::network::PodCidr,
}

impl Runtime {
    pub fn new(
        config: Config,
        images: Arc<ImageStore>,
        state: Arc<StateStore>,
        cgroups: Cgroups,
        driver: crate::cgroup_driver::Driver,
        monitor_bin: PathBuf,
    ) -> Arc<Self> {
        let layout = Layout::new(&config.root, &config.state);
        let node = crate::node_facts::NodeFacts::detect(&cgroups, &driver);
        Arc::new(Runtime {
            config,
            state,
            images,
            cgroups,
            driver,
            node,
            events: Events::new(),
            layout,
            monitor_bin,
            oom_score_adj_floor: oom_floor::current(),
            host_facts: kraal_runtime::spec::HostFacts::detect(),
            locks: KeyedLocks::default(),
            port_blocks: Default::default(),
            port_programs: Default::default(),
            shaper: Default::default(),
            pod_cidr: Default::default(),
        })
    }

    /// Re-adopts every container found in the state dir and starts watching their exits.
    pub fn recover(self: &Arc<Self>) {
        recovery::recover(self);
    }

    /// Starts watching a container's monitor; when it exits, the exit is recorded.
    pub fn watch_exit(self: &Arc<Self>, container_id: &str) {
        exit_watch::watch(self.clone(), container_id.to_string());
    }

    /// Records the exit of a container whose monitor is gone (idempotent).
    pub fn record_exit(&self, container_id: &str) {
        exit_watch::record_exit(self, container_id);
    }

    /// Records a start that failed while the monitor lives on (idempotent).
    pub fn record_start_failure(&self, container_id: &str, message: &str) {
        exit_watch::record_start_failure(self, container_id, message);
    }

    pub fn emit(&self, container_id: &str, sandbox_id: &str, kind: cri::ContainerEventType) {
        self.events.emit(self, container_id, sandbox_id, kind);
    }

    /// The full id a request's container id (or unique prefix) names, or NotFound.
    pub fn container_id(&self, call: &str, wanted: &str) -> Result<String, Status> {
        self.state
            .resolve_container(wanted)
            .ok_or_else(|| Status::not_found(format!("{call}: container {wanted:?} not found")))
    }

    /// The record of the container a request names, or NotFound.
    pub fn container(&self, call: &str, wanted: &str) -> Result<ContainerRecord, Status> {
        let id = self.container_id(call, wanted)?;
        self.state
            .container(&id)
            .ok_or_else(|| Status::not_found(format!("{call}: container {id} not found")))
    }

    /// The record of the pod sandbox a request names, or NotFound.
    pub fn sandbox(&self, call: &str, wanted: &str) -> Result<SandboxRecord, Status> {
        self.state
            .resolve_sandbox(wanted)
            .and_then(|id| self.state.sandbox(&id))
            .ok_or_else(|| Status::not_found(format!("{call}: pod sandbox {wanted:?} not found")))
    }

    /// Which image a container uses, for RemoveImage's in-use refusal.
    pub fn container_using_image(&self, image_id: &str) -> Option<String> {
        self.state
            .containers()
            .into_iter()
            .find(|c| c.image_id == image_id)
            .map(|c| c.id)
    }
}
