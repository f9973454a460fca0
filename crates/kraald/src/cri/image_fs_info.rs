//! `ImageFsInfo`: how much the image store uses, for kubelet's image garbage collection.

use std::time::{SystemTime, UNIX_EPOCH};

use kraal_api::runtime::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use kraal_image::ImageStore;
use tonic::Status;

use super::error::image_error;

pub fn image_fs_info(
    store: &ImageStore,
    _request: ImageFsInfoRequest,
) -> Result<ImageFsInfoResponse, Status> {
    let usage = store.usage().map_err(image_error)?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let images = FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: usage.path.display().to_string(),
        }),
        used_bytes: Some(UInt64Value {
            value: usage.used_bytes,
        }),
        inodes_used: Some(UInt64Value {
            value: usage.inodes_used,
        }),
    };
    // Writable container layers come with containers; until then only the image fs exists,
    // and kubelet treats an empty container list as "not split from the image fs".
    Ok(ImageFsInfoResponse {
        image_filesystems: vec![images],
        container_filesystems: Vec::new(),
    })
}
