//! Writing a policy plan to the cgroups, and recording what was written and why.

use std::path::Path;

use kraal_api::runtime::v1 as cri;
use kraal_cgroups::{CgroupError, Hierarchy, MemoryHigh, Resources, Written};
use kraal_policy::{ContainerPlan, Planned, PodPolicy};
use prost::Message;

use super::cri_resources;
use crate::runtime::Runtime;
use crate::state::{AppliedSetting, SandboxRecord};

/// What applying a plan wrote, and what it could not do exactly as asked.
#[derive(Debug, Default)]
pub struct Outcome {
    pub applied: Vec<AppliedSetting>,
    pub warnings: Vec<String>,
    /// The `oom_score_adj` the container's processes should have, if the plan sets one.
    pub oom_score_adj: Option<i64>,
}

/// Which annotation asked for each kind of file (None: kubelet's value or a default).
#[derive(Debug, Default)]
struct Sources {
    shares: Option<String>,
    idle: Option<String>,
    period: Option<String>,
    quota: Option<String>,
    burst: Option<String>,
    memory_high: Option<String>,
}

impl Sources {
    fn of(&self, file: &Path) -> Option<&String> {
        let name = file.file_name()?.to_str()?;
        match name {
            "cpu.shares" | "cpu.weight" => self.shares.as_ref(),
            "cpu.idle" => self.idle.as_ref(),
            "cpu.cfs_period_us" => self.period.as_ref(),
            "cpu.cfs_quota_us" => self.quota.as_ref(),
            "cpu.max" => self.quota.as_ref().or(self.period.as_ref()),
            "cpu.cfs_burst_us" | "cpu.max.burst" => self.burst.as_ref(),
            "memory.soft_limit_in_bytes" | "memory.high" => self.memory_high.as_ref(),
            _ => None,
        }
    }
}

/// Applies the pod-level plan (CPU weight and idle for offline pods) to the pod cgroup and
/// records it in `record` (the caller saves the record).
pub fn apply_pod(
    runtime: &Runtime,
    record: &mut SandboxRecord,
    policy: &PodPolicy,
) -> Result<(), CgroupError> {
    let plan = policy.pod_plan();
    let rel = record.cgroup_parent.clone();
    let mut resources = Resources {
        cpu_idle: idle_where_used(runtime, plan.cpu_idle.value),
        ..Resources::default()
    };
    match &plan.cpu_shares {
        Some(shares) => {
            // Remember kubelet's weight once, so going online again restores it.
            if record.saved_cpu_shares.is_none() {
                record.saved_cpu_shares = runtime.cgroups.read_cpu_shares(&rel)?;
            }
            resources.cpu_shares = Some(shares.value);
        }
        None => resources.cpu_shares = record.saved_cpu_shares.take(),
    }
    let sources = Sources {
        shares: plan.cpu_shares.as_ref().and_then(|s| s.source.clone()),
        idle: plan.cpu_idle.source.clone(),
        ..Sources::default()
    };
    let mut warnings = Vec::new();
    let written = write(runtime, &rel, resources, &mut warnings)?;
    record.applied = report("pod", &written, &sources);
    record.policy_warnings = warnings;
    Ok(())
}

/// Applies container `name`'s plan for kubelet's `resources` to its cgroup. `pid` is the
/// container's init, named in the report when the policy sets its `oom_score_adj` (the spec
/// sets it at creation; [`reapply_containers`] writes it live).
pub fn apply_container(
    runtime: &Runtime,
    policy: &PodPolicy,
    name: &str,
    cgroups_path: &str,
    resources: Option<&cri::LinuxContainerResources>,
    pid: i32,
) -> Result<Outcome, CgroupError> {
    let plan = policy.for_container(name).plan(&cri_resources(resources));
    let sources = Sources {
        shares: plan.cpu_shares.as_ref().and_then(|s| s.source.clone()),
        idle: plan.cpu_idle.source.clone(),
        period: plan.cpu_period_us.as_ref().and_then(|s| s.source.clone()),
        quota: plan.cpu_quota_us.as_ref().and_then(|s| s.source.clone()),
        burst: plan.cpu_burst_us.as_ref().and_then(|s| s.source.clone()),
        memory_high: plan.memory_high_bytes.source.clone(),
    };
    let mut warnings = Vec::new();
    let written = write(
        runtime,
        cgroups_path,
        to_resources(runtime, &plan),
        &mut warnings,
    )?;
    let mut applied = report(name, &written, &sources);
    if let Some(Planned {
        value,
        source: Some(source),
    }) = &plan.oom_score_adj
    {
        applied.push(AppliedSetting {
            scope: name.to_string(),
            file: format!("/proc/{pid}/oom_score_adj").into(),
            value: value.to_string(),
            source: source.clone(),
        });
    }
    Ok(Outcome {
        applied,
        warnings,
        oom_score_adj: plan.oom_score_adj.map(|o| o.value),
    })
}

/// `cpu.idle` is kraal's tool on cgroup v2 only (DESIGN.md §5): on v1 the offline weight is
/// `cpu.shares=2`, and an idle v1 group would pin its shares to 3 and refuse to be changed.
fn idle_where_used(runtime: &Runtime, idle: bool) -> Option<bool> {
    (runtime.cgroups.hierarchy() == Hierarchy::V2).then_some(idle)
}

fn to_resources(runtime: &Runtime, plan: &ContainerPlan) -> Resources {
    Resources {
        cpu_shares: plan.cpu_shares.as_ref().map(|s| s.value),
        cpu_idle: idle_where_used(runtime, plan.cpu_idle.value),
        cpu_period_us: plan.cpu_period_us.as_ref().map(|s| s.value),
        cpu_quota_us: plan.cpu_quota_us.as_ref().map(|s| s.value),
        cpu_burst_us: plan.cpu_burst_us.as_ref().map(|s| s.value),
        memory_high: Some(match plan.memory_high_bytes.value {
            Some(bytes) => MemoryHigh::Bytes(bytes),
            None => MemoryHigh::Unlimited,
        }),
        ..Resources::default()
    }
}

/// Writes `resources`. A control file this kernel lacks (`cpu.idle` before 5.15, the CFS
/// burst before 5.14) costs a warning, not the pod: the rest is applied without it.
fn write(
    runtime: &Runtime,
    rel: &str,
    mut resources: Resources,
    warnings: &mut Vec<String>,
) -> Result<Vec<Written>, CgroupError> {
    loop {
        match runtime.cgroups.apply_resources(rel, &resources) {
            Ok(written) => {
                mirror(runtime, rel, &resources, warnings);
                return Ok(written);
            }
            Err(CgroupError::Unsupported {
                path,
                feature,
                since,
            }) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let dropped = match name {
                    "cpu.idle" => resources.cpu_idle.take().is_some(),
                    "cpu.cfs_burst_us" | "cpu.max.burst" => resources.cpu_burst_us.take().is_some(),
                    "memory.high" | "memory.soft_limit_in_bytes" => {
                        resources.memory_high.take().is_some()
                    }
                    _ => false,
                };
                if !dropped {
                    return Err(CgroupError::Unsupported {
                        path,
                        feature,
                        since,
                    });
                }
                warnings.push(format!(
                    "{feature} is not available on this kernel (needs Linux {since}; {} is missing); applied the rest without it",
                    path.display()
                ));
            }
            other => return other,
        }
    }
}

/// With the systemd driver: systemd's record of the unit's limits made the same as the files
/// just written, or its next re-application (e.g. `systemctl daemon-reload`) writes its old
/// values back. A failure costs a warning: the files are right until then.
fn mirror(runtime: &Runtime, rel: &str, resources: &Resources, warnings: &mut Vec<String>) {
    if let Err(err) = runtime.driver.mirror(rel, resources) {
        tracing::warn!(cgroup = rel, %err, "telling systemd the new limits");
        warnings.push(format!(
            "systemd was not told the limits written to {rel} ({err}); a systemctl daemon-reload may reset them"
        ));
    }
}

/// The written files an annotation asked for; defaults and kubelet's own values are left
/// out, so the report shows what the policy changed.
fn report(scope: &str, written: &[Written], sources: &Sources) -> Vec<AppliedSetting> {
    // A file may be written twice (a burst goes to 0 before the quota changes, then to its
    // value): only the last write is what the file holds.
    written
        .iter()
        .enumerate()
        .filter(|(i, w)| !written[i + 1..].iter().any(|later| later.file == w.file))
        .map(|(_, w)| w)
        .filter_map(|w| {
            sources.of(&w.file).map(|source| AppliedSetting {
                scope: scope.to_string(),
                file: w.file.clone(),
                value: w.value.clone(),
                source: source.clone(),
            })
        })
        .collect()
}

/// Re-applies the policy to every live container of `sandbox` (a live policy change):
/// cgroup files, and `oom_score_adj` of every process already running. Returns the
/// warnings; each container record is updated with what was applied.
pub fn reapply_containers(
    runtime: &Runtime,
    sandbox: &SandboxRecord,
    policy: &PodPolicy,
) -> Result<Vec<String>, String> {
    let mut warnings = Vec::new();
    for container in runtime.state.containers_of(&sandbox.id) {
        if !container.state.is_live() {
            continue;
        }
        let resources = cri::LinuxContainerResources::decode(container.resources.as_slice()).ok();
        let mut outcome = apply_container(
            runtime,
            policy,
            &container.name,
            &container.cgroups_path,
            resources.as_ref(),
            container.pid,
        )
        .map_err(|e| format!("container {:?}: {e}", container.name))?;
        if let Some(value) = outcome.oom_score_adj {
            set_oom_score_adj(runtime, &container.cgroups_path, value, &mut outcome);
        }
        for w in &outcome.warnings {
            warnings.push(format!("container {:?}: {w}", container.name));
        }
        let (applied, container_warnings) = (outcome.applied, outcome.warnings);
        runtime
            .state
            .update_container(&container.id, |c| {
                c.applied = applied;
                c.policy_warnings = container_warnings;
            })
            .map_err(|e| format!("saving container {}: {e}", container.id))?;
    }
    Ok(warnings)
}

/// Writes `value` to every process of the container. Hosts that refuse to lower a score
/// (this project's VMs among them) keep the old one, with a warning.
fn set_oom_score_adj(runtime: &Runtime, cgroups_path: &str, value: i64, outcome: &mut Outcome) {
    let pids = match runtime.cgroups.pids(cgroups_path) {
        Ok(pids) => pids,
        Err(e) => {
            outcome
                .warnings
                .push(format!("listing processes to set oom_score_adj: {e}"));
            return;
        }
    };
    let mut refused = 0usize;
    for pid in &pids {
        let file = format!("/proc/{pid}/oom_score_adj");
        if std::fs::write(&file, value.to_string()).is_err() {
            refused += 1;
        }
    }
    if refused > 0 {
        outcome.warnings.push(format!(
            "oom_score_adj {value} refused for {refused} of {} processes (this host may not let kraal lower a score); they keep their old score",
            pids.len()
        ));
    }
}
