//! What a policy means for the kernel: the cgroup values and `oom_score_adj` a pod and each of
//! its containers should have, computed from the policy and kubelet's CRI resources.
//!
//! A plan is the *whole* desired state of every knob kraal owns, defaults included (burst 0,
//! idle off, no memory.high), so applying it is idempotent and a live policy change that
//! removes a setting undoes it by applying the new plan. Each value says which annotation
//! asked for it; `None` means the value is kubelet's or the kernel's default.

use serde::Serialize;

use crate::container::{ContainerPolicy, DEFAULT_CFS_PERIOD_US};
use crate::keys::{DEFAULT_PREFIX, Knob};
use crate::policy::{PodPolicy, QosClass};

/// `cpu.shares` of offline pods and containers: the kernel's minimum.
pub const OFFLINE_CPU_SHARES: u64 = 2;
/// `oom_score_adj` of offline containers: the OOM killer takes them first.
pub const OFFLINE_OOM_SCORE_ADJ: i64 = 1000;
/// The highest `oom_score_adj` an online container gets, so that every offline container
/// scores above every online one (kubelet gives best-effort pods 1000).
pub const ONLINE_MAX_OOM_SCORE_ADJ: i64 = 999;

/// A value and the annotation key that asked for it (`None`: kubelet's value or a default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned<T> {
    /// The value to write.
    pub value: T,
    /// The annotation key responsible, e.g. `kraal.dev/cpu-burst.web`.
    pub source: Option<String>,
}

impl<T> Planned<T> {
    fn default_value(value: T) -> Self {
        Self {
            value,
            source: None,
        }
    }

    fn from_key(value: T, key: impl Into<String>) -> Self {
        Self {
            value,
            source: Some(key.into()),
        }
    }
}

/// The CPU and memory parts of kubelet's CRI `LinuxContainerResources` (0: unset, as CRI
/// encodes it; a quota of -1: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CriResources {
    /// `cpu_shares`.
    pub cpu_shares: i64,
    /// `cpu_quota`, µs per period.
    pub cpu_quota_us: i64,
    /// `cpu_period`, µs.
    pub cpu_period_us: i64,
    /// `oom_score_adj`; `None` when kubelet sent no resources at all.
    pub oom_score_adj: Option<i64>,
}

/// The pod cgroup's share of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PodPlan {
    /// `cpu.shares` to force (offline pods); `None`: leave kubelet's value.
    pub cpu_shares: Option<Planned<u64>>,
    /// `cpu.idle`: on for offline pods, off otherwise.
    pub cpu_idle: Planned<bool>,
}

/// One container cgroup's share of the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerPlan {
    /// `cpu.shares`: 2 for offline containers, else kubelet's (None when kubelet gave none).
    pub cpu_shares: Option<Planned<u64>>,
    /// `cpu.idle`.
    pub cpu_idle: Planned<bool>,
    /// CFS period; None: leave it (no quota and no `cpu-period`).
    pub cpu_period_us: Option<Planned<u64>>,
    /// CFS quota, rescaled to the period so the limit is kubelet's; None: no limit set.
    pub cpu_quota_us: Option<Planned<i64>>,
    /// CFS burst in µs per period; `Some(0)` when there is a quota but no burst.
    pub cpu_burst_us: Option<Planned<u64>>,
    /// `memory.high` (v1: soft limit); `None` inside: no throttling point.
    pub memory_high_bytes: Planned<Option<u64>>,
    /// The processes' `oom_score_adj`; None when kubelet sent none and the pod is online.
    pub oom_score_adj: Option<Planned<i64>>,
}

impl PodPolicy {
    /// The pod cgroup's values.
    pub fn pod_plan(&self) -> PodPlan {
        match self.qos_class {
            QosClass::Offline => PodPlan {
                cpu_shares: Some(Planned::from_key(OFFLINE_CPU_SHARES, qos_key())),
                cpu_idle: Planned::from_key(true, qos_key()),
            },
            QosClass::Online => PodPlan {
                cpu_shares: None,
                cpu_idle: Planned::default_value(false),
            },
        }
    }
}

/// The qos-class key under the default prefix (the plan does not know the node's prefix;
/// the key is only a label for reports).
fn qos_key() -> String {
    format!("{DEFAULT_PREFIX}{}", Knob::QosClass.name())
}

impl ContainerPolicy {
    /// The container cgroup's values for kubelet's `cri` resources. The policy must have
    /// passed [`ContainerPolicy::check_limits`] for these resources; values that would not
    /// (a burst without a quota) are left out rather than guessed.
    pub fn plan(&self, cri: &CriResources) -> ContainerPlan {
        let offline = self.qos_class == QosClass::Offline;
        let cpu_shares = if offline {
            Some(Planned::from_key(OFFLINE_CPU_SHARES, qos_key()))
        } else {
            u64::try_from(cri.cpu_shares)
                .ok()
                .filter(|s| *s > 0)
                .map(Planned::default_value)
        };
        let cpu_idle = if offline {
            Planned::from_key(true, qos_key())
        } else {
            Planned::default_value(false)
        };

        let quota = u64::try_from(cri.cpu_quota_us).ok().filter(|q| *q > 0);
        let cri_period = u64::try_from(cri.cpu_period_us)
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(DEFAULT_CFS_PERIOD_US);
        let period_setting = self.settings.cpu_period_us.as_ref();
        let period = period_setting.map_or(cri_period, |s| s.value);
        let cpu_period_us = match period_setting {
            Some(s) => Some(Planned::from_key(s.value, s.key.clone())),
            None if quota.is_some() || cri.cpu_period_us > 0 => {
                Some(Planned::default_value(cri_period))
            }
            None => None,
        };
        let cpu_quota_us = match quota {
            Some(q) => {
                let rescaled = scale(q, period, cri_period);
                Some(match period_setting {
                    Some(s) if period != cri_period => {
                        Planned::from_key(i64::try_from(rescaled).unwrap_or(i64::MAX), &s.key)
                    }
                    _ => Planned::default_value(i64::try_from(rescaled).unwrap_or(i64::MAX)),
                })
            }
            None if cri.cpu_quota_us == -1 => Some(Planned::default_value(-1)),
            None => None,
        };
        let cpu_burst_us = quota.map(|_| match self.settings.cpu_burst_millicores.as_ref() {
            Some(b) if b.value > 0 => {
                // millicores × period / 1000, rounded down like the quota.
                Planned::from_key(scale(b.value, period, 1000), b.key.clone())
            }
            Some(b) => Planned::from_key(0, b.key.clone()),
            None => Planned::default_value(0),
        });
        let memory_high_bytes = match self.settings.memory_high_bytes.as_ref() {
            Some(h) => Planned::from_key(Some(h.value), h.key.clone()),
            None => Planned::default_value(None),
        };
        let oom_score_adj = if offline {
            Some(Planned::from_key(OFFLINE_OOM_SCORE_ADJ, qos_key()))
        } else {
            cri.oom_score_adj.map(|v| {
                if v > ONLINE_MAX_OOM_SCORE_ADJ {
                    Planned::from_key(ONLINE_MAX_OOM_SCORE_ADJ, qos_key())
                } else {
                    Planned::default_value(v)
                }
            })
        };
        ContainerPlan {
            cpu_shares,
            cpu_idle,
            cpu_period_us,
            cpu_quota_us,
            cpu_burst_us,
            memory_high_bytes,
            oom_score_adj,
        }
    }
}

/// `value × numerator / denominator`, rounded down, saturating.
fn scale(value: u64, numerator: u64, denominator: u64) -> u64 {
    let scaled = u128::from(value)
        .saturating_mul(u128::from(numerator))
        .checked_div(u128::from(denominator))
        .unwrap_or(u128::MAX);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::PolicyOptions;

    fn policy(pairs: &[(&str, &str)]) -> PodPolicy {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        PodPolicy::from_annotations(&map, &PolicyOptions::default()).unwrap()
    }

    fn limited(quota: i64) -> CriResources {
        CriResources {
            cpu_shares: 512,
            cpu_quota_us: quota,
            cpu_period_us: 100_000,
            oom_score_adj: Some(-997),
        }
    }

    #[test]
    fn no_annotations_keep_kubelets_values_and_reset_kraals() {
        let plan = policy(&[]).for_container("c").plan(&limited(20_000));
        assert_eq!(plan.cpu_shares, Some(Planned::default_value(512)));
        assert_eq!(plan.cpu_idle, Planned::default_value(false));
        assert_eq!(plan.cpu_period_us, Some(Planned::default_value(100_000)));
        assert_eq!(plan.cpu_quota_us, Some(Planned::default_value(20_000)));
        assert_eq!(plan.cpu_burst_us, Some(Planned::default_value(0)));
        assert_eq!(plan.memory_high_bytes, Planned::default_value(None));
        assert_eq!(plan.oom_score_adj, Some(Planned::default_value(-997)));
        let pod = policy(&[]).pod_plan();
        assert_eq!(pod.cpu_shares, None);
        assert_eq!(pod.cpu_idle, Planned::default_value(false));
    }

    #[test]
    fn burst_is_millicores_times_the_period() {
        let p = policy(&[("kraal.dev/cpu-burst", "500m")]);
        let plan = p.for_container("c").plan(&limited(100_000));
        assert_eq!(
            plan.cpu_burst_us,
            Some(Planned::from_key(50_000, "kraal.dev/cpu-burst"))
        );
        let p = policy(&[
            ("kraal.dev/cpu-burst", "500m"),
            ("kraal.dev/cpu-period", "50ms"),
        ]);
        let plan = p.for_container("c").plan(&limited(100_000));
        assert_eq!(plan.cpu_burst_us.unwrap().value, 25_000);
    }

    #[test]
    fn a_new_period_rescales_the_quota() {
        let p = policy(&[("kraal.dev/cpu-period.web", "50ms")]);
        let plan = p.for_container("web").plan(&limited(20_000));
        assert_eq!(
            plan.cpu_period_us,
            Some(Planned::from_key(50_000, "kraal.dev/cpu-period.web"))
        );
        assert_eq!(
            plan.cpu_quota_us,
            Some(Planned::from_key(10_000, "kraal.dev/cpu-period.web"))
        );
        // Another container of the same pod keeps kubelet's period.
        let other = p.for_container("sidecar").plan(&limited(20_000));
        assert_eq!(other.cpu_quota_us, Some(Planned::default_value(20_000)));
    }

    #[test]
    fn without_a_quota_there_is_no_burst_and_no_quota() {
        let plan = policy(&[])
            .for_container("c")
            .plan(&CriResources::default());
        assert_eq!(plan.cpu_quota_us, None);
        assert_eq!(plan.cpu_burst_us, None);
        assert_eq!(plan.cpu_period_us, None);
        assert_eq!(plan.cpu_shares, None);
        assert_eq!(plan.oom_score_adj, None);
        let unlimited = CriResources {
            cpu_quota_us: -1,
            ..CriResources::default()
        };
        let plan = policy(&[]).for_container("c").plan(&unlimited);
        assert_eq!(plan.cpu_quota_us, Some(Planned::default_value(-1)));
        assert_eq!(plan.cpu_burst_us, None);
    }

    #[test]
    fn offline_gets_minimal_weight_idle_and_the_highest_oom_score() {
        let p = policy(&[("kraal.dev/qos-class", "offline")]);
        let plan = p.for_container("c").plan(&limited(0));
        assert_eq!(plan.cpu_shares.unwrap().value, OFFLINE_CPU_SHARES);
        assert!(plan.cpu_idle.value);
        assert_eq!(plan.oom_score_adj.unwrap().value, OFFLINE_OOM_SCORE_ADJ);
        let plan = p.for_container("c").plan(&CriResources::default());
        assert_eq!(plan.oom_score_adj.unwrap().value, OFFLINE_OOM_SCORE_ADJ);
        let pod = p.pod_plan();
        assert_eq!(pod.cpu_shares.unwrap().value, OFFLINE_CPU_SHARES);
        assert_eq!(pod.cpu_idle.source.as_deref(), Some("kraal.dev/qos-class"));
    }

    #[test]
    fn online_oom_scores_stay_below_offline() {
        let best_effort = CriResources {
            oom_score_adj: Some(1000),
            ..CriResources::default()
        };
        let plan = policy(&[]).for_container("c").plan(&best_effort);
        assert_eq!(plan.oom_score_adj.unwrap().value, ONLINE_MAX_OOM_SCORE_ADJ);
    }

    #[test]
    fn memory_high_comes_from_the_nearest_key() {
        let p = policy(&[
            ("kraal.dev/memory-high", "64Mi"),
            ("kraal.dev/memory-high.db", "1Gi"),
        ]);
        assert_eq!(
            p.for_container("web").plan(&limited(0)).memory_high_bytes,
            Planned::from_key(Some(64 << 20), "kraal.dev/memory-high")
        );
        assert_eq!(
            p.for_container("db").plan(&limited(0)).memory_high_bytes,
            Planned::from_key(Some(1 << 30), "kraal.dev/memory-high.db")
        );
    }

    #[test]
    fn a_zero_burst_override_turns_the_pod_burst_off() {
        let p = policy(&[
            ("kraal.dev/cpu-burst", "500m"),
            ("kraal.dev/cpu-burst.batch", "0"),
        ]);
        let plan = p.for_container("batch").plan(&limited(100_000));
        assert_eq!(
            plan.cpu_burst_us,
            Some(Planned::from_key(0, "kraal.dev/cpu-burst.batch"))
        );
    }
}
