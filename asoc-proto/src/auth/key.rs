//! API keys: strength policy, zeroization, generation, per-cluster
//! derivation, and the key ring used for rotation.

use core::fmt;
use core::time::Duration;
use std::time::Instant;

use rand_core::CryptoRngCore;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The shortest key accepted without opting into insecure mode (RFC-0002 §4.5).
pub const MIN_KEY_LEN: usize = 16;
/// PBKDF2 iterations for per-cluster keys (RFC-0002 §8.2).
pub const CLUSTER_KEY_ITERATIONS: u32 = 100_000;

/// Why a key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// RFC-0002 §4.5: a key MUST carry at least 128 bits; shorter keys need
    /// [`ApiKey::new_insecure`].
    #[error(
        "API key is {len} bytes; at least {MIN_KEY_LEN} bytes (128 bits) are required \
         (generate one with `asoc keygen`)"
    )]
    TooShort {
        /// Length of the refused key in bytes.
        len: usize,
    },
    /// An empty key authenticates nothing and is refused even in insecure mode.
    #[error("API key is empty")]
    Empty,
}

/// A pre-shared API key. The HMAC key is the key string's UTF-8 bytes exactly
/// as configured; a hex key is NOT decoded (WIRE.md §1).
///
/// The bytes are wiped when the key is dropped and never appear in `Debug`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct ApiKey {
    bytes: Vec<u8>,
}

impl ApiKey {
    /// A key from its configured string; refused below 16 bytes.
    pub fn new(key: &str) -> Result<Self, KeyError> {
        Self::from_bytes(key.as_bytes())
    }

    /// A key from raw bytes; refused below 16 bytes.
    pub fn from_bytes(key: &[u8]) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: key.len() });
        }
        Ok(Self {
            bytes: key.to_vec(),
        })
    }

    /// INSECURE: accepts a key shorter than 16 bytes, for development and for
    /// interoperating with test setups that use short keys. Never use it for
    /// a deployment: a short key can be brute-forced from one captured HELLO.
    pub fn new_insecure(key: &[u8]) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self {
            bytes: key.to_vec(),
        })
    }

    /// A fresh 256-bit key: 32 random bytes written as 64 lower-case hex
    /// characters, which are themselves the key bytes (what
    /// `secrets.token_hex(32)` gives).
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        let hex = generate_key_hex(rng);
        Self {
            bytes: hex.as_bytes().to_vec(),
        }
    }

    /// The key bytes used as the HMAC key. Handle with care: do not log them.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        &self.bytes
    }

    /// Key length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false for a constructed key; present for API symmetry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey(<redacted, {} bytes>)", self.bytes.len())
    }
}

/// 32 random bytes from `rng` as 64 lower-case hex characters.
pub fn generate_key_hex(rng: &mut impl CryptoRngCore) -> Zeroizing<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut raw = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(raw.as_mut());
    let mut out = Zeroizing::new(String::with_capacity(64));
    for b in raw.iter() {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from(*HEX.get(usize::from(nibble)).unwrap_or(&b'0')));
        }
    }
    out
}

/// RFC-0002 §8.2: PBKDF2-HMAC-SHA256(master key bytes, UTF-8 cluster name,
/// 100,000 iterations, 32 bytes). The raw 32 bytes are returned; written as
/// 64 hex characters they make a key string of the usual form.
#[must_use]
pub fn derive_cluster_key(master_key: &[u8], cluster: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
        master_key,
        cluster.as_bytes(),
        CLUSTER_KEY_ITERATIONS,
        out.as_mut(),
    );
    out
}

/// Identifies one key of a [`KeyRing`]: 0 for the first key, then one more
/// for every rotation. Events name the key that verified a message by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(clippy::exhaustive_structs)] // the position in the key ring is the whole id
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key#{}", self.0)
    }
}

#[derive(Clone, Debug)]
struct RetiredKey {
    id: KeyId,
    key: ApiKey,
    accepted_until: Instant,
}

/// The keys a node holds: one current key, used to sign, and any previous
/// keys, each still accepted for verification until its own deadline.
#[derive(Clone, Debug)]
pub struct KeyRing {
    current: ApiKey,
    current_id: KeyId,
    previous: Vec<RetiredKey>,
    /// A key accepted for verification before it signs: a rotation that
    /// was announced and is not active yet.
    staged: Option<(KeyId, ApiKey)>,
}

impl KeyRing {
    /// A ring holding only `key`, as [`KeyId`] 0.
    #[must_use]
    pub fn new(key: ApiKey) -> Self {
        Self {
            current: key,
            current_id: KeyId(0),
            previous: Vec::new(),
            staged: None,
        }
    }

    /// The id the next key added to the ring gets: one above every id it
    /// holds.
    fn next_id(&self) -> KeyId {
        let top = self
            .previous
            .iter()
            .map(|k| k.id)
            .chain(self.staged.as_ref().map(|(id, _)| *id))
            .fold(self.current_id, core::cmp::max);
        KeyId(top.0.wrapping_add(1))
    }

    /// Adds `key` as accepted for verification but not yet used to sign
    /// (a rotation announced ahead of its activation), replacing (and so
    /// wiping) a key staged earlier. Returns its id.
    pub fn stage(&mut self, key: ApiKey) -> KeyId {
        self.staged = None;
        let id = self.next_id();
        self.staged = Some((id, key));
        id
    }

    /// The staged key's id, if one waits for activation.
    #[must_use]
    pub fn staged(&self) -> Option<KeyId> {
        self.staged.as_ref().map(|(id, _)| *id)
    }

    /// Makes the staged key current; the key it replaces stays accepted
    /// until `old_until`. Returns the new current id, `None` when nothing
    /// was staged.
    pub fn activate_staged(&mut self, old_until: Instant) -> Option<KeyId> {
        let (id, key) = self.staged.take()?;
        let old = core::mem::replace(&mut self.current, key);
        let old_id = core::mem::replace(&mut self.current_id, id);
        self.previous.push(RetiredKey {
            id: old_id,
            key: old,
            accepted_until: old_until,
        });
        Some(id)
    }

    /// The id under which the ring holds `key` (current, staged or
    /// previous and not yet expired at `now`), compared in constant time.
    #[must_use]
    pub fn id_of(&self, now: Instant, key: &ApiKey) -> Option<KeyId> {
        self.find(now, |k| {
            super::mac::ct_eq(k.expose_secret(), key.expose_secret())
        })
    }

    /// The previous keys whose deadline has passed at `now`: the ones
    /// [`expire`](Self::expire) is about to drop.
    pub fn expiring(&self, now: Instant) -> impl Iterator<Item = (KeyId, &ApiKey)> + '_ {
        self.previous
            .iter()
            .filter(move |k| now >= k.accepted_until)
            .map(|k| (k.id, &k.key))
    }

    /// The earliest deadline of a previous key, if any.
    #[must_use]
    pub fn next_expiry(&self) -> Option<Instant> {
        self.previous.iter().map(|k| k.accepted_until).min()
    }

    /// Makes `key` current. The key it replaces is still accepted for
    /// `grace` after `now`. Returns the new key's id.
    pub fn rotate(&mut self, key: ApiKey, now: Instant, grace: Duration) -> KeyId {
        let old = core::mem::replace(&mut self.current, key);
        let old_id = self.current_id;
        self.current_id = self.next_id();
        self.previous.push(RetiredKey {
            id: old_id,
            key: old,
            accepted_until: crate::time::after(now, grace),
        });
        self.current_id
    }

    /// Drops previous keys whose deadline has passed.
    pub fn expire(&mut self, now: Instant) {
        self.previous.retain(|k| now < k.accepted_until);
    }

    /// The signing key and its id.
    #[must_use]
    pub fn current(&self) -> (KeyId, &ApiKey) {
        (self.current_id, &self.current)
    }

    /// Keys accepted for verification at `now`: current first, then a
    /// staged key, then previous keys within their deadline.
    pub fn accepted(&self, now: Instant) -> impl Iterator<Item = (KeyId, &ApiKey)> + '_ {
        core::iter::once((self.current_id, &self.current))
            .chain(self.staged.as_ref().map(|(id, k)| (*id, k)))
            .chain(
                self.previous
                    .iter()
                    .filter(move |k| now < k.accepted_until)
                    .map(|k| (k.id, &k.key)),
            )
    }

    /// The first accepted key under which `matches` holds, trying the current
    /// key first.
    pub fn find(&self, now: Instant, mut matches: impl FnMut(&ApiKey) -> bool) -> Option<KeyId> {
        self.accepted(now)
            .find(|(_, k)| matches(k))
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn short_keys_need_the_insecure_constructor() {
        assert_eq!(
            ApiKey::new("0123456789abcde"),
            Err(KeyError::TooShort { len: 15 })
        );
        assert!(ApiKey::new("0123456789abcdef").is_ok());
        assert_eq!(ApiKey::new(""), Err(KeyError::Empty));
        assert!(ApiKey::new_insecure(b"dev").is_ok());
        assert_eq!(ApiKey::new_insecure(b""), Err(KeyError::Empty));
    }

    #[test]
    fn debug_is_redacted() {
        let k = ApiKey::new("super-secret-key-material").unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn generated_keys_are_64_lower_hex_and_differ() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let a = ApiKey::generate(&mut rng);
        let b = ApiKey::generate(&mut rng);
        assert_eq!(a.len(), 64);
        assert!(a
            .expose_secret()
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
        assert_ne!(a, b);
    }
}
