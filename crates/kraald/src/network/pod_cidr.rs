//! The node's pod CIDR(s), as kubelet hands them over in UpdateRuntimeConfig. Kept in memory
//! only: kubelet sends them again whenever it (or kraald) restarts.

use std::sync::RwLock;

use kraal_net::cni::IpRange;

#[derive(Default)]
pub struct PodCidr {
    cidrs: RwLock<Vec<String>>,
}

impl PodCidr {
    /// `text` is kubelet's form: one CIDR, or a comma-separated pair on a dual-stack node.
    /// Returns whether it changed.
    pub fn set(&self, text: &str) -> bool {
        let cidrs: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut held = self.cidrs.write().unwrap_or_else(|p| p.into_inner());
        let changed = *held != cidrs;
        *held = cidrs;
        changed
    }

    pub fn get(&self) -> Vec<String> {
        self.cidrs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `ipRanges` runtime value for plugins that declare it (host-local): one range set
    /// per CIDR, so a dual-stack pod gets an address from each.
    pub fn ip_ranges(&self) -> Vec<Vec<IpRange>> {
        self.get()
            .into_iter()
            .map(|subnet| vec![IpRange { subnet }])
            .collect()
    }
}
