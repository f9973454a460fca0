//! `ListImages`: every image, or the one the filter names.

use kraal_api::runtime::v1::{ListImagesRequest, ListImagesResponse};
use kraal_image::ImageStore;
use tonic::Status;

use super::error::image_error;
use super::images::to_cri;

pub fn list_images(
    store: &ImageStore,
    request: ListImagesRequest,
) -> Result<ListImagesResponse, Status> {
    let wanted = request
        .filter
        .and_then(|filter| filter.image)
        .map(|spec| spec.image)
        .filter(|image| !image.trim().is_empty());
    let images = match wanted {
        // A filter that is not even a valid reference matches nothing; it is not an error.
        Some(spec) => store.get(spec.trim()).ok().flatten().into_iter().collect(),
        None => store.list().map_err(image_error)?,
    };
    Ok(ListImagesResponse {
        images: images.iter().map(to_cri).collect(),
    })
}
