//! Transport frames (WIRE-v2.md §4): AEAD with the split keys, the 14-byte
//! header as associated data, a per-direction frame counter as nonce.

use core::fmt;

use bytes::{BufMut, BytesMut};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::Suite;
use crate::wire::HEADER_LEN;

/// Length of the AEAD tag after every transport frame's ciphertext.
pub const TAG_LEN: usize = 16;

/// Why a frame was not sealed or not opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The tag did not verify: the frame was altered, forged or reordered.
    #[error("frame tag did not verify")]
    BadTag,
    /// The frame is shorter than its tag.
    #[error("frame body of {len} bytes is shorter than the 16-byte tag")]
    TooShort {
        /// The body length.
        len: usize,
    },
    /// This direction sent or received 2^64 − 1 frames; the nonce would
    /// repeat.
    #[error("frame counter exhausted; the connection must close")]
    NonceExhausted,
}

fn key_for(suite: Suite, key: &[u8; 32]) -> LessSafeKey {
    let algorithm = match suite {
        Suite::AesGcm => &aead::AES_256_GCM,
        Suite::ChaChaPoly => &aead::CHACHA20_POLY1305,
    };
    // Both algorithms take exactly 32-byte keys, so this never fails.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(algorithm, key).expect("32-byte AEAD key"))
}

/// Noise's nonce encoding for the suite: 4 zero bytes, then the counter,
/// big-endian for AES-GCM and little-endian for ChaChaPoly.
fn nonce(suite: Suite, n: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    let (_, counter) = bytes.split_at_mut(4);
    counter.copy_from_slice(&match suite {
        Suite::AesGcm => n.to_be_bytes(),
        Suite::ChaChaPoly => n.to_le_bytes(),
    });
    Nonce::assume_unique_for_key(bytes)
}

/// One direction's key and frame counter.
struct Direction {
    key: LessSafeKey,
    suite: Suite,
    next: u64,
}

impl Direction {
    fn take_nonce(&mut self) -> Result<Nonce, SealError> {
        if self.next == u64::MAX {
            return Err(SealError::NonceExhausted);
        }
        let n = nonce(self.suite, self.next);
        self.next += 1;
        Ok(n)
    }
}

/// Seals the frames this side sends.
pub struct Sealer(Direction);

/// Opens the frames this side receives.
pub struct Opener(Direction);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealer({}, next {})", self.0.suite, self.0.next)
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opener({}, next {})", self.0.suite, self.0.next)
    }
}

impl Sealer {
    /// A sealer whose first frame uses nonce 0.
    #[must_use]
    pub fn new(suite: Suite, key: &[u8; 32]) -> Self {
        Self(Direction {
            key: key_for(suite, key),
            suite,
            next: 0,
        })
    }

    /// Frames sealed so far (the next nonce).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0.next
    }

    /// Seals `plaintext` behind `header` (whose length field already counts
    /// the tag): one copy of the plaintext into a fresh buffer, encryption
    /// in place, the tag appended. Returns the body to send after the header.
    pub fn seal(
        &mut self,
        header: &[u8; HEADER_LEN],
        plaintext: &[u8],
    ) -> Result<BytesMut, SealError> {
        self.seal_in(header, plaintext, BytesMut::new())
    }

    /// [`seal`](Self::seal) into `buf`, a buffer of an earlier frame that
    /// was written: its contents are discarded and its memory reused, so a
    /// connection sealing frame after frame touches the same pages instead
    /// of faulting in fresh ones for every frame.
    pub fn seal_in(
        &mut self,
        header: &[u8; HEADER_LEN],
        plaintext: &[u8],
        mut buf: BytesMut,
    ) -> Result<BytesMut, SealError> {
        let nonce = self.0.take_nonce()?;
        buf.clear();
        buf.reserve(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        let tag = self
            .0
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), buf.as_mut())
            .map_err(|_| SealError::NonceExhausted)?;
        buf.put_slice(tag.as_ref());
        Ok(buf)
    }
}

impl Opener {
    /// An opener expecting nonce 0 first.
    #[must_use]
    pub fn new(suite: Suite, key: &[u8; 32]) -> Self {
        Self(Direction {
            key: key_for(suite, key),
            suite,
            next: 0,
        })
    }

    /// An opener expecting nonce `next` first: for tests and tools that
    /// check one frame of a recorded session.
    #[must_use]
    pub fn starting_at(suite: Suite, key: &[u8; 32], next: u64) -> Self {
        Self(Direction {
            key: key_for(suite, key),
            suite,
            next,
        })
    }

    /// Frames opened so far (the next nonce).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.0.next
    }

    /// Verifies and decrypts `body` (ciphertext and tag) in place under
    /// `header` as associated data, leaving the plaintext in `body`. On
    /// failure `body` holds nothing usable and the connection must close.
    pub fn open(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &mut BytesMut,
    ) -> Result<(), SealError> {
        if body.len() < TAG_LEN {
            return Err(SealError::TooShort { len: body.len() });
        }
        let nonce = self.0.take_nonce()?;
        let plain_len = self
            .0
            .key
            .open_in_place(nonce, Aad::from(header), body.as_mut())
            .map_err(|_| SealError::BadTag)?
            .len();
        body.truncate(plain_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_frame_opens_once_and_not_after_any_change() {
        for suite in Suite::ALL {
            let key = [7u8; 32];
            let header = [2, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 21];
            let mut s = Sealer::new(suite, &key);
            let sealed = s.seal(&header, b"hello").unwrap();
            assert_eq!(sealed.len(), 5 + TAG_LEN);
            let mut ok = sealed.clone();
            Opener::new(suite, &key).open(&header, &mut ok).unwrap();
            assert_eq!(&ok[..], b"hello");
            let mut bad_header = header;
            bad_header[5] ^= 1;
            let mut body = sealed.clone();
            assert_eq!(
                Opener::new(suite, &key).open(&bad_header, &mut body),
                Err(SealError::BadTag)
            );
            // The second nonce does not open the first frame.
            let mut o = Opener::new(suite, &key);
            o.0.next = 1;
            let mut body = sealed.clone();
            assert_eq!(o.open(&header, &mut body), Err(SealError::BadTag));
        }
    }

    #[test]
    fn the_counter_stops_before_it_would_repeat() {
        let mut s = Sealer::new(Suite::AesGcm, &[1; 32]);
        s.0.next = u64::MAX;
        assert_eq!(
            s.seal(&[0; HEADER_LEN], b""),
            Err(SealError::NonceExhausted)
        );
        let mut o = Opener::new(Suite::AesGcm, &[1; 32]);
        let mut short = BytesMut::from(&[0u8; 3][..]);
        assert_eq!(
            o.open(&[0; HEADER_LEN], &mut short),
            Err(SealError::TooShort { len: 3 })
        );
    }
}
