//! The 52-byte v2 discovery announcement (WIRE-v2.md §5). Like the v1
//! codecs it only moves bytes; [`crate::auth::sign_announcement_v2`] and
//! [`crate::auth::verify_announcement_v2`] compute and check the MAC.

use uuid::Uuid;

/// Length of a v2 discovery datagram.
pub const ANNOUNCEMENT_V2_LEN: usize = 52;
/// Length of the MAC-covered part of a v2 datagram (bytes 0..36).
pub const ANNOUNCEMENT_V2_SIGNED_LEN: usize = 36;
/// The first byte of every v2 datagram: the wire version.
pub const ANNOUNCEMENT_V2_VERSION: u8 = 2;
/// Flags bit 0: the sender also accepts v1 HELLOs.
pub const FLAG_ACCEPTS_V1: u8 = 0x01;

/// A v2 discovery datagram:
/// `0x02 | community_hash(8) | node_id(16) | tcp_port(2) | unix_ms(8) | flags(1) | MAC(16)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::exhaustive_structs)] // the fields of a v2 announcement, fixed by the wire format
pub struct AnnouncementV2 {
    /// First 8 bytes of SHA-256 of the community string.
    pub community_hash: [u8; 8],
    /// The announcing node.
    pub node_id: Uuid,
    /// TCP port the node listens on.
    pub tcp_port: u16,
    /// Sender's wall-clock time, unix milliseconds; strictly increasing per
    /// sender.
    pub unix_ms: u64,
    /// Bit 0 is [`FLAG_ACCEPTS_V1`]; the other bits are sent as 0 and
    /// ignored on receipt (they are still covered by the MAC).
    pub flags: u8,
    /// First 16 bytes of HMAC-SHA256 under the discovery key over bytes 0..36.
    pub mac: [u8; 16],
}

impl AnnouncementV2 {
    /// Whether the sender says it also accepts v1 HELLOs.
    #[must_use]
    pub const fn accepts_v1(&self) -> bool {
        self.flags & FLAG_ACCEPTS_V1 != 0
    }

    /// The 36 bytes the MAC covers, version byte included.
    #[must_use]
    pub fn signed_bytes(&self) -> [u8; ANNOUNCEMENT_V2_SIGNED_LEN] {
        let mut out = [0u8; ANNOUNCEMENT_V2_SIGNED_LEN];
        let (version, rest) = out.split_at_mut(1);
        let (hash, rest) = rest.split_at_mut(8);
        let (node, rest) = rest.split_at_mut(16);
        let (port, rest) = rest.split_at_mut(2);
        let (ms, flags) = rest.split_at_mut(8);
        version.copy_from_slice(&[ANNOUNCEMENT_V2_VERSION]);
        hash.copy_from_slice(&self.community_hash);
        node.copy_from_slice(self.node_id.as_bytes());
        port.copy_from_slice(&self.tcp_port.to_be_bytes());
        ms.copy_from_slice(&self.unix_ms.to_be_bytes());
        flags.copy_from_slice(&[self.flags]);
        out
    }

    /// Encodes the 52-byte datagram.
    #[must_use]
    pub fn encode(&self) -> [u8; ANNOUNCEMENT_V2_LEN] {
        let mut out = [0u8; ANNOUNCEMENT_V2_LEN];
        let (signed, mac) = out.split_at_mut(ANNOUNCEMENT_V2_SIGNED_LEN);
        signed.copy_from_slice(&self.signed_bytes());
        mac.copy_from_slice(&self.mac);
        out
    }

    /// Decodes a datagram; `None` unless it is exactly 52 bytes with first
    /// byte 2.
    #[must_use]
    pub fn decode(datagram: &[u8]) -> Option<Self> {
        let bytes: &[u8; ANNOUNCEMENT_V2_LEN] = datagram.try_into().ok()?;
        let (version, rest) = bytes.split_first()?;
        if *version != ANNOUNCEMENT_V2_VERSION {
            return None;
        }
        let (hash, rest) = rest.split_at(8);
        let (node, rest) = rest.split_at(16);
        let (port, rest) = rest.split_at(2);
        let (ms, rest) = rest.split_at(8);
        let (flags, mac) = rest.split_first()?;
        Some(Self {
            community_hash: hash.try_into().ok()?,
            node_id: Uuid::from_bytes(node.try_into().ok()?),
            tcp_port: u16::from_be_bytes(port.try_into().ok()?),
            unix_ms: u64::from_be_bytes(ms.try_into().ok()?),
            flags: *flags,
            mac: mac.try_into().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_52_bytes_starting_with_2_decode() {
        for len in 0..64 {
            let mut buf = vec![0u8; len];
            if let Some(first) = buf.first_mut() {
                *first = 2;
            }
            assert_eq!(
                AnnouncementV2::decode(&buf).is_some(),
                len == ANNOUNCEMENT_V2_LEN
            );
        }
        let mut buf = [0u8; ANNOUNCEMENT_V2_LEN];
        for first in [0u8, 1, 3, 0x82, 0xff] {
            buf[0] = first;
            assert_eq!(AnnouncementV2::decode(&buf), None);
        }
    }

    #[test]
    fn round_trips_every_field() {
        let a = AnnouncementV2 {
            community_hash: [1, 2, 3, 4, 5, 6, 7, 8],
            node_id: Uuid::from_bytes([9; 16]),
            tcp_port: 9000,
            unix_ms: 1_768_033_524_579,
            flags: 0xfe,
            mac: [7; 16],
        };
        assert_eq!(AnnouncementV2::decode(&a.encode()), Some(a));
        assert!(!a.accepts_v1());
        assert_eq!(&a.encode()[..1], &[2]);
    }
}
