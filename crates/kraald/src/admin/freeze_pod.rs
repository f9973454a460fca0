//! `FreezePod`: freeze every container of a pod (see `crate::policy` for how).

use std::sync::Arc;
use std::time::Duration;

use kraal_api::kraal::v1 as admin;
use tonic::Status;

use super::{resolve_pod, summary};
use crate::runtime::{Runtime, internal};

/// The longest freeze wait a caller may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn freeze_pod(
    runtime: &Arc<Runtime>,
    request: admin::FreezePodRequest,
) -> Result<admin::FreezePodResponse, Status> {
    let record = resolve_pod(runtime, "FreezePod", &request.pod)?;
    let timeout = match request.timeout_ms {
        0 => crate::policy::DEFAULT_FREEZE_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    if timeout > MAX_TIMEOUT {
        return Err(Status::invalid_argument(format!(
            "FreezePod: timeout_ms {} is too long; expected at most {} ms (0 for the default {} ms)",
            request.timeout_ms,
            MAX_TIMEOUT.as_millis(),
            crate::policy::DEFAULT_FREEZE_TIMEOUT.as_millis()
        )));
    }
    let _guard = runtime.locks.lock(&record.id).await;
    let rt = runtime.clone();
    let id = record.id.clone();
    let (containers, already_frozen) =
        tokio::task::spawn_blocking(move || crate::policy::freeze_pod(&rt, &id, timeout))
            .await
            .map_err(|e| internal("FreezePod task", e))??;
    let record = runtime.state.sandbox(&record.id).unwrap_or(record);
    Ok(admin::FreezePodResponse {
        pod: Some(summary(&record)),
        containers,
        already_frozen,
    })
}
