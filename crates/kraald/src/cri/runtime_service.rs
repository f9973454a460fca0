//! Routes the RuntimeService calls to their files. Calls whose work has not landed yet
//! answer `Unimplemented` naming the call, as kubelet and crictl expect of a runtime that
//! lacks a feature.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kraal_api::runtime::v1 as cri;
use kraal_api::runtime::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

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
        Ok(Response::new(version::version(request.into_inner())))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        run_pod_sandbox::run_pod_sandbox(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        stop_pod_sandbox::stop_pod_sandbox(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        remove_pod_sandbox::remove_pod_sandbox(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        pod_sandbox_status::pod_sandbox_status(&self.runtime, request.into_inner())
            .map(Response::new)
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        Ok(Response::new(list_pod_sandbox::list_pod_sandbox(
            &self.runtime,
            request.into_inner(),
        )))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        create_container::create_container(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        start_container::start_container(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        stop_container::stop_container(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        remove_container::remove_container(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        Ok(Response::new(list_containers::list_containers(
            &self.runtime,
            request.into_inner(),
        )))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        container_status::container_status(&self.runtime, request.into_inner()).map(Response::new)
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        update_container_resources::update_container_resources(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        reopen_container_log::reopen_container_log(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        exec_sync::exec_sync(&self.runtime, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        exec::exec(&self.runtime, &self.streams, request.into_inner()).map(Response::new)
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        attach::attach(&self.runtime, &self.streams, request.into_inner()).map(Response::new)
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        port_forward::port_forward(&self.runtime, &self.streams, request.into_inner())
            .map(Response::new)
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        container_stats::container_stats(&self.runtime, request.into_inner()).map(Response::new)
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        Ok(Response::new(container_stats::list_container_stats(
            &self.runtime,
            request.into_inner(),
        )))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        pod_sandbox_stats::pod_sandbox_stats(&self.runtime, request.into_inner()).map(Response::new)
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        Ok(Response::new(pod_sandbox_stats::list_pod_sandbox_stats(
            &self.runtime,
            request.into_inner(),
        )))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        Ok(Response::new(update_runtime_config::update_runtime_config(
            &self.runtime,
            request.into_inner(),
        )))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        Ok(Response::new(status::status(
            &self.runtime.config,
            request.into_inner(),
        )))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(not_implemented("CheckpointContainer"))
    }

    async fn get_container_events(
        &self,
        _request: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Ok(Response::new(Box::pin(
            get_container_events::get_container_events(&self.runtime),
        )))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(not_implemented("ListMetricDescriptors"))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(not_implemented("ListPodSandboxMetrics"))
    }

    async fn runtime_config(
        &self,
        request: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(runtime_config::runtime_config(
            &self.runtime.config,
            request.into_inner(),
        )))
    }

    async fn update_pod_sandbox_resources(
        &self,
        _request: Request<cri::UpdatePodSandboxResourcesRequest>,
    ) -> Result<Response<cri::UpdatePodSandboxResourcesResponse>, Status> {
        Err(not_implemented("UpdatePodSandboxResources"))
    }

    async fn stream_pod_sandboxes(
        &self,
        _request: Request<cri::StreamPodSandboxesRequest>,
    ) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        Err(not_implemented("StreamPodSandboxes"))
    }

    async fn stream_containers(
        &self,
        _request: Request<cri::StreamContainersRequest>,
    ) -> Result<Response<Self::StreamContainersStream>, Status> {
        Err(not_implemented("StreamContainers"))
    }

    async fn stream_container_stats(
        &self,
        _request: Request<cri::StreamContainerStatsRequest>,
    ) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        Err(not_implemented("StreamContainerStats"))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        _request: Request<cri::StreamPodSandboxStatsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        Err(not_implemented("StreamPodSandboxStats"))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: Request<cri::StreamPodSandboxMetricsRequest>,
    ) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        Err(not_implemented("StreamPodSandboxMetrics"))
    }
}
