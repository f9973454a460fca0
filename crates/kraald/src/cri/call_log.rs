//! Every failed CRI call leaves one line in kraald's log: the call, what it named (pod,
//! sandbox, container or image), the gRPC code and the message. kubelet logs the same
//! failure on its side, but a node's runtime log must tell its own story. Every method of
//! `runtime_service.rs` and `image_service.rs` goes through [`logged`]; [`Subject`] says what
//! each request is about.

use std::fmt;
use std::future::Future;

use kraal_api::runtime::v1 as cri;
use tonic::{Code, Request, Response, Status};

/// What a request names, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Nothing,
    /// A pod not created yet: its namespace and name.
    Pod {
        namespace: String,
        name: String,
    },
    Sandbox(String),
    /// A container not created yet: its sandbox and name.
    NewContainer {
        sandbox: String,
        name: String,
    },
    Container(String),
    Image(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Nothing => f.write_str("-"),
            Target::Pod { namespace, name } => write!(f, "pod {namespace}/{name}"),
            Target::Sandbox(id) => write!(f, "sandbox {id}"),
            Target::NewContainer { sandbox, name } => {
                write!(f, "container {name:?} in sandbox {sandbox}")
            }
            Target::Container(id) => write!(f, "container {id}"),
            Target::Image(image) => write!(f, "image {image}"),
        }
    }
}

pub trait Subject {
    fn subject(&self) -> Target;
}

/// Runs `handler` on the request and logs its failure, if it fails.
pub async fn logged<Req, T, F>(
    call: &'static str,
    request: Request<Req>,
    handler: impl FnOnce(Req) -> F,
) -> Result<Response<T>, Status>
where
    Req: Subject,
    F: Future<Output = Result<T, Status>>,
{
    let request = request.into_inner();
    let subject = request.subject();
    let result = handler(request).await;
    if let Err(status) = &result {
        report(call, &subject, status);
    }
    result.map(Response::new)
}

fn report(call: &str, subject: &Target, status: &Status) {
    let code = status.code();
    let message = status.message();
    let about = match subject {
        Target::Nothing => String::new(),
        subject => format!(" for {subject}"),
    };
    // Internal, Unknown and DataLoss are kraald's own faults; the rest are refusals of what
    // the caller asked, which kubelet retries or reports.
    if matches!(code, Code::Internal | Code::Unknown | Code::DataLoss) {
        tracing::error!("{call} failed{about}: {code:?}: {message}");
    } else {
        tracing::warn!("{call} failed{about}: {code:?}: {message}");
    }
}

/// Requests that name nothing in particular (lists, status, version).
macro_rules! names_nothing {
    ($($request:ident),* $(,)?) => {
        $(impl Subject for cri::$request {
            fn subject(&self) -> Target {
                Target::Nothing
            }
        })*
    };
}

/// Requests that name an existing sandbox or container by an id field.
macro_rules! names_by_id {
    ($variant:ident, $field:ident: $($request:ident),* $(,)?) => {
        $(impl Subject for cri::$request {
            fn subject(&self) -> Target {
                Target::$variant(self.$field.clone())
            }
        })*
    };
}

/// Requests that name an image by its ImageSpec.
macro_rules! names_image {
    ($($request:ident),* $(,)?) => {
        $(impl Subject for cri::$request {
            fn subject(&self) -> Target {
                Target::Image(self.image.as_ref().map(|spec| spec.image.clone()).unwrap_or_default())
            }
        })*
    };
}

names_nothing!(
    VersionRequest,
    ListPodSandboxRequest,
    ListContainersRequest,
    ListContainerStatsRequest,
    ListPodSandboxStatsRequest,
    UpdateRuntimeConfigRequest,
    StatusRequest,
    GetEventsRequest,
    ListMetricDescriptorsRequest,
    ListPodSandboxMetricsRequest,
    RuntimeConfigRequest,
    StreamPodSandboxesRequest,
    StreamContainersRequest,
    StreamContainerStatsRequest,
    StreamPodSandboxStatsRequest,
    StreamPodSandboxMetricsRequest,
    ListImagesRequest,
    StreamImagesRequest,
    ImageFsInfoRequest,
);

names_by_id!(Sandbox, pod_sandbox_id:
    StopPodSandboxRequest,
    RemovePodSandboxRequest,
    PodSandboxStatusRequest,
    PodSandboxStatsRequest,
    PortForwardRequest,
    UpdatePodSandboxResourcesRequest,
);

names_by_id!(Container, container_id:
    StartContainerRequest,
    StopContainerRequest,
    RemoveContainerRequest,
    ContainerStatusRequest,
    UpdateContainerResourcesRequest,
    ReopenContainerLogRequest,
    ExecSyncRequest,
    ExecRequest,
    AttachRequest,
    ContainerStatsRequest,
    CheckpointContainerRequest,
);

names_image!(ImageStatusRequest, PullImageRequest, RemoveImageRequest);

impl Subject for cri::RunPodSandboxRequest {
    fn subject(&self) -> Target {
        let metadata = self.config.as_ref().and_then(|c| c.metadata.as_ref());
        Target::Pod {
            namespace: metadata.map(|m| m.namespace.clone()).unwrap_or_default(),
            name: metadata.map(|m| m.name.clone()).unwrap_or_default(),
        }
    }
}

impl Subject for cri::CreateContainerRequest {
    fn subject(&self) -> Target {
        let name = self.config.as_ref().and_then(|c| c.metadata.as_ref());
        Target::NewContainer {
            sandbox: self.pod_sandbox_id.clone(),
            name: name.map(|m| m.name.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_what_the_request_names() {
        let run = cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "shop".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(run.subject().to_string(), "pod shop/web");
        let create = cri::CreateContainerRequest {
            pod_sandbox_id: "abc".into(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            create.subject().to_string(),
            "container \"app\" in sandbox abc"
        );
        let stop = cri::StopContainerRequest {
            container_id: "c1".into(),
            timeout: 0,
        };
        assert_eq!(stop.subject(), Target::Container("c1".into()));
        assert_eq!(
            cri::RemoveImageRequest::default().subject(),
            Target::Image(String::new())
        );
        assert_eq!(cri::VersionRequest::default().subject(), Target::Nothing);
    }
}
