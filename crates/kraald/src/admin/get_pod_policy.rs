//! `GetPodPolicy`: the policy in effect and every file written for it.

use std::sync::Arc;

use kraal_api::kraal::v1 as admin;
use tonic::Status;

use super::{policy_status, resolve_pod};
use crate::runtime::Runtime;

pub async fn get_pod_policy(
    runtime: &Arc<Runtime>,
    request: admin::GetPodPolicyRequest,
) -> Result<admin::PodPolicyStatus, Status> {
    let record = resolve_pod(runtime, "GetPodPolicy", &request.pod)?;
    Ok(policy_status(runtime, &record))
}
