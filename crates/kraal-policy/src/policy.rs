//! `PodPolicy`: every kraal setting of one pod, parsed and cross-checked.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bandwidth::{BandwidthPolicy, Rates};
use crate::container::{ContainerPolicy, ContainerSettings};
use crate::error::PolicyError;
use crate::keys::{DEFAULT_PREFIX, KeyClass, classify};
use crate::parse::Parser;
use crate::ports::PortSpec;

/// Node-wide parsing options, from the node's config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOptions {
    /// Keys under this prefix are kraal's (default `kraal.dev/`). It should end with `/`; an
    /// empty prefix would claim every annotation of the pod.
    pub prefix: String,
    /// Whether a key under the prefix that the schema does not know is an error (default
    /// true: a typo like `kraal.dev/cpu_burst` would otherwise be silently ignored).
    pub reject_unknown: bool,
}

impl PolicyOptions {
    /// True for the annotations the policy reads: every key under the prefix (known or not)
    /// and the two `kubernetes.io` bandwidth keys. A live policy update may change only these.
    pub fn is_policy_key(&self, key: &str) -> bool {
        !matches!(classify(key, &self.prefix), KeyClass::Foreign)
    }

    /// The policy annotations among `annotations`, sorted by key.
    pub fn policy_annotations<'a, I>(&self, annotations: I) -> BTreeMap<String, String>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        annotations
            .into_iter()
            .filter(|(k, _)| self.is_policy_key(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
            reject_unknown: true,
        }
    }
}

/// How a pod is treated under contention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    /// Latency-sensitive; the default.
    #[default]
    Online,
    /// Batch: minimal CPU weight, no bandwidth guarantee, yields first.
    Offline,
}

impl QosClass {
    /// Parses `online` or `offline` (exactly, in lower case, as the schema spells them).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "online" => Some(Self::Online),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Online => "online",
            Self::Offline => "offline",
        })
    }
}

/// A pod's kraal policy. `PodPolicy::default()` is the policy of a pod without annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PodPolicy {
    /// `kraal.dev/qos-class`.
    pub qos_class: QosClass,
    /// `kraal.dev/bind-ports`; `None`: binds are not restricted.
    pub bind_ports: Option<PortSpec>,
    /// `kraal.dev/connect-ports`; `None`: autobind uses the node's ephemeral range.
    pub connect_ports: Option<PortSpec>,
    /// From `kubernetes.io/<dir>-bandwidth` or `kraal.dev/<dir>-bandwidth`.
    pub bandwidth: BandwidthPolicy,
    /// Pod-wide container settings (`kraal.dev/cpu-burst`, ...), the default for every container.
    pub container_defaults: ContainerSettings,
    /// Per-container overrides (`kraal.dev/cpu-burst.<name>`, ...), by container name.
    pub container_overrides: BTreeMap<String, ContainerSettings>,
}

impl PodPolicy {
    /// Parses a pod's annotations. Annotations outside the prefix (other than the two
    /// `kubernetes.io` bandwidth keys) are ignored. On failure, returns the first problem in
    /// key order, so the same annotations always give the same error.
    pub fn from_annotations<I, K, V>(
        annotations: I,
        options: &PolicyOptions,
    ) -> Result<Self, PolicyError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Parser::new(options)
            .run(annotations)
            .map_err(|errors| errors.first)
    }

    /// Like [`PodPolicy::from_annotations`], but reports every problem (in key order, then the
    /// cross-key conflicts), so a user can fix them all at once. The list is never empty.
    pub fn from_annotations_all<I, K, V>(
        annotations: I,
        options: &PolicyOptions,
    ) -> Result<Self, Vec<PolicyError>>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Parser::new(options)
            .run(annotations)
            .map_err(|errors| errors.into_vec())
    }

    /// The settings for one container: the pod-wide defaults, overridden by that container's
    /// `<key>.<name>` annotations. A container without overrides gets the defaults.
    pub fn for_container(&self, name: &str) -> ContainerPolicy {
        let settings = match self.container_overrides.get(name) {
            Some(overrides) => overrides.merged_over(&self.container_defaults),
            None => self.container_defaults.clone(),
        };
        ContainerPolicy {
            container: name.to_owned(),
            qos_class: self.qos_class,
            settings,
        }
    }

    /// Names of containers that have overrides. The caller knows the pod's containers and may
    /// warn about names that match none (the annotations arrive before the containers do).
    pub fn overridden_containers(&self) -> impl Iterator<Item = &str> {
        self.container_overrides.keys().map(String::as_str)
    }

    /// The egress rates, if the pod limits egress.
    pub fn egress(&self) -> Option<&Rates> {
        self.bandwidth.egress.as_ref()
    }

    /// The ingress rates, if the pod limits ingress.
    pub fn ingress(&self) -> Option<&Rates> {
        self.bandwidth.ingress.as_ref()
    }

    /// JSON for `PodSandboxStatus.info` and the admin API.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_keys_are_ours_and_the_kubernetes_bandwidth_ones() {
        let options = PolicyOptions::default();
        assert!(options.is_policy_key("kraal.dev/cpu-burst"));
        assert!(options.is_policy_key("kraal.dev/cpu-burst.web"));
        assert!(options.is_policy_key("kraal.dev/typo"));
        assert!(options.is_policy_key("kubernetes.io/egress-bandwidth"));
        assert!(!options.is_policy_key("kubernetes.io/config.seen"));
        assert!(!options.is_policy_key("example.com/cpu-burst"));
        let all = BTreeMap::from([
            ("kraal.dev/qos-class".to_string(), "offline".to_string()),
            ("app".to_string(), "web".to_string()),
        ]);
        let picked = options.policy_annotations(&all);
        assert_eq!(picked.len(), 1);
        assert_eq!(picked["kraal.dev/qos-class"], "offline");
    }
}
