//! Generates prost messages plus tonic clients and servers from kraal's `.proto` files:
//! the CRI `runtime.v1` (`proto/runtime/v1/api.proto`) and kraal's own admin API
//! `kraal.v1` (`proto/kraal/v1/admin.proto`). The protos are parsed by `protox` (pure
//! Rust), so no system `protoc` is needed.

use std::error::Error;
use std::path::PathBuf;

/// Every `.proto` compiled, relative to `proto/`.
const PROTOS: [&str; 2] = ["runtime/v1/api.proto", "kraal/v1/admin.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            proto_root.join(proto).display()
        );
    }

    let descriptors = protox::compile(PROTOS, [&proto_root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
