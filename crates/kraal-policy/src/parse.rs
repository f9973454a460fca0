//! The annotation walk: classify each key, parse its value, then check the settings that
//! depend on each other. Every problem is collected; callers pick the first or all.

use std::time::Duration;

use crate::bandwidth::Rates;
use crate::container::{ContainerSettings, Setting};
use crate::duration::parse_duration;
use crate::error::{PolicyError, Problem, excerpt};
use crate::keys::{
    Direction, KUBERNETES_BANDWIDTH_FORM, KUBERNETES_EGRESS_BANDWIDTH,
    KUBERNETES_INGRESS_BANDWIDTH, KeyClass, Knob, classify, container_name_problem, suggestion,
};
use crate::policy::{PodPolicy, PolicyOptions, QosClass};
use crate::ports::PortSpec;
use crate::quantity::Quantity;

/// The kernel's bounds for `cpu.cfs_period_us` (kernel/sched/core.c).
const MIN_CFS_PERIOD: Duration = Duration::from_millis(1);
const MAX_CFS_PERIOD: Duration = Duration::from_secs(1);

/// At least one error; `first` is the one `from_annotations` reports.
#[derive(Debug)]
pub(crate) struct Errors {
    pub(crate) first: PolicyError,
    rest: Vec<PolicyError>,
}

impl Errors {
    pub(crate) fn into_vec(self) -> Vec<PolicyError> {
        let mut all = Vec::with_capacity(self.rest.len().saturating_add(1));
        all.push(self.first);
        all.extend(self.rest);
        all
    }
}

/// An annotation as given: key, value, and what it parsed to.
struct Given<T> {
    key: String,
    value: String,
    parsed: T,
}

/// One slot per traffic direction.
struct PerDirection<T> {
    egress: Option<T>,
    ingress: Option<T>,
}

impl<T> PerDirection<T> {
    fn new() -> Self {
        Self {
            egress: None,
            ingress: None,
        }
    }

    fn slot(&mut self, direction: Direction) -> &mut Option<T> {
        match direction {
            Direction::Egress => &mut self.egress,
            Direction::Ingress => &mut self.ingress,
        }
    }
}

pub(crate) struct Parser<'o> {
    options: &'o PolicyOptions,
    policy: PodPolicy,
    errors: Vec<PolicyError>,
    qos_key: Option<String>,
    kubernetes_bandwidth: PerDirection<Given<Rates>>,
    kraal_bandwidth: PerDirection<Given<Rates>>,
}

impl<'o> Parser<'o> {
    pub(crate) fn new(options: &'o PolicyOptions) -> Self {
        Self {
            options,
            policy: PodPolicy::default(),
            errors: Vec::new(),
            qos_key: None,
            kubernetes_bandwidth: PerDirection::new(),
            kraal_bandwidth: PerDirection::new(),
        }
    }

    pub(crate) fn run<I, K, V>(mut self, annotations: I) -> Result<PodPolicy, Errors>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let prefix = self.options.prefix.as_str();
        let mut ours: Vec<(K, V)> = annotations
            .into_iter()
            .filter(|(key, _)| classify(key.as_ref(), prefix) != KeyClass::Foreign)
            .collect();
        // Key order makes the reported errors independent of the map's iteration order; the
        // sort is stable, so with repeated keys the first one given is the one used.
        ours.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut previous: Option<&str> = None;
        for (key, value) in &ours {
            let (key, value) = (key.as_ref(), value.as_ref());
            if previous == Some(key) {
                self.fail(key, value, Problem::Duplicate, "each key once");
                continue;
            }
            previous = Some(key);
            self.annotation(key, value);
        }
        self.settle_bandwidth();
        let mut errors = self.errors.into_iter();
        match errors.next() {
            None => Ok(self.policy),
            Some(first) => Err(Errors {
                first,
                rest: errors.collect(),
            }),
        }
    }

    fn fail(
        &mut self,
        key: &str,
        value: &str,
        problem: impl Into<Problem>,
        expected: impl Into<String>,
    ) {
        self.errors
            .push(PolicyError::new(key, value, problem, expected));
    }

    fn annotation(&mut self, key: &str, value: &str) {
        match classify(key, &self.options.prefix) {
            KeyClass::Foreign => {}
            KeyClass::KubernetesBandwidth(direction) => match Rates::parse_cap(value) {
                Ok(parsed) => {
                    *self.kubernetes_bandwidth.slot(direction) = Some(given(key, value, parsed));
                }
                Err(problem) => self.fail(key, value, problem, KUBERNETES_BANDWIDTH_FORM),
            },
            KeyClass::Unknown { name } => {
                if self.options.reject_unknown {
                    self.unknown(key, value, name);
                }
            }
            KeyClass::Setting {
                knob,
                container: None,
            } => self.pod_setting(knob, key, value),
            KeyClass::Setting {
                knob,
                container: Some(container),
            } => self.container_setting(knob, container, key, value),
        }
    }

    fn unknown(&mut self, key: &str, value: &str, name: &str) {
        let prefix = &self.options.prefix;
        let known: Vec<String> = Knob::ALL
            .iter()
            .map(|knob| format!("{prefix}{}", knob.name()))
            .chain([
                KUBERNETES_EGRESS_BANDWIDTH.to_owned(),
                KUBERNETES_INGRESS_BANDWIDTH.to_owned(),
            ])
            .collect();
        let problem = Problem::UnknownKey {
            prefix: prefix.clone(),
            suggestion: suggestion(name).map(|name| format!("{prefix}{name}")),
        };
        let expected = format!(
            "one of {}, or <key>.<container> for cpu-burst, cpu-period and memory-high (the node config can set reject_unknown = false to ignore unknown keys)",
            known.join(", ")
        );
        self.fail(key, value, problem, expected);
    }

    fn pod_setting(&mut self, knob: Knob, key: &str, value: &str) {
        match knob {
            Knob::BindPorts | Knob::ConnectPorts => match PortSpec::parse(value) {
                Ok(spec) if knob == Knob::BindPorts => self.policy.bind_ports = Some(spec),
                Ok(spec) => self.policy.connect_ports = Some(spec),
                Err(problem) => self.fail(key, value, problem, knob.expected()),
            },
            Knob::EgressBandwidth | Knob::IngressBandwidth => match Rates::parse(value) {
                Ok(parsed) => {
                    let direction = if knob == Knob::EgressBandwidth {
                        Direction::Egress
                    } else {
                        Direction::Ingress
                    };
                    *self.kraal_bandwidth.slot(direction) = Some(given(key, value, parsed));
                }
                Err(problem) => self.fail(key, value, problem, knob.expected()),
            },
            Knob::QosClass => match QosClass::parse(value) {
                Some(class) => {
                    self.policy.qos_class = class;
                    self.qos_key = Some(key.to_owned());
                }
                None => self.fail(key, value, Problem::UnknownQosClass, knob.expected()),
            },
            Knob::CpuBurst | Knob::CpuPeriod | Knob::MemoryHigh => {
                let mut defaults = std::mem::take(&mut self.policy.container_defaults);
                self.store_container_setting(&mut defaults, knob, key, value);
                self.policy.container_defaults = defaults;
            }
        }
    }

    fn container_setting(&mut self, knob: Knob, container: &str, key: &str, value: &str) {
        let base_key = key
            .strip_suffix(container)
            .and_then(|k| k.strip_suffix('.'))
            .unwrap_or(key);
        if !knob.container_scoped() {
            self.fail(
                key,
                value,
                Problem::PodLevelOnly {
                    setting: excerpt(base_key),
                },
                format!("{} without a container suffix", excerpt(base_key)),
            );
            return;
        }
        if let Some(reason) = container_name_problem(container) {
            self.fail(
                key,
                value,
                Problem::InvalidContainerName {
                    container: excerpt(container),
                    reason,
                },
                format!(
                    "{}.<container> where <container> is a DNS-1123 label: 1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit",
                    excerpt(base_key)
                ),
            );
            return;
        }
        let mut overrides = self
            .policy
            .container_overrides
            .remove(container)
            .unwrap_or_default();
        self.store_container_setting(&mut overrides, knob, key, value);
        if !overrides.is_empty() {
            self.policy
                .container_overrides
                .insert(container.to_owned(), overrides);
        }
    }

    fn store_container_setting(
        &mut self,
        settings: &mut ContainerSettings,
        knob: Knob,
        key: &str,
        value: &str,
    ) {
        let parsed = match knob {
            Knob::CpuBurst => Quantity::parse(value)
                .and_then(|quantity| quantity.milli_value())
                .map_err(Problem::from),
            Knob::CpuPeriod => cfs_period_us(value),
            Knob::MemoryHigh => Quantity::parse(value)
                .and_then(|quantity| quantity.value())
                .map_err(Problem::from)
                .and_then(|bytes| match bytes {
                    0 => Err(Problem::ZeroMemoryHigh),
                    bytes => Ok(bytes),
                }),
            // Pod-level settings never reach here; see `pod_setting`.
            _ => return,
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(problem) => return self.fail(key, value, problem, knob.expected()),
        };
        let setting = Some(Setting {
            value: parsed,
            key: key.to_owned(),
            raw: value.to_owned(),
        });
        match knob {
            Knob::CpuBurst => settings.cpu_burst_millicores = setting,
            Knob::CpuPeriod => settings.cpu_period_us = setting,
            _ => settings.memory_high_bytes = setting,
        }
    }

    /// A direction may be set by the kubernetes.io cap or by kraal's min/max form, not both:
    /// neither can be said to win without surprising someone. An offline pod gets no
    /// guarantee, since under contention it yields first by definition.
    fn settle_bandwidth(&mut self) {
        let offline = self.policy.qos_class == QosClass::Offline;
        let qos_key = self.qos_key.clone().unwrap_or_default();
        for direction in [Direction::Egress, Direction::Ingress] {
            let plain = self.kubernetes_bandwidth.slot(direction).take();
            let kraal = self.kraal_bandwidth.slot(direction).take();
            let chosen = match (plain, kraal) {
                (Some(plain), Some(kraal)) => {
                    let name = direction_name(direction);
                    let reason = format!("both set the {name} bandwidth");
                    let expected = format!(
                        "only one of {} (a plain cap) and {} (min/max/burst)",
                        plain.key, kraal.key
                    );
                    let problem = Problem::Conflict {
                        other_key: plain.key,
                        other_value: plain.value,
                        reason,
                    };
                    self.fail(&kraal.key, &kraal.value, problem, expected);
                    None
                }
                // Only kraal's form can carry a guarantee; a plain cap has min 0.
                (Some(given), None) | (None, Some(given))
                    if offline && given.parsed.has_guarantee() =>
                {
                    let problem = Problem::OfflineGuarantee {
                        min_bps: given.parsed.min_bps,
                        qos_key: qos_key.clone(),
                    };
                    let expected =
                        format!("no min (or min=0) for an offline pod, or {qos_key}: \"online\"");
                    self.fail(&given.key, &given.value, problem, expected);
                    None
                }
                (Some(given), None) | (None, Some(given)) => Some(given.parsed),
                (None, None) => None,
            };
            match direction {
                Direction::Egress => self.policy.bandwidth.egress = chosen,
                Direction::Ingress => self.policy.bandwidth.ingress = chosen,
            }
        }
    }
}

fn given<T>(key: &str, value: &str, parsed: T) -> Given<T> {
    Given {
        key: key.to_owned(),
        value: value.to_owned(),
        parsed,
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Egress => "egress",
        Direction::Ingress => "ingress",
    }
}

/// A CFS period in microseconds: within the kernel's 1ms..=1s, and whole, because
/// `cpu.cfs_period_us` and `cpu.max` take microseconds.
fn cfs_period_us(value: &str) -> Result<u64, Problem> {
    let period = parse_duration(value)?;
    if !(MIN_CFS_PERIOD..=MAX_CFS_PERIOD).contains(&period) {
        return Err(Problem::PeriodOutOfRange { period });
    }
    if period.subsec_nanos() % 1000 != 0 {
        return Err(Problem::PeriodNotWholeMicros);
    }
    // At most 1s, so at most 10^6.
    u64::try_from(period.as_micros()).map_err(|_| Problem::PeriodOutOfRange { period })
}
