//! Clients for the CRI streaming protocols, for tests only: raw HTTP/1.1 upgrades, SPDY/3.1
//! (remotecommand and portforward.k8s.io streams) and WebSocket (RFC 6455). Written from the
//! protocol specs, byte by byte, and kept out of `kraal-stream` so the server is never
//! tested against its own code. Used by kraal-stream's tests and the end-to-end tests.
//!
//! Test code: it panics on anything unexpected instead of returning errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod remotecommand;
pub mod spdy_client;
pub mod ws_client;
