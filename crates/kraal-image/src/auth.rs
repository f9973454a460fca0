//! Registry credentials, as kubelet hands them over with each pull.
//!
//! They are used for the requested registry and passed to its mirrors too (a mirror of
//! `docker.io` is expected to accept Docker Hub credentials, as containerd assumes).
//! `Debug` never prints a secret, so a credential can be logged by accident safely.

use std::fmt;

use oci_client::secrets::RegistryAuth;

/// How to authenticate to a registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials; public images, or registries that issue anonymous tokens.
    #[default]
    Anonymous,
    /// Username and password, sent to the token service (or as HTTP Basic when the
    /// registry asks for Basic).
    Basic { username: String, password: String },
    /// A ready-made bearer token (CRI `registry_token`/`identity_token`).
    Bearer(String),
}

impl Credentials {
    pub(crate) fn to_registry_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }

    /// `anonymous`, `basic(user)` or `bearer`: safe to log.
    pub fn describe(&self) -> String {
        match self {
            Credentials::Anonymous => "anonymous".into(),
            Credentials::Basic { username, .. } => format!("basic({username})"),
            Credentials::Bearer(_) => "bearer".into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Bearer(_) => f.debug_tuple("Bearer").field(&"<redacted>").finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_to_registry_auth() {
        assert_eq!(
            Credentials::Anonymous.to_registry_auth(),
            RegistryAuth::Anonymous
        );
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(
            basic.to_registry_auth(),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        assert_eq!(
            Credentials::Bearer("t".into()).to_registry_auth(),
            RegistryAuth::Bearer("t".into())
        );
    }

    #[test]
    fn debug_and_describe_hide_secrets() {
        let basic = Credentials::Basic {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        let bearer = Credentials::Bearer("tok-secret".into());
        for text in [
            format!("{basic:?}"),
            basic.describe(),
            format!("{bearer:?}"),
            bearer.describe(),
        ] {
            assert!(
                !text.contains("hunter2") && !text.contains("tok-secret"),
                "{text}"
            );
        }
        assert!(format!("{basic:?}").contains("alice"));
    }
}
