//! `RemoveImage`: by id or digest the whole image, by tag just that tag. Idempotent.

use kraal_api::runtime::v1::{RemoveImageRequest, RemoveImageResponse};
use kraal_image::ImageStore;
use tonic::Status;

use super::error::image_error;
use super::images::requested_image;

pub fn remove_image(
    store: &ImageStore,
    request: RemoveImageRequest,
    in_use: &dyn Fn(&str) -> Option<String>,
) -> Result<RemoveImageResponse, Status> {
    let spec = requested_image("RemoveImage", request.image.as_ref())?;
    store.remove(spec, in_use).map_err(image_error)?;
    tracing::info!(image = %spec, "removed image");
    Ok(RemoveImageResponse {})
}
