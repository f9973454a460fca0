//! `ListPodSandbox` with its filters: id (or prefix), state, label selector.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;

use super::filters::{id_matches, labels_match};
use super::pod_sandbox_status::{metadata, state_value};
use crate::runtime::Runtime;

pub fn list_pod_sandbox(
    runtime: &Arc<Runtime>,
    request: cri::ListPodSandboxRequest,
) -> cri::ListPodSandboxResponse {
    let filter = request.filter.unwrap_or_default();
    let mut items: Vec<cri::PodSandbox> = runtime
        .state
        .sandboxes()
        .into_iter()
        .filter(|s| id_matches(&filter.id, &s.id))
        .filter(|s| {
            filter
                .state
                .as_ref()
                .is_none_or(|v| v.state == state_value(s.state) as i32)
        })
        .filter(|s| labels_match(&filter.label_selector, &s.labels))
        .map(|s| cri::PodSandbox {
            id: s.id.clone(),
            metadata: Some(metadata(&s)),
            state: state_value(s.state) as i32,
            created_at: s.created_at_unix_nanos,
            labels: s.labels.clone().into_iter().collect(),
            annotations: s.annotations.clone().into_iter().collect(),
            runtime_handler: s.runtime_handler.clone(),
        })
        .collect();
    items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    cri::ListPodSandboxResponse { items }
}
