//! RFC-0002 layers 1–3: the community hash, API keys proven by truncated
//! HMAC-SHA256, and session tokens.
//!
//! Every MAC and hash comparison goes through [`ct_eq`], which runs in time
//! independent of the contents.

mod failure;
mod key;
mod mac;
mod sign;
pub mod strength;
mod token;

pub use failure::AuthFailure;
pub use key::{
    derive_cluster_key, generate_key_hex, ApiKey, KeyError, KeyId, KeyRing, CLUSTER_KEY_ITERATIONS,
    MIN_KEY_LEN,
};
pub use mac::{community_hash, ct_eq, hmac_sha256, truncated_mac};
pub use sign::{
    sign_announcement, sign_announcement_v2, sign_hello, verify_announcement,
    verify_announcement_v2, verify_hello,
};
pub use strength::{estimated_bits, MIN_KEY_BITS};
pub use token::SessionToken;
