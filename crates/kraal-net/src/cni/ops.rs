//! ADD, CHECK and DEL over a network list. ADD runs the plugins in order, each getting the
//! previous one's result as `prevResult`; the last result is the pod's. DEL runs them in
//! reverse with the cached ADD result; CHECK in order with it (spec 0.4.0 on).

use std::time::Instant;

use serde_json::{Map, Value};

use super::config::NetworkList;
use super::error::CniError;
use super::exec::{Call, find_plugin};
use super::result::CniResult;
use super::{Attachment, Command, Plugins};

/// Sets the pod up in `list`'s network; the final result as the plugins wrote it (kept by the
/// caller for DEL and CHECK) and parsed. On failure nothing is undone here: the caller runs
/// [`del`], which every plugin must tolerate for what it never set up.
pub fn add(
    plugins: &Plugins,
    list: &NetworkList,
    pod: &Attachment<'_>,
) -> Result<(Value, CniResult), CniError> {
    let started = Instant::now();
    let mut prev: Option<Value> = None;
    for plugin in &list.plugins {
        let out = invoke(
            plugins,
            list,
            pod,
            Command::Add,
            &plugin.kind,
            &plugin.conf,
            prev.as_ref(),
        )?;
        // A plugin that prints nothing passes the previous result on unchanged.
        if !out.iter().all(u8::is_ascii_whitespace) {
            let value: Value = serde_json::from_slice(&out)
                .map_err(|e| bad(list, &plugin.kind, Command::Add, format!("not JSON: {e}")))?;
            prev = Some(value);
        }
    }
    let value = prev.unwrap_or_else(|| serde_json::json!({ "cniVersion": list.cni_version }));
    let parsed = parse_result(&value).map_err(|reason| {
        let last = list.plugins.last().map_or("", |p| p.kind.as_str());
        bad(list, last, Command::Add, reason)
    })?;
    tracing::debug!(network = %list.name, container = pod.container_id, elapsed = ?started.elapsed(), "CNI ADD done");
    Ok((value, parsed))
}

/// Takes the pod out of the network. Every plugin is asked even when one fails, so one broken
/// plugin does not leave the others' veths, addresses and rules behind; the failures are
/// reported together. DEL of something never added succeeds (the spec requires it), so this
/// is safe to repeat.
pub fn del(
    plugins: &Plugins,
    list: &NetworkList,
    pod: &Attachment<'_>,
    cached: Option<&Value>,
) -> Result<(), CniError> {
    let prev = cached.filter(|_| list.del_gets_prev_result());
    let mut failures = Vec::new();
    for plugin in list.plugins.iter().rev() {
        if let Err(err) = invoke(
            plugins,
            list,
            pod,
            Command::Del,
            &plugin.kind,
            &plugin.conf,
            prev,
        ) {
            tracing::warn!(network = %list.name, container = pod.container_id, %err, "CNI DEL");
            failures.push(err);
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(CniError::Several(failures)),
    }
}

/// Asks every plugin whether the pod's network is still as ADD left it. Ok(false) when the
/// list's version has no CHECK or the list disables it.
pub fn check(
    plugins: &Plugins,
    list: &NetworkList,
    pod: &Attachment<'_>,
    cached: &Value,
) -> Result<bool, CniError> {
    if !list.supports_check() {
        return Ok(false);
    }
    for plugin in &list.plugins {
        invoke(
            plugins,
            list,
            pod,
            Command::Check,
            &plugin.kind,
            &plugin.conf,
            Some(cached),
        )?;
    }
    Ok(true)
}

/// Reads a final result; 0.1/0.2-shaped results (`ip4`/`ip6`) are refused with a reason.
fn parse_result(value: &Value) -> Result<CniResult, String> {
    if value.get("ip4").is_some() || value.get("ip6").is_some() {
        return Err("a spec 0.1/0.2 result (ip4/ip6); kraal reads 0.3.0 and newer".to_string());
    }
    serde_json::from_value(value.clone()).map_err(|e| e.to_string())
}

fn bad(list: &NetworkList, plugin: &str, command: Command, reason: String) -> CniError {
    CniError::BadResult {
        plugin: plugin.to_string(),
        command,
        network: list.name.clone(),
        reason,
    }
}

fn invoke(
    plugins: &Plugins,
    list: &NetworkList,
    pod: &Attachment<'_>,
    command: Command,
    kind: &str,
    conf: &Map<String, Value>,
    prev: Option<&Value>,
) -> Result<Vec<u8>, CniError> {
    let binary = find_plugin(kind, &plugins.bin_dirs)?;
    let stdin = stdin_for(list, conf, pod, prev);
    let env = environment(plugins, pod, command);
    let _serialised = super::host_lock::for_plugin(kind)?;
    Call {
        command,
        plugin: kind,
        network: &list.name,
        binary: &binary,
        env: &env,
        stdin,
        timeout: plugins.timeout,
    }
    .run()
}

/// The plugin's own entry with the list's name and version, the previous result, and the
/// runtime values of the capabilities it declares (only those: a plugin that did not ask for
/// `portMappings` must not start acting on them).
fn stdin_for(
    list: &NetworkList,
    conf: &Map<String, Value>,
    pod: &Attachment<'_>,
    prev: Option<&Value>,
) -> Vec<u8> {
    let mut conf = conf.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match prev {
        Some(prev) => conf.insert("prevResult".into(), prev.clone()),
        None => conf.remove("prevResult"),
    };
    let wants = |cap: &str| {
        conf.get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut runtime = Map::new();
    let rc = &pod.runtime_config;
    if wants("portMappings") && !rc.port_mappings.is_empty() {
        runtime.insert("portMappings".into(), serde_json::json!(rc.port_mappings));
    }
    if wants("ipRanges") && !rc.ip_ranges.is_empty() {
        runtime.insert("ipRanges".into(), serde_json::json!(rc.ip_ranges));
    }
    if runtime.is_empty() {
        conf.remove("runtimeConfig");
    } else {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    // A map of JSON values always serialises.
    serde_json::to_vec(&conf).unwrap_or_default()
}

fn environment(plugins: &Plugins, pod: &Attachment<'_>, command: Command) -> Vec<(String, String)> {
    let path = std::env::join_paths(&plugins.bin_dirs)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args = std::iter::once("IgnoreUnknown=1".to_string())
        .chain(pod.args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(";");
    let netns = pod
        .netns
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    vec![
        ("CNI_COMMAND".into(), command.to_string()),
        ("CNI_CONTAINERID".into(), pod.container_id.to_string()),
        ("CNI_NETNS".into(), netns),
        ("CNI_IFNAME".into(), pod.ifname.to_string()),
        ("CNI_ARGS".into(), args),
        ("CNI_PATH".into(), path),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{PortMapping, RuntimeConfig};
    use super::*;

    fn pod(netns: Option<&std::path::Path>) -> Attachment<'_> {
        Attachment {
            container_id: "abc",
            netns,
            ifname: "eth0",
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            runtime_config: RuntimeConfig {
                port_mappings: vec![PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                }],
                ip_ranges: Vec::new(),
            },
        }
    }

    /// A fake plugin that logs its command and stdin, and on ADD answers a result naming
    /// itself, chained onto prevResult's interfaces.
    fn fake(dir: &std::path::Path, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let log = dir.join("calls");
        let body = format!(
            r#"#!/bin/sh
input=$(cat)
echo "{name} $CNI_COMMAND $CNI_NETNS $CNI_ARGS $input" >> {log}
if [ "$CNI_COMMAND" = ADD ]; then
  echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"{name}"}}],"ips":[{{"address":"10.0.0.2/24"}}]}}'
fi
"#,
            log = log.display()
        );
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn add_chains_and_del_reverses() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake(dir.path(), "one");
        fake(dir.path(), "two");
        let list = NetworkList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"one"},{"type":"two","capabilities":{"portMappings":true}}]}"#,
            false,
            "t",
        )
        .expect("list");
        let plugins = Plugins {
            bin_dirs: vec![dir.path().to_path_buf()],
            timeout: Duration::from_secs(5),
        };
        let netns = dir.path().join("ns");
        let (raw, result) = add(&plugins, &list, &pod(Some(&netns))).expect("add");
        assert_eq!(result.interfaces[0].name, "two");
        assert_eq!(raw["interfaces"][0]["name"], "two");
        del(&plugins, &list, &pod(None), Some(&raw)).expect("del");
        let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
        let lines: Vec<&str> = calls.lines().collect();
        assert_eq!(lines.len(), 4, "{calls}");
        assert!(
            lines[0].starts_with("one ADD ") && !lines[0].contains("prevResult"),
            "{}",
            lines[0]
        );
        assert!(
            !lines[0].contains("runtimeConfig"),
            "one did not ask for portMappings"
        );
        assert!(
            lines[0].contains("IgnoreUnknown=1;K8S_POD_NAME=p"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("two ADD ") && lines[1].contains("\"prevResult\""),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains(r#""runtimeConfig":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]}"#), "{}", lines[1]);
        assert!(lines[2].starts_with("two DEL  "), "no netns: {}", lines[2]);
        assert!(
            lines[3].starts_with("one DEL ") && lines[3].contains("\"prevResult\""),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn del_asks_every_plugin_despite_failures() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        fake(dir.path(), "one");
        let bad = dir.path().join("bad");
        std::fs::write(
            &bad,
            "#!/bin/sh\necho '{\"code\":9,\"msg\":\"nope\"}'\nexit 1\n",
        )
        .expect("write");
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let list = NetworkList::parse(
            br#"{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"one"},{"type":"bad"},{"type":"missing"}]}"#,
            false,
            "t",
        )
        .expect("list");
        let plugins = Plugins {
            bin_dirs: vec![dir.path().to_path_buf()],
            timeout: Duration::from_secs(5),
        };
        let err = add(&plugins, &list, &pod(None)).expect_err("bad fails ADD");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = del(&plugins, &list, &pod(None), None).expect_err("two fail DEL");
        let text = err.to_string();
        assert!(
            text.contains("nope") && text.contains("\"missing\" not found"),
            "{text}"
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
        assert!(calls.lines().any(|l| l.starts_with("one DEL")), "{calls}");
    }
}
