//! Cipher suites and wire versions (WIRE-v2.md §1, §6).

use core::fmt;
use core::str::FromStr;

/// Which protocol a connection or an announcement speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[allow(clippy::exhaustive_enums)] // a new wire version is a new protocol, not a new variant
pub enum WireVersion {
    /// RFC-0001 with WIRE.md: HMAC challenge-response, cleartext frames.
    V1,
    /// WIRE-v2.md: Noise `NNpsk0`, AEAD on every frame. The default.
    #[default]
    V2,
}

impl WireVersion {
    /// The version byte of its frames and announcements.
    #[must_use]
    pub const fn byte(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The version a frame's or datagram's first byte names, if any.
    #[must_use]
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            _ => None,
        }
    }
}

impl fmt::Display for WireVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// Why a version or suite name was not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not `v1` or `v2`.
    #[error("unknown wire version {0:?}: expected v1 or v2")]
    Version(String),
    /// Not `aesgcm` or `chachapoly`.
    #[error("unknown suite {0:?}: expected aesgcm or chachapoly")]
    Suite(String),
}

impl FromStr for WireVersion {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" | "1" => Ok(Self::V1),
            "v2" | "2" => Ok(Self::V2),
            other => Err(ParseError::Version(other.to_owned())),
        }
    }
}

/// A v2 cipher suite, named on the wire by the `seq` field of HELLO2 and
/// ACCEPT2 (WIRE-v2.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[allow(clippy::exhaustive_enums)] // the wire defines exactly these two
pub enum Suite {
    /// Suite 1, `Noise_NNpsk0_25519_AESGCM_SHA256`: the default.
    #[default]
    AesGcm,
    /// Suite 2, `Noise_NNpsk0_25519_ChaChaPoly_SHA256`: for CPUs without
    /// AES instructions.
    ChaChaPoly,
}

impl Suite {
    /// Both suites, the default first.
    pub const ALL: [Self; 2] = [Self::AesGcm, Self::ChaChaPoly];

    /// The `seq` value naming it in HELLO2 and ACCEPT2.
    #[must_use]
    pub const fn seq(self) -> u32 {
        match self {
            Self::AesGcm => 1,
            Self::ChaChaPoly => 2,
        }
    }

    /// The suite a HELLO2 or ACCEPT2 `seq` names.
    #[must_use]
    pub const fn from_seq(seq: u32) -> Option<Self> {
        match seq {
            1 => Some(Self::AesGcm),
            2 => Some(Self::ChaChaPoly),
            _ => None,
        }
    }

    /// The full Noise protocol name.
    #[must_use]
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::AesGcm => "Noise_NNpsk0_25519_AESGCM_SHA256",
            Self::ChaChaPoly => "Noise_NNpsk0_25519_ChaChaPoly_SHA256",
        }
    }

    /// Stable short name, as the CLI and JSON events write it: `aesgcm`,
    /// `chachapoly`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AesGcm => "aesgcm",
            Self::ChaChaPoly => "chachapoly",
        }
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Suite {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aesgcm" => Ok(Self::AesGcm),
            "chachapoly" => Ok(Self::ChaChaPoly),
            other => Err(ParseError::Suite(other.to_owned())),
        }
    }
}

/// The suites a server accepts; both by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SuiteSet {
    aesgcm: bool,
    chachapoly: bool,
}

impl Default for SuiteSet {
    fn default() -> Self {
        Self::all()
    }
}

impl SuiteSet {
    /// Both suites.
    #[must_use]
    pub const fn all() -> Self {
        Self {
            aesgcm: true,
            chachapoly: true,
        }
    }

    /// Exactly one suite.
    #[must_use]
    pub const fn only(suite: Suite) -> Self {
        Self {
            aesgcm: matches!(suite, Suite::AesGcm),
            chachapoly: matches!(suite, Suite::ChaChaPoly),
        }
    }

    /// Whether `suite` is accepted.
    #[must_use]
    pub const fn contains(self, suite: Suite) -> bool {
        match suite {
            Suite::AesGcm => self.aesgcm,
            Suite::ChaChaPoly => self.chachapoly,
        }
    }

    /// The accepted suites, default first.
    pub fn iter(self) -> impl Iterator<Item = Suite> {
        Suite::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_round_trip_through_seq_and_name() {
        for s in Suite::ALL {
            assert_eq!(Suite::from_seq(s.seq()), Some(s));
            assert_eq!(s.as_str().parse::<Suite>(), Ok(s));
        }
        assert_eq!(Suite::from_seq(0), None);
        assert_eq!(Suite::from_seq(3), None);
        assert!("aes".parse::<Suite>().is_err());
    }

    #[test]
    fn a_set_of_one_suite_refuses_the_other() {
        let only = SuiteSet::only(Suite::ChaChaPoly);
        assert!(only.contains(Suite::ChaChaPoly));
        assert!(!only.contains(Suite::AesGcm));
        assert_eq!(only.iter().collect::<Vec<_>>(), vec![Suite::ChaChaPoly]);
        assert_eq!(SuiteSet::default().iter().count(), 2);
    }

    #[test]
    fn versions_parse_and_print() {
        assert_eq!("v2".parse::<WireVersion>(), Ok(WireVersion::V2));
        assert_eq!(WireVersion::V1.to_string(), "v1");
        assert_eq!(WireVersion::from_byte(2), Some(WireVersion::V2));
        assert_eq!(WireVersion::from_byte(3), None);
    }
}
