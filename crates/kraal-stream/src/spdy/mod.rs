//! SPDY/3.1, the server side, as far as the Kubernetes streaming protocols need it: every
//! frame type is parsed, streams are opened by the client only.
//!
//! Public so the frame parser can be fuzzed and reused; kraald does not need it.

pub(crate) mod exec;
pub mod frame;
pub mod headers;
pub(crate) mod portforward;
pub(crate) mod session;
pub mod zlib;
