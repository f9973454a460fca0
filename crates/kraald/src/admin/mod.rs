//! kraal's admin API (`proto/kraal/v1/admin.proto`) on its own root-only socket: freeze and
//! thaw a pod, show and change its policy. One file per call, like the CRI calls; pods are
//! found by id, id prefix, name or `namespace/name`.

mod freeze_pod;
mod get_pod_policy;
mod resolve;
mod thaw_pod;
mod update_pod_policy;

use std::sync::Arc;

use kraal_api::kraal::v1 as admin;
use kraal_api::kraal::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use crate::runtime::Runtime;
use crate::state::{SandboxRecord, SandboxState};

pub use resolve::resolve_pod;

/// The admin service, serving `runtime`.
pub struct AdminHandler {
    runtime: Arc<Runtime>,
}

impl AdminHandler {
    pub fn new(runtime: Arc<Runtime>) -> Self {
        Self { runtime }
    }
}

#[tonic::async_trait]
impl Admin for AdminHandler {
    async fn freeze_pod(
        &self,
        request: Request<admin::FreezePodRequest>,
    ) -> Result<Response<admin::FreezePodResponse>, Status> {
        freeze_pod::freeze_pod(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn thaw_pod(
        &self,
        request: Request<admin::ThawPodRequest>,
    ) -> Result<Response<admin::ThawPodResponse>, Status> {
        thaw_pod::thaw_pod(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_pod_policy(
        &self,
        request: Request<admin::GetPodPolicyRequest>,
    ) -> Result<Response<admin::PodPolicyStatus>, Status> {
        get_pod_policy::get_pod_policy(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_pod_policy(
        &self,
        request: Request<admin::UpdatePodPolicyRequest>,
    ) -> Result<Response<admin::PodPolicyStatus>, Status> {
        update_pod_policy::update_pod_policy(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Who the pod is, for every response.
pub fn summary(record: &SandboxRecord) -> admin::PodSummary {
    admin::PodSummary {
        id: record.id.clone(),
        name: record.name.clone(),
        namespace: record.namespace.clone(),
        uid: record.uid.clone(),
        cgroup_parent: record.cgroup_parent.clone(),
        state: match record.state {
            SandboxState::Ready => "ready",
            SandboxState::NotReady => "notready",
        }
        .to_string(),
    }
}

/// The pod's policy as kraald holds it now.
pub fn policy_status(runtime: &Runtime, record: &SandboxRecord) -> admin::PodPolicyStatus {
    let policy_json = crate::policy::pod_policy(runtime, record)
        .ok()
        .and_then(|p| p.to_json().ok())
        .unwrap_or_default();
    let (applied, warnings) = crate::policy::applied_settings(runtime, record);
    admin::PodPolicyStatus {
        pod: Some(summary(record)),
        annotations: crate::policy::annotations_in_effect(runtime, record)
            .into_iter()
            .collect(),
        policy_json,
        applied: applied
            .into_iter()
            .map(|a| admin::AppliedSetting {
                scope: a.scope,
                file: a.file.to_string_lossy().into_owned(),
                value: a.value,
                source: a.source,
            })
            .collect(),
        frozen: record.frozen,
        warnings,
        ports: crate::ports::admin_status(runtime, record),
        bandwidth: crate::bandwidth::admin_status(runtime, record),
    }
}
