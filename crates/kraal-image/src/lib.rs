//! kraal's image store: what sits behind the CRI ImageService.
//!
//! Pulls images with `oci-client` (mirrors, credentials, every digest verified here),
//! unpacks each layer safely into its own directory in overlayfs form, and records
//! images and their names in a small redb database. No gRPC here: errors carry an
//! [`ErrorKind`] that the daemon maps to a status code.
//!
//! On disk, under the store directory (see `content` for the details):
//! `metadata.redb`, `blobs/sha256/<hex>` (manifests, indexes, configs),
//! `layers/sha256/<diffid hex>/` (unpacked layers) and `tmp/`.

mod auth;
mod content;
mod digest;
mod digest_lock;
mod error;
mod fetch;
mod image;
mod layer_stream;
mod manifest;
mod metadata;
mod platform;
mod pull;
mod reference;
mod registry_config;
mod store;
mod unpack;
mod usage;

pub use auth::Credentials;
pub use error::{EndpointFailure, ErrorKind, ImageError};
pub use image::{Image, Layer};
pub use reference::{DEFAULT_REGISTRY, DEFAULT_TAG, ImageReference, Target};
pub use registry_config::{MirrorConfig, RegistryConfig};
pub use store::ImageStore;
pub use unpack::UnpackError;
pub use usage::FsUsage;
