//! Manifests, indexes and image configs, parsed from the raw bytes we verified.
//!
//! Our own minimal serde structs rather than oci-client's: we parse exactly the bytes
//! whose digest we checked, accept both OCI and Docker schema 2 spellings, and say
//! precisely what is wrong when something is off.

use serde::Deserialize;

use crate::digest::sha256_hex;
use crate::platform::Platform;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Media types we ask the registry for, in order of preference.
pub(crate) const ACCEPTED_MANIFEST_TYPES: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// A content descriptor: what a manifest says about a blob.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
}

/// One entry of an index / manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IndexEntry {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            os: String,
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            variant: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        Ok(Platform {
            os: raw.os,
            architecture: raw.architecture,
            variant: raw.variant.filter(|v| !v.is_empty()),
        })
    }
}

/// What a manifest document turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Manifest {
    /// OCI index or Docker manifest list.
    Index(Vec<IndexEntry>),
    /// OCI image manifest or Docker schema 2 manifest.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<Vec<IndexEntry>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses manifest bytes; the error says what is unsupported or malformed.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("manifest is not valid JSON of a known shape: {e}"))?;
        let media_type = raw.media_type.as_deref().unwrap_or("");
        if raw.schema_version == Some(1)
            || media_type == DOCKER_SCHEMA1
            || media_type == DOCKER_SCHEMA1_SIGNED
        {
            return Err("Docker schema 1 manifests are not supported; push the image again with a current tool".into());
        }
        if raw.schema_version != Some(2) {
            return Err(format!(
                "unsupported manifest schemaVersion {:?} (expected 2)",
                raw.schema_version
            ));
        }
        let is_index = match media_type {
            OCI_INDEX | DOCKER_MANIFEST_LIST => true,
            OCI_MANIFEST | DOCKER_MANIFEST => false,
            "" => raw.manifests.is_some(),
            other => {
                return Err(format!(
                    "unsupported manifest media type {other:?} (expected one of {})",
                    ACCEPTED_MANIFEST_TYPES.join(", ")
                ));
            }
        };
        if is_index {
            let entries = raw.manifests.ok_or("index has no \"manifests\" list")?;
            for entry in &entries {
                check_digest(&entry.digest, "index entry")?;
            }
            return Ok(Manifest::Index(entries));
        }
        let config = raw.config.ok_or("manifest has no \"config\" descriptor")?;
        let layers = raw.layers.ok_or("manifest has no \"layers\" list")?;
        check_digest(&config.digest, "config")?;
        if !config.media_type.is_empty()
            && config.media_type != OCI_CONFIG
            && config.media_type != DOCKER_CONFIG
        {
            return Err(format!(
                "config media type {:?} is not a container image config (expected {OCI_CONFIG} or {DOCKER_CONFIG})",
                config.media_type
            ));
        }
        for layer in &layers {
            check_digest(&layer.digest, "layer")?;
        }
        Ok(Manifest::Image { config, layers })
    }
}

fn check_digest(digest: &str, what: &str) -> Result<(), String> {
    if sha256_hex(digest).is_none() {
        return Err(format!(
            "{what} digest {digest:?} is not sha256:<64 lowercase hex> (other algorithms are not supported)"
        ));
    }
    Ok(())
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// `None` for media types that are not tar layers we can unpack.
    pub(crate) fn from_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// The parts of an image config the store needs; the whole JSON is kept as is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageConfig {
    pub(crate) json: serde_json::Value,
    /// `rootfs.diff_ids`, bottom layer first.
    pub(crate) diff_ids: Vec<String>,
}

impl ImageConfig {
    pub(crate) fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let json: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| format!("image config is not valid JSON: {e}"))?;
        let rootfs = json.get("rootfs").ok_or("image config has no \"rootfs\"")?;
        let kind = rootfs.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if kind != "layers" {
            return Err(format!(
                "image config rootfs.type is {kind:?}, expected \"layers\""
            ));
        }
        let diff_ids = rootfs
            .get("diff_ids")
            .and_then(|d| d.as_array())
            .ok_or("image config has no rootfs.diff_ids list")?
            .iter()
            .map(|d| {
                let s = d.as_str().unwrap_or("");
                check_digest(s, "rootfs.diff_ids").map(|()| s.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ImageConfig { json, diff_ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_oci_and_docker_manifests() {
        for media_type in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"{media_type}",
                "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":10}},
                "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":20}}]}}"#,
                d('a'),
                d('b')
            );
            let m = Manifest::parse(json.as_bytes()).unwrap();
            let Manifest::Image { config, layers } = m else {
                panic!("not an image manifest")
            };
            assert_eq!(config.digest, d('a'));
            assert_eq!(layers[0].size, 20);
        }
    }

    #[test]
    fn parses_index_without_media_type() {
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,
            "platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d('c')
        );
        let Manifest::Index(entries) = Manifest::parse(json.as_bytes()).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(
            entries[0].platform.as_ref().unwrap().to_string(),
            "linux/arm64/v8"
        );
    }

    #[test]
    fn rejects_schema1_unknown_types_and_bad_digests() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(Manifest::parse(schema1).unwrap_err().contains("schema 1"));
        let weird = br#"{"schemaVersion":2,"mediaType":"application/x-helm","layers":[]}"#;
        assert!(
            Manifest::parse(weird)
                .unwrap_err()
                .contains("application/x-helm")
        );
        let bad_digest = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha512:{}","size":1}},"layers":[]}}"#,
            "a".repeat(128)
        );
        assert!(
            Manifest::parse(bad_digest.as_bytes())
                .unwrap_err()
                .contains("config digest")
        );
        let not_image_config = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{}","size":1}},"layers":[]}}"#,
            d('a')
        );
        assert!(
            Manifest::parse(not_image_config.as_bytes())
                .unwrap_err()
                .contains("not a container image config")
        );
        assert!(
            Manifest::parse(b"not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn compression_from_media_type() {
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+bzip2"),
            None
        );
        assert_eq!(Compression::from_media_type("application/wasm"), None);
    }

    #[test]
    fn parses_config_diff_ids() {
        let json = format!(
            r#"{{"architecture":"amd64","config":{{"User":"1000"}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            d('1'),
            d('2')
        );
        let c = ImageConfig::parse(json.as_bytes()).unwrap();
        assert_eq!(c.diff_ids, vec![d('1'), d('2')]);
        assert_eq!(c.json["config"]["User"], "1000");
        assert!(
            ImageConfig::parse(br#"{"rootfs":{"type":"layers"}}"#)
                .unwrap_err()
                .contains("diff_ids")
        );
        assert!(
            ImageConfig::parse(br#"{"rootfs":{"type":"x","diff_ids":[]}}"#)
                .unwrap_err()
                .contains("rootfs.type")
        );
        assert!(
            ImageConfig::parse(br#"{"rootfs":{"type":"layers","diff_ids":["md5:1"]}}"#)
                .unwrap_err()
                .contains("md5:1")
        );
    }
}
