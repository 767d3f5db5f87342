//! The keys v2 derives from an API key (WIRE-v2.md §1): HKDF-SHA256 with
//! the key's bytes as input keying material, no salt, and a label per use.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::auth::ApiKey;

const PSK_INFO: &[u8] = b"asoc/2 psk";
const DISCOVERY_INFO: &[u8] = b"asoc/2 discovery";

/// A 32-byte key derived from an API key; wiped when dropped.
pub type V2Key = Zeroizing<[u8; 32]>;

fn derive(key: &ApiKey, info: &[u8]) -> V2Key {
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 8160-byte maximum, so expand
    // cannot fail; the fallback keeps the crate free of panics anyway.
    if Hkdf::<Sha256>::new(None, key.expose_secret())
        .expand(info, out.as_mut())
        .is_err()
    {
        out.as_mut().fill(0);
    }
    out
}

/// The Noise PSK of `key`: HKDF info `asoc/2 psk`.
#[must_use]
pub fn derive_psk(key: &ApiKey) -> V2Key {
    derive(key, PSK_INFO)
}

/// The discovery MAC key of `key`: HKDF info `asoc/2 discovery`.
#[must_use]
pub fn derive_discovery_key(key: &ApiKey) -> V2Key {
    derive(key, DISCOVERY_INFO)
}
