//! `ImageStatus`: one image, or no image (not an error: kubelet asks before every pull).

use std::collections::HashMap;

use kraal_api::runtime::v1::{ImageStatusRequest, ImageStatusResponse};
use kraal_image::ImageStore;
use tonic::Status;

use super::error::image_error;
use super::images::{requested_image, to_cri};

pub fn image_status(
    store: &ImageStore,
    request: ImageStatusRequest,
) -> Result<ImageStatusResponse, Status> {
    let spec = requested_image("ImageStatus", request.image.as_ref())?;
    let Some(image) = store.get(spec).map_err(image_error)? else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if request.verbose {
        let detail = serde_json::json!({
            "id": image.id,
            "manifestDigest": image.manifest_digest,
            "layers": image.layers.iter().map(|layer| serde_json::json!({
                "digest": layer.digest,
                "diffID": layer.diff_id,
                "size": layer.size,
                "mediaType": layer.media_type,
            })).collect::<Vec<_>>(),
            "layerDirs": store.layer_dirs(&image),
            "pulledAtUnixNanos": image.pulled_at_unix_nanos,
            "imageSpec": image.config,
        });
        info.insert("info".to_string(), detail.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri(&image)),
        info,
    })
}
