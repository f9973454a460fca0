//! The CRI v1 services. Each call lives in its own file as a thin adapter from the wire
//! types to kraal's domain crates (the containerd and CRI-O layout); `runtime_service.rs`
//! and `image_service.rs` only route calls to them.

mod attach;
mod call_log;
mod container_stats;
mod container_status;
mod container_undo;
mod create_container;
mod error;
mod exec;
mod exec_sync;
mod filters;
mod get_container_events;
mod image_fs_info;
mod image_service;
mod image_status;
mod images;
mod list_containers;
mod list_images;
mod list_pod_sandbox;
mod pod_sandbox_stats;
mod pod_sandbox_status;
mod port_forward;
mod pull_image;
mod remove_container;
mod remove_image;
mod remove_pod_sandbox;
mod reopen_container_log;
mod run_pod_sandbox;
mod runtime_config;
mod runtime_service;
mod sandbox_teardown;
mod start_container;
mod status;
mod stop_container;
mod stop_pod_sandbox;
mod stream_images;
mod update_container_resources;
mod update_runtime_config;
mod version;

pub use container_status::container_status_message;
pub use image_service::{ImageHandler, InUse};
pub use pod_sandbox_status::sandbox_status_message;
pub use runtime_service::RuntimeHandler;
