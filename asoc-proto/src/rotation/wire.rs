//! The bodies of the two key-rotation control messages
//! (`docs/key-rotation.md`): KEY_ROTATION and its acknowledgement. These
//! codecs only move bytes; when a message may be sent or believed is
//! [`super`]'s business.

use core::fmt;

use zeroize::Zeroizing;

use crate::auth::{ApiKey, KeyError};

/// The control kind (CONTROL frame seq on stream 0) of KEY_ROTATION.
pub const KIND_KEY_ROTATION: u32 = 1;
/// The control kind of KEY_ROTATION_ACK.
pub const KIND_KEY_ROTATION_ACK: u32 = 2;
/// The body version this crate writes and reads.
pub const ROTATION_VERSION: u8 = 1;
/// The longest key a KEY_ROTATION carries.
pub const MAX_ROTATION_KEY_LEN: usize = 1024;
/// Bytes of a KEY_ROTATION body before the key.
pub const ROTATION_FIXED_LEN: usize = 27;
/// Length of a KEY_ROTATION_ACK body.
pub const ACK_LEN: usize = 10;

/// Why a control body was not understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RotationDecodeError {
    /// Fewer bytes than the layout needs.
    #[error("body of {len} bytes is shorter than the {need} bytes its layout needs")]
    Truncated {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// A body version this side does not speak.
    #[error("body version {0} is not understood (this side speaks version {ROTATION_VERSION})")]
    UnknownVersion(u8),
    /// The key length field is outside 16..=1024.
    #[error("key length {0} is outside 16..={MAX_ROTATION_KEY_LEN} bytes")]
    KeyLength(u16),
    /// Bytes follow the declared end of the body.
    #[error("{0} bytes follow the end of the body")]
    TrailingBytes(usize),
    /// An acknowledgement status this side does not know.
    #[error("acknowledgement status {0} is not defined")]
    UnknownStatus(u8),
    /// The epoch is 0, which names the key a node starts with.
    #[error("epoch 0 names the initial key; a rotation has epoch 1 or more")]
    EpochZero,
}

/// A KEY_ROTATION body: the new key of `epoch`, signing from
/// `activate_unix_ms`, the old key accepted until `grace_ms` after that.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyRotation {
    /// Rotation number; higher wins, equal or lower is ignored.
    pub epoch: u64,
    /// When nodes start signing with the new key, wall clock, unix ms.
    pub activate_unix_ms: u64,
    /// How long after activation the old key is still accepted, ms.
    pub grace_ms: u64,
    /// The new key.
    pub key: ApiKey,
}

impl fmt::Debug for KeyRotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRotation")
            .field("epoch", &self.epoch)
            .field("activate_unix_ms", &self.activate_unix_ms)
            .field("grace_ms", &self.grace_ms)
            .field("key", &self.key)
            .finish()
    }
}

impl KeyRotation {
    /// A rotation body.
    #[must_use]
    pub fn new(epoch: u64, activate_unix_ms: u64, grace_ms: u64, key: ApiKey) -> Self {
        Self {
            epoch,
            activate_unix_ms,
            grace_ms,
            key,
        }
    }

    /// The body: `version(1) | epoch(8) | activate_unix_ms(8) | grace_ms(8)
    /// | key_len(2) | key`, big-endian, in a buffer wiped when dropped.
    /// A key longer than [`MAX_ROTATION_KEY_LEN`] is cut there (the ring
    /// never holds one: the decoder refuses them).
    #[must_use]
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let key = self.key.expose_secret();
        let key = key.get(..MAX_ROTATION_KEY_LEN).unwrap_or(key);
        let mut out = Zeroizing::new(Vec::with_capacity(ROTATION_FIXED_LEN + key.len()));
        out.push(ROTATION_VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.activate_unix_ms.to_be_bytes());
        out.extend_from_slice(&self.grace_ms.to_be_bytes());
        // At most MAX_ROTATION_KEY_LEN, so it fits.
        out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    /// Reads a body; never panics, whatever the bytes.
    pub fn decode(body: &[u8]) -> Result<Self, RotationDecodeError> {
        let truncated = |need| RotationDecodeError::Truncated {
            len: body.len(),
            need,
        };
        let (&version, rest) = body.split_first().ok_or(truncated(ROTATION_FIXED_LEN))?;
        if version != ROTATION_VERSION {
            return Err(RotationDecodeError::UnknownVersion(version));
        }
        let fixed = rest
            .get(..ROTATION_FIXED_LEN - 1)
            .ok_or(truncated(ROTATION_FIXED_LEN))?;
        let (epoch, fixed) = take_u64(fixed);
        let (activate_unix_ms, fixed) = take_u64(fixed);
        let (grace_ms, fixed) = take_u64(fixed);
        let key_len = match fixed {
            [a, b] => u16::from_be_bytes([*a, *b]),
            _ => return Err(truncated(ROTATION_FIXED_LEN)),
        };
        if epoch == 0 {
            return Err(RotationDecodeError::EpochZero);
        }
        let len = usize::from(key_len);
        if !(crate::auth::MIN_KEY_LEN..=MAX_ROTATION_KEY_LEN).contains(&len) {
            return Err(RotationDecodeError::KeyLength(key_len));
        }
        let key_bytes = body
            .get(ROTATION_FIXED_LEN..ROTATION_FIXED_LEN + len)
            .ok_or(truncated(ROTATION_FIXED_LEN + len))?;
        let trailing = body.len() - ROTATION_FIXED_LEN - len;
        if trailing != 0 {
            return Err(RotationDecodeError::TrailingBytes(trailing));
        }
        let key = ApiKey::from_bytes(key_bytes).map_err(|e| match e {
            KeyError::TooShort { .. } | KeyError::Empty => RotationDecodeError::KeyLength(key_len),
        })?;
        Ok(Self {
            epoch,
            activate_unix_ms,
            grace_ms,
            key,
        })
    }
}

/// What the receiver of a KEY_ROTATION did with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AckStatus {
    /// The epoch was new to it: it took the key and forwards the message.
    Adopted,
    /// It already had this epoch.
    Known,
    /// It had a higher epoch already.
    Superseded,
}

impl AckStatus {
    /// The status byte.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Adopted => 0,
            Self::Known => 1,
            Self::Superseded => 2,
        }
    }

    /// Reads a status byte.
    #[must_use]
    pub const fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Adopted),
            1 => Some(Self::Known),
            2 => Some(Self::Superseded),
            _ => None,
        }
    }

    /// `adopted`, `known` or `superseded`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Adopted => "adopted",
            Self::Known => "known",
            Self::Superseded => "superseded",
        }
    }
}

/// A KEY_ROTATION_ACK body: `version(1) | epoch(8) | status(1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotationAck {
    /// The epoch acknowledged.
    pub epoch: u64,
    /// What the receiver did.
    pub status: AckStatus,
}

impl RotationAck {
    /// An acknowledgement.
    #[must_use]
    pub const fn new(epoch: u64, status: AckStatus) -> Self {
        Self { epoch, status }
    }

    /// The 10-byte body.
    #[must_use]
    pub fn encode(&self) -> [u8; ACK_LEN] {
        let mut out = [0u8; ACK_LEN];
        let (version, rest) = out.split_at_mut(1);
        let (epoch, status) = rest.split_at_mut(8);
        version.copy_from_slice(&[ROTATION_VERSION]);
        epoch.copy_from_slice(&self.epoch.to_be_bytes());
        status.copy_from_slice(&[self.status.to_byte()]);
        out
    }

    /// Reads a body; never panics.
    pub fn decode(body: &[u8]) -> Result<Self, RotationDecodeError> {
        let (&version, rest) = body.split_first().ok_or(RotationDecodeError::Truncated {
            len: body.len(),
            need: ACK_LEN,
        })?;
        if version != ROTATION_VERSION {
            return Err(RotationDecodeError::UnknownVersion(version));
        }
        match body.len() {
            n if n < ACK_LEN => Err(RotationDecodeError::Truncated {
                len: n,
                need: ACK_LEN,
            }),
            n if n > ACK_LEN => Err(RotationDecodeError::TrailingBytes(n - ACK_LEN)),
            _ => {
                let (epoch, status) = take_u64(rest);
                let status = *status.first().unwrap_or(&u8::MAX);
                Ok(Self {
                    epoch,
                    status: AckStatus::from_byte(status)
                        .ok_or(RotationDecodeError::UnknownStatus(status))?,
                })
            }
        }
    }
}

/// The big-endian u64 at the front of `bytes` (0-padded if short) and the
/// rest.
fn take_u64(bytes: &[u8]) -> (u64, &[u8]) {
    let (head, rest) = bytes.split_at(bytes.len().min(8));
    let mut buf = [0u8; 8];
    buf.get_mut(..head.len())
        .unwrap_or_default()
        .copy_from_slice(head);
    (u64::from_be_bytes(buf), rest)
}
