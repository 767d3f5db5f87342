//! Fixed-size message bodies: HELLO (36 B), ACCEPT (16 B) and the discovery
//! announcement (50 B). These codecs only move bytes; signing and checking
//! MACs is [`crate::auth`]'s job.

use uuid::Uuid;

use super::{FrameType, Header, HEADER_LEN};

/// Length of a HELLO payload.
pub const HELLO_LEN: usize = 36;
/// Length of an ACCEPT payload.
pub const ACCEPT_LEN: usize = 16;
/// Length of a discovery datagram.
pub const ANNOUNCEMENT_LEN: usize = 50;
/// Length of the signed part of a discovery datagram (bytes 0..34).
pub const ANNOUNCEMENT_SIGNED_LEN: usize = 34;

/// The only header a HELLO frame may have: type 4, stream 0, seq 0, length 36.
pub const HELLO_HEADER: Header = Header::new(FrameType::Hello, 0, 0, HELLO_LEN as u32);
/// The only header an ACCEPT frame may have: type 5, stream 0, seq 0, length 16.
pub const ACCEPT_HEADER: Header = Header::new(FrameType::Accept, 0, 0, ACCEPT_LEN as u32);

/// A HELLO payload: `node_uuid(16) | MAC(key, node_uuid || challenge, 16) | challenge(4)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // the three fields of HELLO's payload, fixed by the wire format
pub struct Hello {
    /// The client's node id.
    pub node_id: Uuid,
    /// Truncated HMAC over `node_id || challenge_be32`.
    pub mac: [u8; 16],
    /// 32 fresh random bits.
    pub challenge: u32,
}

impl Hello {
    /// Encodes the 36-byte payload.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        let (node, rest) = out.split_at_mut(16);
        let (mac, challenge) = rest.split_at_mut(16);
        node.copy_from_slice(self.node_id.as_bytes());
        mac.copy_from_slice(&self.mac);
        challenge.copy_from_slice(&self.challenge.to_be_bytes());
        out
    }

    /// Encodes the whole frame (header and payload), 50 bytes.
    #[must_use]
    pub fn encode_frame(&self) -> [u8; HEADER_LEN + HELLO_LEN] {
        let mut out = [0u8; HEADER_LEN + HELLO_LEN];
        let (head, body) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&HELLO_HEADER.encode());
        body.copy_from_slice(&self.encode());
        out
    }

    /// Decodes a payload; `None` unless it is exactly 36 bytes.
    #[must_use]
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let bytes: &[u8; HELLO_LEN] = payload.try_into().ok()?;
        let (node, rest) = bytes.split_at(16);
        let (mac, challenge) = rest.split_at(16);
        Some(Self {
            node_id: Uuid::from_bytes(node.try_into().ok()?),
            mac: mac.try_into().ok()?,
            challenge: u32::from_be_bytes(challenge.try_into().ok()?),
        })
    }

    /// The bytes the MAC covers: `node_uuid || challenge_be32`.
    #[must_use]
    pub fn signed_bytes(node_id: &Uuid, challenge: u32) -> [u8; 20] {
        let mut out = [0u8; 20];
        let (node, ch) = out.split_at_mut(16);
        node.copy_from_slice(node_id.as_bytes());
        ch.copy_from_slice(&challenge.to_be_bytes());
        out
    }
}

/// An ACCEPT payload: `session_token(8) | MAC(key, session_token, 8)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // the two fields of ACCEPT's payload, fixed by the wire format
pub struct Accept {
    /// The random session token.
    pub token: [u8; 8],
    /// Truncated HMAC over the token.
    pub mac: [u8; 8],
}

impl Accept {
    /// Encodes the 16-byte payload.
    #[must_use]
    pub fn encode(&self) -> [u8; ACCEPT_LEN] {
        let mut out = [0u8; ACCEPT_LEN];
        let (token, mac) = out.split_at_mut(8);
        token.copy_from_slice(&self.token);
        mac.copy_from_slice(&self.mac);
        out
    }

    /// Encodes the whole frame (header and payload), 30 bytes.
    #[must_use]
    pub fn encode_frame(&self) -> [u8; HEADER_LEN + ACCEPT_LEN] {
        let mut out = [0u8; HEADER_LEN + ACCEPT_LEN];
        let (head, body) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&ACCEPT_HEADER.encode());
        body.copy_from_slice(&self.encode());
        out
    }

    /// Decodes a payload; `None` unless it is exactly 16 bytes.
    #[must_use]
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let bytes: &[u8; ACCEPT_LEN] = payload.try_into().ok()?;
        let (token, mac) = bytes.split_at(8);
        Some(Self {
            token: token.try_into().ok()?,
            mac: mac.try_into().ok()?,
        })
    }
}

/// A discovery datagram (WIRE.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // the fields of a v1 announcement, fixed by the wire format
pub struct Announcement {
    /// First 8 bytes of SHA-256 of the community string.
    pub community_hash: [u8; 8],
    /// The announcing node.
    pub node_id: Uuid,
    /// TCP port the node listens on.
    pub port: u16,
    /// Sender's unix time in seconds.
    pub timestamp: u32,
    /// 32 fresh random bits.
    pub challenge: u32,
    /// Truncated HMAC over bytes 0..34.
    pub mac: [u8; 16],
}

impl Announcement {
    /// The 34 bytes the MAC covers.
    #[must_use]
    pub fn signed_bytes(&self) -> [u8; ANNOUNCEMENT_SIGNED_LEN] {
        let mut out = [0u8; ANNOUNCEMENT_SIGNED_LEN];
        let (hash, rest) = out.split_at_mut(8);
        let (node, rest) = rest.split_at_mut(16);
        let (port, rest) = rest.split_at_mut(2);
        let (ts, challenge) = rest.split_at_mut(4);
        hash.copy_from_slice(&self.community_hash);
        node.copy_from_slice(self.node_id.as_bytes());
        port.copy_from_slice(&self.port.to_be_bytes());
        ts.copy_from_slice(&self.timestamp.to_be_bytes());
        challenge.copy_from_slice(&self.challenge.to_be_bytes());
        out
    }

    /// Encodes the 50-byte datagram.
    #[must_use]
    pub fn encode(&self) -> [u8; ANNOUNCEMENT_LEN] {
        let mut out = [0u8; ANNOUNCEMENT_LEN];
        let (signed, mac) = out.split_at_mut(ANNOUNCEMENT_SIGNED_LEN);
        signed.copy_from_slice(&self.signed_bytes());
        mac.copy_from_slice(&self.mac);
        out
    }

    /// Decodes a datagram; `None` unless it is exactly 50 bytes.
    #[must_use]
    pub fn decode(datagram: &[u8]) -> Option<Self> {
        let bytes: &[u8; ANNOUNCEMENT_LEN] = datagram.try_into().ok()?;
        let (hash, rest) = bytes.split_at(8);
        let (node, rest) = rest.split_at(16);
        let (port, rest) = rest.split_at(2);
        let (ts, rest) = rest.split_at(4);
        let (challenge, mac) = rest.split_at(4);
        Some(Self {
            community_hash: hash.try_into().ok()?,
            node_id: Uuid::from_bytes(node.try_into().ok()?),
            port: u16::from_be_bytes(port.try_into().ok()?),
            timestamp: u32::from_be_bytes(ts.try_into().ok()?),
            challenge: u32::from_be_bytes(challenge.try_into().ok()?),
            mac: mac.try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_size_messages_refuse_other_lengths() {
        for len in 0..64 {
            let buf = vec![0u8; len];
            assert_eq!(Hello::decode(&buf).is_some(), len == HELLO_LEN);
            assert_eq!(Accept::decode(&buf).is_some(), len == ACCEPT_LEN);
            assert_eq!(
                Announcement::decode(&buf).is_some(),
                len == ANNOUNCEMENT_LEN
            );
        }
    }

    #[test]
    fn announcement_round_trips() {
        let a = Announcement {
            community_hash: [1, 2, 3, 4, 5, 6, 7, 8],
            node_id: Uuid::from_bytes([9; 16]),
            port: 9000,
            timestamp: 1_700_000_000,
            challenge: 0xdead_beef,
            mac: [7; 16],
        };
        assert_eq!(Announcement::decode(&a.encode()), Some(a));
    }
}
