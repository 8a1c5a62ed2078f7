//! hoard's gRPC services (`proto/hoard/v1`), generated at build time.
//! Conversions to hoard-core types live with their users in hoard-cluster.

pub mod v1 {
    tonic::include_proto!("hoard.v1");
}
