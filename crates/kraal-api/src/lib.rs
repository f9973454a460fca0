//! Code generated from kraal's `.proto` files, and nothing else.
//!
//! `runtime::v1` is the Kubernetes CRI (`runtime.v1`): prost messages plus
//! tonic clients (`runtime_service_client`, `image_service_client`) and
//! servers (`runtime_service_server`, `image_service_server`).
//!
//! `kraal::v1` is kraal's admin API (`kraal.v1`), served by kraald on its own
//! root-only socket and used by `kraalctl`: prost messages plus the tonic
//! client (`admin_client::AdminClient`) and server
//! (`admin_server::{Admin, AdminServer}`).

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

/// kraal's own APIs.
pub mod kraal {
    /// The admin API `kraal.v1` (freeze, thaw, a pod's policy), generated from
    /// `proto/kraal/v1/admin.proto`.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_docs,
        rustdoc::all,
        unreachable_pub
    )]
    pub mod v1 {
        tonic::include_proto!("kraal.v1");
    }
}
