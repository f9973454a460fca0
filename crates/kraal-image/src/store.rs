//! [`ImageStore`]: the public face of the crate, what kraald's ImageService calls.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use crate::auth::Credentials;
use crate::content::{Layout, Pins, blob_key, layer_key, remove_any};
use crate::digest::sha256_hex;
use crate::digest_lock::DigestLocks;
use crate::error::ImageError;
use crate::image::Image;
use crate::metadata::{Metadata, Removed};
use crate::reference::ImageSpec;
use crate::registry_config::RegistryConfig;
use crate::usage::{FsUsage, measure};

/// The image store. `Send + Sync`; share it in an `Arc` (cloning is also cheap).
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    pub(crate) registry: RegistryConfig,
    pub(crate) metadata: Metadata,
    pub(crate) locks: DigestLocks,
    pub(crate) pins: Arc<Pins>,
}

impl ImageStore {
    /// Opens the store in `dir` (`<kraal root>/images`), creating it if needed. Leftovers
    /// of interrupted pulls are removed, and content no image references is collected.
    pub fn open(dir: &Path, registry: RegistryConfig) -> Result<Self, ImageError> {
        registry.validate()?;
        let layout = Layout::new(dir);
        layout.prepare()?;
        let metadata = Metadata::open(&layout.db_path())?;
        let inner = Arc::new(Inner {
            layout,
            registry,
            metadata,
            locks: DigestLocks::default(),
            pins: Arc::new(Pins::default()),
        });
        collect_garbage(&inner)?;
        info!(dir = %dir.display(), "image store open");
        Ok(ImageStore { inner })
    }

    /// Pulls `reference` with `creds` (used for the image's registry and its mirrors)
    /// and returns the stored image.
    pub async fn pull(&self, reference: &str, creds: &Credentials) -> Result<Image, ImageError> {
        crate::pull::pull(&self.inner, reference, creds).await
    }

    /// The image an id (`sha256:<hex>` or bare hex), tag reference or digest reference
    /// names; `None` when there is none.
    pub fn get(&self, spec: &str) -> Result<Option<Image>, ImageError> {
        let spec = ImageSpec::parse(spec)?;
        Ok(self.inner.metadata.find(&spec)?.map(|r| r.image))
    }

    /// Every image in the store.
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        Ok(self
            .inner
            .metadata
            .list()?
            .into_iter()
            .map(|r| r.image)
            .collect())
    }

    /// Removes an image (by id or digest reference: all of it; by tag: that tag, and the
    /// image with its last tag). `in_use(id)` returning who uses it refuses the removal.
    /// Removing what does not exist succeeds. Content no image uses any more is deleted.
    pub fn remove(
        &self,
        spec: &str,
        in_use: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ImageError> {
        let parsed = ImageSpec::parse(spec)?;
        match self.inner.metadata.remove(&parsed, in_use)? {
            Removed::Nothing => info!(spec, "nothing to remove"),
            Removed::Tag(tag) => info!(tag = %tag, "tag removed"),
            Removed::Image(id) => {
                info!(image = %id, spec, "image removed");
                collect_garbage(&self.inner)?;
            }
        }
        Ok(())
    }

    /// Bytes and inodes used under the store directory.
    pub fn usage(&self) -> Result<FsUsage, ImageError> {
        measure(self.inner.layout.root())
    }

    /// The unpacked layer roots of `image`, bottom layer first (overlayfs lists lower
    /// dirs top first, so reverse them for `lowerdir=`).
    pub fn layer_dirs(&self, image: &Image) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .filter_map(|l| self.inner.layout.layer_path(&l.diff_id))
            .collect()
    }
}

/// Deletes blobs and layers that no image references and no pull has pinned.
///
/// Decided under the pin table's lock (see `crate::content`); unpacked layers are
/// first renamed into `tmp/` so the slow recursive delete happens outside the lock.
pub(crate) fn collect_garbage(inner: &Inner) -> Result<(), ImageError> {
    let mut doomed: Vec<PathBuf> = Vec::new();
    {
        let pins = inner.pins.lock();
        let (blobs, layers) = inner.metadata.referenced()?;
        for digest in inner.layout.list_blobs()? {
            if blobs.contains(&digest) || pins.contains_key(&blob_key(&digest)) {
                continue;
            }
            if let Some(path) = inner.layout.blob_path(&digest) {
                match fs::remove_file(&path) {
                    Ok(()) => info!(blob = %digest, "unreferenced blob deleted"),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io("deleting unreferenced blob", &path, e)),
                }
            }
        }
        for diff_id in inner.layout.list_layers()? {
            if layers.contains(&diff_id) || pins.contains_key(&layer_key(&diff_id)) {
                continue;
            }
            let (Some(path), Some(hex)) = (inner.layout.layer_path(&diff_id), sha256_hex(&diff_id))
            else {
                continue;
            };
            let trash = inner
                .layout
                .tmp_dir()
                .join(format!("gc-{hex}-{}", std::process::id()));
            let _ = remove_any(&trash);
            fs::rename(&path, &trash).map_err(|e| {
                ImageError::io("moving unreferenced layer out of the way", &path, e)
            })?;
            info!(diff_id = %diff_id, "unreferenced layer deleted");
            doomed.push(trash);
        }
    }
    for path in doomed {
        if let Err(e) = remove_any(&path) {
            // Left in tmp/, which the next open empties.
            warn!(path = %path.display(), error = %e, "could not delete an unreferenced layer");
        }
    }
    Ok(())
}
