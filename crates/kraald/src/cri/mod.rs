//! The CRI v1 services. Each call lives in its own file as a thin adapter from the wire
//! types to kraal's domain crates (the containerd and CRI-O layout); `runtime_service.rs`
//! and `image_service.rs` only route calls to them.

mod error;
mod image_fs_info;
mod image_service;
mod image_status;
mod images;
mod list_images;
mod pull_image;
mod remove_image;
mod runtime_config;
mod runtime_service;
mod status;
mod stream_images;
mod version;

pub use image_service::ImageHandler;
pub use runtime_service::RuntimeHandler;
