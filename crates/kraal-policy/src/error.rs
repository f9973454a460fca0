//! The one error type callers see: which annotation, what it said, what is wrong, and what
//! would have been right.

use crate::bandwidth::BandwidthError;
use crate::duration::DurationError;
use crate::ports::PortListError;
use crate::quantity::QuantityError;

/// Values are untrusted and may be huge; messages show at most this many characters of one.
const SHOWN_CHARS: usize = 200;

/// An annotation kraal cannot accept.
///
/// Displays as `annotation "<key>" = "<value>": <problem>; expected <form>`, the message
/// `RunPodSandbox` returns with `InvalidArgument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "annotation {} = {}: {}; expected {}",
    shown(&.detail.key),
    shown(&.detail.value),
    .detail.problem,
    .detail.expected
)]
pub struct PolicyError {
    // Boxed: errors are rare, and a small `Result` keeps the success path cheap.
    detail: Box<Detail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Detail {
    key: String,
    value: String,
    problem: Problem,
    expected: String,
}

impl PolicyError {
    pub(crate) fn new(
        key: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<Problem>,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            detail: Box::new(Detail {
                key: key.into(),
                value: value.into(),
                problem: problem.into(),
                expected: expected.into(),
            }),
        }
    }

    /// The annotation key at fault (for a conflict, the kraal key of the pair).
    pub fn key(&self) -> &str {
        &self.detail.key
    }

    /// That annotation's value.
    pub fn value(&self) -> &str {
        &self.detail.value
    }

    /// What is wrong, for callers that branch on it.
    pub fn problem(&self) -> &Problem {
        &self.detail.problem
    }

    /// The form the value should have had.
    pub fn expected(&self) -> &str {
        &self.detail.expected
    }
}

/// What is wrong with an annotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// A port list or `auto:<count>` that does not parse or contradicts itself.
    #[error(transparent)]
    Ports(#[from] PortListError),
    /// A bandwidth value that does not parse or contradicts itself.
    #[error(transparent)]
    Bandwidth(#[from] BandwidthError),
    /// A quantity that does not parse or does not fit.
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// A duration that does not parse.
    #[error(transparent)]
    Duration(#[from] DurationError),
    /// A key under kraal's prefix that the schema does not have.
    #[error("unknown annotation under {prefix:?}{}", did_you_mean(.suggestion.as_deref()))]
    UnknownKey {
        /// The configured prefix.
        prefix: String,
        /// The full key of a known setting that is close to the unknown one.
        suggestion: Option<String>,
    },
    /// `<key>.<container>` for a setting that applies to the whole pod only.
    #[error("{setting} applies to the whole pod and has no per-container form")]
    PodLevelOnly {
        /// The setting's key without the container scope.
        setting: String,
    },
    /// `<key>.<container>` where the container part is not a DNS-1123 label.
    #[error("{reason} ({container:?})")]
    InvalidContainerName {
        /// The text after the setting name.
        container: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The same key twice (possible when annotations come as a list of pairs).
    #[error("the key is given more than once")]
    Duplicate,
    /// `kraal.dev/qos-class` other than online or offline.
    #[error("unknown QoS class")]
    UnknownQosClass,
    /// A memory size of zero.
    #[error("memory-high must be greater than 0")]
    ZeroMemoryHigh,
    /// A CFS period the kernel does not accept.
    #[error("{period:?} is outside the kernel's CFS period range 1ms..=1s")]
    PeriodOutOfRange {
        /// The period asked for.
        period: std::time::Duration,
    },
    /// A CFS period with a fraction of a microsecond, which `cfs_period_us` cannot express.
    #[error("the period is not a whole number of microseconds")]
    PeriodNotWholeMicros,
    /// Two annotations that set the same thing.
    #[error("conflicts with {} = {}: {reason}", shown(.other_key), shown(.other_value))]
    Conflict {
        /// The other annotation's key.
        other_key: String,
        /// The other annotation's value.
        other_value: String,
        /// What the two disagree on.
        reason: String,
    },
    /// A bandwidth guarantee on an offline pod.
    #[error(
        "min {min_bps} bit/s is a bandwidth guarantee, but {qos_key} is \"offline\" and offline pods get no guarantee"
    )]
    OfflineGuarantee {
        /// The guarantee asked for.
        min_bps: u64,
        /// The QoS class key, as the pod spelled it.
        qos_key: String,
    },
    /// A CPU burst for a container that has no CPU limit to burst above.
    #[error("cpu-burst set but container {container:?} has no CPU limit")]
    NoCpuLimit {
        /// The container's name.
        container: String,
    },
    /// A CPU burst above the container's CPU limit, which the kernel refuses.
    #[error(
        "cpu-burst {burst_millicores}m is above container {container:?}'s CPU limit {limit_millicores}m (the kernel refuses a burst larger than the quota)"
    )]
    BurstAboveLimit {
        /// The container's name.
        container: String,
        /// The burst, millicores.
        burst_millicores: u64,
        /// The limit, millicores (rounded down).
        limit_millicores: u64,
    },
    /// A CFS period that shrinks the container's quota below the kernel's 1ms minimum.
    #[error(
        "with this period container {container:?}'s CPU limit becomes a quota of {quota_us}us, below the kernel's minimum of 1000us"
    )]
    QuotaBelowMinimum {
        /// The container's name.
        container: String,
        /// The rescaled quota, microseconds.
        quota_us: u64,
    },
    /// `memory.high` at or above `memory.max` would never take effect.
    #[error(
        "memory-high {memory_high} bytes is not below container {container:?}'s memory limit {limit} bytes"
    )]
    MemoryHighNotBelowLimit {
        /// The container's name.
        container: String,
        /// memory-high, bytes.
        memory_high: u64,
        /// The container's memory limit, bytes.
        limit: u64,
    },
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|key| format!(" (did you mean {key:?}?)"))
        .unwrap_or_default()
}

/// Fragments of the input quoted inside a problem description are cut to this many characters.
const EXCERPT_CHARS: usize = 64;

/// A fragment of untrusted input, cut to [`EXCERPT_CHARS`] characters, for a problem
/// description (the whole value is already in the message header, cut there too).
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", text.get(..cut).unwrap_or_default()),
        None => text.to_owned(),
    }
}

/// Quotes and escapes untrusted text for a message, cut to [`SHOWN_CHARS`] characters.
pub(crate) fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => {
            let head = text.get(..cut).unwrap_or_default();
            format!("{head:?}... ({} bytes in all)", text.len())
        }
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_key_value_and_form() {
        let error = PolicyError::new(
            "kraal.dev/bind-ports",
            "30-20",
            PortListError::Reversed { start: 30, end: 20 },
            r#"a port list like "20000-20999,8080" or "auto:<count>""#,
        );
        assert_eq!(
            error.to_string(),
            r#"annotation "kraal.dev/bind-ports" = "30-20": range start 30 is above its end 20; expected a port list like "20000-20999,8080" or "auto:<count>""#
        );
        assert_eq!(error.key(), "kraal.dev/bind-ports");
        assert_eq!(error.value(), "30-20");
    }

    #[test]
    fn long_and_odd_values_are_cut_and_escaped() {
        let long = "9".repeat(10_000);
        let shown_long = shown(&long);
        assert!(shown_long.len() < 300, "{shown_long}");
        assert!(shown_long.ends_with("(10000 bytes in all)"));
        assert_eq!(shown("a\nb\"c"), r#""a\nb\"c""#);
        assert_eq!(
            shown(&"é".repeat(201))
                .chars()
                .filter(|c| *c == 'é')
                .count(),
            200
        );
    }
}
