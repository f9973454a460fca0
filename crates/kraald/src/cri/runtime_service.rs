//! Routes the RuntimeService calls to their files. Calls whose work has not landed yet
//! answer `Unimplemented` naming the call, as kubelet and crictl expect of a runtime that
//! lacks a feature. Every call goes through `call_log::logged`, which logs a failure once.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use super::call_log::logged;
use super::error::not_implemented;
use super::{
    attach, container_stats, container_status, create_container, exec, exec_sync,
    get_container_events, list_containers, list_pod_sandbox, pod_sandbox_stats, pod_sandbox_status,
    port_forward, remove_container, remove_pod_sandbox, reopen_container_log, run_pod_sandbox,
    runtime_config, start_container, status, stop_container, stop_pod_sandbox,
    update_container_resources, update_runtime_config, version,
};
use crate::runtime::Runtime;
use crate::streaming::StreamServer;

pub struct RuntimeHandler {
    runtime: Arc<Runtime>,
    /// Mints the URLs Exec, Attach and PortForward return.
    streams: Arc<StreamServer>,
}

impl RuntimeHandler {
    pub fn new(runtime: Arc<Runtime>, streams: Arc<StreamServer>) -> Self {
        RuntimeHandler { runtime, streams }
    }
}

/// The boxed server stream every streaming call returns.
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for RuntimeHandler {
    type GetContainerEventsStream = Streamed<cri::ContainerEventResponse>;
    type StreamPodSandboxesStream = Streamed<cri::StreamPodSandboxesResponse>;
    type StreamContainersStream = Streamed<cri::StreamContainersResponse>;
    type StreamContainerStatsStream = Streamed<cri::StreamContainerStatsResponse>;
    type StreamPodSandboxStatsStream = Streamed<cri::StreamPodSandboxStatsResponse>;
    type StreamPodSandboxMetricsStream = Streamed<cri::StreamPodSandboxMetricsResponse>;

    async fn version(
        &self,
        request: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        logged(
            "Version",
            request,
            |r| async move { Ok(version::version(r)) },
        )
        .await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        logged("RunPodSandbox", request, |r| async move {
            run_pod_sandbox::run_pod_sandbox(&self.runtime, r).await
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        logged("StopPodSandbox", request, |r| async move {
            stop_pod_sandbox::stop_pod_sandbox(&self.runtime, r).await
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        logged("RemovePodSandbox", request, |r| async move {
            remove_pod_sandbox::remove_pod_sandbox(&self.runtime, r).await
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        logged("PodSandboxStatus", request, |r| async move {
            pod_sandbox_status::pod_sandbox_status(&self.runtime, r)
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        logged("ListPodSandbox", request, |r| async move {
            Ok(list_pod_sandbox::list_pod_sandbox(&self.runtime, r))
        })
        .await
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        logged("CreateContainer", request, |r| async move {
            create_container::create_container(&self.runtime, r).await
        })
        .await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        logged("StartContainer", request, |r| async move {
            start_container::start_container(&self.runtime, r).await
        })
        .await
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        logged("StopContainer", request, |r| async move {
            stop_container::stop_container(&self.runtime, r).await
        })
        .await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        logged("RemoveContainer", request, |r| async move {
            remove_container::remove_container(&self.runtime, r).await
        })
        .await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        logged("ListContainers", request, |r| async move {
            Ok(list_containers::list_containers(&self.runtime, r))
        })
        .await
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        logged("ContainerStatus", request, |r| async move {
            container_status::container_status(&self.runtime, r)
        })
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        logged("UpdateContainerResources", request, |r| async move {
            update_container_resources::update_container_resources(&self.runtime, r).await
        })
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        logged("ReopenContainerLog", request, |r| async move {
            reopen_container_log::reopen_container_log(&self.runtime, r).await
        })
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        logged("ExecSync", request, |r| async move {
            exec_sync::exec_sync(&self.runtime, r).await
        })
        .await
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        logged("Exec", request, |r| async move {
            exec::exec(&self.runtime, &self.streams, r)
        })
        .await
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        logged("Attach", request, |r| async move {
            attach::attach(&self.runtime, &self.streams, r)
        })
        .await
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        logged("PortForward", request, |r| async move {
            port_forward::port_forward(&self.runtime, &self.streams, r)
        })
        .await
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        logged("ContainerStats", request, |r| async move {
            container_stats::container_stats(&self.runtime, r)
        })
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        logged("ListContainerStats", request, |r| async move {
            Ok(container_stats::list_container_stats(&self.runtime, r))
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        logged("PodSandboxStats", request, |r| async move {
            pod_sandbox_stats::pod_sandbox_stats(&self.runtime, r)
        })
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        logged("ListPodSandboxStats", request, |r| async move {
            Ok(pod_sandbox_stats::list_pod_sandbox_stats(&self.runtime, r))
        })
        .await
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        logged("UpdateRuntimeConfig", request, |r| async move {
            Ok(update_runtime_config::update_runtime_config(
                &self.runtime,
                r,
            ))
        })
        .await
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        logged("Status", request, |r| async move {
            Ok(status::status(&self.runtime, r))
        })
        .await
    }

    async fn checkpoint_container(
        &self,
        request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        logged("CheckpointContainer", request, |_| async {
            Err(not_implemented("CheckpointContainer"))
        })
        .await
    }

    async fn get_container_events(
        &self,
        request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        logged("GetContainerEvents", request, |_| async move {
            Ok(
                Box::pin(get_container_events::get_container_events(&self.runtime))
                    as Self::GetContainerEventsStream,
            )
        })
        .await
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        logged("ListMetricDescriptors", request, |_| async {
            Err(not_implemented("ListMetricDescriptors"))
        })
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        logged("ListPodSandboxMetrics", request, |_| async {
            Err(not_implemented("ListPodSandboxMetrics"))
        })
        .await
    }

    async fn runtime_config(
        &self,
        request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        logged("RuntimeConfig", request, |r| async move {
            Ok(runtime_config::runtime_config(&self.runtime, r))
        })
        .await
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        logged("UpdatePodSandboxResources", request, |_| async {
            Err(not_implemented("UpdatePodSandboxResources"))
        })
        .await
    }

    async fn stream_pod_sandboxes(
        &self,
        request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        logged("StreamPodSandboxes", request, |_| async {
            Err(not_implemented("StreamPodSandboxes"))
        })
        .await
    }

    async fn stream_containers(
        &self,
        request: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        logged("StreamContainers", request, |_| async {
            Err(not_implemented("StreamContainers"))
        })
        .await
    }

    async fn stream_container_stats(
        &self,
        request: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        logged("StreamContainerStats", request, |_| async {
            Err(not_implemented("StreamContainerStats"))
        })
        .await
    }

    async fn stream_pod_sandbox_stats(
        &self,
        request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        logged("StreamPodSandboxStats", request, |_| async {
            Err(not_implemented("StreamPodSandboxStats"))
        })
        .await
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        logged("StreamPodSandboxMetrics", request, |_| async {
            Err(not_implemented("StreamPodSandboxMetrics"))
        })
        .await
    }
}
