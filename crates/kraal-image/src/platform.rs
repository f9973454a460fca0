//! Which entry of a multi-platform index this machine runs.
//!
//! Platforms are named as Go names them (`GOOS`/`GOARCH`), so Rust's target arch has to
//! be mapped first. The OS is always linux: kraal runs Linux containers only.

use std::fmt;

use crate::manifest::IndexEntry;

/// An OCI platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// linux + this machine's architecture.
    pub(crate) fn host() -> Self {
        let architecture = goarch(std::env::consts::ARCH, cfg!(target_endian = "little"));
        Platform {
            os: "linux".into(),
            variant: default_variant(architecture).map(str::to_string),
            architecture: architecture.to_string(),
        }
    }

    /// Variants this machine accepts for its architecture, best first; `None` stands
    /// for an entry that names no variant.
    fn acceptable_variants(&self) -> Vec<Option<&'static str>> {
        match self.architecture.as_str() {
            // An arm64 entry is v8 whether or not it says so.
            "arm64" => vec![Some("v8"), None],
            // A v7 CPU also runs v6 and v5 code.
            "arm" => vec![Some("v7"), Some("v6"), Some("v5"), None],
            // Baseline x86-64 only: a v2/v3 build may use instructions this CPU lacks.
            "amd64" => vec![None, Some("v1")],
            _ => vec![None],
        }
    }

    /// How well `entry` fits this platform: lower is better, `None` is no fit.
    fn rank(&self, entry: &Platform) -> Option<usize> {
        if entry.os != self.os || entry.architecture != self.architecture {
            return None;
        }
        self.acceptable_variants()
            .iter()
            .position(|v| *v == entry.variant.as_deref())
    }
}

/// Rust's `std::env::consts::ARCH` → Go's `GOARCH`.
pub(crate) fn goarch(rust_arch: &str, little_endian: bool) -> &str {
    match (rust_arch, little_endian) {
        ("x86_64", _) => "amd64",
        ("x86", _) => "386",
        ("aarch64", _) => "arm64",
        ("arm", _) => "arm",
        ("powerpc64", true) => "ppc64le",
        ("powerpc64", false) => "ppc64",
        ("loongarch64", _) => "loong64",
        ("mips64", true) => "mips64le",
        ("mips", true) => "mipsle",
        (other, _) => other,
    }
}

fn default_variant(goarch: &str) -> Option<&'static str> {
    match goarch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

/// The best entry of an index for `wanted` (first in index order among equally good),
/// or the list of platforms the index offers, for the error message.
pub(crate) fn select<'a>(
    entries: &'a [IndexEntry],
    wanted: &Platform,
) -> Result<&'a IndexEntry, String> {
    let best = entries
        .iter()
        .filter_map(|e| {
            e.platform
                .as_ref()
                .and_then(|p| wanted.rank(p))
                .map(|r| (r, e))
        })
        .min_by_key(|(rank, _)| *rank);
    match best {
        Some((_, entry)) => Ok(entry),
        None => {
            let offered: Vec<String> = entries
                .iter()
                .map(|e| match &e.platform {
                    Some(p) => p.to_string(),
                    None => "(no platform)".into(),
                })
                .collect();
            Err(if offered.is_empty() {
                "nothing".into()
            } else {
                offered.join(", ")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(digest: &str, platform: Option<(&str, &str, Option<&str>)>) -> IndexEntry {
        IndexEntry {
            media_type: String::new(),
            digest: digest.into(),
            size: 0,
            platform: platform.map(|(os, arch, variant)| Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(str::to_string),
            }),
        }
    }

    fn wanted(arch: &str) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: default_variant(arch).map(str::to_string),
        }
    }

    #[test]
    fn goarch_mapping() {
        assert_eq!(goarch("x86_64", true), "amd64");
        assert_eq!(goarch("aarch64", true), "arm64");
        assert_eq!(goarch("x86", true), "386");
        assert_eq!(goarch("powerpc64", true), "ppc64le");
        assert_eq!(goarch("powerpc64", false), "ppc64");
        assert_eq!(goarch("s390x", false), "s390x");
        assert_eq!(goarch("riscv64", true), "riscv64");
        assert_eq!(goarch("loongarch64", true), "loong64");
    }

    #[test]
    fn host_platform_is_linux() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert!(!host.architecture.is_empty());
    }

    #[test]
    fn picks_matching_os_and_arch() {
        let entries = vec![
            entry("a", Some(("windows", "amd64", None))),
            entry("b", Some(("linux", "arm64", Some("v8")))),
            entry("c", Some(("linux", "amd64", None))),
            entry("d", Some(("unknown", "unknown", None))),
        ];
        assert_eq!(
            select(&entries, &wanted("amd64")).map(|e| e.digest.as_str()),
            Ok("c")
        );
        assert_eq!(
            select(&entries, &wanted("arm64")).map(|e| e.digest.as_str()),
            Ok("b")
        );
    }

    #[test]
    fn arm64_accepts_v8_or_no_variant() {
        let entries = vec![entry("x", Some(("linux", "arm64", None)))];
        assert_eq!(
            select(&entries, &wanted("arm64")).map(|e| e.digest.as_str()),
            Ok("x")
        );
        let entries = vec![
            entry("none", Some(("linux", "arm64", None))),
            entry("v8", Some(("linux", "arm64", Some("v8")))),
        ];
        assert_eq!(
            select(&entries, &wanted("arm64")).map(|e| e.digest.as_str()),
            Ok("v8")
        );
    }

    #[test]
    fn arm_prefers_v7_over_v6() {
        let entries = vec![
            entry("v6", Some(("linux", "arm", Some("v6")))),
            entry("v7", Some(("linux", "arm", Some("v7")))),
        ];
        assert_eq!(
            select(&entries, &wanted("arm")).map(|e| e.digest.as_str()),
            Ok("v7")
        );
    }

    #[test]
    fn amd64_refuses_higher_microarchitecture_levels() {
        let entries = vec![entry("v3", Some(("linux", "amd64", Some("v3"))))];
        assert!(select(&entries, &wanted("amd64")).is_err());
    }

    #[test]
    fn no_match_lists_offered_platforms() {
        let entries = vec![
            entry("a", Some(("linux", "s390x", None))),
            entry("b", Some(("linux", "arm", Some("v7")))),
            entry("c", None),
        ];
        assert_eq!(
            select(&entries, &wanted("amd64")).err().as_deref(),
            Some("linux/s390x, linux/arm/v7, (no platform)")
        );
        assert_eq!(
            select(&[], &wanted("amd64")).err().as_deref(),
            Some("nothing")
        );
    }
}
