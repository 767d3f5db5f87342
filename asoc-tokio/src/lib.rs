//! `asoc-tokio`: placeholder crate in the workspace layout of DESIGN.md; its own issue fills it.
//!
//! Until then it only re-exports the protocol core so the dependency direction
//! (`asoc-proto` <- adapters <- `conformance` <- `asoc-cli`) is already fixed.

pub use asoc_proto;
