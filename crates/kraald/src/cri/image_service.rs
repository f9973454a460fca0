//! Routes the ImageService calls to their files. Store calls that touch the disk run on the
//! blocking pool so a slow disk never stalls the gRPC workers. Every call goes through
//! `call_log::logged`, which logs a failure once.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;

use kraal_api::runtime::v1::image_service_server::ImageService;
use kraal_api::runtime::v1::{
    ImageFsInfoRequest, ImageFsInfoResponse, ImageStatusRequest, ImageStatusResponse,
    ListImagesRequest, ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, StreamImagesRequest, StreamImagesResponse,
};
use kraal_image::ImageStore;
use tonic::{Request, Response, Status};

use super::call_log::logged;
use super::{image_fs_info, image_status, list_images, pull_image, remove_image, stream_images};

type ImageBatches = Pin<Box<dyn Stream<Item = Result<StreamImagesResponse, Status>> + Send>>;

/// Who uses an image (a container id), for RemoveImage's in-use refusal.
pub type InUse = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

pub struct ImageHandler {
    store: Arc<ImageStore>,
    in_use: InUse,
}

impl ImageHandler {
    pub fn new(store: Arc<ImageStore>, in_use: InUse) -> Self {
        ImageHandler { store, in_use }
    }

    async fn blocking<T, F>(&self, call: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&ImageStore) -> Result<T, Status> + Send + 'static,
    {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || call(&store)).await {
            Ok(result) => result,
            Err(err) => Err(Status::internal(format!("image store task failed: {err}"))),
        }
    }
}

#[tonic::async_trait]
impl ImageService for ImageHandler {
    type StreamImagesStream = ImageBatches;

    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        logged("ListImages", request, |r| {
            self.blocking(move |store| list_images::list_images(store, r))
        })
        .await
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        logged("ImageStatus", request, |r| {
            self.blocking(move |store| image_status::image_status(store, r))
        })
        .await
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        logged("PullImage", request, |r| {
            pull_image::pull_image(&self.store, r)
        })
        .await
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let in_use = self.in_use.clone();
        logged("RemoveImage", request, |r| {
            self.blocking(move |store| remove_image::remove_image(store, r, &*in_use))
        })
        .await
    }

    async fn image_fs_info(
        &self,
        request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        logged("ImageFsInfo", request, |r| {
            self.blocking(move |store| image_fs_info::image_fs_info(store, r))
        })
        .await
    }

    async fn stream_images(
        &self,
        request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        logged("StreamImages", request, |r| async move {
            let batches = self
                .blocking(move |store| stream_images::stream_images(store, r))
                .await?;
            let stream: ImageBatches = Box::pin(futures::stream::iter(batches.into_iter().map(Ok)));
            Ok(stream)
        })
        .await
    }
}
