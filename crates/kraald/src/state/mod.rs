//! kraald's runtime state: one record per sandbox and per container, kept in memory and
//! written to the state dir atomically (write, fsync, rename) so that a kraald killed at any
//! point restarts with records it can read back.

mod records;
mod store;

pub use records::{
    AppliedSetting, ContainerRecord, ContainerState, MountRecord, PodBandwidth, PodClass,
    PodNetwork, PodPorts, PortMappingRecord, SandboxRecord, SandboxState,
};
pub use store::StateStore;
