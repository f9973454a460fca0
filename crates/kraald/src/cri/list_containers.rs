//! `ListContainers` with its filters: id (or prefix), state, pod sandbox id, label selector.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;

use super::container_status::{image_spec, metadata, state_value};
use super::filters::{id_matches, labels_match};
use crate::runtime::Runtime;

pub fn list_containers(
    runtime: &Arc<Runtime>,
    request: cri::ListContainersRequest,
) -> cri::ListContainersResponse {
    let filter = request.filter.unwrap_or_default();
    let mut containers: Vec<cri::Container> = runtime
        .state
        .containers()
        .into_iter()
        .filter(|c| id_matches(&filter.id, &c.id))
        .filter(|c| id_matches(&filter.pod_sandbox_id, &c.sandbox_id))
        .filter(|c| {
            filter
                .state
                .as_ref()
                .is_none_or(|v| v.state == state_value(c.state) as i32)
        })
        .filter(|c| labels_match(&filter.label_selector, &c.labels))
        .map(|c| cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.sandbox_id.clone(),
            metadata: Some(metadata(&c)),
            image: Some(image_spec(&c)),
            image_ref: c.image_id.clone(),
            state: state_value(c.state) as i32,
            created_at: c.created_at_unix_nanos,
            labels: c.labels.clone().into_iter().collect(),
            annotations: c.annotations.clone().into_iter().collect(),
            image_id: c.image_id.clone(),
        })
        .collect();
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    cri::ListContainersResponse { containers }
}
