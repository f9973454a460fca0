//! The on-disk content store and what protects it from garbage collection.
//!
//! ```text
//! <dir>/metadata.redb              image records and names
//! <dir>/blobs/sha256/<hex>         manifests, indexes and configs, as pulled
//! <dir>/layers/sha256/<diffid>/    unpacked layer roots (overlayfs lower dirs)
//! <dir>/tmp/                       in-progress unpacks and writes; emptied on open
//! ```
//!
//! Compressed layer blobs are not kept: a layer is streamed from the registry straight
//! into its unpack, and only the unpacked tree (named by diff_id) stays. Everything
//! appears by `rename` from `tmp/`, so a reader never sees half-written content.
//!
//! Garbage collection deletes what no image record references and no pull in progress
//! has *pinned*. A pull pins a digest before it looks whether the content is present,
//! and unpins it only after its image record is committed; collection decides under the
//! pin table's lock. So content is always either pinned or referenced while it matters.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{debug, warn};

use crate::digest::{is_sha256_hex, sha256_hex, sha256_of};
use crate::error::ImageError;

/// Paths inside the store directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn db_path(&self) -> PathBuf {
        self.root.join("metadata.redb")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers").join("sha256")
    }

    /// `blobs/sha256/<hex>`; `None` for anything but a well-formed sha256 digest, so a
    /// hostile digest can never become a path.
    pub(crate) fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| self.blobs_dir().join(hex))
    }

    /// `layers/sha256/<diffid hex>`, the unpacked root of a layer.
    pub(crate) fn layer_path(&self, diff_id: &str) -> Option<PathBuf> {
        sha256_hex(diff_id).map(|hex| self.layers_dir().join(hex))
    }

    /// Creates the directory tree (0700: image content is root's business) and empties
    /// `tmp/` of whatever an interrupted run left there.
    pub(crate) fn prepare(&self) -> Result<(), ImageError> {
        for dir in [&self.root, &self.blobs_dir(), &self.layers_dir()] {
            create_private_dir(dir)?;
        }
        let tmp = self.tmp_dir();
        if tmp.exists() {
            let entries =
                fs::read_dir(&tmp).map_err(|e| ImageError::io("listing leftovers", &tmp, e))?;
            for entry in entries {
                let path = entry
                    .map_err(|e| ImageError::io("listing leftovers", &tmp, e))?
                    .path();
                debug!(path = %path.display(), "removing leftover of an interrupted pull");
                remove_any(&path).map_err(|e| {
                    ImageError::io("removing leftover of an interrupted pull", &path, e)
                })?;
            }
        }
        create_private_dir(&tmp)
    }

    /// True when the layer is unpacked (the rename made it appear complete).
    pub(crate) fn layer_present(&self, diff_id: &str) -> bool {
        self.layer_path(diff_id).is_some_and(|p| p.is_dir())
    }

    /// Stores a blob whose digest the caller verified; a no-op when already present.
    pub(crate) fn write_blob(&self, digest: &str, data: &[u8]) -> Result<(), ImageError> {
        let path = self.blob_path(digest).ok_or_else(|| {
            ImageError::io(
                "storing blob",
                digest,
                io::Error::new(io::ErrorKind::InvalidInput, "not a sha256 digest"),
            )
        })?;
        if path.exists() {
            return Ok(());
        }
        let tmp_dir = self.tmp_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(|e| ImageError::io("creating temporary blob", &tmp_dir, e))?;
        tmp.write_all(data)
            .map_err(|e| ImageError::io("writing temporary blob", tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| ImageError::io("moving blob into place", &path, e.error))?;
        Ok(())
    }

    /// Reads a stored blob if present and still intact. A blob that no longer hashes to
    /// its name is deleted and reported absent, so it gets fetched again.
    pub(crate) fn read_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let Some(path) = self.blob_path(digest) else {
            return Ok(None);
        };
        let data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("reading blob", &path, e)),
        };
        if sha256_of(&data) != digest {
            warn!(blob = %digest, "stored blob is corrupt; deleting it and fetching again");
            fs::remove_file(&path)
                .map_err(|e| ImageError::io("removing corrupt blob", &path, e))?;
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// Digests of all stored blobs.
    pub(crate) fn list_blobs(&self) -> Result<Vec<String>, ImageError> {
        list_digests(&self.blobs_dir())
    }

    /// diff_ids of all unpacked layers.
    pub(crate) fn list_layers(&self) -> Result<Vec<String>, ImageError> {
        list_digests(&self.layers_dir())
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ImageError::io("creating image store directory", dir, e))
}

/// Removes a file, symlink or directory tree without following symlinks.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn list_digests(dir: &Path) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| ImageError::io("listing content", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ImageError::io("listing content", dir, e))?;
        match entry.file_name().to_str() {
            Some(name) if is_sha256_hex(name) => out.push(format!("sha256:{name}")),
            _ => {
                warn!(path = %entry.path().display(), "ignoring unexpected file in the content store")
            }
        }
    }
    Ok(out)
}

/// Pin keys: blobs and layers live in different namespaces (an uncompressed layer's
/// blob digest equals its diff_id, yet the two are different objects on disk).
pub(crate) fn blob_key(digest: &str) -> String {
    format!("blob:{digest}")
}

pub(crate) fn layer_key(diff_id: &str) -> String {
    format!("layer:{diff_id}")
}

/// Content that pulls in progress are using, with a count per key.
#[derive(Default)]
pub(crate) struct Pins {
    counts: Mutex<HashMap<String, usize>>,
}

/// The pins of one pull; released when dropped.
pub(crate) struct PinSet {
    pins: Arc<Pins>,
    keys: HashSet<String>,
}

impl Pins {
    pub(crate) fn new_set(self: &Arc<Self>) -> PinSet {
        PinSet {
            pins: self.clone(),
            keys: HashSet::new(),
        }
    }

    /// The pin table, locked: garbage collection decides while holding this.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PinSet {
    /// Pins `key` for the lifetime of this set (idempotent).
    pub(crate) fn add(&mut self, key: String) {
        if self.keys.contains(&key) {
            return;
        }
        *self.pins.lock().entry(key.clone()).or_insert(0) += 1;
        self.keys.insert(key);
    }
}

impl Drop for PinSet {
    fn drop(&mut self) {
        let mut counts = self.pins.lock();
        for key in &self.keys {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_only_for_sha256_digests() {
        let layout = Layout::new(Path::new("/s"));
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            layout.blob_path(&d),
            Some(PathBuf::from(format!("/s/blobs/sha256/{}", "a".repeat(64))))
        );
        assert_eq!(
            layout.layer_path(&d),
            Some(PathBuf::from(format!(
                "/s/layers/sha256/{}",
                "a".repeat(64)
            )))
        );
        assert_eq!(layout.blob_path("sha256:../../etc"), None);
        assert_eq!(layout.layer_path("../x"), None);
    }

    #[test]
    fn prepare_creates_tree_and_clears_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(&dir.path().join("images"));
        layout.prepare().unwrap();
        fs::create_dir_all(layout.tmp_dir().join("layer-half/usr")).unwrap();
        fs::write(layout.tmp_dir().join("blob-x"), b"x").unwrap();
        layout.prepare().unwrap();
        assert_eq!(fs::read_dir(layout.tmp_dir()).unwrap().count(), 0);
        assert!(layout.blobs_dir().is_dir() && layout.layers_dir().is_dir());
    }

    #[test]
    fn blobs_round_trip_and_corrupt_ones_vanish() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.prepare().unwrap();
        let data = b"{\"schemaVersion\":2}";
        let digest = sha256_of(data);
        layout.write_blob(&digest, data).unwrap();
        assert_eq!(
            layout.read_blob(&digest).unwrap().as_deref(),
            Some(&data[..])
        );
        assert_eq!(layout.list_blobs().unwrap(), vec![digest.clone()]);
        fs::write(layout.blob_path(&digest).unwrap(), b"tampered").unwrap();
        assert_eq!(layout.read_blob(&digest).unwrap(), None);
        assert!(layout.list_blobs().unwrap().is_empty());
    }

    #[test]
    fn pins_count_and_release() {
        let pins = Arc::new(Pins::default());
        let mut a = pins.new_set();
        a.add("blob:x".into());
        a.add("blob:x".into());
        let mut b = pins.new_set();
        b.add("blob:x".into());
        assert_eq!(pins.lock().get("blob:x"), Some(&2));
        drop(a);
        assert_eq!(pins.lock().get("blob:x"), Some(&1));
        drop(b);
        assert!(pins.lock().is_empty());
    }
}
