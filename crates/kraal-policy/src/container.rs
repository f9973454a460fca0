//! Container-level settings (cpu-burst, cpu-period, memory-high) and the checks that need the
//! container's CRI resources, which the annotations alone cannot tell.

use serde::Serialize;

use crate::error::{PolicyError, Problem};
use crate::policy::QosClass;

/// kubelet's CFS period when the CRI config does not give one.
pub(crate) const DEFAULT_CFS_PERIOD_US: u64 = 100_000;
/// The kernel refuses a CFS quota below 1ms.
const MIN_CFS_QUOTA_US: u64 = 1_000;

/// A parsed value and the annotation it came from, so a later check can name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// The parsed value.
    pub value: T,
    /// The annotation key that set it (`kraal.dev/cpu-burst.web`).
    pub key: String,
    /// The annotation's value as written (`500m`).
    pub raw: String,
}

/// Settings that may differ per container. `None`: not set at this level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContainerSettings {
    /// CFS burst in millicores (0: no burst, which lets one container opt out of a pod-wide
    /// burst). The caller turns it into microseconds per period, rounding down like the quota.
    pub cpu_burst_millicores: Option<Setting<u64>>,
    /// CFS period in microseconds, 1000..=1000000.
    pub cpu_period_us: Option<Setting<u64>>,
    /// `memory.high` in bytes, above 0.
    pub memory_high_bytes: Option<Setting<u64>>,
}

impl ContainerSettings {
    /// True if nothing is set.
    pub fn is_empty(&self) -> bool {
        self.cpu_burst_millicores.is_none()
            && self.cpu_period_us.is_none()
            && self.memory_high_bytes.is_none()
    }

    /// `self` where set, else `defaults`.
    pub(crate) fn merged_over(&self, defaults: &ContainerSettings) -> ContainerSettings {
        ContainerSettings {
            cpu_burst_millicores: self
                .cpu_burst_millicores
                .clone()
                .or_else(|| defaults.cpu_burst_millicores.clone()),
            cpu_period_us: self
                .cpu_period_us
                .clone()
                .or_else(|| defaults.cpu_period_us.clone()),
            memory_high_bytes: self
                .memory_high_bytes
                .clone()
                .or_else(|| defaults.memory_high_bytes.clone()),
        }
    }
}

/// The limits of one container from its CRI `LinuxContainerResources`, as CRI encodes them:
/// `None`, 0 or a negative number means "no limit" (kubelet sends 0 for unset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerLimits {
    /// `cpu_quota`, microseconds per period.
    pub cpu_quota_us: Option<i64>,
    /// `cpu_period`, microseconds; kubelet's 100000 when absent.
    pub cpu_period_us: Option<i64>,
    /// `memory_limit_in_bytes`.
    pub memory_limit_bytes: Option<i64>,
}

/// The effective settings of one container: pod defaults merged with its overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerPolicy {
    /// The container's name.
    pub container: String,
    /// The pod's QoS class (pod-level; repeated here for the cgroup code's convenience).
    pub qos_class: QosClass,
    /// The merged settings.
    #[serde(flatten)]
    pub settings: ContainerSettings,
}

impl ContainerPolicy {
    /// CFS burst in millicores, if set.
    pub fn cpu_burst_millicores(&self) -> Option<u64> {
        self.settings.cpu_burst_millicores.as_ref().map(|s| s.value)
    }

    /// CFS period in microseconds, if set.
    pub fn cpu_period_us(&self) -> Option<u64> {
        self.settings.cpu_period_us.as_ref().map(|s| s.value)
    }

    /// `memory.high` in bytes, if set.
    pub fn memory_high_bytes(&self) -> Option<u64> {
        self.settings.memory_high_bytes.as_ref().map(|s| s.value)
    }

    /// Runs every check against the container's CRI limits; returns the first problem.
    pub fn check_limits(&self, limits: &ContainerLimits) -> Result<(), PolicyError> {
        self.check_cpu_limit(limits.cpu_quota_us, limits.cpu_period_us)?;
        self.check_memory_limit(limits.memory_limit_bytes)
    }

    /// A burst needs a limit to burst above, and may not exceed it (the kernel refuses a
    /// burst larger than the quota). A new period must leave a quota of at least 1ms after
    /// rescaling, or the kernel refuses the quota.
    pub fn check_cpu_limit(
        &self,
        cpu_quota_us: Option<i64>,
        cpu_period_us: Option<i64>,
    ) -> Result<(), PolicyError> {
        let quota = positive(cpu_quota_us);
        let cri_period = positive(cpu_period_us).unwrap_or(DEFAULT_CFS_PERIOD_US);
        if let Some(burst) = self
            .settings
            .cpu_burst_millicores
            .as_ref()
            .filter(|s| s.value > 0)
        {
            let Some(quota) = quota else {
                return Err(PolicyError::new(
                    &burst.key,
                    &burst.raw,
                    Problem::NoCpuLimit {
                        container: self.container.clone(),
                    },
                    format!(
                        "a CPU limit (resources.limits.cpu) on container {:?}, or no cpu-burst for it ({}: \"0\" turns a pod-wide burst off)",
                        self.container,
                        scoped_key(&burst.key, &self.container)
                    ),
                ));
            };
            // burst/1000 cores <= quota/period cores, compared exactly in integers.
            let burst_scaled = u128::from(burst.value).saturating_mul(u128::from(cri_period));
            let quota_scaled = u128::from(quota).saturating_mul(1000);
            if burst_scaled > quota_scaled {
                let limit_millicores = u64::try_from(
                    quota_scaled
                        .checked_div(u128::from(cri_period))
                        .unwrap_or(u128::MAX),
                )
                .unwrap_or(u64::MAX);
                return Err(PolicyError::new(
                    &burst.key,
                    &burst.raw,
                    Problem::BurstAboveLimit {
                        container: self.container.clone(),
                        burst_millicores: burst.value,
                        limit_millicores,
                    },
                    format!("a cpu-burst of at most {limit_millicores}m"),
                ));
            }
        }
        if let (Some(period), Some(quota)) = (self.settings.cpu_period_us.as_ref(), quota) {
            // The quota is rescaled so the limit stays the same: quota × new / old period.
            let rescaled = u128::from(quota)
                .saturating_mul(u128::from(period.value))
                .checked_div(u128::from(cri_period))
                .unwrap_or(u128::MAX);
            if rescaled < u128::from(MIN_CFS_QUOTA_US) {
                // Smallest period giving a 1ms quota: ceil(1000 × old period / quota).
                let needed = u128::from(MIN_CFS_QUOTA_US)
                    .saturating_mul(u128::from(cri_period))
                    .div_ceil(u128::from(quota));
                return Err(PolicyError::new(
                    &period.key,
                    &period.raw,
                    Problem::QuotaBelowMinimum {
                        container: self.container.clone(),
                        quota_us: u64::try_from(rescaled).unwrap_or(u64::MAX),
                    },
                    format!(
                        "a cpu-period of at least {needed}us for container {:?}, or a higher CPU limit",
                        self.container
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `memory.high` at or above the hard limit would never act, so it must be below it.
    /// Without a limit any memory-high is fine.
    pub fn check_memory_limit(&self, memory_limit_bytes: Option<i64>) -> Result<(), PolicyError> {
        let (Some(high), Some(limit)) = (
            self.settings.memory_high_bytes.as_ref(),
            positive(memory_limit_bytes),
        ) else {
            return Ok(());
        };
        if high.value >= limit {
            return Err(PolicyError::new(
                &high.key,
                &high.raw,
                Problem::MemoryHighNotBelowLimit {
                    container: self.container.clone(),
                    memory_high: high.value,
                    limit,
                },
                format!(
                    "a memory-high below {limit} bytes (container {:?}'s resources.limits.memory)",
                    self.container
                ),
            ));
        }
        Ok(())
    }
}

/// CRI encodes "no limit" as 0 or a negative number.
fn positive(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok()).filter(|v| *v > 0)
}

/// The container-scoped form of `key`, which is either already `<setting>.<container>` (an
/// override) or the pod-wide `<setting>`.
fn scoped_key(key: &str, container: &str) -> String {
    let suffix = format!(".{container}");
    if key.ends_with(&suffix) {
        key.to_owned()
    } else {
        format!("{key}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(value: u64, key: &str, raw: &str) -> Option<Setting<u64>> {
        Some(Setting {
            value,
            key: key.to_owned(),
            raw: raw.to_owned(),
        })
    }

    fn policy(settings: ContainerSettings) -> ContainerPolicy {
        ContainerPolicy {
            container: "web".to_owned(),
            qos_class: QosClass::Online,
            settings,
        }
    }

    fn burst(millicores: u64) -> ContainerPolicy {
        policy(ContainerSettings {
            cpu_burst_millicores: setting(millicores, "kraal.dev/cpu-burst", "x"),
            ..Default::default()
        })
    }

    #[test]
    fn burst_needs_a_limit() {
        let error = burst(500).check_cpu_limit(None, None).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(r#"cpu-burst set but container "web" has no CPU limit"#),
            "{message}"
        );
        assert!(message.contains("kraal.dev/cpu-burst.web"), "{message}");
        assert_eq!(error.key(), "kraal.dev/cpu-burst");
        assert!(burst(500).check_cpu_limit(Some(0), None).is_err());
        assert!(burst(500).check_cpu_limit(Some(-1), None).is_err());
        assert!(burst(0).check_cpu_limit(None, None).is_ok());
        assert!(
            policy(ContainerSettings::default())
                .check_cpu_limit(None, None)
                .is_ok()
        );
    }

    #[test]
    fn burst_may_not_exceed_the_limit() {
        // 2 CPUs at kubelet's period.
        assert!(burst(2000).check_cpu_limit(Some(200_000), None).is_ok());
        assert!(
            burst(2000)
                .check_cpu_limit(Some(200_000), Some(100_000))
                .is_ok()
        );
        let error = burst(2001)
            .check_cpu_limit(Some(200_000), None)
            .unwrap_err();
        assert!(error.to_string().contains("2001m"), "{error}");
        assert!(error.to_string().contains("2000m"), "{error}");
        // 0.5 CPU as 25ms per 50ms.
        assert!(
            burst(500)
                .check_cpu_limit(Some(25_000), Some(50_000))
                .is_ok()
        );
        assert!(
            burst(501)
                .check_cpu_limit(Some(25_000), Some(50_000))
                .is_err()
        );
    }

    #[test]
    fn period_must_leave_a_kernel_sized_quota() {
        let short_period = policy(ContainerSettings {
            cpu_period_us: setting(10_000, "kraal.dev/cpu-period.web", "10ms"),
            ..Default::default()
        });
        // 100m at 100ms is a 10ms quota; at 10ms it becomes exactly 1ms: still fine.
        assert!(short_period.check_cpu_limit(Some(10_000), None).is_ok());
        // 50m at 10ms would be 500us.
        let error = short_period.check_cpu_limit(Some(5_000), None).unwrap_err();
        assert_eq!(error.key(), "kraal.dev/cpu-period.web");
        assert!(error.to_string().contains("500us"), "{error}");
        assert!(error.to_string().contains("at least 20000us"), "{error}");
        // No limit: nothing to rescale.
        assert!(short_period.check_cpu_limit(None, None).is_ok());
    }

    #[test]
    fn memory_high_must_be_below_the_limit() {
        let high = policy(ContainerSettings {
            memory_high_bytes: setting(1 << 30, "kraal.dev/memory-high", "1Gi"),
            ..Default::default()
        });
        assert!(high.check_memory_limit(None).is_ok());
        assert!(high.check_memory_limit(Some(0)).is_ok());
        assert!(high.check_memory_limit(Some((1 << 30) + 1)).is_ok());
        let error = high.check_memory_limit(Some(1 << 30)).unwrap_err();
        assert_eq!(error.value(), "1Gi");
        assert!(error.to_string().contains("not below"), "{error}");
        let limits = ContainerLimits {
            memory_limit_bytes: Some(1 << 29),
            ..Default::default()
        };
        assert!(high.check_limits(&limits).is_err());
    }

    #[test]
    fn scoped_key_keeps_the_prefix() {
        assert_eq!(
            scoped_key("example.com/cpu-burst", "db"),
            "example.com/cpu-burst.db"
        );
        assert_eq!(
            scoped_key("kraal.dev/cpu-burst.web", "web"),
            "kraal.dev/cpu-burst.web"
        );
    }
}
