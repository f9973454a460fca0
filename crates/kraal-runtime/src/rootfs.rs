//! A container's root filesystem: an overlay of the image's unpacked layers (read-only,
//! shared by every container of the image) under a writable layer of its own.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

/// The overlay's mount data must fit in one page.
const MAX_MOUNT_DATA: usize = 4000;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "image has {layers} layers, too many for one overlay mount ({bytes} bytes of options, limit {MAX_MOUNT_DATA})"
    )]
    TooManyLayers { layers: usize, bytes: usize },
    #[error("layer dir {0} contains a character overlayfs cannot take in lowerdir (',' or ':')")]
    BadLayerPath(PathBuf),
}

/// Where one container's writable layer lives.
#[derive(Debug, Clone)]
pub struct WritableLayer {
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl WritableLayer {
    pub fn under(dir: &Path) -> Self {
        WritableLayer {
            upper: dir.join("upper"),
            work: dir.join("work"),
        }
    }
}

/// Mounts the overlay at `target`. `layers` are bottom layer first, as images list them.
pub fn mount_rootfs(
    layers: &[PathBuf],
    writable: &WritableLayer,
    target: &Path,
) -> Result<(), RootfsError> {
    for dir in [&writable.upper, &writable.work, &target.to_path_buf()] {
        fs::create_dir_all(dir).map_err(|e| RootfsError::Io {
            action: "creating",
            path: dir.clone(),
            source: e,
        })?;
    }
    // overlayfs wants the top layer first.
    let mut lower = Vec::with_capacity(layers.len());
    for layer in layers.iter().rev() {
        let text = layer.to_string_lossy();
        if text.contains(',') || text.contains(':') {
            return Err(RootfsError::BadLayerPath(layer.clone()));
        }
        lower.push(text.into_owned());
    }
    if lower.is_empty() {
        // An image without layers still needs a lower dir; its writable layer is all it has.
        let empty = writable.upper.with_file_name("empty");
        fs::create_dir_all(&empty).map_err(|e| RootfsError::Io {
            action: "creating",
            path: empty.clone(),
            source: e,
        })?;
        lower.push(empty.to_string_lossy().into_owned());
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        writable.upper.display(),
        writable.work.display()
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(RootfsError::TooManyLayers {
            layers: layers.len(),
            bytes: data.len(),
        });
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| RootfsError::Io {
        action: "mounting the overlay rootfs on",
        path: target.to_path_buf(),
        source: e.into(),
    })
}

/// Unmounts the rootfs; not mounted (or gone) is fine, so removal can be retried.
pub fn unmount_rootfs(target: &Path) -> Result<(), RootfsError> {
    crate::fsutil::detach_mount(target).map_err(|source| RootfsError::Io {
        action: "unmounting",
        path: target.to_path_buf(),
        source,
    })
}

/// Bytes and inodes used by the writable layer (CRI's writable layer usage).
pub fn writable_usage(writable: &WritableLayer) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![writable.upper.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            inodes += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
            }
        }
    }
    (bytes, inodes)
}
