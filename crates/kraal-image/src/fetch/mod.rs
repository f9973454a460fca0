//! Talking to registries: one [`RegistrySession`] per pull tries the endpoints of the
//! image's registry in order (mirrors first, the registry itself last) and reports every
//! endpoint's own failure when none delivers.
//!
//! oci-client does the HTTP and token dance; we never trust what it or the registry says
//! about digests. Every manifest and blob is hashed here (see `crate::pull`).
//!
//! A fresh oci-client `Client` per pull and scheme: its credential store keeps the
//! first credentials it saw per registry forever, which would pin one pod's pull secret
//! (or a wrong one) for every later pull from the same registry.

mod classify;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tracing::{debug, warn};

use classify::classify;
pub(crate) use classify::{Failure, FailureClass, describe_io, overall_kind};

use crate::digest::{Hasher, sha256_of};
use crate::error::{EndpointFailure, ImageError};
use crate::manifest::ACCEPTED_MANIFEST_TYPES;
use crate::reference::{ImageReference, Target};
use crate::registry_config::{Endpoint, Scheme};

/// Give up connecting to an endpoint after this long and try the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A download that delivers nothing for this long is considered dead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Manifests and configs larger than this are refused (they are a few KB in practice).
pub(crate) const MAX_METADATA_BLOB: u64 = 16 * 1024 * 1024;
const USER_AGENT: &str = concat!("kraal/", env!("CARGO_PKG_VERSION"));

/// One endpoint attempt in progress. Boxed and explicitly `Send`: a generic async
/// closure over borrowed arguments would make the whole pull future non-`Send`
/// (higher-ranked lifetimes), which the daemon's gRPC handlers cannot await.
pub(crate) type Attempt<'f, T> = Pin<Box<dyn Future<Output = Result<T, StepError>> + Send + 'f>>;

/// How one endpoint attempt ended when it did not deliver.
#[derive(Debug)]
pub(crate) enum StepError {
    /// This endpoint failed; try the next.
    Endpoint(Failure),
    /// Stop the whole pull (the content itself is bad, or a local failure).
    Fatal(ImageError),
}

impl From<Failure> for StepError {
    fn from(f: Failure) -> Self {
        StepError::Endpoint(f)
    }
}

#[derive(Default)]
struct EndpointState {
    authenticated: bool,
    /// Set when the endpoint could not be reached; later requests of the pull skip it.
    unreachable: Option<String>,
}

/// The registry side of one pull.
pub(crate) struct RegistrySession {
    reference: ImageReference,
    endpoints: Vec<Endpoint>,
    auth: RegistryAuth,
    clients: Mutex<HashMap<Scheme, Client>>,
    state: Mutex<Vec<EndpointState>>,
}

impl RegistrySession {
    pub(crate) fn new(
        reference: ImageReference,
        endpoints: Vec<Endpoint>,
        auth: RegistryAuth,
    ) -> Self {
        let state = endpoints.iter().map(|_| EndpointState::default()).collect();
        RegistrySession {
            reference,
            endpoints,
            auth,
            clients: Mutex::new(HashMap::new()),
            state: Mutex::new(state),
        }
    }

    /// The image reference at `endpoint`: oci-client addresses a registry by the
    /// reference's registry part, so each endpoint gets its own reference.
    pub(crate) fn reference_at(&self, endpoint: &Endpoint, target: &Target) -> Reference {
        let repository = self.reference.repository.clone();
        match target {
            Target::Tag(tag) => Reference::with_tag(endpoint.host.clone(), repository, tag.clone()),
            Target::Digest(digest) => {
                Reference::with_digest(endpoint.host.clone(), repository, digest.clone())
            }
        }
    }

    fn client(&self, scheme: Scheme) -> Result<Client, Failure> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&scheme) {
            return Ok(client.clone());
        }
        let config = ClientConfig {
            protocol: match scheme {
                Scheme::Http => ClientProtocol::Http,
                Scheme::Https => ClientProtocol::Https,
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            // We pick the platform ourselves from the raw index.
            platform_resolver: None,
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| {
            Failure::new(
                FailureClass::Other,
                format!("cannot set up an HTTP client: {e}"),
            )
        })?;
        clients.insert(scheme, client.clone());
        Ok(client)
    }

    fn with_state<T>(&self, idx: usize, f: impl FnOnce(&mut EndpointState) -> T) -> Option<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.get_mut(idx).map(f)
    }

    /// Runs the registry's auth handshake once per endpoint and pull. Doing it
    /// explicitly (oci-client would do it lazily and swallow its errors) gives precise
    /// messages: connection refused, token request rejected, …
    async fn authenticate(
        &self,
        idx: usize,
        client: &Client,
        endpoint: &Endpoint,
    ) -> Result<(), Failure> {
        if self.with_state(idx, |s| s.authenticated) == Some(true) {
            return Ok(());
        }
        let reference = self.reference_at(endpoint, &self.reference.target);
        client
            .auth(&reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| classify(&e, self.anonymous()))?;
        self.with_state(idx, |s| s.authenticated = true);
        Ok(())
    }

    fn anonymous(&self) -> bool {
        self.auth == RegistryAuth::Anonymous
    }

    /// Endpoint indexes to try: `preferred` (the one that served the manifest) first,
    /// then the configured order.
    fn order(&self, preferred: Option<usize>) -> Vec<usize> {
        let mut order: Vec<usize> = preferred
            .into_iter()
            .filter(|p| *p < self.endpoints.len())
            .collect();
        order.extend((0..self.endpoints.len()).filter(|i| Some(*i) != preferred));
        order
    }

    /// Tries `op` on each endpoint until one succeeds. `what` names the object for the
    /// error message (`None`: the image's own manifest).
    pub(crate) async fn try_endpoints<'f, T>(
        &self,
        what: Option<&str>,
        preferred: Option<usize>,
        op: impl Fn(Client, Endpoint) -> Attempt<'f, T>,
    ) -> Result<(T, usize), ImageError> {
        let mut failures: Vec<(usize, Failure)> = Vec::new();
        for idx in self.order(preferred) {
            let endpoint = &self.endpoints[idx];
            if let Some(Some(earlier)) = self.with_state(idx, |s| s.unreachable.clone()) {
                failures.push((idx, Failure::new(FailureClass::Unreachable, earlier)));
                continue;
            }
            let attempt = async {
                let client = self.client(endpoint.scheme)?;
                self.authenticate(idx, &client, endpoint).await?;
                op(client, endpoint.clone()).await
            };
            match attempt.await {
                Ok(value) => {
                    debug!(endpoint = %endpoint.url(), what = what.unwrap_or("manifest"), "fetched");
                    return Ok((value, idx));
                }
                Err(StepError::Endpoint(failure)) => {
                    warn!(
                        reference = %self.reference,
                        endpoint = %endpoint.url(),
                        what = what.unwrap_or("manifest"),
                        error = %failure.message,
                        "endpoint failed, trying the next one"
                    );
                    if failure.class == FailureClass::Unreachable {
                        let message = failure.message.clone();
                        self.with_state(idx, |s| s.unreachable = Some(message));
                    }
                    failures.push((idx, failure));
                }
                Err(StepError::Fatal(err)) => return Err(err),
            }
        }
        let kind = overall_kind(
            &failures
                .iter()
                .map(|(idx, f)| (self.endpoints[*idx].is_mirror, f.class))
                .collect::<Vec<_>>(),
        );
        Err(ImageError::EndpointsFailed {
            reference: self.reference.to_string(),
            what: what.map(str::to_string),
            kind,
            attempts: failures
                .into_iter()
                .map(|(idx, f)| EndpointFailure {
                    endpoint: self.endpoints[idx].url(),
                    error: f.message,
                })
                .collect(),
        })
    }

    /// Fetches a manifest by tag or digest. By digest, the bytes must hash to it.
    pub(crate) async fn manifest(
        &self,
        target: &Target,
        what: Option<&str>,
        preferred: Option<usize>,
    ) -> Result<(Bytes, usize), ImageError> {
        self.try_endpoints(what, preferred, |client, endpoint| {
            Box::pin(async move {
                let reference = self.reference_at(&endpoint, target);
                let (bytes, _) = client
                    .pull_manifest_raw(&reference, &self.auth, ACCEPTED_MANIFEST_TYPES)
                    .await
                    .map_err(|e| classify(&e, self.anonymous()))?;
                if let Target::Digest(expected) = target {
                    let actual = sha256_of(&bytes);
                    if actual != *expected {
                        return Err(Failure::new(
                        FailureClass::Corrupt,
                        format!(
                            "manifest does not match its digest: expected {expected}, got {actual}"
                        ),
                    )
                    .into());
                    }
                }
                Ok(bytes)
            })
        })
        .await
    }

    /// Opens a blob download at one endpoint.
    pub(crate) async fn open_blob(
        &self,
        client: &Client,
        endpoint: &Endpoint,
        digest: &str,
    ) -> Result<SizedStream, Failure> {
        let reference = self.reference_at(endpoint, &Target::Digest(digest.to_string()));
        client
            .pull_blob_stream(&reference, digest)
            .await
            .map_err(|e| classify(&e, self.anonymous()))
    }

    /// Fetches a small blob (a config) whole, checking size and digest.
    pub(crate) async fn small_blob(
        &self,
        digest: &str,
        size: u64,
        what: &str,
        preferred: Option<usize>,
    ) -> Result<(Vec<u8>, usize), ImageError> {
        self.try_endpoints(Some(what), preferred, |client, endpoint| {
            Box::pin(async move {
                let mut stream = self.open_blob(&client, &endpoint, digest).await?;
                let mut data = Vec::new();
                let mut hasher = Hasher::default();
                while let Some(chunk) = stream.next().await {
                    let chunk = match chunk {
                        Ok(chunk) => chunk,
                        // oci-client's own check fired at the end; ours below says more.
                        Err(e) if is_digest_error(&e) => break,
                        Err(e) => {
                            return Err(Failure::new(
                                FailureClass::Unreachable,
                                format!("download interrupted: {}", describe_io(&e)),
                            )
                            .into());
                        }
                    };
                    hasher.update(&chunk);
                    if hasher.len() > size {
                        return Err(Failure::new(
                            FailureClass::Corrupt,
                            format!("sent more than the {size} bytes the manifest declares"),
                        )
                        .into());
                    }
                    data.extend_from_slice(&chunk);
                }
                check_size_and_digest(hasher, size, digest).map_err(StepError::from)?;
                Ok(data)
            })
        })
        .await
    }
}

/// True when a stream error is oci-client's digest verification failing.
pub(crate) fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        inner
            .downcast_ref::<oci_client::errors::DigestError>()
            .is_some()
    })
}

/// Compares what was received with what the manifest declared.
pub(crate) fn check_size_and_digest(
    hasher: Hasher,
    size: u64,
    digest: &str,
) -> Result<(), Failure> {
    let len = hasher.len();
    let actual = hasher.digest();
    if actual != digest {
        return Err(Failure::new(
            FailureClass::Corrupt,
            format!(
                "content does not match its digest: expected {digest}, got {actual} ({len} bytes)"
            ),
        ));
    }
    if len != size {
        return Err(Failure::new(
            FailureClass::Corrupt,
            format!("size is {len} bytes, the manifest declares {size}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::registry_config::upstream_endpoint;

    #[tokio::test]
    async fn every_endpoint_is_named_with_its_own_error() {
        // Port 1 on loopback: nothing listens there, so the connection is refused.
        let reference = ImageReference::parse("127.0.0.1:1/kraal-test/busybox").unwrap();
        let endpoints = vec![
            Endpoint {
                scheme: Scheme::Http,
                host: "127.0.0.2:1".into(),
                is_mirror: true,
            },
            upstream_endpoint("127.0.0.1:1"),
        ];
        let session = RegistrySession::new(reference.clone(), endpoints, RegistryAuth::Anonymous);
        let err = session
            .manifest(&reference.target, None, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert_eq!(
            err.to_string(),
            "pull 127.0.0.1:1/kraal-test/busybox:latest: no endpoint answered: \
             http://127.0.0.2:1 (connection refused), http://127.0.0.1:1 (connection refused)"
        );
    }

    #[test]
    fn endpoint_order_prefers_the_one_that_answered() {
        let reference = ImageReference::parse("busybox").unwrap();
        let endpoints = vec![
            Endpoint {
                scheme: Scheme::Https,
                host: "a".into(),
                is_mirror: true,
            },
            Endpoint {
                scheme: Scheme::Https,
                host: "b".into(),
                is_mirror: true,
            },
            upstream_endpoint("docker.io"),
        ];
        let session = RegistrySession::new(reference, endpoints, RegistryAuth::Anonymous);
        assert_eq!(session.order(None), vec![0, 1, 2]);
        assert_eq!(session.order(Some(1)), vec![1, 0, 2]);
        assert_eq!(session.order(Some(9)), vec![0, 1, 2]);
    }

    #[test]
    fn size_and_digest_checks() {
        let mut h = Hasher::default();
        h.update(b"abc");
        let good = sha256_of(b"abc");
        assert!(check_size_and_digest(h.clone(), 3, &good).is_ok());
        let f = check_size_and_digest(h.clone(), 4, &good).unwrap_err();
        assert_eq!(f.class, FailureClass::Corrupt);
        let other = sha256_of(b"xyz");
        let f = check_size_and_digest(h, 3, &other).unwrap_err();
        assert!(
            f.message.contains(&other) && f.message.contains(&good),
            "{}",
            f.message
        );
    }
}
