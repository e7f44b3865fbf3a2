//! The whd API (`whd.v1`): messages, enums and, behind the `client` and `server` features, the generated
//! tonic stubs. Every message also has proto3-JSON serde impls, used by the HTTP API and `-o json` output.

/// `whd.v1`: subscriptions, deliveries and the delivery event stream.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/whd.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/whd.v1.serde.rs"));
}

/// Encoded `FileDescriptorSet` of every file under `proto/`, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/whd_descriptor.bin"));
