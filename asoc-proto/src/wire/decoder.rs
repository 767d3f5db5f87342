//! Incremental frame decoding out of a receive buffer, without copying
//! payloads.

use bytes::{Buf, Bytes, BytesMut};

use super::{FrameType, Header, HEADER_LEN, VERSION};

/// Default largest accepted payload: 16 MiB (WIRE.md §6).
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// One decoded frame. `payload` shares the receive buffer's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // a frame is its header and its payload, nothing more
pub struct Frame {
    /// The frame's header.
    pub header: Header,
    /// The payload, exactly `header.length` bytes.
    pub payload: Bytes,
}

/// Why the byte stream cannot be decoded any further. Every variant is fatal
/// for the connection: the stream has lost frame alignment or broken a limit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Every frame after the handshake carries the version the handshake
    /// ran (WIRE.md §4, WIRE-v2.md §2).
    #[error(
        "frame version {version} is not supported here; this connection speaks version {expected}"
    )]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
        /// The version this connection speaks.
        expected: u8,
    },
    /// A sealed (v2) frame must be at least as long as its 16-byte tag.
    #[error("sealed frame declares {declared} bytes, shorter than its {tag}-byte tag")]
    ShorterThanTag {
        /// Declared length.
        declared: u32,
        /// The tag length.
        tag: u32,
    },
    /// The header declared a payload larger than the local maximum; refused
    /// before any payload byte was buffered.
    #[error("frame declares a {declared}-byte payload; the local maximum is {max} bytes")]
    PayloadTooLarge {
        /// Declared payload length.
        declared: u32,
        /// The configured maximum.
        max: u32,
    },
    /// Before the handshake completes, the first frame MUST be exactly the
    /// expected HELLO (server) or ACCEPT (client) header.
    #[error(
        "first frame must start with the {expected} header of a {expected_len}-byte payload; \
         header byte {offset} is {got:#04x}, expected {want:#04x}"
    )]
    UnexpectedFirstFrame {
        /// The frame type that was required.
        expected: FrameType,
        /// The payload length that was required.
        expected_len: u32,
        /// Offset of the first differing header byte.
        offset: usize,
        /// The byte received there.
        got: u8,
        /// The byte required there.
        want: u8,
    },
}

/// Splits a byte stream into frames.
///
/// The decoder looks only at the header before deciding whether a payload
/// will be accepted, so an oversized or misdirected frame is refused before
/// any of its payload is buffered. Frames are taken off the front of the
/// caller's [`BytesMut`] with `split_to`, so a payload is a view into the
/// receive buffer, never a copy.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_payload: u32,
    /// Bytes of each frame beyond its payload: v2's tag.
    overhead: u32,
    version: u8,
    /// The headers the next frame may start with, when it is the first.
    first: [Option<Header>; 3],
}

impl FrameDecoder {
    /// A decoder that accepts payloads up to `max_payload` bytes.
    #[must_use]
    pub fn new(max_payload: u32) -> Self {
        Self {
            max_payload,
            overhead: 0,
            version: VERSION,
            first: [None; 3],
        }
    }

    /// Requires the next frame's header to be exactly `header`, checked byte by
    /// byte as input arrives, so a wrong first frame fails on its first wrong
    /// byte.
    pub fn expect_first(&mut self, header: Header) {
        self.first = [Some(header), None, None];
    }

    /// Requires the next frame's header to be exactly one of `headers` (at
    /// most three: v1 HELLO and HELLO2 of either suite), failing on the
    /// first byte that no candidate has there. Extra candidates are ignored.
    pub fn expect_first_of(&mut self, headers: &[Header]) {
        self.first = [None; 3];
        for (slot, h) in self.first.iter_mut().zip(headers) {
            *slot = Some(*h);
        }
    }

    /// From now on every frame must carry `version` and, when `overhead` is
    /// non-zero, at least and at most that many bytes beyond the payload
    /// limit: v2's sealed frames (`overhead` = the tag length).
    pub fn speak(&mut self, version: u8, overhead: u32) {
        self.version = version;
        self.overhead = overhead;
    }

    /// The largest payload this decoder accepts.
    #[must_use]
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// How many more bytes the frame at the front of `buf` needs before it
    /// can be decoded (0 when a whole frame is already there). Adapters use it
    /// to size their next read.
    #[must_use]
    pub fn bytes_needed(&self, buf: &[u8]) -> usize {
        match Header::peek(buf) {
            None => HEADER_LEN - buf.len().min(HEADER_LEN),
            Some(h) => (HEADER_LEN + h.length as usize).saturating_sub(buf.len()),
        }
    }

    /// Checks what is known of the next header without consuming anything.
    fn check_prefix(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        let mut any = false;
        let mut matched = false;
        // Among candidates that differ, the one that matched longest names
        // the error.
        let mut closest: Option<(usize, Header)> = None;
        for expected in self.first.iter().flatten() {
            any = true;
            let want_bytes = expected.encode();
            match buf.iter().zip(want_bytes.iter()).position(|(g, w)| g != w) {
                None => {
                    matched = true;
                    break;
                }
                Some(offset) => {
                    if closest.is_none_or(|(o, _)| offset > o) {
                        closest = Some((offset, *expected));
                    }
                }
            }
        }
        if any {
            if let (false, Some((offset, expected))) = (matched, closest) {
                return Err(FrameError::UnexpectedFirstFrame {
                    expected: expected.frame_type,
                    expected_len: expected.length,
                    offset,
                    got: buf.get(offset).copied().unwrap_or(0),
                    want: expected.encode().get(offset).copied().unwrap_or(0),
                });
            }
        } else if let Some(&version) = buf.first() {
            if version != self.version {
                return Err(FrameError::UnsupportedVersion {
                    version,
                    expected: self.version,
                });
            }
        }
        let Some(header) = Header::peek(buf) else {
            return Ok(None);
        };
        if any {
            // An exact first header is within every limit by construction.
            return Ok(Some(header));
        }
        // Limits are the payload's: a sealed frame's tag is not counted.
        let limit = u64::from(self.max_payload) + u64::from(self.overhead);
        if u64::from(header.length) > limit {
            return Err(FrameError::PayloadTooLarge {
                declared: header.length - self.overhead,
                max: self.max_payload,
            });
        }
        if header.length < self.overhead {
            return Err(FrameError::ShorterThanTag {
                declared: header.length,
                tag: self.overhead,
            });
        }
        Ok(Some(header))
    }

    /// Validates the header at the front of `buf` as far as it has arrived,
    /// without consuming anything: `Ok(Some(header))` once the whole header
    /// is there and acceptable. Callers apply their own header rules here,
    /// before any payload is buffered.
    pub fn peek_header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        self.check_prefix(buf)
    }

    /// Takes one whole frame off the front of `buf`, `Ok(None)` when more
    /// input is needed. After an `Err` the stream is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        Ok(self.decode_mut(buf)?.map(|(header, payload)| Frame {
            header,
            payload: payload.freeze(),
        }))
    }

    /// Like [`decode`](Self::decode), with the body still mutable: v2
    /// decrypts it in place. The body is a view of the receive buffer.
    pub fn decode_mut(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(Header, BytesMut)>, FrameError> {
        let Some(header) = self.check_prefix(buf)? else {
            return Ok(None);
        };
        let total = HEADER_LEN + header.length as usize;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        // An empty payload shares nothing: skipping the split saves the
        // reference count's two atomic operations on END and CONTROL frames.
        let payload = if header.length == 0 {
            BytesMut::new()
        } else {
            buf.split_to(header.length as usize)
        };
        self.first = [None; 3];
        Ok(Some((header, payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::HELLO_HEADER;

    fn frame(t: FrameType, stream: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Header::new(t, stream, seq, payload.len() as u32)
            .encode()
            .to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_many_frames_from_one_buffer_and_waits_on_partial_input() {
        let mut wire = frame(FrameType::Data, 1, 0, b"abc");
        wire.extend(frame(FrameType::End, 1, 1, b""));
        wire.extend(frame(FrameType::Data, 3, 0, b"xyz"));
        let mut dec = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&wire[..wire.len() - 1]);
        let a = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&a.payload[..], b"abc");
        let b = dec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(b.header.frame_type, FrameType::End);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(dec.bytes_needed(&buf), 1);
        buf.extend_from_slice(&wire[wire.len() - 1..]);
        assert_eq!(&dec.decode(&mut buf).unwrap().unwrap().payload[..], b"xyz");
        assert!(buf.is_empty());
    }

    #[test]
    fn payload_is_a_view_of_the_receive_buffer() {
        let wire = frame(FrameType::Data, 1, 0, &[5u8; 1000]);
        let mut buf = BytesMut::from(&wire[..]);
        let base = buf.as_ptr() as usize;
        let f = FrameDecoder::new(4096).decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.payload.as_ptr() as usize, base + HEADER_LEN);
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let head = Header::new(FrameType::Data, 1, 0, 17).encode();
        let mut buf = BytesMut::from(&head[..]);
        assert_eq!(
            FrameDecoder::new(16).decode(&mut buf),
            Err(FrameError::PayloadTooLarge {
                declared: 17,
                max: 16
            })
        );
    }

    #[test]
    fn bad_version_is_refused_on_its_first_byte() {
        let mut buf = BytesMut::from(&[2u8][..]);
        assert_eq!(
            FrameDecoder::new(16).decode(&mut buf),
            Err(FrameError::UnsupportedVersion {
                version: 2,
                expected: 1
            })
        );
    }

    #[test]
    fn expected_first_header_is_checked_byte_by_byte() {
        let mut dec = FrameDecoder::new(1 << 20);
        dec.expect_first(HELLO_HEADER);
        let mut wrong = HELLO_HEADER;
        wrong.length = 37;
        let bytes = wrong.encode();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = dec.decode(&mut buf);
            if i < 13 {
                assert_eq!(r, Ok(None), "byte {i}");
            } else {
                assert!(matches!(
                    r,
                    Err(FrameError::UnexpectedFirstFrame { offset: 13, .. })
                ));
            }
        }
    }
}
