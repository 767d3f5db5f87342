//! asoc-proto's integration tests, one binary: the codecs, connection, node,
//! discovery, policy and key rules against the specs, on virtual clocks.
//! The counting-allocator checks (`zero_copy.rs`, `discovery_flood.rs`) are
//! binaries of their own: they measure the whole process's heap.

#[path = "../common/mod.rs"]
mod common;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../node_harness/mod.rs"]
mod node_harness;

mod codec_props;
mod connection;
mod connection_props;
mod dial;
mod discovery;
mod discovery_v2;
mod keys;
mod node;
mod node_v2;
mod policy;
mod replay;
mod rotation;
mod rotation_props;
mod rotation_vectors;
mod sans_io_rules;
mod v2_attacks;
mod v2_vectors;
mod vectors;
