//! `UpdateRuntimeConfig`: kubelet tells the runtime the node's pod CIDR. kraal keeps it and
//! passes it to CNI plugins that declare the `ipRanges` capability (host-local), so a conflist
//! need not hard-code the node's range.

use kraal_api::runtime::v1 as cri;

use crate::runtime::Runtime;

pub fn update_runtime_config(
    runtime: &Runtime,
    request: cri::UpdateRuntimeConfigRequest,
) -> cri::UpdateRuntimeConfigResponse {
    let cidr = request
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
        .unwrap_or_default();
    // An empty CIDR is kubelet saying nothing about it; keep what it said before.
    if !cidr.trim().is_empty() && runtime.pod_cidr.set(&cidr) {
        tracing::info!(pod_cidr = %cidr, "pod CIDR from kubelet");
    }
    cri::UpdateRuntimeConfigResponse {}
}
