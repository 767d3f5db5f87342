//! Replay state that outlives a restart.
//!
//! An [`Authenticator`](crate::handshake::Authenticator) refuses a v1 HELLO
//! whose `(node id, challenge)` pair it has seen, and a HELLO2 whose
//! ephemeral key it has seen. Those memories live in RAM: a node that
//! restarts would accept a HELLO recorded before the restart again. v1
//! HELLOs carry no timestamp, so nothing else stops that replay.
//! [`AuthReplayState`] is what must be carried across: every remembered
//! entry with its expiry as unix milliseconds (an `Instant` means nothing
//! to the next process).
//!
//! The byte encoding is this crate's own, versioned and fixed-size per
//! entry, so a reader knows from the header how much to expect and
//! allocates nothing the input does not hold:
//!
//! ```text
//! magic "ASOCRPL1" (8) | hello count u32 BE | ephemeral count u32 BE
//! hello:     node id (16) | challenge u32 BE | expiry unix ms u64 BE
//! ephemeral: key (32)     | expiry unix ms u64 BE
//! ```
//!
//! The file holds no key material: challenges and ephemeral public keys
//! are sent in the clear.

use uuid::Uuid;

const MAGIC: &[u8; 8] = b"ASOCRPL1";
const HEADER_LEN: usize = 16;
const HELLO_LEN: usize = 16 + 4 + 8;
const EPHEMERAL_LEN: usize = 32 + 8;

/// Why bytes were not read as an [`AuthReplayState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayStateError {
    /// The first 8 bytes are not this format's magic (another file, or a
    /// format this version does not know).
    #[error("not an ASoc replay state (bad magic or unknown format version)")]
    BadMagic,
    /// The input is shorter or longer than its header says.
    #[error("replay state is {actual} bytes but its header announces {expected}")]
    Length {
        /// Bytes the header's counts require.
        expected: u64,
        /// Bytes given.
        actual: usize,
    },
    /// The header announces more entries than the caller accepts.
    #[error("replay state holds {entries} entries; at most {limit} are accepted")]
    TooMany {
        /// Entries announced.
        entries: u64,
        /// The caller's bound.
        limit: usize,
    },
}

/// One remembered v1 HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct SeenHello {
    /// The node id the HELLO carried.
    pub node_id: Uuid,
    /// Its challenge.
    pub challenge: u32,
    /// When it may be forgotten, unix milliseconds.
    pub expires_unix_ms: u64,
}

impl SeenHello {
    /// A remembered `(node_id, challenge)` pair, forgotten at
    /// `expires_unix_ms`.
    #[must_use]
    pub fn new(node_id: Uuid, challenge: u32, expires_unix_ms: u64) -> Self {
        Self {
            node_id,
            challenge,
            expires_unix_ms,
        }
    }
}

/// One remembered HELLO2 ephemeral key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub struct SeenEphemeral {
    /// The ephemeral public key.
    pub key: [u8; 32],
    /// When it may be forgotten, unix milliseconds.
    pub expires_unix_ms: u64,
}

impl SeenEphemeral {
    /// A remembered ephemeral key, forgotten at `expires_unix_ms`.
    #[must_use]
    pub fn new(key: [u8; 32], expires_unix_ms: u64) -> Self {
        Self {
            key,
            expires_unix_ms,
        }
    }
}

/// What an authenticator's replay protection remembers, in a form that
/// survives a restart. Take it with
/// [`Authenticator::replay_state`](crate::handshake::Authenticator::replay_state),
/// give it back with
/// [`Authenticator::restore_replay_state`](crate::handshake::Authenticator::restore_replay_state).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthReplayState {
    /// v1 HELLO pairs.
    pub hellos: Vec<SeenHello>,
    /// HELLO2 ephemeral keys.
    pub ephemerals: Vec<SeenEphemeral>,
}

impl AuthReplayState {
    /// Entries of both kinds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.hellos.len() + self.ephemerals.len()
    }

    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoding described in the [module docs](self).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            HEADER_LEN + self.hellos.len() * HELLO_LEN + self.ephemerals.len() * EPHEMERAL_LEN,
        );
        out.extend_from_slice(MAGIC);
        // Counts beyond u32 cannot come from a real cache; saturating keeps
        // the header honest about what follows by writing only that many.
        let hellos = u32::try_from(self.hellos.len()).unwrap_or(u32::MAX);
        let ephemerals = u32::try_from(self.ephemerals.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&hellos.to_be_bytes());
        out.extend_from_slice(&ephemerals.to_be_bytes());
        for h in self.hellos.iter().take(hellos as usize) {
            out.extend_from_slice(h.node_id.as_bytes());
            out.extend_from_slice(&h.challenge.to_be_bytes());
            out.extend_from_slice(&h.expires_unix_ms.to_be_bytes());
        }
        for e in self.ephemerals.iter().take(ephemerals as usize) {
            out.extend_from_slice(&e.key);
            out.extend_from_slice(&e.expires_unix_ms.to_be_bytes());
        }
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes)' encoding, refusing more than
    /// `max_entries` entries in all. The length is checked against the
    /// header before anything is allocated.
    pub fn from_bytes(bytes: &[u8], max_entries: usize) -> Result<Self, ReplayStateError> {
        let mut input = Reader(bytes);
        let header = input.take::<8>().filter(|m| m == MAGIC);
        let counts = header.and_then(|_| Some((input.u32()?, input.u32()?)));
        let Some((hellos, ephemerals)) = counts else {
            return Err(ReplayStateError::BadMagic);
        };
        let entries = u64::from(hellos) + u64::from(ephemerals);
        if entries > max_entries as u64 {
            return Err(ReplayStateError::TooMany {
                entries,
                limit: max_entries,
            });
        }
        let expected = HEADER_LEN as u64
            + u64::from(hellos) * HELLO_LEN as u64
            + u64::from(ephemerals) * EPHEMERAL_LEN as u64;
        let length = ReplayStateError::Length {
            expected,
            actual: bytes.len(),
        };
        if expected != bytes.len() as u64 {
            return Err(length);
        }
        let mut state = Self {
            hellos: Vec::with_capacity(hellos as usize),
            ephemerals: Vec::with_capacity(ephemerals as usize),
        };
        for _ in 0..hellos {
            let hello = (|| {
                Some(SeenHello::new(
                    Uuid::from_bytes(input.take()?),
                    input.u32()?,
                    input.u64()?,
                ))
            })();
            state.hellos.push(hello.ok_or(length)?);
        }
        for _ in 0..ephemerals {
            let ephemeral = (|| Some(SeenEphemeral::new(input.take()?, input.u64()?)))();
            state.ephemerals.push(ephemeral.ok_or(length)?);
        }
        Ok(state)
    }
}

/// Reads fixed-size fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (field, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*field)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
}

/// What [`Authenticator::restore_replay_state`](crate::handshake::Authenticator::restore_replay_state)
/// did with a state's entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestoreReport {
    /// Entries remembered again.
    pub restored: usize,
    /// Entries whose expiry had passed, dropped.
    pub expired: usize,
    /// Entries already remembered (a state restored twice).
    pub duplicate: usize,
    /// Entries that did not fit the cache. The cache is then full and
    /// fails closed until entries expire, exactly as it would had the node
    /// never restarted.
    pub over_capacity: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthReplayState {
        AuthReplayState {
            hellos: vec![
                SeenHello::new(Uuid::from_bytes([1; 16]), 7, 1_000),
                SeenHello::new(Uuid::from_bytes([2; 16]), u32::MAX, u64::MAX),
            ],
            ephemerals: vec![SeenEphemeral::new([9; 32], 5_000)],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 2 * HELLO_LEN + EPHEMERAL_LEN);
        assert_eq!(AuthReplayState::from_bytes(&bytes, 3), Ok(s));
        assert_eq!(
            AuthReplayState::from_bytes(&AuthReplayState::default().to_bytes(), 0),
            Ok(AuthReplayState::default())
        );
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(AuthReplayState::from_bytes(&bytes[..n], 10).is_err(), "{n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            AuthReplayState::from_bytes(&longer, 10),
            Err(ReplayStateError::Length { .. })
        ));
    }

    #[test]
    fn bad_magic_and_too_many_are_refused_before_allocating() {
        let mut bytes = sample().to_bytes();
        assert_eq!(
            AuthReplayState::from_bytes(&bytes, 2),
            Err(ReplayStateError::TooMany {
                entries: 3,
                limit: 2
            })
        );
        bytes[7] ^= 1;
        assert_eq!(
            AuthReplayState::from_bytes(&bytes, 10),
            Err(ReplayStateError::BadMagic)
        );
        // A header announcing 2^32-1 of each over 16 bytes is refused on its
        // length, not by trying to allocate for it.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0xff; 8]);
        assert!(matches!(
            AuthReplayState::from_bytes(&huge, usize::MAX),
            Err(ReplayStateError::Length { .. })
        ));
    }
}
