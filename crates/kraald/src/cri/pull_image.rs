//! `PullImage`: fetch an image (with the credentials kubelet passes) into the local store.

use base64::Engine;
use kraal_api::runtime::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use kraal_image::{Credentials, ImageStore};
use tonic::Status;

use super::error::image_error;
use super::images::requested_image;

pub async fn pull_image(
    store: &ImageStore,
    request: PullImageRequest,
) -> Result<PullImageResponse, Status> {
    let reference = requested_image("PullImage", request.image.as_ref())?.to_string();
    let credentials = credentials(request.auth.as_ref())?;
    let image = store
        .pull(&reference, &credentials)
        .await
        .map_err(image_error)?;
    tracing::info!(%reference, id = %image.id, "pulled image");
    Ok(PullImageResponse {
        image_ref: image.id,
    })
}

/// kubelet fills `AuthConfig` from image pull secrets; these are the forms it uses.
fn credentials(auth: Option<&AuthConfig>) -> Result<Credentials, Status> {
    let Some(auth) = auth else {
        return Ok(Credentials::Anonymous);
    };
    if !auth.registry_token.is_empty() {
        return Ok(Credentials::Bearer(auth.registry_token.clone()));
    }
    if !auth.username.is_empty() || !auth.password.is_empty() {
        return Ok(Credentials::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        });
    }
    if !auth.auth.is_empty() {
        return decode_auth(&auth.auth);
    }
    if !auth.identity_token.is_empty() {
        return Err(Status::unimplemented(
            "PullImage: auth.identity_token (an OAuth2 refresh token) is not supported; \
             pass username and password, auth, or registry_token",
        ));
    }
    Ok(Credentials::Anonymous)
}

/// `auth` is base64 of `username:password`, as in a docker config.json.
fn decode_auth(encoded: &str) -> Result<Credentials, Status> {
    let invalid = || {
        Status::invalid_argument(
            "PullImage: auth.auth is not valid; expected base64 of \"username:password\"",
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (username, password) = text.split_once(':').ok_or_else(invalid)?;
    Ok(Credentials::Basic {
        username: username.to_string(),
        password: password.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> AuthConfig {
        AuthConfig::default()
    }

    #[test]
    fn no_auth_is_anonymous() {
        assert!(matches!(credentials(None), Ok(Credentials::Anonymous)));
        assert!(matches!(
            credentials(Some(&auth())),
            Ok(Credentials::Anonymous)
        ));
    }

    #[test]
    fn username_and_password_are_basic() {
        let given = AuthConfig {
            username: "kraal".into(),
            password: "secret".into(),
            ..auth()
        };
        match credentials(Some(&given)) {
            Ok(Credentials::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.as_str()), ("kraal", "secret"));
            }
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    #[test]
    fn auth_field_is_decoded() {
        let given = AuthConfig {
            auth: "a3JhYWw6czNjcjN0Om1vcmU=".into(), // kraal:s3cr3t:more
            ..auth()
        };
        match credentials(Some(&given)) {
            Ok(Credentials::Basic { username, password }) => {
                assert_eq!(
                    (username.as_str(), password.as_str()),
                    ("kraal", "s3cr3t:more")
                );
            }
            other => panic!("expected basic credentials, got {other:?}"),
        }
    }

    #[test]
    fn bad_auth_field_is_invalid_argument() {
        for bad in ["not base64!", "bm9jb2xvbg=="] {
            let given = AuthConfig {
                auth: bad.into(),
                ..auth()
            };
            let status = credentials(Some(&given)).expect_err("must be refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(status.message().contains("username:password"));
        }
    }

    #[test]
    fn registry_token_is_bearer() {
        let given = AuthConfig {
            registry_token: "tok".into(),
            ..auth()
        };
        assert!(matches!(credentials(Some(&given)), Ok(Credentials::Bearer(t)) if t == "tok"));
    }
}
