//! `Version`: who we are and which CRI we speak.

use kraal_api::runtime::v1::{VersionRequest, VersionResponse};

/// The version of the kubelet-runtime API handshake; kubelet only logs it.
const KUBE_API_VERSION: &str = "0.1.0";
const RUNTIME_API_VERSION: &str = "v1";

pub fn version(_request: VersionRequest) -> VersionResponse {
    VersionResponse {
        version: KUBE_API_VERSION.to_string(),
        runtime_name: "kraal".to_string(),
        runtime_version: env!("CARGO_PKG_VERSION").to_string(),
        runtime_api_version: RUNTIME_API_VERSION.to_string(),
    }
}
