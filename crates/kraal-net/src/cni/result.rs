//! What plugins answer: the ADD result (spec 1.0/1.1, and 0.3.x/0.4.0, whose layout differs
//! only in an `ips[].version` field that 1.0 dropped) and the error object of a failed call.
//! Unknown keys are ignored, so a newer plugin's extra fields do not break kraal; the result
//! itself is chained to the next plugin as the JSON the plugin wrote, not as these types.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The netns path for an interface inside the pod; empty for the node's side.
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Only in 0.3.x/0.4.0 results: "4" or "6".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR form: `10.88.0.5/16`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self.address.split('/').next()?;
        addr.parse().ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// A failed call's answer on stdout (spec "Error" object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl CniResult {
    /// The pod's addresses on `ifname` inside the pod (an IP without an interface index counts
    /// too: the spec makes the index optional), IPv4 before IPv6 so the first one is what
    /// kubelet shows as the pod IP on a dual-stack node, as with containerd.
    pub fn pod_ips(&self, ifname: &str) -> Vec<IpAddr> {
        let on_pod_side = |ip: &&IpConfig| match ip.interface {
            None => true,
            Some(i) => self
                .interfaces
                .get(i)
                .is_some_and(|iface| iface.name == ifname && !iface.sandbox.is_empty()),
        };
        let mut ips: Vec<IpAddr> = self
            .ips
            .iter()
            .filter(on_pod_side)
            .filter_map(IpConfig::ip)
            .collect();
        ips.sort_by_key(|ip| ip.is_ipv6());
        ips.dedup();
        ips
    }

    /// The node-side end of the pod's link (the host veth of `bridge` or `ptp`): an interface
    /// outside the sandbox that is linked to a peer. A bridge also appears outside the sandbox,
    /// but is its own link (`iflink == ifindex`), so it is passed over.
    pub fn host_interface(&self) -> Option<String> {
        let outside: Vec<&Interface> = self
            .interfaces
            .iter()
            .filter(|i| i.sandbox.is_empty() && !i.name.is_empty())
            .collect();
        outside
            .iter()
            .find(|i| has_peer(&i.name))
            .or(outside.last())
            .map(|i| i.name.clone())
    }
}

fn has_peer(name: &str) -> bool {
    let read = |file: &str| {
        std::fs::read_to_string(std::path::Path::new("/sys/class/net").join(name).join(file))
            .ok()
            .map(|s| s.trim().to_string())
    };
    match (read("ifindex"), read("iflink")) {
        (Some(index), Some(link)) => index != link,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_1_0_result() {
        let text = r#"{
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "kraal0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/x/ns/net"}
            ],
            "ips": [
                {"interface": 2, "address": "fd00:88::5/64", "gateway": "fd00:88::1"},
                {"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"},
                {"interface": 0, "address": "10.88.0.1/16"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {},
            "someFutureKey": 1
        }"#;
        let result: CniResult = serde_json::from_str(text).expect("parses");
        let ips: Vec<String> = result
            .pod_ips("eth0")
            .iter()
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ips, ["10.88.0.5", "fd00:88::5"]);
        assert_eq!(result.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn reads_a_0_4_result() {
        let text = r#"{
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.1.2.3/24"}]
        }"#;
        let result: CniResult = serde_json::from_str(text).expect("parses");
        assert_eq!(
            result.pod_ips("eth0"),
            vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(result.ips[0].version.as_deref(), Some("4"));
    }

    #[test]
    fn ips_without_interface_count() {
        let text =
            r#"{"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.9.0.2/24"}]}"#;
        let result: CniResult = serde_json::from_str(text).expect("parses");
        assert_eq!(result.pod_ips("eth0").len(), 1);
        assert_eq!(result.host_interface(), None);
    }

    #[test]
    fn error_object() {
        let err: PluginError =
            serde_json::from_str(r#"{"code": 7, "msg": "no", "details": "why"}"#).expect("parses");
        assert_eq!(
            (err.code, err.msg.as_str(), err.details.as_str()),
            (7, "no", "why")
        );
    }
}
