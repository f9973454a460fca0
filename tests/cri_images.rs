//! ImageService through the CRI socket, against real registries on 127.0.0.1 filled by
//! hack/registry.sh.

use std::path::Path;

use kraal_e2e::{Kraald, Registry, cri, image_spec, pull_request};
use tonic::Code;

async fn pull(kraald: &Kraald, image: &str) -> Result<String, tonic::Status> {
    kraald
        .images()
        .await
        .pull_image(pull_request(image))
        .await
        .map(|response| response.into_inner().image_ref)
}

async fn status(kraald: &Kraald, image: &str) -> Option<cri::Image> {
    kraald
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: image_spec(image),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
}

async fn list(kraald: &Kraald) -> Vec<cri::Image> {
    kraald
        .images()
        .await
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn remove(kraald: &Kraald, image: &str) -> Result<(), tonic::Status> {
    kraald
        .images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: image_spec(image),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn pull_by_tag_then_status_and_list() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = registry.image("kraal-test/busybox:latest");
    let id = pull(&kraald, &name).await.expect("pull");
    assert_eq!(id, registry.config_digest("kraal-test/busybox:latest"));

    let image = status(&kraald, &name).await.expect("image is present");
    assert_eq!(image.id, id);
    assert!(image.repo_tags.contains(&name), "{:?}", image.repo_tags);
    let digest_ref = format!(
        "{}/kraal-test/busybox@{}",
        registry.host,
        registry.manifest_digest("kraal-test/busybox:latest")
    );
    assert_eq!(image.repo_digests, vec![digest_ref]);
    assert!(
        image.size > 1_000_000,
        "busybox layer size, got {}",
        image.size
    );
    // Status by id finds the same image; the list holds exactly it.
    assert_eq!(status(&kraald, &id).await.map(|i| i.id), Some(id.clone()));
    let all = list(&kraald).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
}

#[tokio::test]
async fn pull_by_digest() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let digest = registry.manifest_digest("kraal-test/busybox:latest");
    let name = format!("{}/kraal-test/busybox@{digest}", registry.host);
    let id = pull(&kraald, &name).await.expect("pull by digest");
    assert_eq!(id, registry.config_digest("kraal-test/busybox:latest"));
    let image = status(&kraald, &name).await.expect("found by digest");
    assert_eq!(image.repo_digests, vec![name]);
}

#[tokio::test]
async fn verbose_status_shows_layers_and_config() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = registry.image("kraal-test/nonroot:name");
    pull(&kraald, &name).await.expect("pull");
    let response = kraald
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: image_spec(&name),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    let image = response.image.expect("present");
    assert_eq!(image.username, "kraal");
    assert_eq!(image.uid, None);
    let info: serde_json::Value =
        serde_json::from_str(response.info.get("info").expect("verbose info")).expect("json");
    assert_eq!(info["imageSpec"]["config"]["User"], "kraal");
    assert_eq!(info["layers"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn numeric_user_is_reported_as_uid() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = registry.image("kraal-test/nonroot:uid");
    pull(&kraald, &name).await.expect("pull");
    let image = status(&kraald, &name).await.expect("present");
    assert_eq!(image.uid, Some(cri::Int64Value { value: 1000 }));
    assert_eq!(image.username, "");
}

#[tokio::test]
async fn pull_through_a_mirror_after_a_dead_one() {
    let registry = Registry::from_env();
    // registry.kraal.invalid does not exist: the image can only come through the mirrors,
    // and the first mirror is down.
    let config = format!(
        "[registry.mirrors.\"registry.kraal.invalid\"]\nendpoints = [\"http://127.0.0.1:1\", \"http://{}\"]\n",
        registry.host
    );
    let kraald = Kraald::start(&config).await;
    let name = "registry.kraal.invalid/kraal-test/busybox:latest";
    let id = pull(&kraald, name).await.expect("pull through the mirror");
    assert_eq!(id, registry.config_digest("kraal-test/busybox:latest"));
    let image = status(&kraald, name)
        .await
        .expect("present under its own name");
    assert!(
        image.repo_tags.contains(&name.to_string()),
        "{:?}",
        image.repo_tags
    );
}

#[tokio::test]
async fn basic_auth_registry_needs_credentials() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = format!("{}/kraal-test/busybox:latest", registry.auth_host);

    let err = pull(&kraald, &name)
        .await
        .expect_err("anonymous pull refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert!(
        err.message().contains(&registry.auth_host),
        "{}",
        err.message()
    );

    let mut request = pull_request(&name);
    request.auth = Some(cri::AuthConfig {
        username: registry.user.clone(),
        password: "wrong-password".into(),
        ..Default::default()
    });
    let err = kraald
        .images()
        .await
        .pull_image(request.clone())
        .await
        .expect_err("wrong password refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());

    request.auth = Some(cri::AuthConfig {
        username: registry.user.clone(),
        password: registry.password.clone(),
        ..Default::default()
    });
    let id = kraald
        .images()
        .await
        .pull_image(request)
        .await
        .expect("pull with credentials")
        .into_inner()
        .image_ref;
    assert!(id.starts_with("sha256:"));
    assert!(status(&kraald, &name).await.is_some());
}

#[tokio::test]
async fn auth_field_form_of_credentials_works_too() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = format!("{}/kraal-test/busybox:latest", registry.auth_host);
    let mut request = pull_request(&name);
    request.auth = Some(cri::AuthConfig {
        auth: kraal_e2e::base64(&format!("{}:{}", registry.user, registry.password)),
        ..Default::default()
    });
    kraald
        .images()
        .await
        .pull_image(request)
        .await
        .expect("pull with auth field");
}

#[tokio::test]
async fn token_registry_with_credentials_or_a_bearer_token() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = format!("{}/kraal-test/busybox:latest", registry.token_host);

    let err = pull(&kraald, &name)
        .await
        .expect_err("anonymous pull refused");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());

    // Username and password: kraal runs the token flow itself.
    let mut request = pull_request(&name);
    request.auth = Some(cri::AuthConfig {
        username: registry.user.clone(),
        password: registry.password.clone(),
        ..Default::default()
    });
    let id = kraald
        .images()
        .await
        .pull_image(request)
        .await
        .expect("pull through the token flow")
        .into_inner()
        .image_ref;
    remove(&kraald, &id).await.expect("remove");

    // A bearer token the caller already holds goes to the registry as is.
    let mut request = pull_request(&name);
    request.auth = Some(cri::AuthConfig {
        registry_token: registry.fetch_token("kraal-test/busybox"),
        ..Default::default()
    });
    let again = kraald
        .images()
        .await
        .pull_image(request.clone())
        .await
        .expect("pull with a registry token")
        .into_inner()
        .image_ref;
    assert_eq!(again, id);

    // A token for another repository is refused by the registry.
    remove(&kraald, &id).await.expect("remove");
    request.auth = Some(cri::AuthConfig {
        registry_token: registry.fetch_token("kraal-test/other"),
        ..Default::default()
    });
    let err = kraald
        .images()
        .await
        .pull_image(request)
        .await
        .expect_err("token for the wrong repository");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
}

#[tokio::test]
async fn one_image_under_several_tags_and_removing_one_tag() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let tags = ["latest", "1.36", "stable"]
        .map(|tag| registry.image(&format!("kraal-test/busybox:{tag}")));
    let mut ids = Vec::new();
    for tag in &tags {
        ids.push(pull(&kraald, tag).await.expect("pull"));
    }
    assert!(ids.iter().all(|id| id == &ids[0]), "one image: {ids:?}");
    let images = list(&kraald).await;
    assert_eq!(images.len(), 1);
    let mut seen = images[0].repo_tags.clone();
    seen.sort();
    let mut expected = tags.to_vec();
    expected.sort();
    assert_eq!(seen, expected);

    // Removing one tag keeps the image and its other tags.
    remove(&kraald, &tags[1]).await.expect("remove one tag");
    let image = status(&kraald, &tags[0]).await.expect("image still there");
    assert!(!image.repo_tags.contains(&tags[1]));
    assert_eq!(image.repo_tags.len(), 2);
    assert!(status(&kraald, &tags[1]).await.is_none());

    // Filtered list finds it by a remaining tag, and nothing by the removed one.
    let filtered = kraald
        .images()
        .await
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: image_spec(&tags[2]),
            }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);
    let filtered = kraald
        .images()
        .await
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter {
                image: image_spec(&tags[1]),
            }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(filtered.is_empty());

    // Removing by id removes the whole image; again is not an error.
    remove(&kraald, &ids[0]).await.expect("remove by id");
    assert!(list(&kraald).await.is_empty());
    remove(&kraald, &ids[0])
        .await
        .expect("removing twice is fine");
    remove(&kraald, &registry.image("kraal-test/never-pulled:x"))
        .await
        .expect("removing an unknown image is fine");
}

#[tokio::test]
async fn remove_by_digest_removes_the_image_and_its_layers() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = registry.image("kraal-test/uncompressed:latest");
    pull(&kraald, &name).await.expect("pull uncompressed layer");
    let image = status(&kraald, &name).await.expect("present");
    let digest_ref = image.repo_digests[0].clone();
    let layers_dir = kraald.root.join("images/layers/sha256");
    assert!(count_entries(&layers_dir) >= 1);
    remove(&kraald, &digest_ref)
        .await
        .expect("remove by digest");
    assert!(list(&kraald).await.is_empty());
    assert_eq!(
        count_entries(&layers_dir),
        0,
        "layers of a removed image are deleted"
    );
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn images_survive_a_restart_and_a_crash() {
    let registry = Registry::from_env();
    let mut kraald = Kraald::start("").await;
    let name = registry.image("kraal-test/busybox:latest");
    let id = pull(&kraald, &name).await.expect("pull");
    kraald.restart().await;
    assert_eq!(status(&kraald, &name).await.map(|i| i.id), Some(id.clone()));
    kraald.kill9();
    kraald.start_again().await;
    let images = list(&kraald).await;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, id);
}

#[tokio::test]
async fn image_index_resolves_to_this_platform() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    for name in [
        "kraal-test/multiarch:latest",
        "kraal-test/multiarch-docker:latest",
    ] {
        let reference = registry.image(name);
        pull(&kraald, &reference).await.expect("pull index");
        let response = kraald
            .images()
            .await
            .image_status(cri::ImageStatusRequest {
                image: image_spec(&reference),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&response.info["info"]).expect("json");
        assert_eq!(
            info["imageSpec"]["config"]["Labels"]["org.kraal.test.platform"], arch,
            "{name}"
        );
        // The repo digest is the index's, as a user would write it in a pod spec. Both
        // indexes point at the same amd64 image, so after the second pull the one image
        // carries both repositories' digests.
        let image = response.image.expect("present");
        let expected = format!(
            "{}/{}@{}",
            registry.host,
            name.split(':').next().unwrap_or(name),
            registry.manifest_digest(name)
        );
        assert!(
            image.repo_digests.contains(&expected),
            "{name}: {:?} lacks {expected}",
            image.repo_digests
        );
    }
}

#[tokio::test]
async fn docker_v2_manifest_pulls() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let id = pull(&kraald, &registry.image("kraal-test/docker-v2:latest"))
        .await
        .expect("pull docker schema2");
    assert_eq!(id, registry.config_digest("kraal-test/docker-v2:latest"));
}

#[tokio::test]
async fn index_without_this_platform_is_not_found_and_names_what_it_has() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let err = pull(&kraald, &registry.image("kraal-test/noplatform:latest"))
        .await
        .expect_err("no matching platform");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(err.message().contains("s390x"), "{}", err.message());
}

#[tokio::test]
async fn whiteouts_become_overlay_whiteouts() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = "kraal-test/whiteout:latest";
    pull(&kraald, &registry.image(name)).await.expect("pull");
    let layers = registry.pushed(name)["layers"]
        .as_array()
        .expect("layers")
        .clone();
    let top_diff = layers[1]["diff_id"].as_str().expect("diff_id");
    let hex = top_diff.trim_start_matches("sha256:");
    let dirs: Vec<_> = std::fs::read_dir(kraald.root.join("images/layers/sha256"))
        .expect("layer store")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(hex))
        .collect();
    assert_eq!(dirs.len(), 1, "top layer stored by its diff id");
    let top = find_root(&dirs[0]);
    let gone = std::fs::symlink_metadata(top.join("data/gone")).expect("whiteout node");
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!top.join("data/.wh.gone").exists());
    let opaque = xattr(&top.join("opaque"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert!(top.join("opaque/new").exists());
    assert!(!top.join("opaque/.wh..wh..opq").exists());
}

/// A layer dir may keep the tree directly or under `fs/`.
fn find_root(layer: &Path) -> std::path::PathBuf {
    let fs = layer.join("fs");
    if fs.is_dir() { fs } else { layer.to_path_buf() }
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let name = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and the buffer length is passed.
    let len = unsafe {
        nix::libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    usize::try_from(len).ok().map(|len| buf[..len].to_vec())
}

#[tokio::test]
async fn layers_that_escape_their_root_are_rejected_and_write_nothing_outside() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let cases = [
        ("kraal-test/evil:dotdot", "/tmp/kraal-evil-dotdot"),
        ("kraal-test/evil:absolute", "/tmp/kraal-evil-absolute"),
        ("kraal-test/evil:symlink", "/tmp/kraal-evil-symlink"),
        ("kraal-test/evil:hardlink", ""),
        ("kraal-test/evil:hardlink-abs", ""),
    ];
    for (name, outside) in cases {
        let err = pull(&kraald, &registry.image(name))
            .await
            .expect_err("an escaping layer must be refused");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name}: {}",
            err.message()
        );
        let layer = &registry.pushed(name)["layers"][0]["digest"];
        assert!(
            err.message().contains(layer.as_str().unwrap_or("?")),
            "{name}: the message names the layer: {}",
            err.message()
        );
        if !outside.is_empty() {
            assert!(!Path::new(outside).exists(), "{name} wrote {outside}");
        }
        assert!(status(&kraald, &registry.image(name)).await.is_none());
    }
    // Nothing half-unpacked is left in the store.
    assert_eq!(count_entries(&kraald.root.join("images/layers/sha256")), 0);
    assert_eq!(count_entries(&kraald.root.join("images/tmp")), 0);
    // The hard link targets were never linked into the store either.
    let hostname = std::fs::metadata("/etc/hostname").expect("/etc/hostname");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(hostname.nlink(), 1, "/etc/hostname gained a hard link");
}

#[tokio::test]
async fn a_layer_whose_content_does_not_match_its_diff_id_is_data_loss() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let err = pull(&kraald, &registry.image("kraal-test/bad-diffid:latest"))
        .await
        .expect_err("diff id mismatch");
    assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
    assert_eq!(count_entries(&kraald.root.join("images/layers/sha256")), 0);
}

#[tokio::test]
async fn bad_references_are_invalid_argument_naming_them() {
    let kraald = Kraald::start("").await;
    for bad in [
        "Busy Box",
        "127.0.0.1:5000/UPPER/case:latest",
        "busybox:bad/tag!",
        "busybox@sha256:1234",
        "busybox@md5:0123456789abcdef0123456789abcdef",
    ] {
        let err = pull(&kraald, bad).await.expect_err("bad reference");
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{bad}: {}",
            err.message()
        );
        assert!(err.message().contains(bad), "{bad}: {}", err.message());
    }
    let err = pull(&kraald, "").await.expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_image_is_not_found() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = registry.image("kraal-test/does-not-exist:latest");
    let err = pull(&kraald, &name).await.expect_err("unknown image");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    assert!(
        err.message().contains("kraal-test/does-not-exist"),
        "{}",
        err.message()
    );
    let err = pull(&kraald, &registry.image("kraal-test/busybox:no-such-tag"))
        .await
        .expect_err("unknown tag");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    // ImageStatus of an image that is not here is an empty answer, not an error (CRI).
    assert!(status(&kraald, &name).await.is_none());
}

#[tokio::test]
async fn a_registry_that_is_down_names_the_endpoints_tried() {
    let kraald =
        Kraald::start("[registry.mirrors.\"127.0.0.1:1\"]\nendpoints = [\"http://127.0.0.1:2\"]\n")
            .await;
    let err = pull(&kraald, "127.0.0.1:1/kraal-test/busybox:latest")
        .await
        .expect_err("nothing listens there");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    for endpoint in ["127.0.0.1:2", "127.0.0.1:1"] {
        assert!(err.message().contains(endpoint), "{}", err.message());
    }
}

#[tokio::test]
async fn concurrent_pulls_download_each_blob_once() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    let name = "kraal-test/concurrent:latest";
    let reference = registry.image(name);
    let (a, b) = tokio::join!(pull(&kraald, &reference), pull(&kraald, &reference));
    assert_eq!(a.expect("first pull"), b.expect("second pull"));
    let layer = registry.pushed(name)["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_string();
    let log = std::fs::read_to_string(&registry.log).expect("registry log");
    // The access log has one line per request; only this test pulls this repository
    // (its layer is unique to it) but other kraalds may share the registry.
    let gets = log
        .lines()
        .filter(|line| line.contains("\"GET ") && line.contains(&layer))
        .count();
    assert_eq!(gets, 1, "layer {layer} fetched {gets} times");
}

#[tokio::test]
async fn image_fs_info_reports_the_store() {
    let registry = Registry::from_env();
    let kraald = Kraald::start("").await;
    pull(&kraald, &registry.image("kraal-test/busybox:latest"))
        .await
        .expect("pull");
    let response = kraald
        .images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    let fs = &response.image_filesystems[0];
    let mountpoint = &fs.fs_id.as_ref().expect("fs id").mountpoint;
    assert!(
        mountpoint.starts_with(&kraald.root.display().to_string()),
        "{mountpoint}"
    );
    assert!(fs.used_bytes.as_ref().expect("bytes").value > 1_000_000);
    assert!(fs.inodes_used.as_ref().expect("inodes").value > 10);
    assert!(fs.timestamp > 0);
}
