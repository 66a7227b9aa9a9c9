//! The gRPC contract of tillstream: generated client and server code for
//! `tillstream.user.v1` and `tillstream.order.v1` (see `shared/API.md`).

pub mod user {
    pub mod v1 {
        tonic::include_proto!("tillstream.user.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("tillstream.order.v1");
    }
}

/// Encoded `FileDescriptorSet` of every tillstream proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tillstream_descriptor.bin"));
