//! Code generated from kraal's `.proto` files, and nothing else.
//!
//! `runtime::v1` is the Kubernetes CRI (`runtime.v1`): prost messages plus
//! tonic clients (`runtime_service_client`, `image_service_client`) and
//! servers (`runtime_service_server`, `image_service_server`).

/// Kubernetes CRI.
pub mod runtime {
    /// CRI `runtime.v1`, generated from `proto/runtime/v1/api.proto`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        rustdoc::all,
        unreachable_pub
    )]
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}
