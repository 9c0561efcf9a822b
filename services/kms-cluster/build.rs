//! Generates the tonic client and server code for `proto/cluster.proto` (at the repository root)
//! with a vendored `protoc`, so no system protobuf compiler is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");
    let proto = proto_dir.join("cluster.proto");
    println!("cargo:rerun-if-changed={}", proto.display());

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Maps as BTreeMap: their entries are then encoded in key order, so the same message
    // always gives the same bytes (stored log entries, the golden test).
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_with_config(config, &[proto], &[proto_dir])?;
    Ok(())
}
