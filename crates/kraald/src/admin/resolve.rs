//! Finding the pod an admin request names: sandbox id, unique id prefix, name, or
//! `namespace/name`. A name that several pods share is refused, naming their ids.

use tonic::Status;

use crate::runtime::Runtime;
use crate::state::{SandboxRecord, SandboxState};

pub fn resolve_pod(runtime: &Runtime, call: &str, wanted: &str) -> Result<SandboxRecord, Status> {
    if wanted.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{call}: pod is required (a sandbox id, a unique id prefix, a name or namespace/name)"
        )));
    }
    if let Some(record) = runtime
        .state
        .resolve_sandbox(wanted)
        .and_then(|id| runtime.state.sandbox(&id))
    {
        return Ok(record);
    }
    let (namespace, name) = match wanted.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, wanted),
    };
    let mut matches: Vec<SandboxRecord> = runtime
        .state
        .sandboxes()
        .into_iter()
        .filter(|s| s.name == name && namespace.is_none_or(|ns| s.namespace == ns))
        .collect();
    // kubelet keeps a stopped attempt beside the running one for a while: prefer ready pods.
    if matches.len() > 1 && matches.iter().any(|s| s.state == SandboxState::Ready) {
        matches.retain(|s| s.state == SandboxState::Ready);
    }
    match matches.len() {
        0 => Err(Status::not_found(format!(
            "{call}: pod {wanted:?} not found (expected a sandbox id, a unique id prefix, a name or namespace/name)"
        ))),
        1 => Ok(matches.remove(0)),
        _ => {
            let ids: Vec<String> = matches
                .iter()
                .map(|s| format!("{}/{} ({})", s.namespace, s.name, s.id))
                .collect();
            Err(Status::invalid_argument(format!(
                "{call}: pod {wanted:?} is ambiguous: {}; name one by namespace/name or id",
                ids.join(", ")
            )))
        }
    }
}
