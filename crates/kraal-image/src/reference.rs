//! Image references: parsing and normalisation, following the Docker/OCI
//! `distribution/reference` grammar.
//!
//! Our own parser rather than `oci_client::Reference`: that one accepts digests we do not
//! (`sha512`, uppercase hex), rejects bracketed IPv6 registries, and its errors do not say
//! which part was wrong. The normalised form is what the store uses as a name:
//! `docker.io/library/busybox:latest` or `host/repo@sha256:<hex>`.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path
//! domain     := host [ ":" port ]      host := dns-name | IPv4 | "[" IPv6 "]"
//! path       := component ( "/" component )*
//! component  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" [0-9a-f]{64}
//! ```

use std::fmt;
use std::net::Ipv6Addr;

use crate::digest::{is_sha256_hex, sha256_hex};
use crate::error::ImageError;

/// Registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Namespace of Docker Hub's official images (`busybox` → `library/busybox`).
const OFFICIAL_NAMESPACE: &str = "library";
/// Tag used when a reference has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker's limit on the length of `domain/path`.
const MAX_NAME_LEN: usize = 255;
/// What a valid reference looks like; part of every parse error.
const EXPECTED: &str = "[registry[:port]/]name[:tag][@sha256:<64 lowercase hex>]";

/// What a reference points at once normalised: a tag, or a manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Tag(String),
    /// Always `sha256:<64 lowercase hex>`.
    Digest(String),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// `docker.io`, `registry.k8s.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub registry: String,
    /// `library/busybox`, `kraal-test/busybox`.
    pub repository: String,
    /// Tag or digest; when the input had both, the digest wins and the tag is dropped.
    pub target: Target,
}

impl ImageReference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: input.to_string(),
            reason,
            expected: EXPECTED,
        };

        if input.is_empty() {
            return Err(invalid("the reference is empty".into()));
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!("it contains the character {c:?}")));
        }

        // The name cannot contain '@', so the first one starts the digest.
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((left, digest)) => (left, Some(parse_digest(digest).map_err(invalid)?)),
            None => (input, None),
        };

        // A ':' after the last '/' starts the tag; one before it belongs to the port.
        let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_and_tag[..at], Some(&name_and_tag[at + 1..]))
            }
            None => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(invalid)?;
        }
        if name.is_empty() {
            return Err(invalid("the repository name is empty".into()));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(format!(
                "the name is {} characters long, the limit is {MAX_NAME_LEN}",
                name.len()
            )));
        }

        let (registry, path) = split_registry(name);
        if let Some(registry) = registry {
            check_registry(registry).map_err(invalid)?;
        }
        check_path(path).map_err(invalid)?;

        let registry = match registry {
            None | Some("index.docker.io") => DEFAULT_REGISTRY.to_string(),
            Some(r) => r.to_string(),
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_string()
        };
        let target = match (digest, tag) {
            (Some(digest), _) => Target::Digest(digest),
            (None, Some(tag)) => Target::Tag(tag.to_string()),
            (None, None) => Target::Tag(DEFAULT_TAG.to_string()),
        };
        Ok(ImageReference {
            registry,
            repository,
            target,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tag, if the reference points at one.
    pub fn tag(&self) -> Option<&str> {
        match &self.target {
            Target::Tag(tag) => Some(tag),
            Target::Digest(_) => None,
        }
    }

    /// The digest, if the reference points at one.
    pub fn digest(&self) -> Option<&str> {
        match &self.target {
            Target::Tag(_) => None,
            Target::Digest(digest) => Some(digest),
        }
    }

    /// `registry/repository@digest`: how an image's repo digest is written.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Tag(tag) => write!(f, "{}/{}:{tag}", self.registry, self.repository),
            Target::Digest(digest) => write!(f, "{}/{}@{digest}", self.registry, self.repository),
        }
    }
}

/// How an image spec given to `get`/`remove` is to be looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ImageSpec {
    /// `sha256:<hex>` image id (the config digest).
    Id(String),
    /// A normalised reference.
    Reference(ImageReference),
}

impl ImageSpec {
    /// An image id (`sha256:<64hex>` or bare 64 hex) or else a reference.
    ///
    /// A bare 64-hex string is also a syntactically valid repository name; like Docker we
    /// read it as an id, which is why Docker forbids such repository names.
    pub(crate) fn parse(spec: &str) -> Result<Self, ImageError> {
        if sha256_hex(spec).is_some() {
            return Ok(ImageSpec::Id(spec.to_string()));
        }
        if is_sha256_hex(spec) {
            return Ok(ImageSpec::Id(format!("sha256:{spec}")));
        }
        ImageReference::parse(spec).map(ImageSpec::Reference)
    }
}

fn parse_digest(digest: &str) -> Result<String, String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} has no algorithm prefix"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported, only sha256"
        ));
    }
    if !is_sha256_hex(hex) {
        return Err(format!(
            "digest {digest:?} must be sha256: followed by 64 lowercase hex characters"
        ));
    }
    Ok(digest.to_string())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = match tag.as_bytes() {
        [] => false,
        [first, rest @ ..] => {
            word(*first)
                && rest.len() <= 127
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is invalid (1-128 of [A-Za-z0-9_.-], not starting with '.' or '-')"
        ))
    }
}

/// Splits off the registry if the first component looks like one: it contains '.' or
/// ':', is `localhost`, or has uppercase letters (which a repository path cannot have).
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn check_registry(registry: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("registry {registry:?} is invalid: {why}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return bad("'[' without ']'");
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return bad("not an IPv6 address between the brackets");
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("unexpected characters after ']'"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |label: &str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.split('.').all(label_ok) {
            return bad("host must be dot-separated labels of [A-Za-z0-9-]");
        }
    }
    if let Some(port) = port
        && (port.is_empty()
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return bad("port must be a number from 0 to 65535");
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name {path:?} must be lowercase"));
    }
    for component in path.split('/') {
        if !is_path_component(component) {
            return Err(format!(
                "repository path component {component:?} is invalid (lowercase letters and digits, separated by '.', '_', '__' or dashes)"
            ));
        }
    }
    Ok(())
}

fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more '-'.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn norm(input: &str) -> String {
        match ImageReference::parse(input) {
            Ok(r) => r.to_string(),
            Err(e) => format!("ERR {e}"),
        }
    }

    #[test]
    fn normalisation_table() {
        let by_digest = format!("busybox@{D}");
        let tag_and_digest = format!("quay.io/a/b:tag@{D}");
        let table: Vec<(&str, String)> = vec![
            ("busybox", "docker.io/library/busybox:latest".into()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".into()),
            ("library/busybox", "docker.io/library/busybox:latest".into()),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest".into(),
            ),
            (
                "index.docker.io/busybox:x",
                "docker.io/library/busybox:x".into(),
            ),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest".into(),
            ),
            ("someuser/app", "docker.io/someuser/app:latest".into()),
            (
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/pause:3.10".into(),
            ),
            (
                "127.0.0.1:5000/kraal-test/busybox",
                "127.0.0.1:5000/kraal-test/busybox:latest".into(),
            ),
            ("localhost/foo", "localhost/foo:latest".into()),
            ("localhost:5000/foo:v1", "localhost:5000/foo:v1".into()),
            ("[::1]:5000/foo:v1", "[::1]:5000/foo:v1".into()),
            (&by_digest, format!("docker.io/library/busybox@{D}")),
            (&tag_and_digest, format!("quay.io/a/b@{D}")),
            (
                "a.b/c__d/e--f/g.h_i:T_1.x-y",
                "a.b/c__d/e--f/g.h_i:T_1.x-y".into(),
            ),
            (
                "gcr.io/project/img:latest",
                "gcr.io/project/img:latest".into(),
            ),
            // "host:port" alone is an official image with a numeric tag.
            ("test.com:5000", "docker.io/library/test.com:5000".into()),
        ];
        for (input, want) in table {
            assert_eq!(norm(input), want, "input {input:?}");
        }
    }

    #[test]
    fn bad_references() {
        let bad: Vec<(&str, &str)> = vec![
            ("", "empty"),
            ("Busybox", "must be lowercase"),
            ("docker.io/Library/busybox", "must be lowercase"),
            ("busybox:", "tag \"\""),
            ("busybox:-x", "tag \"-x\""),
            ("busybox:a/b", "port must be a number"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            ("busybox@sha512:abc", "only sha256"),
            ("busybox@0123", "no algorithm"),
            ("busybox a", "character ' '"),
            ("a//b", "component \"\""),
            ("a/b_", "component \"b_\""),
            ("a/.b", "component \".b\""),
            ("a/b___c", "component \"b___c\""),
            ("host:port/x", "port must be a number"),
            ("host:99999/x", "port must be a number"),
            ("[zz]:5000/x", "IPv6"),
            ("-bad.com/x", "labels"),
            ("/busybox", "component \"\""),
            ("busybox/", "component \"\""),
        ];
        for (input, want) in bad {
            let got = norm(input);
            assert!(got.starts_with("ERR "), "{input:?} should fail, got {got}");
            assert!(
                got.contains(want),
                "{input:?}: {got} should mention {want:?}"
            );
            assert!(
                got.contains(&format!("{input:?}")),
                "{got} should name the input"
            );
        }
        let long = format!("a/{}", "b".repeat(300));
        assert!(norm(&long).contains("limit is 255"));
        let long_tag = format!("a:{}", "t".repeat(129));
        assert!(norm(&long_tag).contains("tag"));
        assert_eq!(
            ImageReference::parse(&format!("busybox@sha256:{}", "A".repeat(64)))
                .err()
                .map(|e| e.kind()),
            Some(ErrorKind::InvalidArgument)
        );
    }

    #[test]
    fn accessors() {
        let r = ImageReference::parse("busybox").ok();
        let r = r.as_ref();
        assert_eq!(
            r.map(|r| r.name()).as_deref(),
            Some("docker.io/library/busybox")
        );
        assert_eq!(r.and_then(|r| r.tag()), Some("latest"));
        assert_eq!(r.and_then(|r| r.digest()), None);
        assert_eq!(
            r.map(|r| r.with_digest(D)),
            Some(format!("docker.io/library/busybox@{D}"))
        );
    }

    #[test]
    fn specs() {
        let hex = &D[7..];
        assert_eq!(ImageSpec::parse(D).ok(), Some(ImageSpec::Id(D.to_string())));
        assert_eq!(
            ImageSpec::parse(hex).ok(),
            Some(ImageSpec::Id(D.to_string()))
        );
        assert!(matches!(
            ImageSpec::parse("busybox"),
            Ok(ImageSpec::Reference(r)) if r.to_string() == "docker.io/library/busybox:latest"
        ));
        // Not an id: a short "sha256:abc" is the official image "sha256" with tag "abc".
        assert!(matches!(
            ImageSpec::parse("sha256:abc"),
            Ok(ImageSpec::Reference(r)) if r.to_string() == "docker.io/library/sha256:abc"
        ));
        assert!(ImageSpec::parse("Sha256:abc").is_err());
    }
}
