//! End-to-end pulls through the public API against an in-process fake registry.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;
use kraal_image::{Credentials, ErrorKind, ImageStore, MirrorConfig, RegistryConfig};

const ANON: Credentials = Credentials::Anonymous;

fn never_in_use(_: &str) -> Option<String> {
    None
}

fn open(dir: &Path) -> ImageStore {
    ImageStore::open(&dir.join("images"), RegistryConfig::default()).unwrap()
}

fn layer_count(dir: &Path) -> usize {
    fs::read_dir(dir.join("images/layers/sha256"))
        .unwrap()
        .count()
}

fn tmp_is_empty(dir: &Path) -> bool {
    fs::read_dir(dir.join("images/tmp")).unwrap().count() == 0
}

/// A two-layer busybox-ish image: gzip base + zstd top.
fn push_basic(
    reg: &FakeRegistry,
    repo: &str,
    tag: &str,
    marker: &str,
) -> (String, String, Vec<PushedLayer>) {
    let base = reg.push_layer(
        &TarBuilder::new()
            .file("bin/busybox", b"ELF")
            .file("etc/passwd", b"root:x:0:0")
            .finish(),
        LAYER_GZIP,
    );
    let top = reg.push_layer(
        &TarBuilder::new()
            .file("etc/motd", marker.as_bytes())
            .finish(),
        LAYER_ZSTD,
    );
    let (manifest, config) =
        reg.push_image(repo, Some(tag), &[base.clone(), top.clone()], None, "1000");
    (manifest, config, vec![base, top])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_then_get_list_and_layer_dirs() {
    let reg = FakeRegistry::start().await;
    let (manifest, config, layers) = push_basic(&reg, "kraal-test/busybox", "latest", "v1");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    let reference = format!("{}/kraal-test/busybox", reg.host());
    let image = store.pull(&reference, &ANON).await.unwrap();
    assert_eq!(image.id, config);
    assert_eq!(image.repo_tags, vec![format!("{reference}:latest")]);
    assert_eq!(image.repo_digests, vec![format!("{reference}@{manifest}")]);
    assert_eq!(image.manifest_digest, manifest);
    assert_eq!(image.size, (layers[0].size + layers[1].size) as u64);
    assert_eq!(image.user(), Some("1000".into()));
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[1].diff_id, layers[1].diff_id);

    let dirs = store.layer_dirs(&image);
    assert_eq!(fs::read(dirs[0].join("bin/busybox")).unwrap(), b"ELF");
    assert_eq!(fs::read(dirs[1].join("etc/motd")).unwrap(), b"v1");

    for spec in [
        reference.clone(),
        format!("{reference}:latest"),
        format!("{reference}@{manifest}"),
        config.clone(),
        config.trim_start_matches("sha256:").to_string(),
    ] {
        assert_eq!(
            store.get(&spec).unwrap().map(|i| i.id),
            Some(config.clone()),
            "{spec}"
        );
    }
    assert_eq!(store.list().unwrap().len(), 1);
    let usage = store.usage().unwrap();
    assert!(usage.used_bytes > 0 && usage.inodes_used > 5, "{usage:?}");
    assert!(tmp_is_empty(dir.path()));

    // Pulling again downloads no layer.
    let before = reg.blob_requests(&layers[0].digest);
    store.pull(&reference, &ANON).await.unwrap();
    assert_eq!(reg.blob_requests(&layers[0].digest), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_each_blob_once() {
    let reg = FakeRegistry::start().await;
    let (_, config, layers) = push_basic(&reg, "kraal-test/app", "1", "c");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/kraal-test/app:1", reg.host());
    let (a, b) = tokio::join!(store.pull(&reference, &ANON), store.pull(&reference, &ANON));
    assert_eq!(a.unwrap().id, b.unwrap().id);
    for layer in &layers {
        assert_eq!(
            reg.blob_requests(&layer.digest),
            1,
            "layer {}",
            layer.digest
        );
    }
    assert_eq!(reg.blob_requests(&config), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_this_platform() {
    let reg = FakeRegistry::start().await;
    let native = reg.push_layer(
        &TarBuilder::new().file("arch", b"native").finish(),
        LAYER_GZIP,
    );
    let foreign = reg.push_layer(
        &TarBuilder::new().file("arch", b"foreign").finish(),
        LAYER_GZIP,
    );
    let (native_manifest, native_config) = reg.push_image("multi", None, &[native], None, "");
    let (foreign_manifest, _) =
        reg.push_image("multi", None, std::slice::from_ref(&foreign), None, "");
    let index = reg.push_index(
        "multi",
        Some("latest"),
        &[
            ("linux", "s390x-not-us", foreign_manifest.clone()),
            ("linux", host_arch(), native_manifest.clone()),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = store
        .pull(&format!("{}/multi", reg.host()), &ANON)
        .await
        .unwrap();
    assert_eq!(image.id, native_config);
    assert_eq!(image.manifest_digest, native_manifest);
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/multi@{index}", reg.host())]
    );
    assert_eq!(reg.blob_requests(&foreign.digest), 0);
    assert_eq!(
        fs::read(store.layer_dirs(&image)[0].join("arch")).unwrap(),
        b"native"
    );

    // An index without this platform: NotFound naming wanted and offered platforms.
    reg.push_index(
        "other",
        Some("latest"),
        &[
            ("linux", "s390x-not-us", foreign_manifest),
            ("windows", host_arch(), native_manifest),
        ],
    );
    let err = store
        .pull(&format!("{}/other", reg.host()), &ANON)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(msg.contains(&format!("linux/{}", host_arch())), "{msg}");
    assert!(
        msg.contains("linux/s390x-not-us") && msg.contains(&format!("windows/{}", host_arch())),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_digest_works_offline_the_second_time() {
    let reg = FakeRegistry::start().await;
    let (manifest, config, _) = push_basic(&reg, "bydigest", "t", "d");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/bydigest@{manifest}", reg.host());
    let image = store.pull(&reference, &ANON).await.unwrap();
    assert_eq!(image.id, config);
    assert!(image.repo_tags.is_empty());
    assert_eq!(image.repo_digests, vec![reference.clone()]);
    let requests = reg.total_requests();
    store.pull(&reference, &ANON).await.unwrap();
    // Only the auth probe of /v2/ may be repeated; no manifest or blob.
    assert!(reg.total_requests() <= requests + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tag_is_not_found() {
    let reg = FakeRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store
        .pull(&format!("{}/nothing:here", reg.host()), &ANON)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "pull {0}/nothing:here: not found: http://{0} (manifest unknown)",
            reg.host()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_names_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store
        .pull("127.0.0.1:1/kraal-test/busybox:latest", &ANON)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(
        err.to_string(),
        "pull 127.0.0.1:1/kraal-test/busybox:latest: no endpoint answered: http://127.0.0.1:1 (connection refused)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_in_order_before_the_registry() {
    let upstream = FakeRegistry::start().await;
    let empty_mirror = FakeRegistry::start().await;
    let good_mirror = FakeRegistry::start().await;
    push_basic(&good_mirror, "lib/img", "1", "from-mirror");
    push_basic(&upstream, "lib/img", "1", "from-upstream");

    let mirrors = |endpoints: Vec<String>| {
        let mut m = BTreeMap::new();
        m.insert(upstream.host(), MirrorConfig { endpoints });
        RegistryConfig { mirrors: m }
    };
    let reference = format!("{}/lib/img:1", upstream.host());

    // Dead mirror, 404 mirror, good mirror: the good mirror serves it.
    let dir = tempfile::tempdir().unwrap();
    let cfg = mirrors(vec![
        "http://127.0.0.1:1".into(),
        format!("http://{}", empty_mirror.host()),
        format!("http://{}", good_mirror.host()),
    ]);
    let store = ImageStore::open(&dir.path().join("images"), cfg).unwrap();
    let image = store.pull(&reference, &ANON).await.unwrap();
    assert_eq!(
        fs::read(store.layer_dirs(&image)[1].join("etc/motd")).unwrap(),
        b"from-mirror"
    );
    assert_eq!(upstream.total_requests(), 0);

    // Mirrors that cannot serve it: the registry itself does.
    let dir = tempfile::tempdir().unwrap();
    let cfg = mirrors(vec![
        "http://127.0.0.1:1".into(),
        format!("http://{}", empty_mirror.host()),
    ]);
    let store = ImageStore::open(&dir.path().join("images"), cfg).unwrap();
    let image = store.pull(&reference, &ANON).await.unwrap();
    assert_eq!(
        fs::read(store.layer_dirs(&image)[1].join("etc/motd")).unwrap(),
        b"from-upstream"
    );

    // Nobody has it: every endpoint is named with its own error.
    let dir = tempfile::tempdir().unwrap();
    let cfg = mirrors(vec![
        "http://127.0.0.1:1".into(),
        format!("http://{}", empty_mirror.host()),
    ]);
    let store = ImageStore::open(&dir.path().join("images"), cfg).unwrap();
    let missing = format!("{}/lib/none:1", upstream.host());
    let err = store.pull(&missing, &ANON).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        err.to_string(),
        format!(
            "pull {missing}: not found: http://127.0.0.1:1 (connection refused), http://{} (manifest unknown), http://{} (manifest unknown)",
            empty_mirror.host(),
            upstream.host()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    let reg = FakeRegistry::start().await;
    push_basic(&reg, "private/app", "1", "secret");
    reg.require_basic_auth("alice", "s3cret");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/private/app:1", reg.host());

    let err = store.pull(&reference, &ANON).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(
        err.to_string().contains("no credentials were given"),
        "{err}"
    );

    let wrong = Credentials::Basic {
        username: "alice".into(),
        password: "nope".into(),
    };
    let err = store.pull(&reference, &wrong).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(err.to_string().contains("credentials rejected"), "{err}");
    assert!(!err.to_string().contains("nope"));

    let right = Credentials::Basic {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    let image = store.pull(&reference, &right).await.unwrap();
    assert_eq!(image.repo_tags, vec![reference]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_layer_blob_is_data_loss_and_leaves_nothing() {
    let reg = FakeRegistry::start().await;
    let (_, _, layers) = push_basic(&reg, "corrupt", "1", "x");
    reg.corrupt_blob(&layers[1].digest, b"definitely not the layer");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/corrupt:1", reg.host());
    let err = store.pull(&reference, &ANON).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("pull {reference}: layer {}: ", layers[1].digest)),
        "{msg}"
    );
    assert!(msg.contains(&sha256(b"definitely not the layer")), "{msg}");
    assert!(store.list().unwrap().is_empty());
    assert!(tmp_is_empty(dir.path()));
    // The good layer was not kept either: no image references it.
    assert_eq!(layer_count(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_id_mismatch_is_data_loss_naming_both_digests() {
    let reg = FakeRegistry::start().await;
    let layer = reg.push_layer(&TarBuilder::new().file("a", b"a").finish(), LAYER_GZIP);
    let claimed = sha256(b"some other tar");
    reg.push_image(
        "diffid",
        Some("1"),
        std::slice::from_ref(&layer),
        Some(vec![claimed.clone()]),
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/diffid:1", reg.host());
    let err = store.pull(&reference, &ANON).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DataLoss);
    assert_eq!(
        err.to_string(),
        format!(
            "pull {reference}: layer {}: uncompressed content does not match the image config's diff_id: expected {claimed}, got {}",
            layer.digest, layer.diff_id
        )
    );
    assert_eq!(layer_count(dir.path()), 0);
    assert!(tmp_is_empty(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evil_layer_is_refused_and_nothing_escapes() {
    let reg = FakeRegistry::start().await;
    let name = format!("kraal-pull-escape-{}", std::process::id());
    let evil = reg.push_layer(
        &TarBuilder::new()
            .file("ok", b"fine")
            .raw_file(&format!("../../../../../../tmp/{name}"), b"pwned")
            .finish(),
        LAYER_GZIP,
    );
    reg.push_image("evil", Some("1"), std::slice::from_ref(&evil), None, "");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/evil:1", reg.host());
    let err = store.pull(&reference, &ANON).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.to_string(),
        format!(
            "pull {reference}: layer {}: entry \"../../../../../../tmp/{name}\" refused: path has a '..' component",
            evil.digest
        )
    );
    assert!(!Path::new("/tmp").join(&name).exists());
    assert_eq!(layer_count(dir.path()), 0);
    assert!(tmp_is_empty(dir.path()));
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_layer_media_type_is_refused_before_download() {
    let reg = FakeRegistry::start().await;
    let mut layer = reg.push_layer(&TarBuilder::new().file("a", b"a").finish(), LAYER_TAR);
    layer.media_type = "application/vnd.oci.image.layer.v1.tar+bzip2".into();
    reg.push_image("bz", Some("1"), std::slice::from_ref(&layer), None, "");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store
        .pull(&format!("{}/bz:1", reg.host()), &ANON)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string()
            .contains("application/vnd.oci.image.layer.v1.tar+bzip2"),
        "{err}"
    );
    assert_eq!(reg.blob_requests(&layer.digest), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_manifest_with_uncompressed_layer() {
    let reg = FakeRegistry::start().await;
    let layer = reg.push_layer(&TarBuilder::new().file("plain", b"tar").finish(), LAYER_TAR);
    let config = serde_json::to_vec(&serde_json::json!({
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}, "config": {}
    }))
    .unwrap();
    let config_digest = reg.put_blob(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": layer.digest, "size": layer.size}],
    }))
    .unwrap();
    reg.put_manifest("docker", Some("v2"), DOCKER_MANIFEST, &manifest);
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let image = store
        .pull(&format!("{}/docker:v2", reg.host()), &ANON)
        .await
        .unwrap();
    assert_eq!(image.id, config_digest);
    assert_eq!(image.user(), None);
    assert_eq!(
        fs::read(store.layer_dirs(&image)[0].join("plain")).unwrap(),
        b"tar"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_moves_and_removal_collects_garbage() {
    let reg = FakeRegistry::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let reference = format!("{}/moving:latest", reg.host());

    let (_, old_id, old_layers) = push_basic(&reg, "moving", "latest", "old");
    let old = store.pull(&reference, &ANON).await.unwrap();
    let (_, new_id, new_layers) = push_basic(&reg, "moving", "latest", "new");
    let new = store.pull(&reference, &ANON).await.unwrap();
    assert_ne!(old_id, new_id);
    // The base layer is shared, the top layers differ.
    assert_eq!(old_layers[0].diff_id, new_layers[0].diff_id);
    assert_eq!(layer_count(dir.path()), 3);

    assert_eq!(
        store.get(&reference).unwrap().map(|i| i.id),
        Some(new_id.clone())
    );
    let old_now = store.get(&old_id).unwrap().unwrap();
    assert!(old_now.repo_tags.is_empty(), "the tag moved");
    assert_eq!(
        old_now.repo_digests, old.repo_digests,
        "the old image keeps its digest name"
    );

    // In use: refused, nothing changes.
    let err = store
        .remove(&old_id, &|id: &str| {
            (id == old_id).then(|| "ctr-1".to_string())
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        format!("image {old_id} is in use by container ctr-1")
    );

    // Removing the old image by its digest reference deletes its own layer only.
    store.remove(&old.repo_digests[0], &never_in_use).unwrap();
    assert!(store.get(&old_id).unwrap().is_none());
    assert_eq!(layer_count(dir.path()), 2);
    let dirs = store.layer_dirs(&new);
    assert!(dirs.iter().all(|d| d.is_dir()));

    // Removing the last tag takes the image and its content.
    store.remove(&reference, &never_in_use).unwrap();
    assert!(store.list().unwrap().is_empty());
    assert_eq!(layer_count(dir.path()), 0);
    assert_eq!(
        fs::read_dir(dir.path().join("images/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );

    // Unknown images: fine.
    store.remove(&reference, &never_in_use).unwrap();
    store.remove(&new_id, &never_in_use).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_images_and_cleans_leftovers() {
    let reg = FakeRegistry::start().await;
    let (_, id, _) = push_basic(&reg, "persist", "1", "p");
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .pull(&format!("{}/persist:1", reg.host()), &ANON)
            .await
            .unwrap();
    }
    // What a crash could leave: a half-unpacked layer in tmp/, an orphan layer dir.
    let images = dir.path().join("images");
    fs::create_dir_all(images.join("tmp/layer-abc/usr/bin")).unwrap();
    let orphan = images.join(format!("layers/sha256/{}", "e".repeat(64)));
    fs::create_dir_all(&orphan).unwrap();

    let store = open(dir.path());
    let image = store
        .get(&format!("{}/persist:1", reg.host()))
        .unwrap()
        .unwrap();
    assert_eq!(image.id, id);
    assert!(store.layer_dirs(&image).iter().all(|d| d.is_dir()));
    assert!(tmp_is_empty(dir.path()));
    assert!(!orphan.exists());
}

#[test]
fn store_and_pull_future_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageStore>();
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let fut = store.pull("busybox", &ANON);
    assert_send(&fut);
}

#[test]
fn invalid_reference_and_config_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let err = store.get("Busybox").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let mut mirrors = BTreeMap::new();
    mirrors.insert(
        "docker.io".to_string(),
        MirrorConfig {
            endpoints: vec!["http://mirror.example".into()],
        },
    );
    let err = ImageStore::open(&dir.path().join("x"), RegistryConfig { mirrors })
        .err()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(
        err.to_string()
            .contains("plain http is allowed only for loopback"),
        "{err}"
    );
}
