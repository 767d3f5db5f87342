//! What the discovery machine hands out: datagrams to send, events, drop
//! reasons, the peer table's entries and counters.

use core::fmt;
use core::net::SocketAddr;
use std::time::Instant;

use uuid::Uuid;

use crate::auth::KeyId;
use crate::v2::WireVersion;
use crate::wire::{ANNOUNCEMENT_LEN, ANNOUNCEMENT_V2_LEN};

/// Why a received datagram was dropped. Variants are listed in the order
/// the checks run, except that a v1 announcement meets
/// [`AddressSticky`](Self::AddressSticky) right after
/// [`Replayed`](Self::Replayed) (before its pair is remembered; see the
/// [module docs](super)); a datagram failing several reports the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Neither a 50-byte v1 announcement nor a 52-byte v2 one whose first
    /// byte is 2.
    WrongLength,
    /// The community hash is not this node's.
    OtherCommunity,
    /// The MAC is valid under none of the accepted keys (for v2: none of
    /// their discovery keys).
    BadMac,
    /// An authentic v1 announcement while v1 is disabled
    /// ([`DiscoveryConfig::allow_v1`](super::DiscoveryConfig::allow_v1)):
    /// a v1 peer is trying to be found.
    V1Disabled,
    /// The message carries this node's own id (an echo of its broadcast or a
    /// reflection).
    OwnNode,
    /// The timestamp is more than the window older than `unix_now`.
    Stale,
    /// The timestamp is more than the window ahead of `unix_now`.
    FutureDated,
    /// v1: the `(node, challenge)` pair was already accepted within the
    /// window. v2: the timestamp is not strictly greater than the last one
    /// accepted from that node (a replay, or a reordered older message).
    Replayed,
    /// The replay cache is full of unexpired pairs; the message is refused
    /// rather than forget one early.
    ReplayCacheFull,
    /// The node's share of the v1 replay cache
    /// ([`DiscoveryConfig::replay_share_per_node`](super::DiscoveryConfig::replay_share_per_node))
    /// is full of unexpired pairs: that node's further v1 announcements are
    /// refused, other nodes' are not.
    ReplayShareFull,
    /// The source IP exceeded its message rate.
    SourceRateLimited,
    /// The rate table has no room for another source IP; refused rather
    /// than forget one early.
    SourceTableFull,
    /// The node exceeded its honoured v1 message rate from this source IP.
    NodeRateLimited,
    /// The peer table is full; a new node is refused rather than evict one.
    PeerTableFull,
    /// A valid announcement of a known node from another address while its
    /// current address is still announcing (sticky addresses, WIRE-v2.md
    /// §5): the peer stays where it is.
    AddressSticky,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 15] = [
        Self::WrongLength,
        Self::OtherCommunity,
        Self::BadMac,
        Self::V1Disabled,
        Self::OwnNode,
        Self::Stale,
        Self::FutureDated,
        Self::Replayed,
        Self::ReplayCacheFull,
        Self::ReplayShareFull,
        Self::SourceRateLimited,
        Self::SourceTableFull,
        Self::NodeRateLimited,
        Self::PeerTableFull,
        Self::AddressSticky,
    ];

    /// Stable snake_case name for logs and JSON: `wrong_length`,
    /// `other_community`, `bad_mac`, `v1_disabled`, `own_node`, `stale`,
    /// `future_dated`, `replayed`, `replay_cache_full`, `replay_share_full`,
    /// `source_rate_limited`, `source_table_full`, `node_rate_limited`,
    /// `peer_table_full`, `address_sticky`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WrongLength => "wrong_length",
            Self::OtherCommunity => "other_community",
            Self::BadMac => "bad_mac",
            Self::V1Disabled => "v1_disabled",
            Self::OwnNode => "own_node",
            Self::Stale => "stale",
            Self::FutureDated => "future_dated",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::ReplayShareFull => "replay_share_full",
            Self::SourceRateLimited => "source_rate_limited",
            Self::SourceTableFull => "source_table_full",
            Self::NodeRateLimited => "node_rate_limited",
            Self::PeerTableFull => "peer_table_full",
            Self::AddressSticky => "address_sticky",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the application may want to know about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A node not in the peer table sent a valid announcement.
    Discovered {
        /// The node's id.
        node: Uuid,
        /// Source IP of the datagram with the announced TCP port.
        addr: SocketAddr,
        /// The key whose MAC verified.
        key: KeyId,
        /// The version of the announcement that discovered it.
        version: WireVersion,
    },
    /// A known node sent a valid announcement from a new address or port.
    AddressChanged {
        /// The node's id.
        node: Uuid,
        /// The address recorded until now.
        old: SocketAddr,
        /// The address recorded from now on.
        new: SocketAddr,
    },
    /// A node sent no valid announcement for the expiry time and was
    /// forgotten.
    Expired {
        /// The node's id.
        node: Uuid,
        /// Its last recorded address.
        addr: SocketAddr,
    },
    /// A datagram was dropped. Nothing is ever sent back to its source.
    Dropped {
        /// The datagram's source.
        src: SocketAddr,
        /// The first check it failed.
        reason: DropReason,
    },
}

/// The bytes of one signed announcement: 50 for v1, 52 for v2. Derefs to
/// the datagram's bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AnnouncementBytes {
    buf: [u8; ANNOUNCEMENT_V2_LEN],
    len: usize,
}

impl AnnouncementBytes {
    pub(super) fn v1(bytes: [u8; ANNOUNCEMENT_LEN]) -> Self {
        let mut buf = [0u8; ANNOUNCEMENT_V2_LEN];
        if let Some(head) = buf.get_mut(..ANNOUNCEMENT_LEN) {
            head.copy_from_slice(&bytes);
        }
        Self {
            buf,
            len: ANNOUNCEMENT_LEN,
        }
    }

    pub(super) fn v2(bytes: [u8; ANNOUNCEMENT_V2_LEN]) -> Self {
        Self {
            buf: bytes,
            len: ANNOUNCEMENT_V2_LEN,
        }
    }

    /// The datagram's bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&self.buf)
    }

    /// Which version of announcement these bytes are.
    #[must_use]
    pub fn version(&self) -> WireVersion {
        if self.len == ANNOUNCEMENT_V2_LEN {
            WireVersion::V2
        } else {
            WireVersion::V1
        }
    }
}

impl core::ops::Deref for AnnouncementBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for AnnouncementBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for AnnouncementBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.version())?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One announcement to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryTransmit {
    /// The signed datagram: a 52-byte v2 announcement, or with
    /// [`allow_v1`](super::DiscoveryConfig::allow_v1) also a 50-byte v1 one.
    pub datagram: AnnouncementBytes,
    /// Where to send it.
    pub to: SocketAddr,
}

/// A node in the peer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveredPeer {
    /// The node's id.
    pub node: Uuid,
    /// Source IP of its last valid datagram with the TCP port it announced.
    pub addr: SocketAddr,
    /// When its last valid announcement arrived.
    pub last_seen: Instant,
    /// The key that verified its last valid announcement.
    pub key: KeyId,
    /// [`WireVersion::V2`] once any v2 announcement of this node was
    /// accepted: it is then dialed with v2 only and a v1 HELLO claiming its
    /// id is a downgrade. [`WireVersion::V1`] while it was seen only through
    /// v1 announcements.
    pub version: WireVersion,
    /// Whether the node accepts v1 HELLOs: flag bit 0 of its last v2
    /// announcement, or true while it was seen only through v1.
    pub accepts_v1: bool,
}

/// What the machine has seen, as plain counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryCounters {
    /// Datagrams fed to [`handle_datagram`](super::Discovery::handle_datagram).
    pub received: u64,
    /// Datagrams that passed every check.
    pub accepted: u64,
    /// Announcements handed out by [`poll_transmit`](super::Discovery::poll_transmit).
    pub sent: u64,
    /// Drops for [`DropReason::WrongLength`].
    pub wrong_length: u64,
    /// Drops for [`DropReason::OtherCommunity`].
    pub other_community: u64,
    /// Drops for [`DropReason::BadMac`].
    pub bad_mac: u64,
    /// Drops for [`DropReason::V1Disabled`].
    pub v1_disabled: u64,
    /// Drops for [`DropReason::OwnNode`].
    pub own_node: u64,
    /// Drops for [`DropReason::Stale`].
    pub stale: u64,
    /// Drops for [`DropReason::FutureDated`].
    pub future_dated: u64,
    /// Drops for [`DropReason::Replayed`].
    pub replayed: u64,
    /// Drops for [`DropReason::ReplayCacheFull`].
    pub replay_cache_full: u64,
    /// Drops for [`DropReason::ReplayShareFull`].
    pub replay_share_full: u64,
    /// Drops for [`DropReason::SourceRateLimited`].
    pub source_rate_limited: u64,
    /// Drops for [`DropReason::SourceTableFull`].
    pub source_table_full: u64,
    /// Drops for [`DropReason::NodeRateLimited`].
    pub node_rate_limited: u64,
    /// Drops for [`DropReason::PeerTableFull`].
    pub peer_table_full: u64,
    /// Drops for [`DropReason::AddressSticky`].
    pub address_sticky: u64,
    /// Peers forgotten after the expiry time.
    pub expired: u64,
    /// Events discarded because the queue held
    /// [`max_queued_events`](super::DiscoveryConfig::max_queued_events) undrained
    /// events.
    pub events_lost: u64,
}

impl DiscoveryCounters {
    /// The drop counter for `reason`.
    #[must_use]
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::WrongLength => self.wrong_length,
            DropReason::OtherCommunity => self.other_community,
            DropReason::BadMac => self.bad_mac,
            DropReason::V1Disabled => self.v1_disabled,
            DropReason::OwnNode => self.own_node,
            DropReason::Stale => self.stale,
            DropReason::FutureDated => self.future_dated,
            DropReason::Replayed => self.replayed,
            DropReason::ReplayCacheFull => self.replay_cache_full,
            DropReason::ReplayShareFull => self.replay_share_full,
            DropReason::SourceRateLimited => self.source_rate_limited,
            DropReason::SourceTableFull => self.source_table_full,
            DropReason::NodeRateLimited => self.node_rate_limited,
            DropReason::PeerTableFull => self.peer_table_full,
            DropReason::AddressSticky => self.address_sticky,
        }
    }

    /// Every drop, whatever the reason.
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        [
            self.wrong_length,
            self.other_community,
            self.bad_mac,
            self.v1_disabled,
            self.own_node,
            self.stale,
            self.future_dated,
            self.replayed,
            self.replay_cache_full,
            self.replay_share_full,
            self.source_rate_limited,
            self.source_table_full,
            self.node_rate_limited,
            self.peer_table_full,
            self.address_sticky,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    pub(super) fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::WrongLength => &mut self.wrong_length,
            DropReason::OtherCommunity => &mut self.other_community,
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::V1Disabled => &mut self.v1_disabled,
            DropReason::OwnNode => &mut self.own_node,
            DropReason::Stale => &mut self.stale,
            DropReason::FutureDated => &mut self.future_dated,
            DropReason::Replayed => &mut self.replayed,
            DropReason::ReplayCacheFull => &mut self.replay_cache_full,
            DropReason::ReplayShareFull => &mut self.replay_share_full,
            DropReason::SourceRateLimited => &mut self.source_rate_limited,
            DropReason::SourceTableFull => &mut self.source_table_full,
            DropReason::NodeRateLimited => &mut self.node_rate_limited,
            DropReason::PeerTableFull => &mut self.peer_table_full,
            DropReason::AddressSticky => &mut self.address_sticky,
        };
        bump(counter);
    }
}

/// How full the bounded tables are; each stays within its configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryOccupancy {
    /// Recorded peers (at most [`DiscoveryConfig::max_peers`](super::DiscoveryConfig::max_peers)).
    pub peers: usize,
    /// Source IPs with rate state (at most
    /// [`DiscoveryConfig::max_tracked_sources`](super::DiscoveryConfig::max_tracked_sources)).
    pub tracked_sources: usize,
    /// Remembered v1 `(node, challenge)` pairs (at most
    /// [`DiscoveryConfig::replay_capacity`](super::DiscoveryConfig::replay_capacity)).
    pub replay_entries: usize,
    /// Last accepted v2 timestamps kept for nodes no longer in the peer
    /// table (at most [`DiscoveryConfig::max_peers`](super::DiscoveryConfig::max_peers)).
    pub v2_floors: usize,
    /// Undrained events (at most [`DiscoveryConfig::max_queued_events`](super::DiscoveryConfig::max_queued_events)).
    pub queued_events: usize,
}

/// Counters saturate: a wrapped counter would read as "nothing happened".
pub(super) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_names_are_stable() {
        assert_eq!(DropReason::ReplayCacheFull.to_string(), "replay_cache_full");
        assert_eq!(DropReason::WrongLength.as_str(), "wrong_length");
        assert_eq!(DropReason::V1Disabled.as_str(), "v1_disabled");
        assert_eq!(DropReason::AddressSticky.as_str(), "address_sticky");
    }

    #[test]
    fn every_reason_has_its_own_counter() {
        let mut c = DiscoveryCounters::default();
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            c.count_drop(*reason);
            assert_eq!(c.dropped(*reason), 1, "{reason}");
            assert_eq!(c.dropped_total(), i as u64 + 1);
        }
    }

    #[test]
    fn all_lists_every_reason_once() {
        // Exhaustive inside the crate: a new reason does not compile here
        // until it has a place, and the assertion wants it in ALL.
        let place = |r: DropReason| match r {
            DropReason::WrongLength => 0,
            DropReason::OtherCommunity => 1,
            DropReason::BadMac => 2,
            DropReason::V1Disabled => 3,
            DropReason::OwnNode => 4,
            DropReason::Stale => 5,
            DropReason::FutureDated => 6,
            DropReason::Replayed => 7,
            DropReason::ReplayCacheFull => 8,
            DropReason::ReplayShareFull => 9,
            DropReason::SourceRateLimited => 10,
            DropReason::SourceTableFull => 11,
            DropReason::NodeRateLimited => 12,
            DropReason::PeerTableFull => 13,
            DropReason::AddressSticky => 14,
        };
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(place(*r), i, "{r}");
        }
    }
}
