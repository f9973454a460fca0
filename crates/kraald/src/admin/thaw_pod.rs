//! `ThawPod`: thaw what FreezePod froze.

use std::sync::Arc;

use kraal_api::kraal::v1 as admin;
use tonic::Status;

use super::{resolve_pod, summary};
use crate::runtime::{Runtime, internal};

pub async fn thaw_pod(
    runtime: &Arc<Runtime>,
    request: admin::ThawPodRequest,
) -> Result<admin::ThawPodResponse, Status> {
    let record = resolve_pod(runtime, "ThawPod", &request.pod)?;
    let _guard = runtime.locks.lock(&record.id).await;
    let rt = runtime.clone();
    let id = record.id.clone();
    let (containers, was_frozen) =
        tokio::task::spawn_blocking(move || crate::policy::thaw_pod(&rt, &id))
            .await
            .map_err(|e| internal("ThawPod task", e))??;
    let record = runtime.state.sandbox(&record.id).unwrap_or(record);
    Ok(admin::ThawPodResponse {
        pod: Some(summary(&record)),
        containers,
        was_frozen,
    })
}
