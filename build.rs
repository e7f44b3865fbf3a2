//! Compiles `proto/` with protox (no system protoc), then generates prost messages, tonic stubs
//! (client and server behind features) and pbjson serde impls from the same descriptors.

use std::path::PathBuf;

use prost::Message;

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "proto/whd/v1/subscriptions.proto",
        "proto/whd/v1/deliveries.proto",
    ];

    let descriptors = protox::compile(protos, ["proto"])?;
    let descriptor_bytes = descriptors.encode_to_vec();
    std::fs::write(out_dir.join("whd_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        // Well-known types come from pbjson-types so that they serialise to proto3 JSON too.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .client_mod_attribute("whd.v1", "#[cfg(feature = \"client\")]")
        .server_mod_attribute("whd.v1", "#[cfg(feature = \"server\")]")
        .compile_fds(descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .build(&[".whd.v1"])?;

    // prost does not track its inputs itself.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
