//! One module per command.

pub(crate) mod bench;
pub(crate) mod conformance;
pub(crate) mod demo;
pub(crate) mod derive_key;
pub(crate) mod discover;
pub(crate) mod keygen;
pub(crate) mod listen;
pub(crate) mod rotate_key;
pub(crate) mod send;
