//! `RemoveContainer`: kill it if it still runs, then remove the libcontainer state, the
//! rootfs mount, the writable layer, the cgroups and the record. Unknown ids are fine.

use std::sync::Arc;

use kraal_api::runtime::v1 as cri;
use tonic::Status;

use super::container_undo::undo_create;
use super::stop_container::stop_container_blocking;
use crate::runtime::{Runtime, internal, io_status};

pub async fn remove_container(
    runtime: &Arc<Runtime>,
    request: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, Status> {
    let Some(id) = runtime.state.resolve_container(&request.container_id) else {
        return Ok(cri::RemoveContainerResponse {});
    };
    let _guard = runtime.locks.lock(&id).await;
    let rt = runtime.clone();
    tokio::task::spawn_blocking(move || remove_container_blocking(&rt, &id))
        .await
        .map_err(|e| internal("RemoveContainer task", e))??;
    Ok(cri::RemoveContainerResponse {})
}

pub fn remove_container_blocking(runtime: &Arc<Runtime>, id: &str) -> Result<(), Status> {
    let Some(record) = runtime.state.container(id) else {
        return Ok(());
    };
    stop_container_blocking(runtime, id, 0)?;
    undo_create(runtime, id, &record.cgroups_path);
    runtime
        .state
        .delete_container(id)
        .map_err(|e| io_status("deleting the container record", e))?;
    runtime.emit(
        id,
        &record.sandbox_id,
        cri::ContainerEventType::ContainerDeletedEvent,
    );
    tracing::info!(container = %id, "container removed");
    Ok(())
}
