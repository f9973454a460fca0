//! `StreamImages`: the ListImages answer in batches, for nodes with many images.

use kraal_api::runtime::v1::{ListImagesRequest, StreamImagesRequest, StreamImagesResponse};
use kraal_image::ImageStore;
use tonic::Status;

use super::list_images::list_images;

/// Images per message: far below the 16 MiB message limit even with long tag lists.
const BATCH: usize = 100;

pub fn stream_images(
    store: &ImageStore,
    request: StreamImagesRequest,
) -> Result<Vec<StreamImagesResponse>, Status> {
    let all = list_images(
        store,
        ListImagesRequest {
            filter: request.filter,
        },
    )?;
    Ok(all
        .images
        .chunks(BATCH)
        .map(|batch| StreamImagesResponse {
            images: batch.to_vec(),
        })
        .collect())
}
