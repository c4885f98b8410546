//! Compiles the public contract in `../proto` with a vendored `protoc`, so a bare machine
//! builds without a system protobuf compiler.

use std::path::PathBuf;

const PROTOS: &[&str] =
    &["todo/auth/v1/auth.proto", "todo/auth/internal/v1/session_events.proto", "todo/task/v1/task.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // tonic-prost-build 0.14 prints no rerun-if-changed lines for the inputs: without these
    // every build would regenerate (and recompile) the contract.
    println!("cargo:rerun-if-changed=build.rs");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_root.join(proto).display());
    }

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    let includes = vec![proto_root.clone(), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("todo_descriptor.bin"))
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
