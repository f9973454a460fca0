//! GetContainerEvents: every lifecycle change goes to a broadcast channel that each
//! subscriber (kubelet's PLEG) reads at its own pace.

use kraal_api::runtime::v1 as cri;
use tokio::sync::broadcast;

use super::Runtime;

/// Events buffered per subscriber before a slow one starts missing some (and is told).
const BUFFER: usize = 1024;

pub struct Events {
    sender: broadcast::Sender<cri::ContainerEventResponse>,
}

impl Events {
    pub fn new() -> Self {
        Events {
            sender: broadcast::channel(BUFFER).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.sender.subscribe()
    }

    pub fn emit(
        &self,
        runtime: &Runtime,
        container_id: &str,
        sandbox_id: &str,
        kind: cri::ContainerEventType,
    ) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let pod_sandbox_status = runtime
            .state
            .sandbox(sandbox_id)
            .map(|s| crate::cri::sandbox_status_message(runtime, &s));
        let containers_statuses = runtime
            .state
            .containers_of(sandbox_id)
            .iter()
            .map(crate::cri::container_status_message)
            .collect();
        let event = cri::ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::clock::now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        };
        // No subscriber is not an error: kubelet may not be listening.
        let _ = self.sender.send(event);
    }
}
