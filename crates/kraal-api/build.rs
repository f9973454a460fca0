//! Generates the CRI `runtime.v1` messages, clients and servers from
//! `proto/runtime/v1/api.proto`. The proto is parsed by `protox` (pure Rust),
//! so no system `protoc` is needed.

use std::error::Error;
use std::path::PathBuf;

const PROTO: &str = "runtime/v1/api.proto";

fn main() -> Result<(), Box<dyn Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!(
        "cargo:rerun-if-changed={}",
        proto_root.join(PROTO).display()
    );

    let descriptors = protox::compile([PROTO], [&proto_root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
