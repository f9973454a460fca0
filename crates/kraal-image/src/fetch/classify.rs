//! What an endpoint's failure means: try the next endpoint, and what to tell the user
//! when none worked.

use std::error::Error as StdError;
use std::io;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::error::ErrorKind;

/// The kind of failure, which decides the final error's [`ErrorKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// Connection refused/reset, DNS, TLS, timeouts, 5xx, 429.
    Unreachable,
    /// Manifest, blob or repository unknown (404).
    NotFound,
    /// Credentials missing or rejected (401, 403, token service refused).
    Auth,
    /// Content that does not match its digest or declared size.
    Corrupt,
    /// Anything else (protocol violations, unexpected status codes).
    Other,
}

/// One endpoint's failure, with a short human description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) class: FailureClass,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
        }
    }
}

/// Longest excerpt of a server's response body put into a message.
const MAX_BODY_EXCERPT: usize = 200;

/// Classifies an oci-client error. `anonymous` tells whether we had credentials, to
/// say "none given" rather than "rejected" on a 401.
pub(crate) fn classify(err: &OciDistributionError, anonymous: bool) -> Failure {
    use FailureClass::*;
    let unauthorized = || {
        if anonymous {
            Failure::new(
                Auth,
                "authentication required (HTTP 401) and no credentials were given",
            )
        } else {
            Failure::new(Auth, "credentials rejected (HTTP 401)")
        }
    };
    match err {
        OciDistributionError::RequestError(e) => {
            if e.is_timeout() {
                Failure::new(Unreachable, "timed out")
            } else {
                Failure::new(Unreachable, describe_chain(e))
            }
        }
        OciDistributionError::IoError(e) => Failure::new(Unreachable, describe_io(e)),
        OciDistributionError::UnauthorizedError { .. } => unauthorized(),
        OciDistributionError::AuthenticationFailure(reason) => Failure::new(
            Auth,
            format!(
                "the token service refused {}: {}",
                if anonymous {
                    "anonymous access"
                } else {
                    "the credentials"
                },
                excerpt(reason)
            ),
        ),
        OciDistributionError::RegistryError { envelope, .. } => {
            let Some(first) = envelope.errors.first() else {
                return Failure::new(Other, "registry error without details");
            };
            let text = if first.message.is_empty() {
                format!("{:?}", first.code)
            } else {
                excerpt(&first.message)
            };
            match first.code {
                OciErrorCode::ManifestUnknown
                | OciErrorCode::NameUnknown
                | OciErrorCode::BlobUnknown
                | OciErrorCode::ManifestBlobUnknown
                | OciErrorCode::NotFound => Failure::new(NotFound, text),
                OciErrorCode::Unauthorized => {
                    if anonymous {
                        Failure::new(Auth, format!("{text} (no credentials were given)"))
                    } else {
                        Failure::new(Auth, format!("{text} (credentials rejected)"))
                    }
                }
                OciErrorCode::Denied => Failure::new(Auth, format!("access denied: {text}")),
                OciErrorCode::Toomanyrequests => {
                    Failure::new(Unreachable, format!("rate limited: {text}"))
                }
                _ => Failure::new(Other, text),
            }
        }
        OciDistributionError::ServerError { code, message, .. } => {
            let detail = excerpt(message);
            let text = if detail.is_empty() {
                format!("HTTP {code}")
            } else {
                format!("HTTP {code}: {detail}")
            };
            match code {
                404 => Failure::new(NotFound, text),
                401 => unauthorized(),
                403 => Failure::new(Auth, text),
                429 | 500..=599 => Failure::new(Unreachable, text),
                _ => Failure::new(Other, text),
            }
        }
        OciDistributionError::DigestError(e) => Failure::new(Corrupt, e.to_string()),
        other => Failure::new(Other, other.to_string()),
    }
}

/// The final error kind when no endpoint delivered, from `(is_mirror, class)` of each.
///
/// The registry itself has the last word when it answered: unknown → `NotFound`,
/// credentials → `Unauthenticated`, bad content → `DataLoss`. When it could not be
/// reached, the mirrors that answered decide if they all agree; otherwise `Unavailable`.
pub(crate) fn overall_kind(failures: &[(bool, FailureClass)]) -> ErrorKind {
    let verdict = |class: FailureClass| match class {
        FailureClass::NotFound => Some(ErrorKind::NotFound),
        FailureClass::Auth => Some(ErrorKind::Unauthenticated),
        FailureClass::Corrupt => Some(ErrorKind::DataLoss),
        FailureClass::Unreachable | FailureClass::Other => None,
    };
    if let Some(kind) = failures
        .iter()
        .rev()
        .find(|(mirror, _)| !mirror)
        .and_then(|(_, class)| verdict(*class))
    {
        return kind;
    }
    let answered: Vec<FailureClass> = failures
        .iter()
        .map(|(_, class)| *class)
        .filter(|class| *class != FailureClass::Unreachable)
        .collect();
    if answered.is_empty() {
        return ErrorKind::Unavailable;
    }
    if answered.iter().all(|c| *c == FailureClass::NotFound) {
        return ErrorKind::NotFound;
    }
    if answered.iter().all(|c| *c == FailureClass::Auth) {
        return ErrorKind::Unauthenticated;
    }
    if answered.contains(&FailureClass::Corrupt) {
        return ErrorKind::DataLoss;
    }
    ErrorKind::Unavailable
}

/// A short description of an I/O error, e.g. `connection refused`.
pub(crate) fn describe_io(e: &io::Error) -> String {
    describe_chain(e)
}

/// Walks an error's source chain: well-known socket errors get their short name,
/// anything else the chain's messages joined with `: ` (repeats dropped).
fn describe_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                io::ErrorKind::ConnectionReset => return "connection reset".into(),
                io::ErrorKind::TimedOut => return "timed out".into(),
                io::ErrorKind::HostUnreachable => return "host unreachable".into(),
                io::ErrorKind::NetworkUnreachable => return "network unreachable".into(),
                _ => {}
            }
        }
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    // reqwest's top message only repeats the URL; the causes say what happened.
    if parts.len() > 1 && parts[0].starts_with("error sending request") {
        parts.remove(0);
    }
    parts.join(": ")
}

fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn registry_error(code: OciErrorCode, message: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: message.into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://x/v2/".into(),
        }
    }

    fn server_error(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://x/v2/".into(),
            message: String::new(),
        }
    }

    #[test]
    fn classifies_registry_answers() {
        assert_eq!(
            classify(
                &registry_error(OciErrorCode::ManifestUnknown, "manifest unknown"),
                true
            ),
            Failure::new(NotFound, "manifest unknown")
        );
        assert_eq!(
            classify(&registry_error(OciErrorCode::NameUnknown, ""), true).class,
            NotFound
        );
        assert_eq!(
            classify(&registry_error(OciErrorCode::Denied, "no"), false).class,
            Auth
        );
        assert_eq!(
            classify(
                &registry_error(OciErrorCode::Toomanyrequests, "slow"),
                false
            )
            .class,
            Unreachable
        );
        assert_eq!(
            classify(&server_error(404), true),
            Failure::new(NotFound, "HTTP 404")
        );
        assert_eq!(classify(&server_error(503), true).class, Unreachable);
        assert_eq!(classify(&server_error(418), true).class, Other);
        let unauthorized = OciDistributionError::UnauthorizedError { url: "u".into() };
        assert!(
            classify(&unauthorized, true)
                .message
                .contains("no credentials were given")
        );
        assert!(
            classify(&unauthorized, false)
                .message
                .contains("credentials rejected")
        );
        let token = OciDistributionError::AuthenticationFailure("bad password".into());
        assert_eq!(classify(&token, false).class, Auth);
        assert!(classify(&token, false).message.contains("bad password"));
    }

    #[test]
    fn describes_socket_errors_briefly() {
        let refused = io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        );
        assert_eq!(describe_io(&refused), "connection refused");
        let other = io::Error::other("tls handshake eof");
        assert_eq!(describe_io(&other), "tls handshake eof");
    }

    #[test]
    fn overall_kind_rules() {
        // The registry itself answered: its word counts.
        assert_eq!(
            overall_kind(&[(true, Unreachable), (false, NotFound)]),
            ErrorKind::NotFound
        );
        assert_eq!(
            overall_kind(&[(true, NotFound), (false, Auth)]),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            overall_kind(&[(true, Auth), (false, NotFound)]),
            ErrorKind::NotFound
        );
        assert_eq!(overall_kind(&[(false, Corrupt)]), ErrorKind::DataLoss);
        // Nobody reachable.
        assert_eq!(
            overall_kind(&[(true, Unreachable), (false, Unreachable)]),
            ErrorKind::Unavailable
        );
        assert_eq!(overall_kind(&[]), ErrorKind::Unavailable);
        // Registry unreachable: agreeing mirrors decide.
        assert_eq!(
            overall_kind(&[(true, NotFound), (true, NotFound), (false, Unreachable)]),
            ErrorKind::NotFound
        );
        assert_eq!(
            overall_kind(&[(true, Auth), (false, Unreachable)]),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            overall_kind(&[(true, Corrupt), (true, NotFound), (false, Unreachable)]),
            ErrorKind::DataLoss
        );
        assert_eq!(
            overall_kind(&[(true, NotFound), (true, Auth), (false, Unreachable)]),
            ErrorKind::Unavailable
        );
        assert_eq!(overall_kind(&[(false, Other)]), ErrorKind::Unavailable);
    }

    #[test]
    fn long_bodies_are_cut() {
        let long = "x".repeat(1000);
        let f = classify(
            &OciDistributionError::ServerError {
                code: 500,
                url: "u".into(),
                message: long,
            },
            true,
        );
        assert!(f.message.chars().count() < 220, "{}", f.message);
    }
}
