//! Network configuration lists: which file of the conf dir is the node's network, and what it
//! says. Chosen the way containerd and CRI-O (through libcni) choose: the lexically first file
//! ending in `.conflist`, `.conf` or `.json` that parses as a usable network; a `.conf` holds a
//! single plugin and is treated as a list of one.

use std::path::Path;

use serde_json::{Map, Value};

use super::error::CniError;

/// The spec versions whose results kraal reads. 0.1/0.2 results have another shape (`ip4`,
/// `ip6`) and no plugin of the last five years needs them.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

const EXTENSIONS: &[&str] = &["conflist", "conf", "json"];

/// One network: its plugins in ADD order, as read from a file (or from kraal's state, where the
/// list an ADD used is kept so its DEL uses the same one even if the conf dir changed since).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck`: the network asks runtimes not to call CHECK.
    pub disable_check: bool,
    pub plugins: Vec<PluginConf>,
    /// Where it came from, for messages: a file path or "state".
    pub origin: String,
    raw: Value,
}

/// One plugin's entry of the list: its `type` (the binary's name) and every key as written,
/// passed through to the plugin untouched.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub kind: String,
    pub conf: Map<String, Value>,
}

impl PluginConf {
    /// Whether the plugin declares a runtime capability (`"capabilities": {"portMappings": true}`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.conf
            .get("capabilities")
            .and_then(|c| c.get(name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// `major.minor.patch` as numbers, for "this version or newer" questions.
pub fn version_tuple(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

impl NetworkList {
    /// Parses a `.conflist` text, or a `.conf` text when `single` is true.
    pub fn parse(text: &[u8], single: bool, origin: &str) -> Result<NetworkList, CniError> {
        let value: Value = serde_json::from_slice(text).map_err(|e| CniError::InvalidConfig {
            origin: origin.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        let value = if single { wrap_single(value) } else { value };
        NetworkList::from_value(value, origin)
    }

    /// A list in conflist form, as [`NetworkList::to_value`] gives it back.
    pub fn from_value(value: Value, origin: &str) -> Result<NetworkList, CniError> {
        let invalid = |reason: String| CniError::InvalidConfig {
            origin: origin.to_string(),
            reason,
        };
        let top = value
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object".to_string()))?;
        let name = top
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| invalid("\"name\" is missing or empty".to_string()))?
            .to_string();
        let cni_version = top
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("\"cniVersion\" is missing".to_string()))?
            .to_string();
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(invalid(format!(
                "cniVersion {cni_version:?} is not supported; kraal reads {}",
                SUPPORTED_VERSIONS.join(", ")
            )));
        }
        let disable_check = match top.get("disableCheck") {
            None => false,
            Some(Value::Bool(b)) => *b,
            // libcni also accepts the string forms.
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            Some(other) => {
                return Err(invalid(format!(
                    "\"disableCheck\" is {other}, expected a boolean"
                )));
            }
        };
        let entries = top
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid("\"plugins\" is missing or empty".to_string()))?;
        let mut plugins = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let conf = entry
                .as_object()
                .ok_or_else(|| invalid(format!("plugins[{i}] is not an object")))?;
            let kind = conf
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // The type names a binary in the bin dirs, never a path to run.
            if kind.is_empty() || kind.contains('/') || kind == "." || kind == ".." {
                return Err(invalid(format!(
                    "plugins[{i}].type {kind:?} is not a plugin name"
                )));
            }
            plugins.push(PluginConf {
                kind,
                conf: conf.clone(),
            });
        }
        Ok(NetworkList {
            name,
            cni_version,
            disable_check,
            plugins,
            origin: origin.to_string(),
            raw: value,
        })
    }

    /// The list in conflist form, to keep in state.
    pub fn to_value(&self) -> Value {
        self.raw.clone()
    }

    /// Whether the list's version has CHECK (0.4.0 on) and the list does not turn it off.
    pub fn supports_check(&self) -> bool {
        !self.disable_check && self.at_least((0, 4, 0))
    }

    /// Whether DEL gets the cached ADD result as `prevResult` (0.4.0 on, as libcni does).
    pub fn del_gets_prev_result(&self) -> bool {
        self.at_least((0, 4, 0))
    }

    fn at_least(&self, wanted: (u32, u32, u32)) -> bool {
        version_tuple(&self.cni_version).is_some_and(|v| v >= wanted)
    }
}

/// A `.conf` is one plugin's config with the network's name and version in it: a list of one.
fn wrap_single(value: Value) -> Value {
    let mut list = Map::new();
    if let Some(obj) = value.as_object() {
        for key in ["name", "cniVersion", "disableCheck"] {
            if let Some(v) = obj.get(key) {
                list.insert(key.to_string(), v.clone());
            }
        }
    }
    list.insert("plugins".to_string(), Value::Array(vec![value]));
    Value::Object(list)
}

/// The node's network: the first usable file of `dir` in lexical order. The error lists why
/// each file was passed over, so "NetworkReady=false" says what to fix.
pub fn load_dir(dir: &Path) -> Result<NetworkList, CniError> {
    let no_config = |why: String| CniError::NoConfig {
        dir: dir.to_path_buf(),
        why,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(no_config("the directory does not exist".to_string()));
        }
        Err(e) => return Err(no_config(format!("reading it: {e}"))),
    };
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .collect();
    files.sort();
    let mut passed_over = Vec::new();
    for path in &files {
        let origin = path.display().to_string();
        let single = path.extension().is_some_and(|e| e != "conflist");
        let text = match std::fs::read(path) {
            Ok(text) => text,
            // Removed between the listing and the read, or unreadable: try the next.
            Err(e) => {
                passed_over.push(format!("{origin}: {e}"));
                continue;
            }
        };
        match NetworkList::parse(&text, single, &origin) {
            Ok(list) => {
                for skipped in &passed_over {
                    tracing::warn!(chosen = %origin, "CNI config passed over: {skipped}");
                }
                return Ok(list);
            }
            Err(err) => passed_over.push(err.to_string()),
        }
    }
    if passed_over.is_empty() {
        Err(no_config(
            "no .conflist, .conf or .json file in it".to_string(),
        ))
    } else {
        Err(no_config(passed_over.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = r#"{
        "cniVersion": "1.0.0", "name": "pods",
        "plugins": [
            {"type": "bridge", "bridge": "kraal0", "ipam": {"type": "host-local"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    }"#;

    #[test]
    fn conflist_parses_in_order() {
        let list = NetworkList::parse(LIST.as_bytes(), false, "t").expect("parses");
        assert_eq!(list.name, "pods");
        let kinds: Vec<_> = list.plugins.iter().map(|p| p.kind.as_str()).collect();
        assert_eq!(kinds, ["bridge", "portmap"]);
        assert!(list.plugins[1].has_capability("portMappings"));
        assert!(!list.plugins[0].has_capability("portMappings"));
        assert!(list.supports_check());
        let again = NetworkList::from_value(list.to_value(), "state").expect("round trip");
        assert_eq!(again.plugins, list.plugins);
    }

    #[test]
    fn single_conf_is_a_list_of_one() {
        let text = r#"{"cniVersion": "0.4.0", "name": "one", "type": "bridge"}"#;
        let list = NetworkList::parse(text.as_bytes(), true, "t").expect("parses");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.cni_version, "0.4.0");
        assert!(list.del_gets_prev_result());
    }

    #[test]
    fn old_versions_and_paths_are_refused() {
        let old = r#"{"cniVersion": "0.3.1", "name": "x", "plugins": [{"type": "bridge"}]}"#;
        let list = NetworkList::parse(old.as_bytes(), false, "t").expect("0.3.1 parses");
        assert!(!list.supports_check() && !list.del_gets_prev_result());
        let ancient = r#"{"cniVersion": "0.2.0", "name": "x", "plugins": [{"type": "bridge"}]}"#;
        let err = NetworkList::parse(ancient.as_bytes(), false, "t").expect_err("0.2.0");
        assert!(err.to_string().contains("0.2.0"), "{err}");
        let path = r#"{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../sh"}]}"#;
        let err = NetworkList::parse(path.as_bytes(), false, "t").expect_err("path");
        assert!(err.to_string().contains("not a plugin name"), "{err}");
        let empty = r#"{"cniVersion": "1.0.0", "name": "x", "plugins": []}"#;
        assert!(NetworkList::parse(empty.as_bytes(), false, "t").is_err());
    }

    #[test]
    fn first_valid_file_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("00-broken.conflist"), "{ nope").expect("write");
        std::fs::write(dir.path().join("10-pods.conflist"), LIST).expect("write");
        std::fs::write(
            dir.path().join("20-other.conf"),
            r#"{"cniVersion": "1.0.0", "name": "other", "type": "ptp"}"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("05-ignored.txt"), "x").expect("write");
        let list = load_dir(dir.path()).expect("loads");
        assert_eq!(list.name, "pods");
    }

    #[test]
    fn empty_or_missing_dir_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_dir(dir.path()).expect_err("empty");
        assert!(err.to_string().contains("no .conflist"), "{err}");
        std::fs::write(dir.path().join("a.conflist"), "[]").expect("write");
        let err = load_dir(dir.path()).expect_err("invalid only");
        assert!(err.to_string().contains("a.conflist"), "{err}");
        let err = load_dir(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
