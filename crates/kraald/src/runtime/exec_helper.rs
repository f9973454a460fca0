//! The files a `kraal-monitor exec` helper runs from, shared by ExecSync and the streaming
//! Exec: the process to run (the container's own process settings with other args), the
//! helper's config and the result file it writes. All removed when dropped.

use std::path::{Path, PathBuf};

use kraal_runtime::monitor::{ExecConfig, ExecResult};
use tonic::Status;

use super::{Runtime, internal, io_status, new_id};
use crate::state::ContainerRecord;

pub struct ExecFiles {
    pub config_file: PathBuf,
    pub result_file: PathBuf,
    process_file: PathBuf,
}

impl ExecFiles {
    /// Writes the process and helper config for running `cmd` in `record`'s container.
    /// `timeout_ms` 0: no timeout (the helper waits for the command however long it runs).
    /// `terminal`: the helper's stdin is a pty the command takes as its controlling terminal.
    pub fn write(
        runtime: &Runtime,
        call: &str,
        record: &ContainerRecord,
        cmd: &[String],
        timeout_ms: u64,
        terminal: bool,
    ) -> Result<ExecFiles, Status> {
        let layout = &runtime.layout;
        let id = &record.id;
        let exec_id = new_id().map_err(|e| io_status(format!("{call}: making an id"), e))?;
        let dir = layout.container_dir(id);
        let files = ExecFiles {
            process_file: dir.join(format!("exec-{}.json", &exec_id[..16])),
            config_file: dir.join(format!("exec-{}.cfg.json", &exec_id[..16])),
            result_file: dir.join(format!("exec-{}.result.json", &exec_id[..16])),
        };
        let process = exec_process(&layout.bundle(id).join("config.json"), cmd, terminal)?;
        std::fs::write(&files.process_file, process.to_string())
            .map_err(|e| io_status(format!("writing {}", files.process_file.display()), e))?;
        let config = ExecConfig {
            id: id.clone(),
            libcontainer_root: layout.libcontainer_root(),
            process: files.process_file.clone(),
            timeout_ms,
            unified_cgroup: match runtime.cgroups.hierarchy() {
                kraal_cgroups::Hierarchy::Hybrid => {
                    super::unified_dir(runtime, &record.cgroups_path)
                }
                _ => None,
            },
            result_file: files.result_file.clone(),
            terminal,
        };
        let json =
            serde_json::to_vec(&config).map_err(|e| internal("serialising the exec config", e))?;
        std::fs::write(&files.config_file, json)
            .map_err(|e| io_status(format!("writing {}", files.config_file.display()), e))?;
        Ok(files)
    }

    /// What the helper recorded; `None` when it failed before running the command.
    pub fn result(&self) -> Option<ExecResult> {
        std::fs::read(&self.result_file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        for path in [&self.process_file, &self.config_file, &self.result_file] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The container's own process settings (env, cwd, user, capabilities) with `cmd` as args.
/// `terminal` stays false even for a tty exec: the helper's stdio is already the pty, sized
/// before the command starts (a console libcontainer made would exist only once the command
/// runs), and the command takes it as its controlling terminal itself.
///
/// A tty exec gets `TERM=xterm` unless the container's environment names a TERM already
/// (containerd sets xterm for a tty exec too; a TERM the pod asked for is kept). A tty
/// container has TERM=xterm from its spec, so its execs see that.
fn exec_process(
    bundle_config: &Path,
    cmd: &[String],
    terminal: bool,
) -> Result<serde_json::Value, Status> {
    let bytes = std::fs::read(bundle_config)
        .map_err(|e| io_status(format!("reading {}", bundle_config.display()), e))?;
    let spec: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| internal("parsing the container's OCI spec", e))?;
    let mut process = spec
        .get("process")
        .cloned()
        .ok_or_else(|| Status::internal("the container's OCI spec has no process"))?;
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::json!(false);
    if terminal {
        set_default_term(&mut process);
    }
    Ok(process)
}

/// Adds `TERM=xterm` to the process's env unless it has a TERM.
fn set_default_term(process: &mut serde_json::Value) {
    let has_term = process["env"].as_array().is_some_and(|env| {
        env.iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
    });
    if has_term {
        return;
    }
    match process["env"].as_array_mut() {
        Some(env) => env.push(serde_json::json!("TERM=xterm")),
        None => process["env"] = serde_json::json!(["TERM=xterm"]),
    }
}

#[cfg(test)]
mod tests {
    use super::set_default_term;
    use serde_json::json;

    #[test]
    fn a_tty_exec_gets_term_xterm_unless_it_has_a_term() {
        let mut p = json!({"env": ["PATH=/bin"]});
        set_default_term(&mut p);
        assert_eq!(p["env"], json!(["PATH=/bin", "TERM=xterm"]));
        let mut p = json!({"env": ["TERM=screen", "PATH=/bin"]});
        set_default_term(&mut p);
        assert_eq!(p["env"], json!(["TERM=screen", "PATH=/bin"]));
        let mut p = json!({"args": ["sh"]});
        set_default_term(&mut p);
        assert_eq!(p["env"], json!(["TERM=xterm"]));
    }
}
