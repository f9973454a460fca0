//! `GetContainerEvents`: a stream of created/started/stopped/deleted events for kubelet's
//! evented PLEG. A subscriber too slow to keep up is told how many it missed and goes on.

use std::sync::Arc;

use futures::StreamExt;
use kraal_api::runtime::v1 as cri;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::Status;

use crate::runtime::Runtime;

pub fn get_container_events(
    runtime: &Arc<Runtime>,
) -> impl futures::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static {
    BroadcastStream::new(runtime.events.subscribe()).filter_map(|item| async move {
        match item {
            Ok(event) => Some(Ok(event)),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, "an events subscriber fell behind");
                None
            }
        }
    })
}
