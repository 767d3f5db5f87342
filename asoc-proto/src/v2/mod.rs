//! ASoc v2 (WIRE-v2.md): the same API key as v1, a Noise `NNpsk0`
//! handshake and AEAD on every frame.
//!
//! | module | owns |
//! | --- | --- |
//! | [`suite`] | the two cipher suites, the set a server accepts, the wire versions |
//! | [`keys`] | the per-key PSK and discovery key (HKDF-SHA256 of the API key) |
//! | [`noise`] | HELLO2 and ACCEPT2: `snow` handshake states fed from the seeded RNG |
//! | [`seal`] | sealing and opening transport frames in place with `ring` |
//!
//! Everything here is pure computation; [`crate::connection`] and
//! [`crate::handshake`] decide when it runs.

pub mod keys;
pub mod noise;
pub mod seal;
pub mod suite;

pub use keys::{derive_discovery_key, derive_psk, V2Key};
pub use suite::{Suite, SuiteSet, WireVersion};
