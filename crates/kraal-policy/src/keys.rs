//! The annotation schema (DESIGN.md §4): which keys exist, which may be scoped to one
//! container, and how a raw key is classified.

/// `kubernetes.io/egress-bandwidth`: a plain cap in bits/s, as the CNI bandwidth plugin reads it.
pub const KUBERNETES_EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";
/// `kubernetes.io/ingress-bandwidth`: a plain cap in bits/s.
pub const KUBERNETES_INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
/// The annotation prefix kraal uses unless the node config sets another.
pub const DEFAULT_PREFIX: &str = "kraal.dev/";

/// One setting of the schema, named without its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Knob {
    /// `bind-ports`: ports `bind()` may use.
    BindPorts,
    /// `connect-ports`: local ports for `connect()` autobind.
    ConnectPorts,
    /// `egress-bandwidth`: `min=..,max=..[,burst=..]` for sent traffic.
    EgressBandwidth,
    /// `ingress-bandwidth`: the same for received traffic.
    IngressBandwidth,
    /// `qos-class`: `online` or `offline`.
    QosClass,
    /// `cpu-burst`: CFS burst as a CPU quantity.
    CpuBurst,
    /// `cpu-period`: CFS period as a duration.
    CpuPeriod,
    /// `memory-high`: the throttle-and-reclaim point in bytes.
    MemoryHigh,
}

impl Knob {
    /// Every setting, in the order DESIGN.md lists them.
    pub const ALL: [Knob; 8] = [
        Knob::BindPorts,
        Knob::ConnectPorts,
        Knob::EgressBandwidth,
        Knob::IngressBandwidth,
        Knob::QosClass,
        Knob::CpuBurst,
        Knob::CpuPeriod,
        Knob::MemoryHigh,
    ];

    /// The key without its prefix (`cpu-burst`).
    pub fn name(self) -> &'static str {
        match self {
            Knob::BindPorts => "bind-ports",
            Knob::ConnectPorts => "connect-ports",
            Knob::EgressBandwidth => "egress-bandwidth",
            Knob::IngressBandwidth => "ingress-bandwidth",
            Knob::QosClass => "qos-class",
            Knob::CpuBurst => "cpu-burst",
            Knob::CpuPeriod => "cpu-period",
            Knob::MemoryHigh => "memory-high",
        }
    }

    /// True if `<key>.<container>` may override the pod-wide value for one container. Ports,
    /// bandwidth and the QoS class are enforced on the pod's cgroup as a whole, so a
    /// per-container value could not be honoured.
    pub fn container_scoped(self) -> bool {
        matches!(self, Knob::CpuBurst | Knob::CpuPeriod | Knob::MemoryHigh)
    }

    /// The form the value must take, for error messages.
    pub(crate) fn expected(self) -> String {
        match self {
            Knob::BindPorts | Knob::ConnectPorts => {
                r#"a port list like "20000-20999,8080" or "auto:<count>""#.to_owned()
            }
            Knob::EgressBandwidth => kraal_bandwidth_form(KUBERNETES_EGRESS_BANDWIDTH),
            Knob::IngressBandwidth => kraal_bandwidth_form(KUBERNETES_INGRESS_BANDWIDTH),
            Knob::QosClass => r#""online" or "offline""#.to_owned(),
            Knob::CpuBurst => {
                r#"a CPU quantity of at least 0 like "500m", "1" or "1.5""#.to_owned()
            }
            Knob::CpuPeriod => {
                r#"a duration from 1ms to 1s in whole microseconds, like "50ms", "100ms" or "1s""#
                    .to_owned()
            }
            Knob::MemoryHigh => {
                r#"a memory size above 0 in bytes like "512Mi", "1G" or "100M""#.to_owned()
            }
        }
    }

    fn from_name(name: &str) -> Option<Knob> {
        Knob::ALL.into_iter().find(|knob| knob.name() == name)
    }
}

fn kraal_bandwidth_form(plain_key: &str) -> String {
    format!(
        r#""min=<bits/s>,max=<bits/s>[,burst=<bytes>]" like "min=50M,max=200M,burst=64Ki" with min <= max (for a plain cap use {plain_key}: "100M")"#
    )
}

/// The form of `kubernetes.io/<dir>-bandwidth`, for error messages.
pub(crate) const KUBERNETES_BANDWIDTH_FORM: &str =
    r#"a bit rate above 0 like "100M", "1G" or "500k" (bits per second)"#;

/// Direction of traffic, for the two bandwidth settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Egress,
    Ingress,
}

/// What an annotation key means to kraal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyClass<'a> {
    /// Not ours: another prefix. Pods carry many unrelated annotations.
    Foreign,
    /// `kubernetes.io/<dir>-bandwidth`.
    KubernetesBandwidth(Direction),
    /// A known setting, pod-wide (`container: None`) or for one container.
    Setting {
        knob: Knob,
        container: Option<&'a str>,
    },
    /// Under our prefix but not in the schema.
    Unknown { name: &'a str },
}

/// Classifies `key` under `prefix`. Container names are not validated here; see
/// [`container_name_problem`].
pub(crate) fn classify<'a>(key: &'a str, prefix: &str) -> KeyClass<'a> {
    match key {
        KUBERNETES_EGRESS_BANDWIDTH => return KeyClass::KubernetesBandwidth(Direction::Egress),
        KUBERNETES_INGRESS_BANDWIDTH => return KeyClass::KubernetesBandwidth(Direction::Ingress),
        _ => {}
    }
    let Some(name) = key.strip_prefix(prefix) else {
        return KeyClass::Foreign;
    };
    // Setting names contain no dot, so the first dot starts the container scope.
    let (base, container) = match name.split_once('.') {
        Some((base, container)) => (base, Some(container)),
        None => (name, None),
    };
    match Knob::from_name(base) {
        Some(knob) => KeyClass::Setting { knob, container },
        None => KeyClass::Unknown { name },
    }
}

/// Why `name` is not a DNS-1123 label (the rule for Kubernetes container names), or `None`.
pub(crate) fn container_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("the container name is empty");
    }
    if name.len() > 63 {
        return Some("the container name is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("the container name may hold only a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some("the container name must start and end with a letter or digit");
    }
    None
}

/// The closest known setting name, if `name` looks like a typo of one (edit distance <= 2).
pub(crate) fn suggestion(name: &str) -> Option<&'static str> {
    // Compare only the part before a container scope: `cpu_burst.web` suggests `cpu-burst`.
    let base = name.split_once('.').map_or(name, |(base, _)| base);
    // Long inputs cannot be within distance 2 of a short name; skip the quadratic work.
    if base.len() > 32 {
        return None;
    }
    Knob::ALL
        .into_iter()
        .map(|knob| (edit_distance(base, knob.name()), knob.name()))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance over chars, two rows at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = Vec::with_capacity(previous.len());
    for (i, ca) in a.chars().enumerate() {
        current.clear();
        current.push(i.saturating_add(1));
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous
                .get(j)
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(usize::from(ca != *cb));
            let delete = previous
                .get(j.saturating_add(1))
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            let insert = current
                .last()
                .copied()
                .unwrap_or(usize::MAX)
                .saturating_add(1);
            current.push(substitute.min(delete).min(insert));
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous.last().copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_keys() {
        let prefix = DEFAULT_PREFIX;
        assert_eq!(
            classify("app.kubernetes.io/name", prefix),
            KeyClass::Foreign
        );
        assert_eq!(classify("kraal.devx/cpu-burst", prefix), KeyClass::Foreign);
        assert_eq!(
            classify("kubernetes.io/egress-bandwidth", prefix),
            KeyClass::KubernetesBandwidth(Direction::Egress)
        );
        assert_eq!(
            classify("kraal.dev/cpu-burst", prefix),
            KeyClass::Setting {
                knob: Knob::CpuBurst,
                container: None
            }
        );
        assert_eq!(
            classify("kraal.dev/memory-high.worker", prefix),
            KeyClass::Setting {
                knob: Knob::MemoryHigh,
                container: Some("worker")
            }
        );
        assert_eq!(
            classify("kraal.dev/bind-ports.web", prefix),
            KeyClass::Setting {
                knob: Knob::BindPorts,
                container: Some("web")
            }
        );
        assert_eq!(
            classify("kraal.dev/cpu_burst", prefix),
            KeyClass::Unknown { name: "cpu_burst" }
        );
        assert_eq!(
            classify("example.com/kraal/cpu-burst", "example.com/kraal/"),
            KeyClass::Setting {
                knob: Knob::CpuBurst,
                container: None
            }
        );
    }

    #[test]
    fn validates_container_names() {
        for good in ["web", "a", "w-1", "0", &"a".repeat(63)] {
            assert_eq!(container_name_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "Web",
            "-web",
            "web-",
            "w.b",
            "w_b",
            "wéb",
            &"a".repeat(64),
        ] {
            assert!(container_name_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(suggestion("cpu_burst"), Some("cpu-burst"));
        assert_eq!(suggestion("cpuburst.web"), Some("cpu-burst"));
        assert_eq!(suggestion("memory-hi"), Some("memory-high"));
        assert_eq!(suggestion("qos"), None);
        assert_eq!(suggestion("something-else"), None);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
