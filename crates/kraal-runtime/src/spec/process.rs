//! The process: argv from CRI command/args and the image's Entrypoint/Cmd, the
//! environment, the working directory.

use kraal_api::runtime::v1 as cri;
use serde_json::Value;

use super::SpecError;

/// `PATH` when neither the image nor the request sets one (containerd's default).
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The parts of an image config the spec uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
}

impl ImageConfig {
    /// Reads the image config: the whole OCI/Docker config JSON (`{"config": {...}}`), or
    /// just its inner `config` object. Missing or `null` fields are empty.
    pub(crate) fn from_json(v: &Value) -> Result<Self, SpecError> {
        let inner = match v.get("config") {
            Some(Value::Null) | None => {
                if ["Env", "Entrypoint", "Cmd", "WorkingDir", "User"]
                    .iter()
                    .any(|k| v.get(k).is_some())
                {
                    v
                } else {
                    return Ok(Self::default());
                }
            }
            Some(c @ Value::Object(_)) => c,
            Some(other) => {
                return Err(SpecError::invalid(format!(
                    "image config: \"config\" is {}, expected an object",
                    kind_of(other)
                )));
            }
        };
        Ok(Self {
            env: strings(inner, "Env")?,
            entrypoint: strings(inner, "Entrypoint")?,
            cmd: strings(inner, "Cmd")?,
            working_dir: string(inner, "WorkingDir")?,
            user: string(inner, "User")?,
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn strings(obj: &Value, key: &str) -> Result<Vec<String>, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(SpecError::invalid(format!(
                    "image config: config.{key}[{i}] is {}, expected a string",
                    kind_of(other)
                ))),
            })
            .collect(),
        Some(other) => Err(SpecError::invalid(format!(
            "image config: config.{key} is {}, expected an array of strings",
            kind_of(other)
        ))),
    }
}

fn string(obj: &Value, key: &str) -> Result<String, SpecError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(SpecError::invalid(format!(
            "image config: config.{key} is {}, expected a string",
            kind_of(other)
        ))),
    }
}

/// argv, as kubelet and containerd define it: a CRI `command` replaces the image's
/// Entrypoint *and* drops its Cmd; CRI `args` replace the image's Cmd. An Entrypoint of
/// `[""]` means "no entrypoint" (Docker's way to reset one).
pub(crate) fn process_args(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Result<Vec<String>, SpecError> {
    let mut argv: Vec<String> = if command.is_empty() {
        let entrypoint: &[String] = if image.entrypoint.len() == 1 && image.entrypoint[0].is_empty()
        {
            &[]
        } else {
            &image.entrypoint
        };
        let args = if args.is_empty() { &image.cmd } else { args };
        entrypoint.iter().chain(args).cloned().collect()
    } else {
        command.iter().chain(args).cloned().collect()
    };
    if argv.is_empty() {
        return Err(SpecError::invalid(
            "container config: no command: command and args are empty and the image has \
             neither Entrypoint nor Cmd",
        ));
    }
    if argv[0].is_empty() {
        return Err(SpecError::invalid(format!(
            "container config: the program to run (argv[0] of {argv:?}) is an empty string"
        )));
    }
    argv.shrink_to_fit();
    Ok(argv)
}

/// An ordered environment where a later value replaces an earlier one in place.
#[derive(Default)]
struct Env {
    vars: Vec<(String, Option<String>)>,
}

impl Env {
    fn set(&mut self, key: &str, value: Option<&str>) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.map(str::to_owned),
            None => self.vars.push((key.to_owned(), value.map(str::to_owned))),
        }
    }
    fn has(&self, key: &str) -> bool {
        self.vars.iter().any(|(k, v)| k == key && v.is_some())
    }
}

/// The environment: `PATH` (default), `TERM=xterm` for a tty, `HOSTNAME`, then the image's
/// Env, then the CRI envs. A later entry with the same key replaces the earlier value in
/// place. An image entry without `=` unsets the key (as containerd does). If nothing set
/// `PATH`, the default stays.
pub(crate) fn merge_env(
    image_env: &[String],
    cri_env: &[cri::KeyValue],
    hostname: &str,
    tty: bool,
) -> Result<Vec<String>, SpecError> {
    let mut env = Env::default();
    env.set("PATH", DEFAULT_PATH.strip_prefix("PATH="));
    if tty {
        env.set("TERM", Some("xterm"));
    }
    let hostname = if hostname.is_empty() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    } else {
        hostname.to_owned()
    };
    if !hostname.is_empty() {
        env.set("HOSTNAME", Some(&hostname));
    }
    for (i, e) in image_env.iter().enumerate() {
        match e.split_once('=') {
            Some(("", _)) => {
                return Err(SpecError::invalid(format!(
                    "image config: config.Env[{i}] {e:?}: the variable name is empty"
                )));
            }
            Some((k, v)) => env.set(k, Some(v)),
            None if e.is_empty() => {}
            None => env.set(e, None),
        }
    }
    for (i, kv) in cri_env.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') || kv.key.contains('\0') {
            return Err(SpecError::invalid(format!(
                "container config: envs[{i}].key {:?}: expected a non-empty name without '=' \
                 or NUL",
                kv.key
            )));
        }
        if kv.value.contains('\0') {
            return Err(SpecError::invalid(format!(
                "container config: envs[{i}] ({}): the value contains a NUL byte",
                kv.key
            )));
        }
        env.set(&kv.key, Some(&kv.value));
    }
    if !env.has("PATH") {
        env.set("PATH", DEFAULT_PATH.strip_prefix("PATH="));
    }
    Ok(env
        .vars
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect())
}

/// The working directory: CRI `working_dir`, else the image's WorkingDir, else `/`.
pub(crate) fn working_dir(cri_dir: &str, image_dir: &str) -> Result<String, SpecError> {
    if !cri_dir.is_empty() {
        if !cri_dir.starts_with('/') {
            return Err(SpecError::invalid(format!(
                "container config: working_dir {cri_dir:?}: expected an absolute path"
            )));
        }
        return Ok(cri_dir.to_owned());
    }
    if image_dir.is_empty() {
        return Ok("/".to_owned());
    }
    // Docker stores WORKDIR absolute; an odd image with a relative one means "from /".
    if image_dir.starts_with('/') {
        Ok(image_dir.to_owned())
    } else {
        Ok(format!("/{image_dir}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn img(ep: &[&str], cmd: &[&str]) -> ImageConfig {
        ImageConfig {
            entrypoint: s(ep),
            cmd: s(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn args_matrix() {
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            // (cri command, cri args, image entrypoint, image cmd, expected)
            (&[], &[], &["/ep"], &["c1"], &["/ep", "c1"]),
            (
                &[],
                &[],
                &[],
                &["/bin/sh", "-c", "x"],
                &["/bin/sh", "-c", "x"],
            ),
            (&[], &["a1"], &["/ep"], &["c1"], &["/ep", "a1"]),
            (&["/cmd"], &[], &["/ep"], &["c1"], &["/cmd"]),
            (
                &["/cmd"],
                &["a1", "a2"],
                &["/ep"],
                &["c1"],
                &["/cmd", "a1", "a2"],
            ),
            (&[], &["/a0"], &[], &["c1"], &["/a0"]),
            (&[], &[], &[""], &["/c0", "x"], &["/c0", "x"]),
            (&[], &["/a0"], &[""], &["/c0"], &["/a0"]),
            (&["/cmd"], &[], &[], &[], &["/cmd"]),
        ];
        for (command, args, ep, cmd, want) in cases {
            let got = process_args(&s(command), &s(args), &img(ep, cmd)).unwrap();
            assert_eq!(
                got,
                s(want),
                "command={command:?} args={args:?} ep={ep:?} cmd={cmd:?}"
            );
        }
    }

    #[test]
    fn args_empty_is_invalid() {
        let e = process_args(&[], &[], &img(&[], &[])).unwrap_err();
        assert_eq!(e.kind(), super::super::ErrorKind::InvalidArgument);
        assert!(e.message().contains("no command"), "{e}");
        let e = process_args(&[], &[], &img(&[""], &[])).unwrap_err();
        assert_eq!(e.kind(), super::super::ErrorKind::InvalidArgument);
        let e = process_args(&[], &s(&["", "x"]), &img(&[], &[])).unwrap_err();
        assert!(e.message().contains("empty string"), "{e}");
    }

    fn kv(k: &str, v: &str) -> cri::KeyValue {
        cri::KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn env_merge() {
        let image = s(&[
            "PATH=/img/bin",
            "A=1",
            "B=2",
            "A=3",
            "UNSETME",
            "HOSTNAME=img",
        ]);
        let got = merge_env(&image, &[kv("B", "cri"), kv("C", "x=y")], "pod-1", false).unwrap();
        assert_eq!(
            got,
            s(&["PATH=/img/bin", "HOSTNAME=img", "A=3", "B=cri", "C=x=y"])
        );
        // PATH default, HOSTNAME and TERM set.
        let got = merge_env(&[], &[kv("HOSTNAME", "mine")], "pod-1", true).unwrap();
        assert_eq!(got, s(&[DEFAULT_PATH, "TERM=xterm", "HOSTNAME=mine"]));
        let got = merge_env(&s(&["X=1"]), &[], "pod-1", false).unwrap();
        assert_eq!(got, s(&[DEFAULT_PATH, "HOSTNAME=pod-1", "X=1"]));
        // An image that unsets PATH still gets the default.
        let got = merge_env(&s(&["PATH"]), &[], "h", false).unwrap();
        assert!(got.contains(&DEFAULT_PATH.to_owned()), "{got:?}");
        // Bad CRI keys.
        for bad in ["", "A=B", "A\0"] {
            let e = merge_env(&[], &[kv(bad, "v")], "h", false).unwrap_err();
            assert!(e.message().contains("envs[0].key"), "{e}");
        }
        let e = merge_env(&s(&["=x"]), &[], "h", false).unwrap_err();
        assert!(e.message().contains("config.Env[0]"), "{e}");
    }

    #[test]
    fn cwd() {
        assert_eq!(working_dir("", "").unwrap(), "/");
        assert_eq!(working_dir("", "/srv").unwrap(), "/srv");
        assert_eq!(working_dir("", "srv").unwrap(), "/srv");
        assert_eq!(working_dir("/w", "/srv").unwrap(), "/w");
        assert!(working_dir("w", "/srv").is_err());
    }

    #[test]
    fn image_config_forms() {
        let full = json!({"architecture": "amd64", "config": {
            "Env": ["A=1"], "Entrypoint": null, "Cmd": ["/bin/sh"], "WorkingDir": "/w", "User": "1:2"
        }});
        let c = ImageConfig::from_json(&full).unwrap();
        assert_eq!(c.env, s(&["A=1"]));
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.cmd, s(&["/bin/sh"]));
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "1:2");
        let inner = json!({"Cmd": ["x"]});
        assert_eq!(ImageConfig::from_json(&inner).unwrap().cmd, s(&["x"]));
        assert_eq!(
            ImageConfig::from_json(&json!({})).unwrap(),
            ImageConfig::default()
        );
        let bad = json!({"config": {"Cmd": "sh"}});
        let e = ImageConfig::from_json(&bad).unwrap_err();
        assert!(e.message().contains("config.Cmd"), "{e}");
        let bad = json!({"config": {"Env": [1]}});
        assert!(
            ImageConfig::from_json(&bad)
                .unwrap_err()
                .message()
                .contains("Env[0]")
        );
    }
}
