//! Session tokens (RFC-0002 §5): issued in ACCEPT, kept by both sides,
//! never carried by v1 data frames.

use core::fmt;

use rand_core::CryptoRngCore;

use super::mac::{ct_eq, truncated_mac};
use super::ApiKey;
use crate::wire::Accept;

/// A session token and its 8-byte MAC, as carried in ACCEPT.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_structs)] // the two fields of ACCEPT's payload, fixed by the wire format
pub struct SessionToken {
    /// 8 random bytes.
    pub token: [u8; 8],
    /// `MAC(key, token, 8)`.
    pub mac: [u8; 8],
}

impl SessionToken {
    /// Draws a fresh token from `rng` and signs it with `key`.
    pub fn issue(key: &ApiKey, rng: &mut impl CryptoRngCore) -> Self {
        let mut token = [0u8; 8];
        rng.fill_bytes(&mut token);
        Self::sign(key, token)
    }

    /// Signs a given token.
    #[must_use]
    pub fn sign(key: &ApiKey, token: [u8; 8]) -> Self {
        Self {
            token,
            mac: truncated_mac::<8>(key.expose_secret(), &[&token]),
        }
    }

    /// Whether the MAC is valid under `key` (constant-time). This is the
    /// "optional token verification" of RFC-0002 §5.4: an application may
    /// call it; no frame needs it.
    #[must_use]
    pub fn verify(&self, key: &ApiKey) -> bool {
        let expected = truncated_mac::<8>(key.expose_secret(), &[&self.token]);
        ct_eq(&expected, &self.mac)
    }

    /// The ACCEPT payload carrying this token.
    #[must_use]
    pub fn to_accept(&self) -> Accept {
        Accept {
            token: self.token,
            mac: self.mac,
        }
    }

    /// The token carried by an ACCEPT (unverified).
    #[must_use]
    pub fn from_accept(accept: &Accept) -> Self {
        Self {
            token: accept.token,
            mac: accept.mac,
        }
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SessionToken({:02x?}, mac {:02x?})",
            self.token, self.mac
        )
    }
}
