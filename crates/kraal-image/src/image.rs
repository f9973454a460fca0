//! The image as the store records and returns it.

use serde::{Deserialize, Serialize};

/// One pulled image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<config digest hex>`.
    pub id: String,
    /// Normalised tag references: `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `host/repo@sha256:…` of the top-level manifest (or index) as pulled.
    pub repo_digests: Vec<String>,
    /// Sum of the compressed layer sizes.
    pub size: u64,
    /// Digest of the platform-specific image manifest.
    pub manifest_digest: String,
    /// The OCI/Docker image config JSON as pulled.
    pub config: serde_json::Value,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    pub pulled_at_unix_nanos: i64,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the blob as distributed (usually compressed).
    pub digest: String,
    /// Digest of the uncompressed tar (`rootfs.diff_ids[i]`); names the unpacked dir.
    pub diff_id: String,
    /// Size of the blob as distributed.
    pub size: u64,
    pub media_type: String,
}

impl Image {
    /// `config.User` when set and non-empty: `"1000"`, `"nobody"`, `"1000:1000"`.
    pub fn user(&self) -> Option<String> {
        self.config
            .get("config")
            .and_then(|c| c.get("User"))
            .and_then(|u| u.as_str())
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(config: serde_json::Value) -> Image {
        Image {
            id: "sha256:x".into(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 0,
            manifest_digest: String::new(),
            config,
            layers: vec![],
            pulled_at_unix_nanos: 0,
        }
    }

    #[test]
    fn user_from_config() {
        assert_eq!(
            image(serde_json::json!({"config": {"User": "1000:1000"}})).user(),
            Some("1000:1000".into())
        );
        assert_eq!(
            image(serde_json::json!({"config": {"User": ""}})).user(),
            None
        );
        assert_eq!(image(serde_json::json!({"config": {}})).user(), None);
        assert_eq!(image(serde_json::json!({})).user(), None);
    }
}
