//! Conversions between kraal-image's records and CRI's `Image`, shared by the image calls.

use kraal_api::runtime::v1 as cri;

/// CRI reports the image's USER as a uid when it is numeric (`1000`, `1000:1000`) and as a
/// name otherwise; kubelet's runAsNonRoot check reads these two fields.
pub fn user_fields(user: Option<&str>) -> (Option<cri::Int64Value>, String) {
    let Some(user) = user.filter(|user| !user.is_empty()) else {
        return (None, String::new());
    };
    let name = user.split(':').next().unwrap_or(user);
    match name.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

pub fn to_cri(image: &kraal_image::Image) -> cri::Image {
    let (uid, username) = user_fields(image.user().as_deref());
    cri::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

/// The image named by a request, or an `InvalidArgument` saying that it was left empty.
pub fn requested_image<'a>(
    call: &str,
    spec: Option<&'a cri::ImageSpec>,
) -> Result<&'a str, tonic::Status> {
    match spec.map(|spec| spec.image.trim()) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(super::error::missing(
            call,
            "image.image",
            "an image reference (registry/repository:tag or @sha256:digest) or an image id",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_into_uid_or_name() {
        assert_eq!(user_fields(None), (None, String::new()));
        assert_eq!(user_fields(Some("")), (None, String::new()));
        assert_eq!(
            user_fields(Some("1000")),
            (Some(cri::Int64Value { value: 1000 }), String::new())
        );
        assert_eq!(
            user_fields(Some("1000:2000")),
            (Some(cri::Int64Value { value: 1000 }), String::new())
        );
        assert_eq!(user_fields(Some("kraal")), (None, "kraal".to_string()));
        assert_eq!(
            user_fields(Some("kraal:staff")),
            (None, "kraal".to_string())
        );
    }
}
