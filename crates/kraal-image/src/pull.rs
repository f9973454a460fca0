//! One pull, from reference to committed image record.
//!
//! 1. the top-level manifest (by tag: always asked; by digest: local copy if present);
//! 2. an index resolves to linux + this machine's architecture;
//! 3. the config gives the diff_ids, so layers already unpacked are known before any
//!    download; unsupported layer media types are refused before anything big moves;
//! 4. missing layers stream from the registry into their unpack, a few at a time;
//! 5. one metadata transaction records the image and its names.
//!
//! Every digest is verified here: manifest bytes by digest, the config blob, each layer
//! blob and each layer's uncompressed stream against `rootfs.diff_ids[i]`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use oci_client::Client;
use tempfile::TempDir;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::auth::Credentials;
use crate::content::{PinSet, blob_key, layer_key};
use crate::digest::sha256_of;
use crate::error::ImageError;
use crate::fetch::{MAX_METADATA_BLOB, RegistrySession, StepError};
use crate::image::{Image, Layer};
use crate::layer_stream::{CHANNEL_DEPTH, ChannelReader, FeedError, feed};
use crate::manifest::{Compression, Descriptor, ImageConfig, Manifest};
use crate::metadata::ImageRecord;
use crate::platform::{self, Platform};
use crate::reference::{ImageReference, Target};
use crate::registry_config::Endpoint;
use crate::store::{Inner, collect_garbage};
use crate::unpack::unpack_layer;

/// Layers downloaded and unpacked at the same time.
const LAYER_CONCURRENCY: usize = 3;

/// A layer as the manifest and config describe it together.
struct PlannedLayer {
    digest: String,
    diff_id: String,
    size: u64,
    media_type: String,
    compression: Compression,
}

/// Pulls `reference`; on failure, whatever it stored that nothing else uses goes again.
pub(crate) async fn pull(
    inner: &Arc<Inner>,
    reference: &str,
    creds: &Credentials,
) -> Result<Image, ImageError> {
    let reference = ImageReference::parse(reference)?;
    let endpoints = inner.registry.endpoints_for(&reference.registry)?;
    info!(
        reference = %reference,
        credentials = %creds.describe(),
        endpoints = ?endpoints.iter().map(Endpoint::url).collect::<Vec<_>>(),
        "pulling image"
    );
    let started = Instant::now();
    let session = RegistrySession::new(reference.clone(), endpoints, creds.to_registry_auth());
    let mut pins = inner.pins.new_set();
    let result = Puller {
        inner,
        session: &session,
        reference: &reference,
    }
    .run(&mut pins)
    .await;
    drop(pins);
    match result {
        Ok(image) => {
            info!(reference = %reference, image = %image.id, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
            Ok(image)
        }
        Err(err) => {
            warn!(reference = %reference, error = %err, "pull failed");
            collect_garbage_in_background(inner).await;
            Err(err)
        }
    }
}

/// Garbage collection off the async runtime; its own failures are only logged.
pub(crate) async fn collect_garbage_in_background(inner: &Arc<Inner>) {
    let inner = inner.clone();
    match tokio::task::spawn_blocking(move || collect_garbage(&inner)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "garbage collection failed"),
        Err(e) => warn!(error = %e, "garbage collection task failed"),
    }
}

struct Puller<'a> {
    inner: &'a Arc<Inner>,
    session: &'a RegistrySession,
    reference: &'a ImageReference,
}

impl Puller<'_> {
    async fn run(&self, pins: &mut PinSet) -> Result<Image, ImageError> {
        let reference = self.reference;

        // 1. Top-level manifest or index.
        let (top_bytes, top_endpoint) = match &reference.target {
            Target::Tag(_) => {
                let (bytes, endpoint) =
                    self.session.manifest(&reference.target, None, None).await?;
                let bytes = bytes.to_vec();
                let digest = sha256_of(&bytes);
                pins.add(blob_key(&digest));
                self.store_blob(&digest, &bytes).await?;
                (bytes, Some(endpoint))
            }
            Target::Digest(digest) => self.manifest_by_digest(pins, digest, None, None).await?,
        };
        let top_digest = sha256_of(&top_bytes);
        let mut blobs = BTreeSet::from([top_digest.clone()]);

        // 2. Resolve an index to this platform.
        let (manifest_digest, config_desc, layer_descs, endpoint) = match self
            .parse_manifest(&top_bytes, &top_digest)?
        {
            Manifest::Image { config, layers } => {
                (top_digest.clone(), config, layers, top_endpoint)
            }
            Manifest::Index(entries) => {
                let wanted = Platform::host();
                let entry = platform::select(&entries, &wanted).map_err(|offered| {
                    ImageError::NoMatchingPlatform {
                        reference: reference.to_string(),
                        wanted: wanted.to_string(),
                        offered,
                    }
                })?;
                debug!(reference = %reference, platform = %wanted, manifest = %entry.digest, "index resolved");
                let what = format!("manifest {} ({wanted})", entry.digest);
                let (bytes, endpoint) = self
                    .manifest_by_digest(pins, &entry.digest, Some(&what), top_endpoint)
                    .await?;
                blobs.insert(entry.digest.clone());
                match self.parse_manifest(&bytes, &entry.digest)? {
                    Manifest::Image { config, layers } => (
                        entry.digest.clone(),
                        config,
                        layers,
                        endpoint.or(top_endpoint),
                    ),
                    Manifest::Index(_) => {
                        return Err(self.unsupported(
                            format!("manifest {}", entry.digest),
                            "an index inside an index is not supported".into(),
                        ));
                    }
                }
            }
        };

        // 3. Layer media types first, then the config and its diff_ids.
        let mut compressions = Vec::with_capacity(layer_descs.len());
        for layer in &layer_descs {
            let compression = Compression::from_media_type(&layer.media_type).ok_or_else(|| {
                self.unsupported(
                    format!("layer {}", layer.digest),
                    format!(
                        "media type {:?} is not a layer kraal can unpack (expected tar, tar+gzip or tar+zstd)",
                        layer.media_type
                    ),
                )
            })?;
            compressions.push(compression);
        }
        let config_bytes = self.config_blob(pins, &config_desc, endpoint).await?;
        blobs.insert(config_desc.digest.clone());
        let config = ImageConfig::parse(&config_bytes)
            .map_err(|reason| self.unsupported(format!("config {}", config_desc.digest), reason))?;
        if config.diff_ids.len() != layer_descs.len() {
            return Err(self.unsupported(
                format!("config {}", config_desc.digest),
                format!(
                    "the manifest lists {} layers but rootfs.diff_ids has {}",
                    layer_descs.len(),
                    config.diff_ids.len()
                ),
            ));
        }
        let planned: Vec<PlannedLayer> = layer_descs
            .iter()
            .zip(&config.diff_ids)
            .zip(compressions)
            .map(|((desc, diff_id), compression)| PlannedLayer {
                digest: desc.digest.clone(),
                diff_id: diff_id.clone(),
                size: desc.size,
                media_type: desc.media_type.clone(),
                compression,
            })
            .collect();

        // 4. Layers. Pinned before anyone looks whether they are present.
        for layer in &planned {
            pins.add(layer_key(&layer.diff_id));
        }
        // A plain loop, no closure: a closure over borrowed layers would make the pull
        // future non-Send (higher-ranked lifetime inference).
        let mut fetches = Vec::with_capacity(planned.len());
        for layer in &planned {
            fetches.push(self.fetch_layer(layer, endpoint));
        }
        // Every fetch runs to its end even after one fails: an abandoned fetch's unpack
        // thread would clean its temporary directory up only after the pull had returned,
        // and "a failed pull leaves nothing" must hold when the caller hears of it.
        let results: Vec<Result<(), ImageError>> = futures::stream::iter(fetches)
            .buffer_unordered(LAYER_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;

        // 5. Record.
        let repo_tags: Vec<String> = reference
            .tag()
            .map(|_| reference.to_string())
            .into_iter()
            .collect();
        let repo_digests = vec![reference.with_digest(&top_digest)];
        let names: Vec<String> = repo_tags.iter().chain(&repo_digests).cloned().collect();
        let image = Image {
            id: config_desc.digest.clone(),
            repo_tags,
            repo_digests,
            size: planned.iter().map(|l| l.size).sum(),
            manifest_digest,
            config: config.json,
            layers: planned
                .iter()
                .map(|l| Layer {
                    digest: l.digest.clone(),
                    diff_id: l.diff_id.clone(),
                    size: l.size,
                    media_type: l.media_type.clone(),
                })
                .collect(),
            pulled_at_unix_nanos: now_unix_nanos(),
        };
        let inner = self.inner.clone();
        let record = ImageRecord { image, blobs };
        let (image, dropped) =
            tokio::task::spawn_blocking(move || inner.metadata.record_pull(record, &names))
                .await
                .map_err(|e| task_error("recording the pulled image", e))??;
        if !dropped.is_empty() {
            info!(dropped = ?dropped, "images left without any name were removed");
            collect_garbage_in_background(self.inner).await;
        }
        Ok(image)
    }

    fn unsupported(&self, what: String, reason: String) -> ImageError {
        ImageError::UnsupportedContent {
            reference: self.reference.to_string(),
            what,
            reason,
        }
    }

    fn parse_manifest(&self, bytes: &[u8], digest: &str) -> Result<Manifest, ImageError> {
        Manifest::parse(bytes)
            .map_err(|reason| self.unsupported(format!("manifest {digest}"), reason))
    }

    async fn store_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        // Manifests and configs are small; a blocking write of a few KB is fine here.
        self.inner.layout.write_blob(digest, bytes)
    }

    /// A manifest by digest: the stored copy if there is one, else fetched, verified
    /// and stored. Under the digest's lock, so concurrent pulls fetch it once.
    async fn manifest_by_digest(
        &self,
        pins: &mut PinSet,
        digest: &str,
        what: Option<&str>,
        preferred: Option<usize>,
    ) -> Result<(Vec<u8>, Option<usize>), ImageError> {
        pins.add(blob_key(digest));
        let _lock = self.inner.locks.lock(&blob_key(digest)).await;
        if let Some(bytes) = self.inner.layout.read_blob(digest)? {
            debug!(manifest = %digest, "manifest already stored");
            return Ok((bytes, None));
        }
        let (bytes, endpoint) = self
            .session
            .manifest(&Target::Digest(digest.to_string()), what, preferred)
            .await?;
        self.store_blob(digest, &bytes).await?;
        Ok((bytes.to_vec(), Some(endpoint)))
    }

    /// The config blob: stored copy or fetched, verified and stored.
    async fn config_blob(
        &self,
        pins: &mut PinSet,
        desc: &Descriptor,
        preferred: Option<usize>,
    ) -> Result<Vec<u8>, ImageError> {
        let what = format!("config {}", desc.digest);
        if desc.size > MAX_METADATA_BLOB {
            return Err(self.unsupported(
                what,
                format!(
                    "declared size {} exceeds the limit of {MAX_METADATA_BLOB} bytes",
                    desc.size
                ),
            ));
        }
        pins.add(blob_key(&desc.digest));
        let _lock = self.inner.locks.lock(&blob_key(&desc.digest)).await;
        if let Some(bytes) = self.inner.layout.read_blob(&desc.digest)? {
            return Ok(bytes);
        }
        let (bytes, _) = self
            .session
            .small_blob(&desc.digest, desc.size, &what, preferred)
            .await?;
        self.store_blob(&desc.digest, &bytes).await?;
        Ok(bytes)
    }

    /// Unpacks a layer unless it is already there. Under the diff_id's lock.
    async fn fetch_layer(
        &self,
        layer: &PlannedLayer,
        preferred: Option<usize>,
    ) -> Result<(), ImageError> {
        let _lock = self.inner.locks.lock(&layer_key(&layer.diff_id)).await;
        if self.inner.layout.layer_present(&layer.diff_id) {
            debug!(layer = %layer.digest, diff_id = %layer.diff_id, "layer already unpacked");
            return Ok(());
        }
        let dest = self
            .inner
            .layout
            .layer_path(&layer.diff_id)
            .ok_or_else(|| {
                self.unsupported(
                    format!("layer {}", layer.digest),
                    format!("bad diff_id {:?}", layer.diff_id),
                )
            })?;
        let started = Instant::now();
        let what = format!("layer {}", layer.digest);
        let (tmp, _) = self
            .session
            .try_endpoints(Some(&what), preferred, |client, endpoint| {
                Box::pin(async move { self.layer_attempt(&client, &endpoint, layer).await })
            })
            .await?;
        let tmp_path = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp_path, &dest) {
            let _ = crate::content::remove_any(&tmp_path);
            return Err(ImageError::io("moving unpacked layer into place", &dest, e));
        }
        info!(
            layer = %layer.digest,
            diff_id = %layer.diff_id,
            bytes = layer.size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "layer unpacked"
        );
        Ok(())
    }

    /// One endpoint's try at a layer: download into a blocking unpack of a fresh
    /// temporary directory. The directory is removed unless everything matched.
    async fn layer_attempt(
        &self,
        client: &Client,
        endpoint: &Endpoint,
        layer: &PlannedLayer,
    ) -> Result<TempDir, StepError> {
        let tmp_dir = self.inner.layout.tmp_dir();
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&tmp_dir)
            .map_err(|e| {
                StepError::Fatal(ImageError::io(
                    "creating temporary layer directory",
                    &tmp_dir,
                    e,
                ))
            })?;
        let stream = self
            .session
            .open_blob(client, endpoint, &layer.digest)
            .await?;

        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let compression = layer.compression;
        let expected = layer.diff_id.clone();
        // The temporary directory belongs to the unpack thread: if this future is
        // dropped mid-download, the thread still finishes (its reader reports the
        // broken stream) and removes the directory itself, never under its feet.
        let unpack = tokio::task::spawn_blocking(move || {
            let mut reader = ChannelReader::new(rx);
            match unpack_layer(&mut reader, compression, tmp.path()) {
                Ok(diff_id) if diff_id == expected => Ok(tmp),
                Ok(diff_id) => Err(UnpackFailure::DiffId(diff_id)),
                Err(e) => Err(UnpackFailure::Unpack(e)),
            }
        });
        let fed = feed(stream, tx, &layer.digest, layer.size).await;
        let unpacked = unpack.await;

        if let Err(FeedError::Failed(failure)) = fed {
            // The unpacker's complaint is only a consequence of the broken download.
            return Err(StepError::Endpoint(failure));
        }
        match unpacked {
            Ok(Ok(tmp)) => Ok(tmp),
            Ok(Err(UnpackFailure::Unpack(source))) => Err(StepError::Fatal(ImageError::Layer {
                reference: self.reference.to_string(),
                layer: layer.digest.clone(),
                source,
            })),
            Ok(Err(UnpackFailure::DiffId(actual))) => {
                Err(StepError::Fatal(ImageError::DiffIdMismatch {
                    reference: self.reference.to_string(),
                    layer: layer.digest.clone(),
                    expected: layer.diff_id.clone(),
                    actual,
                }))
            }
            Err(e) => Err(StepError::Fatal(task_error(
                &format!("unpacking layer {}", layer.digest),
                e,
            ))),
        }
    }
}

/// Why the unpack thread did not hand back a finished layer directory.
enum UnpackFailure {
    Unpack(crate::unpack::UnpackError),
    /// The uncompressed stream hashed to this instead of the config's diff_id.
    DiffId(String),
}

fn task_error(context: &str, e: tokio::task::JoinError) -> ImageError {
    ImageError::Task {
        context: context.to_string(),
        message: e.to_string(),
    }
}

fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
