//! A pod's kraal policy inside kraald: which annotations are in effect, applying the plan
//! `kraal-policy` computes to the pod's and its containers' cgroups, and freezing.
//!
//! The CRI calls and the admin API both go through here, so a pod created with annotations
//! and a pod whose policy was changed live end up with exactly the same cgroup files.

mod apply;
mod freeze;

use std::collections::BTreeMap;

use kraal_api::runtime::v1 as cri;
use kraal_policy::{CriResources, PodPolicy, PolicyError};

use crate::runtime::Runtime;
use crate::state::{AppliedSetting, SandboxRecord};

pub use apply::{apply_container, apply_pod, reapply_containers};
pub use freeze::{DEFAULT_FREEZE_TIMEOUT, freeze_pod, refuse_if_frozen, thaw_for_stop, thaw_pod};

/// The policy annotations in effect: those set live by the admin API, else the pod's own.
pub fn annotations_in_effect(
    runtime: &Runtime,
    record: &SandboxRecord,
) -> BTreeMap<String, String> {
    match &record.policy_annotations {
        Some(set) => set.clone(),
        None => runtime
            .config
            .policy
            .policy_annotations(&record.annotations),
    }
}

/// The pod's parsed policy. Validated when the pod was created or changed, so an error here
/// means the node's policy options changed since.
pub fn pod_policy(runtime: &Runtime, record: &SandboxRecord) -> Result<PodPolicy, PolicyError> {
    PodPolicy::from_annotations(
        &annotations_in_effect(runtime, record),
        &runtime.config.policy,
    )
}

/// Every file written for the pod's policy, the pod's first and then each container's (by
/// name), and every warning, for PodSandboxStatus and the admin API.
pub fn applied_settings(
    runtime: &Runtime,
    record: &SandboxRecord,
) -> (Vec<AppliedSetting>, Vec<String>) {
    let mut applied = record.applied.clone();
    let mut warnings = record.policy_warnings.clone();
    let mut containers = runtime.state.containers_of(&record.id);
    containers.sort_by(|a, b| a.name.cmp(&b.name).then(a.attempt.cmp(&b.attempt)));
    for container in containers {
        if !container.state.is_live() {
            continue;
        }
        applied.extend(container.applied);
        warnings.extend(
            container
                .policy_warnings
                .into_iter()
                .map(|w| format!("container {:?}: {w}", container.name)),
        );
    }
    (applied, warnings)
}

/// The CPU parts of kubelet's resources the plan starts from.
pub fn cri_resources(resources: Option<&cri::LinuxContainerResources>) -> CriResources {
    match resources {
        Some(r) => CriResources {
            cpu_shares: r.cpu_shares,
            cpu_quota_us: r.cpu_quota,
            cpu_period_us: r.cpu_period,
            oom_score_adj: Some(r.oom_score_adj),
        },
        None => CriResources::default(),
    }
}
