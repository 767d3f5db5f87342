//! The 14-byte frame header (WIRE.md §2).

use core::fmt;

/// Length of every frame header on the wire.
pub const HEADER_LEN: usize = 14;

/// The only protocol version this crate speaks.
pub const VERSION: u8 = 1;

/// A frame's type byte (WIRE.md §2).
///
/// Types 0 and 6..=255 are carried as [`FrameType::Unknown`] so that a
/// receiver can skip them whole, as RFC-0001 §9.2 requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_enums)] // every type byte already has a variant (`Unknown` carries the rest)
pub enum FrameType {
    /// Type 1: a chunk of a tensor stream.
    Data,
    /// Type 2: closes a stream; its seq is the number of DATA frames sent.
    End,
    /// Type 3: reserved for control messages; skipped when not understood.
    Control,
    /// Type 4: the client's authentication message.
    Hello,
    /// Type 5: the server's reply carrying the session token.
    Accept,
    /// Any other type byte; skipped whole by receivers.
    Unknown(u8),
}

impl FrameType {
    /// Interprets a type byte.
    #[must_use]
    pub const fn from_byte(byte: u8) -> Self {
        match byte {
            1 => Self::Data,
            2 => Self::End,
            3 => Self::Control,
            4 => Self::Hello,
            5 => Self::Accept,
            other => Self::Unknown(other),
        }
    }

    /// The byte this type is written as.
    #[must_use]
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Data => 1,
            Self::End => 2,
            Self::Control => 3,
            Self::Hello => 4,
            Self::Accept => 5,
            Self::Unknown(other) => other,
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Data => f.write_str("DATA"),
            Self::End => f.write_str("END"),
            Self::Control => f.write_str("CONTROL"),
            Self::Hello => f.write_str("HELLO"),
            Self::Accept => f.write_str("ACCEPT"),
            Self::Unknown(b) => write!(f, "unknown type {b}"),
        }
    }
}

/// A decoded frame header. All fields are big-endian on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_structs)] // the five header fields, fixed by the wire format
pub struct Header {
    /// Protocol version byte; [`VERSION`] for every frame this crate sends.
    pub version: u8,
    /// Frame type.
    pub frame_type: FrameType,
    /// Stream id; 0 is the handshake stream.
    pub stream_id: u32,
    /// Sequence number within the stream.
    pub seq: u32,
    /// Payload length in bytes.
    pub length: u32,
}

impl Header {
    /// A version-1 header.
    #[must_use]
    pub const fn new(frame_type: FrameType, stream_id: u32, seq: u32, length: u32) -> Self {
        Self {
            version: VERSION,
            frame_type,
            stream_id,
            seq,
            length,
        }
    }

    /// Writes the header in wire order.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let (version, rest) = out.split_at_mut(1);
        let (frame_type, rest) = rest.split_at_mut(1);
        let (stream, rest) = rest.split_at_mut(4);
        let (seq, length) = rest.split_at_mut(4);
        version.copy_from_slice(&[self.version]);
        frame_type.copy_from_slice(&[self.frame_type.to_byte()]);
        stream.copy_from_slice(&self.stream_id.to_be_bytes());
        seq.copy_from_slice(&self.seq.to_be_bytes());
        length.copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Reads a header from exactly [`HEADER_LEN`] bytes. Every byte pattern
    /// is a header; whether it is acceptable is the receiver's decision.
    #[must_use]
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let [version, frame_type, s0, s1, s2, s3, q0, q1, q2, q3, l0, l1, l2, l3] = *bytes;
        Self {
            version,
            frame_type: FrameType::from_byte(frame_type),
            stream_id: u32::from_be_bytes([s0, s1, s2, s3]),
            seq: u32::from_be_bytes([q0, q1, q2, q3]),
            length: u32::from_be_bytes([l0, l1, l2, l3]),
        }
    }

    /// Reads a header from the start of `bytes`, or `None` when fewer than
    /// [`HEADER_LEN`] bytes are available.
    #[must_use]
    pub fn peek(bytes: &[u8]) -> Option<Self> {
        let head: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(Self::decode(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_bytes_round_trip_for_every_value() {
        for b in 0..=u8::MAX {
            assert_eq!(FrameType::from_byte(b).to_byte(), b);
        }
        assert_eq!(FrameType::from_byte(0), FrameType::Unknown(0));
        assert_eq!(FrameType::from_byte(6), FrameType::Unknown(6));
    }

    #[test]
    fn header_is_big_endian_with_one_byte_version_and_type() {
        let h = Header::new(FrameType::Hello, 0x0102_0304, 0x0506_0708, 36);
        assert_eq!(h.encode(), [1, 4, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 36]);
        assert_eq!(Header::decode(&h.encode()), h);
        assert_eq!(Header::peek(&h.encode()[..13]), None);
    }
}
