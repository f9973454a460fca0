//! Image records and names, in redb.
//!
//! Two tables: `images` (image id → JSON record) and `names` (normalised tag or digest
//! reference → image id). Every change, including moving a tag from one image to
//! another and dropping the image left without names, is one write transaction, so a
//! crash leaves either the old or the new state. redb's page cache is kept small: the
//! daemon's idle memory budget is a few MB and this database holds kilobytes.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::image::Image;
use crate::reference::{ImageSpec, Target};

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");

/// redb page cache; plenty for a few thousand image records.
const CACHE_BYTES: usize = 2 * 1024 * 1024;

/// What the store keeps per image: the public view plus the blobs it references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub(crate) image: Image,
    /// Digests of the manifests, indexes and config under `blobs/` this image uses.
    pub(crate) blobs: BTreeSet<String>,
}

/// What `remove` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Removed {
    /// The spec named no image.
    Nothing,
    /// Only this tag went; the image keeps its other tags.
    Tag(String),
    /// The whole image went, with all its names.
    Image(String),
}

/// The metadata database.
pub(crate) struct Metadata {
    db: redb::Database,
    path: PathBuf,
}

impl Metadata {
    /// Opens (or creates) the database and makes sure both tables exist.
    pub(crate) fn open(path: &Path) -> Result<Self, ImageError> {
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| db_error(path, "opening", e))?;
        let meta = Metadata {
            db,
            path: path.to_path_buf(),
        };
        let txn = meta.begin_write()?;
        txn.open_table(IMAGES)
            .map_err(|e| meta.err("creating table images", e))?;
        txn.open_table(NAMES)
            .map_err(|e| meta.err("creating table names", e))?;
        txn.commit().map_err(|e| meta.err("committing", e))?;
        Ok(meta)
    }

    fn err(&self, context: &str, e: impl Into<redb::Error>) -> ImageError {
        db_error(&self.path, context, e)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, ImageError> {
        self.db
            .begin_write()
            .map_err(|e| self.err("starting a write", e))
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<ImageRecord, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::CorruptRecord {
            path: self.path.clone(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    fn encode(&self, record: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        serde_json::to_vec(record).map_err(|e| ImageError::CorruptRecord {
            path: self.path.clone(),
            key: record.image.id.clone(),
            message: format!("cannot encode: {e}"),
        })
    }

    /// The image an id, tag reference or digest reference names.
    pub(crate) fn find(&self, spec: &ImageSpec) -> Result<Option<ImageRecord>, ImageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err("starting a read", e))?;
        let images = txn
            .open_table(IMAGES)
            .map_err(|e| self.err("opening images", e))?;
        let id = match spec {
            ImageSpec::Id(id) => id.clone(),
            ImageSpec::Reference(reference) => {
                let names = txn
                    .open_table(NAMES)
                    .map_err(|e| self.err("opening names", e))?;
                let name = reference.to_string();
                match names
                    .get(name.as_str())
                    .map_err(|e| self.err("reading names", e))?
                {
                    Some(id) => id.value().to_string(),
                    None => return Ok(None),
                }
            }
        };
        match images
            .get(id.as_str())
            .map_err(|e| self.err("reading images", e))?
        {
            Some(bytes) => self.decode(&id, bytes.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every image, in id order.
    pub(crate) fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err("starting a read", e))?;
        let images = txn
            .open_table(IMAGES)
            .map_err(|e| self.err("opening images", e))?;
        let mut out = Vec::new();
        for row in images.iter().map_err(|e| self.err("listing images", e))? {
            let (key, value) = row.map_err(|e| self.err("listing images", e))?;
            out.push(self.decode(key.value(), value.value())?);
        }
        Ok(out)
    }

    /// Blobs and layers some image references: what garbage collection must keep.
    pub(crate) fn referenced(&self) -> Result<(HashSet<String>, HashSet<String>), ImageError> {
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for record in self.list()? {
            blobs.extend(record.blobs);
            layers.extend(record.image.layers.into_iter().map(|l| l.diff_id));
        }
        Ok((blobs, layers))
    }

    /// Records a pulled image under `names` (normalised tag and digest references).
    ///
    /// An existing record of the same id is merged (names and blobs accumulate, the
    /// rest is refreshed). A name that pointed at another image moves here; that image
    /// loses it and is dropped if no name is left. Returns the stored image and the ids
    /// of images dropped that way.
    pub(crate) fn record_pull(
        &self,
        mut record: ImageRecord,
        names: &[String],
    ) -> Result<(Image, Vec<String>), ImageError> {
        let id = record.image.id.clone();
        let txn = self.begin_write()?;
        let mut dropped = Vec::new();
        {
            let mut images = txn
                .open_table(IMAGES)
                .map_err(|e| self.err("opening images", e))?;
            let mut names_table = txn
                .open_table(NAMES)
                .map_err(|e| self.err("opening names", e))?;

            let existing = match images
                .get(id.as_str())
                .map_err(|e| self.err("reading images", e))?
            {
                Some(bytes) => Some(self.decode(&id, bytes.value())?),
                None => None,
            };
            if let Some(old) = existing {
                let mut tags = old.image.repo_tags;
                let mut digests = old.image.repo_digests;
                merge_into(&mut tags, &record.image.repo_tags);
                merge_into(&mut digests, &record.image.repo_digests);
                record.image.repo_tags = tags;
                record.image.repo_digests = digests;
                record.blobs.extend(old.blobs);
            }

            for name in names {
                let previous = names_table
                    .get(name.as_str())
                    .map_err(|e| self.err("reading names", e))?
                    .map(|v| v.value().to_string());
                if let Some(previous) = previous.filter(|p| *p != id) {
                    let bytes = images
                        .get(previous.as_str())
                        .map_err(|e| self.err("reading images", e))?
                        .map(|b| b.value().to_vec());
                    if let Some(bytes) = bytes {
                        let mut other = self.decode(&previous, &bytes)?;
                        other.image.repo_tags.retain(|t| t != name);
                        other.image.repo_digests.retain(|d| d != name);
                        if other.image.repo_tags.is_empty() && other.image.repo_digests.is_empty() {
                            images
                                .remove(previous.as_str())
                                .map_err(|e| self.err("removing image", e))?;
                            dropped.push(previous);
                        } else {
                            let encoded = self.encode(&other)?;
                            images
                                .insert(previous.as_str(), encoded.as_slice())
                                .map_err(|e| self.err("updating image", e))?;
                        }
                    }
                }
                names_table
                    .insert(name.as_str(), id.as_str())
                    .map_err(|e| self.err("writing names", e))?;
                let list = if is_digest_name(name) {
                    &mut record.image.repo_digests
                } else {
                    &mut record.image.repo_tags
                };
                merge_into(list, std::slice::from_ref(name));
            }
            let encoded = self.encode(&record)?;
            images
                .insert(id.as_str(), encoded.as_slice())
                .map_err(|e| self.err("writing image", e))?;
        }
        txn.commit().map_err(|e| self.err("committing pull", e))?;
        Ok((record.image, dropped))
    }

    /// Removes what `spec` names: an id or digest reference takes the whole image, a
    /// tag only itself unless it is the image's last tag. An image that `in_use` claims
    /// is not removed. Unknown specs are not an error (CRI RemoveImage is idempotent).
    pub(crate) fn remove(
        &self,
        spec: &ImageSpec,
        in_use: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Removed, ImageError> {
        let txn = self.begin_write()?;
        let removed;
        {
            let mut images = txn
                .open_table(IMAGES)
                .map_err(|e| self.err("opening images", e))?;
            let mut names = txn
                .open_table(NAMES)
                .map_err(|e| self.err("opening names", e))?;

            let (id, tag) = match spec {
                ImageSpec::Id(id) => (id.clone(), None),
                ImageSpec::Reference(reference) => {
                    let name = reference.to_string();
                    let id = names
                        .get(name.as_str())
                        .map_err(|e| self.err("reading names", e))?
                        .map(|v| v.value().to_string());
                    let Some(id) = id else {
                        return Ok(Removed::Nothing);
                    };
                    let tag = matches!(reference.target, Target::Tag(_)).then_some(name);
                    (id, tag)
                }
            };
            let bytes = images
                .get(id.as_str())
                .map_err(|e| self.err("reading images", e))?
                .map(|b| b.value().to_vec());
            let Some(bytes) = bytes else {
                // A name left pointing nowhere: tidy it, nothing else to do.
                if let Some(tag) = &tag {
                    names
                        .remove(tag.as_str())
                        .map_err(|e| self.err("removing name", e))?;
                }
                drop((images, names));
                txn.commit()
                    .map_err(|e| self.err("committing removal", e))?;
                return Ok(Removed::Nothing);
            };
            let mut record = self.decode(&id, &bytes)?;

            match tag {
                Some(tag) if record.image.repo_tags.iter().any(|t| *t != tag) => {
                    record.image.repo_tags.retain(|t| *t != tag);
                    names
                        .remove(tag.as_str())
                        .map_err(|e| self.err("removing name", e))?;
                    let encoded = self.encode(&record)?;
                    images
                        .insert(id.as_str(), encoded.as_slice())
                        .map_err(|e| self.err("updating image", e))?;
                    removed = Removed::Tag(tag);
                }
                _ => {
                    if let Some(user) = in_use(&id) {
                        return Err(ImageError::InUse { image: id, user });
                    }
                    for name in record
                        .image
                        .repo_tags
                        .iter()
                        .chain(&record.image.repo_digests)
                    {
                        let points_here = names
                            .get(name.as_str())
                            .map_err(|e| self.err("reading names", e))?
                            .is_some_and(|v| v.value() == id);
                        if points_here {
                            names
                                .remove(name.as_str())
                                .map_err(|e| self.err("removing name", e))?;
                        }
                    }
                    images
                        .remove(id.as_str())
                        .map_err(|e| self.err("removing image", e))?;
                    removed = Removed::Image(id);
                }
            }
        }
        txn.commit()
            .map_err(|e| self.err("committing removal", e))?;
        Ok(removed)
    }
}

fn is_digest_name(name: &str) -> bool {
    name.contains('@')
}

fn merge_into(list: &mut Vec<String>, add: &[String]) {
    for item in add {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

fn db_error(path: &Path, context: &str, e: impl Into<redb::Error>) -> ImageError {
    ImageError::Metadata {
        path: path.to_path_buf(),
        context: context.to_string(),
        message: e.into().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::image::Layer;

    fn hex(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn record(id_char: char, layer_char: char) -> ImageRecord {
        ImageRecord {
            image: Image {
                id: format!("sha256:{}", hex(id_char)),
                repo_tags: vec![],
                repo_digests: vec![],
                size: 3,
                manifest_digest: format!("sha256:{}", hex('m')),
                config: serde_json::json!({"config": {"User": "1"}}),
                layers: vec![Layer {
                    digest: format!("sha256:{}", hex(layer_char)),
                    diff_id: format!("sha256:{}", hex(layer_char)),
                    size: 3,
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                }],
                pulled_at_unix_nanos: 1,
            },
            blobs: [format!("sha256:{}", hex(id_char))].into(),
        }
    }

    fn spec(s: &str) -> ImageSpec {
        ImageSpec::parse(s).unwrap()
    }

    fn open(dir: &tempfile::TempDir) -> Metadata {
        Metadata::open(&dir.path().join("metadata.redb")).unwrap()
    }

    fn dig(c: char) -> String {
        format!("docker.io/library/busybox@sha256:{}", hex(c))
    }

    const TAG: &str = "docker.io/library/busybox:latest";
    const TAG2: &str = "docker.io/library/busybox:1.36";

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let meta = open(&dir);
            meta.record_pull(record('a', '1'), &[TAG.into(), dig('d')])
                .unwrap();
        }
        let meta = open(&dir);
        let found = meta.find(&spec("busybox")).unwrap().unwrap();
        assert_eq!(found.image.repo_tags, vec![TAG.to_string()]);
        assert_eq!(found.image.repo_digests, vec![dig('d')]);
        assert_eq!(found.image.user(), Some("1".into()));
        assert_eq!(meta.list().unwrap().len(), 1);
    }

    #[test]
    fn find_by_id_tag_and_digest() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        meta.record_pull(record('a', '1'), &[TAG.into(), dig('d')])
            .unwrap();
        let id = format!("sha256:{}", hex('a'));
        for s in [
            id.as_str(),
            &hex('a'),
            "busybox",
            "docker.io/library/busybox:latest",
            &dig('d'),
        ] {
            assert_eq!(
                meta.find(&spec(s)).unwrap().map(|r| r.image.id),
                Some(id.clone()),
                "{s}"
            );
        }
        assert!(meta.find(&spec("busybox:other")).unwrap().is_none());
        assert!(
            meta.find(&spec(&format!("sha256:{}", hex('b'))))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn repeated_pull_merges_names() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        meta.record_pull(record('a', '1'), &[TAG.into(), dig('d')])
            .unwrap();
        let (image, dropped) = meta
            .record_pull(record('a', '1'), &[TAG2.into(), dig('d')])
            .unwrap();
        assert!(dropped.is_empty());
        assert_eq!(image.repo_tags, vec![TAG.to_string(), TAG2.to_string()]);
        assert_eq!(image.repo_digests, vec![dig('d')]);
    }

    #[test]
    fn tag_moves_to_the_new_image() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        meta.record_pull(record('a', '1'), &[TAG.into(), TAG2.into(), dig('d')])
            .unwrap();
        let (_, dropped) = meta
            .record_pull(record('b', '2'), &[TAG.into(), dig('e')])
            .unwrap();
        assert!(dropped.is_empty(), "old image keeps a tag and a digest");
        let old = meta.find(&spec(&hex('a'))).unwrap().unwrap();
        assert_eq!(old.image.repo_tags, vec![TAG2.to_string()]);
        assert_eq!(
            meta.find(&spec("busybox")).unwrap().unwrap().image.id,
            format!("sha256:{}", hex('b'))
        );
    }

    #[test]
    fn image_left_without_names_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        // Pulled by tag only (a digest name would keep it alive).
        meta.record_pull(record('a', '1'), &[TAG.into()]).unwrap();
        let (_, dropped) = meta.record_pull(record('b', '2'), &[TAG.into()]).unwrap();
        assert_eq!(dropped, vec![format!("sha256:{}", hex('a'))]);
        assert_eq!(meta.list().unwrap().len(), 1);
        let (blobs, layers) = meta.referenced().unwrap();
        assert!(layers.contains(&format!("sha256:{}", hex('2'))));
        assert!(!layers.contains(&format!("sha256:{}", hex('1'))));
        assert!(!blobs.contains(&format!("sha256:{}", hex('a'))));
    }

    #[test]
    fn removing_a_tag_keeps_the_image_while_other_tags_remain() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        meta.record_pull(record('a', '1'), &[TAG.into(), TAG2.into(), dig('d')])
            .unwrap();
        let never = |_: &str| -> Option<String> { None };
        assert_eq!(
            meta.remove(&spec("busybox"), &never).unwrap(),
            Removed::Tag(TAG.into())
        );
        let left = meta.find(&spec(&hex('a'))).unwrap().unwrap();
        assert_eq!(left.image.repo_tags, vec![TAG2.to_string()]);
        assert!(meta.find(&spec("busybox")).unwrap().is_none());
        // The last tag takes the image with it, digests included.
        assert_eq!(
            meta.remove(&spec("busybox:1.36"), &never).unwrap(),
            Removed::Image(format!("sha256:{}", hex('a')))
        );
        assert!(meta.find(&spec(&dig('d'))).unwrap().is_none());
        assert!(meta.list().unwrap().is_empty());
    }

    #[test]
    fn removing_by_id_or_digest_takes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        let never = |_: &str| -> Option<String> { None };
        meta.record_pull(record('a', '1'), &[TAG.into(), TAG2.into(), dig('d')])
            .unwrap();
        assert!(matches!(
            meta.remove(&spec(&dig('d')), &never).unwrap(),
            Removed::Image(_)
        ));
        assert!(meta.find(&spec("busybox:1.36")).unwrap().is_none());

        meta.record_pull(record('a', '1'), &[TAG.into(), TAG2.into()])
            .unwrap();
        assert!(matches!(
            meta.remove(&spec(&hex('a')), &never).unwrap(),
            Removed::Image(_)
        ));
        assert!(meta.find(&spec("busybox")).unwrap().is_none());
        assert!(meta.list().unwrap().is_empty());
    }

    #[test]
    fn removing_unknown_images_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        let never = |_: &str| -> Option<String> { None };
        assert_eq!(
            meta.remove(&spec("nothing:here"), &never).unwrap(),
            Removed::Nothing
        );
        assert_eq!(
            meta.remove(&spec(&hex('f')), &never).unwrap(),
            Removed::Nothing
        );
    }

    #[test]
    fn in_use_images_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(&dir);
        meta.record_pull(record('a', '1'), &[TAG.into(), TAG2.into()])
            .unwrap();
        let used =
            |id: &str| -> Option<String> { id.starts_with("sha256:").then(|| "c1".to_string()) };
        // Dropping one of two tags does not remove the image: allowed.
        assert!(matches!(
            meta.remove(&spec("busybox"), &used).unwrap(),
            Removed::Tag(_)
        ));
        let err = meta.remove(&spec("busybox:1.36"), &used).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            format!("image sha256:{} is in use by container c1", hex('a'))
        );
        // Nothing changed.
        assert!(meta.find(&spec("busybox:1.36")).unwrap().is_some());
        let err = meta.remove(&spec(&hex('a')), &used).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    }
}
