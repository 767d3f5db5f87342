//! The UDP discovery machine (WIRE.md §7): periodic signed announcements,
//! the validation pipeline for received ones, and the table of discovered
//! peers with expiry.
//!
//! # Call-order contract
//!
//! [`Discovery`] is sans-IO. An adapter owns one UDP socket and a timer and
//! repeats:
//!
//! 1. send every datagram [`poll_transmit`](Discovery::poll_transmit) gives,
//!    until it returns `None`;
//! 2. deliver every event [`poll_event`](Discovery::poll_event) gives, until
//!    it returns `None`;
//! 3. wait for the first of: a received datagram
//!    ([`handle_datagram`](Discovery::handle_datagram)) or the
//!    [`poll_timeout`](Discovery::poll_timeout) deadline
//!    ([`handle_timeout`](Discovery::handle_timeout)); feed it in; repeat.
//!
//! Time comes in twice: `now: Instant` drives timers (announce schedule, peer
//! expiry, rate limits, key deadlines) and `unix_now` (seconds) is compared
//! with the timestamps carried by announcements.
//!
//! ```
//! use std::time::Instant;
//! use asoc_proto::auth::{ApiKey, KeyRing};
//! use asoc_proto::discovery::{Discovery, DiscoveryConfig};
//! use uuid::Uuid;
//!
//! // `t0` and `unix_now` come from the adapter's clocks; the machine never
//! // reads one.
//! fn run(t0: Instant, unix_now: u64) -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyRing::new(ApiKey::new("0123456789abcdef0123456789abcdef")?);
//! let config = DiscoveryConfig::builder("my-cluster")
//!     .unicast_targets(vec!["192.0.2.7:9999".parse()?])
//!     .build()?;
//! let mut disc = Discovery::new(config, Uuid::from_u128(1), 9000, [7; 32], t0);
//! while let Some(t) = disc.poll_transmit(t0, unix_now, &keys) {
//!     // socket.send_to(&t.datagram, t.to)
//!     assert_eq!(t.to, "192.0.2.7:9999".parse()?);
//! }
//! while let Some(event) = disc.poll_event() {
//!     println!("{event:?}");
//! }
//! assert!(disc.poll_timeout().is_some());
//! # Ok(())
//! }
//! ```
//!
//! # Validation order
//!
//! A received datagram is dropped, cheapest check first, at the first of:
//! not exactly 50 bytes; another community's hash (constant-time compare); a
//! MAC valid under none of the accepted keys; this node's own id; a timestamp
//! more than the window (60 s) from `unix_now` in either direction; a
//! `(node, challenge)` pair already seen (or a full replay cache); the per
//! source-IP rate (or a full source table); the per-node rate; a full peer
//! table. A message that passes every check records or refreshes the peer as
//! (node id, source IP of the datagram, TCP port from the message): nothing
//! unauthenticated can move a peer's address.
//!
//! A pair enters the replay cache as soon as its MAC and timestamp checked
//! out, even when a rate limit then drops the message: otherwise a copy
//! captured while the sender was over its rate could be accepted later from
//! the attacker's address. Likewise a message that passes the source check
//! uses up source rate even if a later check drops it.

use core::cmp::Reverse;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Instant;

use uuid::Uuid;

use crate::auth::{community_hash, ct_eq, sign_announcement, verify_announcement, KeyId, KeyRing};
use crate::replay::{ReplayCache, ReplayError};
use crate::rng::{Rng, Seed};
use crate::wire::{Announcement, ANNOUNCEMENT_LEN};

/// UDP port discovery listens on and announces to (RFC-0001 §12).
pub const DISCOVERY_PORT: u16 = 9999;

/// Why a [`DiscoveryConfig`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryConfigError {
    /// A zero announce interval would make every poll an announcement.
    #[error("discovery announce interval must be greater than zero")]
    ZeroAnnounceInterval,
    /// A zero expiry would forget every peer as soon as it is recorded.
    #[error("discovered peer expiry must be greater than zero")]
    ZeroPeerExpiry,
    /// A rate of zero would refuse every message; the limits MUST stay on.
    #[error("discovery {which} rate limit must be at least 1 message per second")]
    ZeroRate {
        /// `"per source IP"` or `"per node"`.
        which: &'static str,
    },
    /// A bounded table with room for nothing would refuse every message.
    #[error("discovery {which} must be at least 1")]
    ZeroCapacity {
        /// The name of the bound: `"replay_capacity"`, `"max_peers"`,
        /// `"max_tracked_sources"` or `"max_queued_events"`.
        which: &'static str,
    },
    /// Nobody listens on UDP port 0, and sending there fails.
    #[error("discovery destination {addr} has port 0")]
    ZeroPort {
        /// The refused destination.
        addr: SocketAddr,
    },
}

/// Discovery settings. Defaults follow WIRE.md §6; every bound is
/// validated by [`DiscoveryConfigBuilder::build`], so a `DiscoveryConfig`
/// in hand is always usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryConfig {
    community: String,
    announce_interval: Duration,
    peer_expiry: Duration,
    timestamp_window_secs: u64,
    replay_capacity: usize,
    per_ip_rate: u32,
    per_node_rate: u32,
    max_peers: usize,
    max_tracked_sources: usize,
    max_queued_events: usize,
    broadcast: SocketAddr,
    unicast_targets: Vec<SocketAddr>,
}

impl DiscoveryConfig {
    /// The defaults of WIRE.md §6 for `community`: announce every 3 s,
    /// peers expire after 15 s, ±60 s timestamp window, 65,536 replay
    /// entries, 10 messages per second per source IP, 1 per second per node,
    /// 1,024 peers, 65,536 tracked sources, 4,096 queued events, broadcast to
    /// `255.255.255.255:9999`.
    ///
    /// There is deliberately no `Default`: a default community would make
    /// unrelated clusters see each other.
    #[must_use]
    pub fn new(community: impl Into<String>) -> Self {
        Self {
            community: community.into(),
            announce_interval: Duration::from_secs(3),
            peer_expiry: Duration::from_secs(15),
            timestamp_window_secs: 60,
            replay_capacity: 65_536,
            per_ip_rate: 10,
            per_node_rate: 1,
            max_peers: 1024,
            max_tracked_sources: 65_536,
            max_queued_events: 4096,
            broadcast: SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), DISCOVERY_PORT),
            unicast_targets: Vec::new(),
        }
    }

    /// A builder starting from [`DiscoveryConfig::new`]'s defaults.
    pub fn builder(community: impl Into<String>) -> DiscoveryConfigBuilder {
        DiscoveryConfigBuilder(Self::new(community))
    }

    /// The community string; only its hash goes on the wire.
    #[must_use]
    pub fn community(&self) -> &str {
        &self.community
    }

    /// Time between two announcements.
    #[must_use]
    pub fn announce_interval(&self) -> Duration {
        self.announce_interval
    }

    /// How long a peer is kept after its last valid message.
    #[must_use]
    pub fn peer_expiry(&self) -> Duration {
        self.peer_expiry
    }

    /// Largest accepted distance, in seconds and in either direction,
    /// between an announcement's timestamp and `unix_now`.
    #[must_use]
    pub fn timestamp_window_secs(&self) -> u64 {
        self.timestamp_window_secs
    }

    /// Most `(node, challenge)` pairs remembered at once.
    #[must_use]
    pub fn replay_capacity(&self) -> usize {
        self.replay_capacity
    }

    /// Valid messages honoured per second from one source IP.
    #[must_use]
    pub fn per_ip_rate(&self) -> u32 {
        self.per_ip_rate
    }

    /// Valid messages honoured per second from one node id.
    #[must_use]
    pub fn per_node_rate(&self) -> u32 {
        self.per_node_rate
    }

    /// Most peers recorded at once.
    #[must_use]
    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// Most source IPs whose rate is tracked at once.
    #[must_use]
    pub fn max_tracked_sources(&self) -> usize {
        self.max_tracked_sources
    }

    /// Most events queued between two drains of
    /// [`poll_event`](Discovery::poll_event).
    #[must_use]
    pub fn max_queued_events(&self) -> usize {
        self.max_queued_events
    }

    /// Where announcements go when there are no unicast targets.
    #[must_use]
    pub fn broadcast(&self) -> SocketAddr {
        self.broadcast
    }

    /// Where announcements go instead of the broadcast address, if any.
    #[must_use]
    pub fn unicast_targets(&self) -> &[SocketAddr] {
        &self.unicast_targets
    }

    /// Where each announcement round sends one datagram: the unicast targets
    /// when there are any, otherwise the broadcast address alone.
    #[must_use]
    pub fn destinations(&self) -> &[SocketAddr] {
        if self.unicast_targets.is_empty() {
            core::slice::from_ref(&self.broadcast)
        } else {
            &self.unicast_targets
        }
    }

    fn validate(&self) -> Result<(), DiscoveryConfigError> {
        use DiscoveryConfigError as E;
        if self.announce_interval.is_zero() {
            return Err(E::ZeroAnnounceInterval);
        }
        if self.peer_expiry.is_zero() {
            return Err(E::ZeroPeerExpiry);
        }
        if self.per_ip_rate == 0 {
            return Err(E::ZeroRate {
                which: "per source IP",
            });
        }
        if self.per_node_rate == 0 {
            return Err(E::ZeroRate { which: "per node" });
        }
        for (which, value) in [
            ("replay_capacity", self.replay_capacity),
            ("max_peers", self.max_peers),
            ("max_tracked_sources", self.max_tracked_sources),
            ("max_queued_events", self.max_queued_events),
        ] {
            if value == 0 {
                return Err(E::ZeroCapacity { which });
            }
        }
        if let Some(addr) = self.destinations().iter().find(|a| a.port() == 0) {
            return Err(E::ZeroPort { addr: *addr });
        }
        Ok(())
    }
}

/// Builds a validated [`DiscoveryConfig`].
#[derive(Clone, Debug)]
#[must_use]
pub struct DiscoveryConfigBuilder(DiscoveryConfig);

impl DiscoveryConfigBuilder {
    /// Time between two announcements (default 3 s).
    pub fn announce_interval(mut self, interval: Duration) -> Self {
        self.0.announce_interval = interval;
        self
    }

    /// How long a peer is kept after its last valid message (default 15 s).
    pub fn peer_expiry(mut self, expiry: Duration) -> Self {
        self.0.peer_expiry = expiry;
        self
    }

    /// Accepted timestamp distance in seconds, either direction (default 60).
    pub fn timestamp_window_secs(mut self, secs: u64) -> Self {
        self.0.timestamp_window_secs = secs;
        self
    }

    /// Most `(node, challenge)` pairs remembered (default 65,536).
    pub fn replay_capacity(mut self, capacity: usize) -> Self {
        self.0.replay_capacity = capacity;
        self
    }

    /// Valid messages honoured per second per source IP (default 10).
    pub fn per_ip_rate(mut self, per_second: u32) -> Self {
        self.0.per_ip_rate = per_second;
        self
    }

    /// Valid messages honoured per second per node (default 1).
    pub fn per_node_rate(mut self, per_second: u32) -> Self {
        self.0.per_node_rate = per_second;
        self
    }

    /// Most peers recorded at once (default 1,024).
    pub fn max_peers(mut self, max: usize) -> Self {
        self.0.max_peers = max;
        self
    }

    /// Most source IPs whose rate is tracked at once (default 65,536).
    pub fn max_tracked_sources(mut self, max: usize) -> Self {
        self.0.max_tracked_sources = max;
        self
    }

    /// Most events queued between drains (default 4,096).
    pub fn max_queued_events(mut self, max: usize) -> Self {
        self.0.max_queued_events = max;
        self
    }

    /// Broadcast destination (default `255.255.255.255:9999`).
    pub fn broadcast(mut self, addr: SocketAddr) -> Self {
        self.0.broadcast = addr;
        self
    }

    /// Announce only to these addresses instead of broadcasting (default:
    /// none, so broadcast).
    pub fn unicast_targets(mut self, targets: Vec<SocketAddr>) -> Self {
        self.0.unicast_targets = targets;
        self
    }

    /// The configuration, or the first setting that cannot work.
    pub fn build(self) -> Result<DiscoveryConfig, DiscoveryConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// Why a received datagram was dropped. Variants are listed in the order
/// the checks run; a datagram failing several reports the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The datagram MUST be exactly 50 bytes.
    WrongLength,
    /// The community hash is not this node's.
    OtherCommunity,
    /// The MAC is valid under none of the accepted keys.
    BadMac,
    /// The message carries this node's own id (an echo of its broadcast or a
    /// reflection).
    OwnNode,
    /// The timestamp is more than the window older than `unix_now`.
    Stale,
    /// The timestamp is more than the window ahead of `unix_now`.
    FutureDated,
    /// The `(node, challenge)` pair was already accepted within the window.
    Replayed,
    /// The replay cache is full of unexpired pairs; the message is refused
    /// rather than forget one early.
    ReplayCacheFull,
    /// The source IP exceeded its message rate.
    SourceRateLimited,
    /// The rate table has no room for another source IP; refused rather
    /// than forget one early.
    SourceTableFull,
    /// The node exceeded its honoured message rate.
    NodeRateLimited,
    /// The peer table is full; a new node is refused rather than evict one.
    PeerTableFull,
}

impl DropReason {
    /// Stable snake_case name for logs and JSON: `wrong_length`,
    /// `other_community`, `bad_mac`, `own_node`, `stale`, `future_dated`,
    /// `replayed`, `replay_cache_full`, `source_rate_limited`,
    /// `source_table_full`, `node_rate_limited`, `peer_table_full`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WrongLength => "wrong_length",
            Self::OtherCommunity => "other_community",
            Self::BadMac => "bad_mac",
            Self::OwnNode => "own_node",
            Self::Stale => "stale",
            Self::FutureDated => "future_dated",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::SourceRateLimited => "source_rate_limited",
            Self::SourceTableFull => "source_table_full",
            Self::NodeRateLimited => "node_rate_limited",
            Self::PeerTableFull => "peer_table_full",
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

/// One announcement to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryTransmit {
    /// The signed 50-byte datagram.
    pub datagram: [u8; ANNOUNCEMENT_LEN],
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
}

/// What the machine has seen, as plain counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryCounters {
    /// Datagrams fed to [`handle_datagram`](Discovery::handle_datagram).
    pub received: u64,
    /// Datagrams that passed every check.
    pub accepted: u64,
    /// Announcements handed out by [`poll_transmit`](Discovery::poll_transmit).
    pub sent: u64,
    /// Drops for [`DropReason::WrongLength`].
    pub wrong_length: u64,
    /// Drops for [`DropReason::OtherCommunity`].
    pub other_community: u64,
    /// Drops for [`DropReason::BadMac`].
    pub bad_mac: u64,
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
    /// Drops for [`DropReason::SourceRateLimited`].
    pub source_rate_limited: u64,
    /// Drops for [`DropReason::SourceTableFull`].
    pub source_table_full: u64,
    /// Drops for [`DropReason::NodeRateLimited`].
    pub node_rate_limited: u64,
    /// Drops for [`DropReason::PeerTableFull`].
    pub peer_table_full: u64,
    /// Peers forgotten after the expiry time.
    pub expired: u64,
    /// Events discarded because the queue held
    /// [`max_queued_events`](DiscoveryConfig::max_queued_events) undrained
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
            DropReason::OwnNode => self.own_node,
            DropReason::Stale => self.stale,
            DropReason::FutureDated => self.future_dated,
            DropReason::Replayed => self.replayed,
            DropReason::ReplayCacheFull => self.replay_cache_full,
            DropReason::SourceRateLimited => self.source_rate_limited,
            DropReason::SourceTableFull => self.source_table_full,
            DropReason::NodeRateLimited => self.node_rate_limited,
            DropReason::PeerTableFull => self.peer_table_full,
        }
    }

    /// Every drop, whatever the reason.
    #[must_use]
    pub fn dropped_total(&self) -> u64 {
        [
            self.wrong_length,
            self.other_community,
            self.bad_mac,
            self.own_node,
            self.stale,
            self.future_dated,
            self.replayed,
            self.replay_cache_full,
            self.source_rate_limited,
            self.source_table_full,
            self.node_rate_limited,
            self.peer_table_full,
        ]
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::WrongLength => &mut self.wrong_length,
            DropReason::OtherCommunity => &mut self.other_community,
            DropReason::BadMac => &mut self.bad_mac,
            DropReason::OwnNode => &mut self.own_node,
            DropReason::Stale => &mut self.stale,
            DropReason::FutureDated => &mut self.future_dated,
            DropReason::Replayed => &mut self.replayed,
            DropReason::ReplayCacheFull => &mut self.replay_cache_full,
            DropReason::SourceRateLimited => &mut self.source_rate_limited,
            DropReason::SourceTableFull => &mut self.source_table_full,
            DropReason::NodeRateLimited => &mut self.node_rate_limited,
            DropReason::PeerTableFull => &mut self.peer_table_full,
        };
        bump(counter);
    }
}

/// How full the bounded tables are; each stays within its configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiscoveryOccupancy {
    /// Recorded peers (at most [`DiscoveryConfig::max_peers`]).
    pub peers: usize,
    /// Source IPs with rate state (at most
    /// [`DiscoveryConfig::max_tracked_sources`]).
    pub tracked_sources: usize,
    /// Remembered `(node, challenge)` pairs (at most
    /// [`DiscoveryConfig::replay_capacity`]).
    pub replay_entries: usize,
    /// Undrained events (at most [`DiscoveryConfig::max_queued_events`]).
    pub queued_events: usize,
}

/// Counters saturate: a wrapped counter would read as "nothing happened".
fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// A generic cell rate algorithm limiter: `rate` messages per second with
/// bursts of up to `rate`. Its whole state per key is one "theoretical
/// arrival time"; a key whose time is not after `now` is indistinguishable
/// from a fresh one, which is what lets tables forget it.
#[derive(Clone, Copy, Debug)]
struct Gcra {
    /// Time one message uses up.
    emission: Duration,
    /// How far ahead of `now` the arrival time may run: the burst.
    tolerance: Duration,
}

impl Gcra {
    fn per_second(rate: u32) -> Self {
        let emission = Duration::from_secs(1) / rate.max(1);
        Self {
            emission,
            tolerance: emission
                .checked_mul(rate.saturating_sub(1))
                .unwrap_or(Duration::from_secs(1)),
        }
    }

    /// The key's next arrival time if a message at `now` conforms, `None` if
    /// it must be refused.
    fn admit(&self, now: Instant, tat: Option<Instant>) -> Option<Instant> {
        let start = tat.map_or(now, |t| t.max(now));
        if start.saturating_duration_since(now) > self.tolerance {
            return None;
        }
        // An unrepresentable instant cannot happen in practice; refusing is
        // the fail-closed answer if it ever did.
        start.checked_add(self.emission)
    }
}

/// Per-source-IP rate state, bounded to `capacity` addresses.
#[derive(Clone, Debug)]
struct SourceLimiter {
    gcra: Gcra,
    capacity: usize,
    tat: BTreeMap<IpAddr, Instant>,
    /// One entry per key, holding a lower bound of its arrival time (times
    /// only grow), so the minimum says which keys may be forgettable.
    by_tat: BinaryHeap<Reverse<(Instant, IpAddr)>>,
}

impl SourceLimiter {
    fn new(rate: u32, capacity: usize) -> Self {
        Self {
            gcra: Gcra::per_second(rate),
            capacity,
            tat: BTreeMap::new(),
            by_tat: BinaryHeap::new(),
        }
    }

    /// Forgets sources whose limiter is back to a full burst.
    fn purge(&mut self, now: Instant) {
        while let Some(Reverse((due, ip))) = self.by_tat.peek().copied() {
            if due > now {
                break;
            }
            self.by_tat.pop();
            match self.tat.get(&ip).copied() {
                Some(actual) if actual > now => self.by_tat.push(Reverse((actual, ip))),
                _ => {
                    self.tat.remove(&ip);
                }
            }
        }
    }

    fn check(&mut self, now: Instant, ip: IpAddr) -> Result<(), DropReason> {
        self.purge(now);
        let known = self.tat.get(&ip).copied();
        if known.is_none() && self.tat.len() >= self.capacity {
            return Err(DropReason::SourceTableFull);
        }
        let next = self
            .gcra
            .admit(now, known)
            .ok_or(DropReason::SourceRateLimited)?;
        self.tat.insert(ip, next);
        if known.is_none() {
            self.by_tat.push(Reverse((next, ip)));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
struct PeerEntry {
    addr: SocketAddr,
    last_seen: Instant,
    /// `last_seen + peer_expiry`; `None` if that instant is unrepresentable.
    expires: Option<Instant>,
    key: KeyId,
    /// Per-node rate state: it lives with the peer because only recorded
    /// peers can have been honoured recently.
    tat: Instant,
}

impl PeerEntry {
    fn public(&self, node: Uuid) -> DiscoveredPeer {
        DiscoveredPeer {
            node,
            addr: self.addr,
            last_seen: self.last_seen,
            key: self.key,
        }
    }
}

/// The discovery machine for one node. See the [module docs](self) for the
/// call-order contract and the validation order.
#[derive(Debug)]
pub struct Discovery {
    config: DiscoveryConfig,
    community_hash: [u8; 8],
    node_id: Uuid,
    tcp_port: u16,
    rng: Rng,
    /// When the next round of announcements is due; `None` means never
    /// (only if `now + interval` is unrepresentable).
    next_announce: Option<Instant>,
    /// Index into the destinations of the round being sent.
    round_index: usize,
    replay: ReplayCache<u64>,
    sources: SourceLimiter,
    node_gcra: Gcra,
    peers: BTreeMap<Uuid, PeerEntry>,
    /// `(expiry, node)` for every peer with a representable expiry.
    expiries: BTreeSet<(Instant, Uuid)>,
    events: VecDeque<DiscoveryEvent>,
    counters: DiscoveryCounters,
}

impl Discovery {
    /// A machine announcing `node_id` listening on TCP `tcp_port`. The first
    /// announcement is due at `now`. `seed` drives the challenges: a fixed
    /// seed and fixed inputs give byte-identical announcements; adapters
    /// seed from the OS.
    #[must_use]
    pub fn new(
        config: DiscoveryConfig,
        node_id: Uuid,
        tcp_port: u16,
        seed: Seed,
        now: Instant,
    ) -> Self {
        Self {
            community_hash: community_hash(&config.community),
            node_id,
            tcp_port,
            rng: Rng::from_seed(seed),
            next_announce: Some(now),
            round_index: 0,
            replay: ReplayCache::new(config.replay_capacity),
            sources: SourceLimiter::new(config.per_ip_rate, config.max_tracked_sources),
            node_gcra: Gcra::per_second(config.per_node_rate),
            peers: BTreeMap::new(),
            expiries: BTreeSet::new(),
            events: VecDeque::new(),
            counters: DiscoveryCounters::default(),
            config,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    /// This node's id, as announced.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// Changes the announced TCP port; it takes effect with the next
    /// announcement.
    pub fn set_tcp_port(&mut self, port: u16) {
        self.tcp_port = port;
    }

    // ---- inputs -----------------------------------------------------------

    /// Feeds one received datagram from `src`. Never fails: a datagram that
    /// fails a check is dropped (see the [module docs](self) for the order),
    /// counted, and reported as [`DiscoveryEvent::Dropped`]. `unix_now` is
    /// the local wall-clock time in seconds, compared with the message's
    /// timestamp; `now` drives rate limits, expiry and key deadlines.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_now: u64,
        src: SocketAddr,
        datagram: &[u8],
        keys: &KeyRing,
    ) {
        bump(&mut self.counters.received);
        // A peer past its deadline must be reported expired before the same
        // node can count as newly discovered.
        self.expire(now);
        if let Err(reason) = self.validate_and_record(now, unix_now, src, datagram, keys) {
            self.counters.count_drop(reason);
            self.push_event(DiscoveryEvent::Dropped { src, reason });
        }
    }

    /// Forgets peers whose last valid message is `peer_expiry` old at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.sources.purge(now);
    }

    // ---- outputs ----------------------------------------------------------

    /// The next announcement to send, if one is due at `now`. A round sends
    /// one datagram to each unicast target, or to the broadcast address when
    /// there are none; each carries a fresh challenge and `unix_now`, signed
    /// with the ring's current key. Call until it returns `None`.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        unix_now: u64,
        keys: &KeyRing,
    ) -> Option<DiscoveryTransmit> {
        if now < self.next_announce? {
            return None;
        }
        let destinations = self.config.destinations();
        let to = *destinations.get(self.round_index)?;
        self.round_index = self.round_index.saturating_add(1);
        if self.round_index >= destinations.len() {
            self.round_index = 0;
            self.next_announce = now.checked_add(self.config.announce_interval);
        }
        let unsigned = Announcement {
            community_hash: self.community_hash,
            node_id: self.node_id,
            port: self.tcp_port,
            // The wire field is 32 bits (it runs out in 2106); the Python
            // implementation packs the same truncation.
            timestamp: (unix_now & u64::from(u32::MAX)) as u32,
            challenge: self.rng.next_u32(),
            mac: [0; 16],
        };
        let (_, key) = keys.current();
        bump(&mut self.counters.sent);
        Some(DiscoveryTransmit {
            datagram: sign_announcement(key, unsigned).encode(),
            to,
        })
    }

    /// The next event, oldest first. Call until it returns `None` after
    /// every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DiscoveryEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) or
    /// [`poll_transmit`](Self::poll_transmit) next has work: the earlier of
    /// the next announcement and the earliest peer expiry. A past instant
    /// means "now".
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.expiries.first().map(|(t, _)| *t);
        match (self.next_announce, expiry) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        }
    }

    // ---- state ------------------------------------------------------------

    /// The peer table, ordered by node id.
    pub fn peers(&self) -> impl Iterator<Item = DiscoveredPeer> + '_ {
        self.peers.iter().map(|(node, p)| p.public(*node))
    }

    /// One peer, if recorded.
    #[must_use]
    pub fn peer(&self, node: &Uuid) -> Option<DiscoveredPeer> {
        self.peers.get(node).map(|p| p.public(*node))
    }

    /// Counters of everything received, accepted, sent and dropped.
    #[must_use]
    pub fn counters(&self) -> &DiscoveryCounters {
        &self.counters
    }

    /// How full the bounded tables are.
    #[must_use]
    pub fn occupancy(&self) -> DiscoveryOccupancy {
        DiscoveryOccupancy {
            peers: self.peers.len(),
            tracked_sources: self.sources.tat.len(),
            replay_entries: self.replay.len(),
            queued_events: self.events.len(),
        }
    }

    // ---- internals --------------------------------------------------------

    fn validate_and_record(
        &mut self,
        now: Instant,
        unix_now: u64,
        src: SocketAddr,
        datagram: &[u8],
        keys: &KeyRing,
    ) -> Result<(), DropReason> {
        let msg = Announcement::decode(datagram).ok_or(DropReason::WrongLength)?;
        if !ct_eq(&msg.community_hash, &self.community_hash) {
            return Err(DropReason::OtherCommunity);
        }
        let key = keys
            .find(now, |k| verify_announcement(k, &msg))
            .ok_or(DropReason::BadMac)?;
        if msg.node_id == self.node_id {
            return Err(DropReason::OwnNode);
        }
        let window = self.config.timestamp_window_secs;
        let timestamp = u64::from(msg.timestamp);
        if timestamp < unix_now && unix_now - timestamp > window {
            return Err(DropReason::Stale);
        }
        if timestamp > unix_now && timestamp - unix_now > window {
            return Err(DropReason::FutureDated);
        }
        // Kept through `timestamp + window` inclusive: until then the same
        // message would still pass the freshness check above.
        let forget_at = timestamp.saturating_add(window).saturating_add(1);
        self.replay
            .insert(unix_now, (msg.node_id, msg.challenge), forget_at)
            .map_err(|e| match e {
                ReplayError::Replayed => DropReason::Replayed,
                _ => DropReason::ReplayCacheFull,
            })?;
        // A v4 peer seen through a dual-stack socket arrives as ::ffff:a.b.c.d;
        // it is the same host for rate limiting and for dialing.
        let ip = src.ip().to_canonical();
        self.sources.check(now, ip)?;
        let addr = SocketAddr::new(ip, msg.port);
        self.record(now, msg.node_id, addr, key)
    }

    fn record(
        &mut self,
        now: Instant,
        node: Uuid,
        addr: SocketAddr,
        key: KeyId,
    ) -> Result<(), DropReason> {
        let known = self.peers.get(&node).copied();
        let tat = self
            .node_gcra
            .admit(now, known.map(|p| p.tat))
            .ok_or(DropReason::NodeRateLimited)?;
        if known.is_none() && self.peers.len() >= self.config.max_peers {
            return Err(DropReason::PeerTableFull);
        }
        let expires = now.checked_add(self.config.peer_expiry);
        if let Some(old) = known.and_then(|p| p.expires) {
            self.expiries.remove(&(old, node));
        }
        if let Some(at) = expires {
            self.expiries.insert((at, node));
        }
        self.peers.insert(
            node,
            PeerEntry {
                addr,
                last_seen: now,
                expires,
                key,
                tat,
            },
        );
        bump(&mut self.counters.accepted);
        match known {
            None => self.push_event(DiscoveryEvent::Discovered { node, addr, key }),
            Some(old) if old.addr != addr => self.push_event(DiscoveryEvent::AddressChanged {
                node,
                old: old.addr,
                new: addr,
            }),
            Some(_) => {}
        }
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, node)) = self.expiries.first().copied() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, node));
            if let Some(peer) = self.peers.remove(&node) {
                bump(&mut self.counters.expired);
                self.push_event(DiscoveryEvent::Expired {
                    node,
                    addr: peer.addr,
                });
            }
        }
    }

    fn push_event(&mut self, event: DiscoveryEvent) {
        if self.events.len() >= self.config.max_queued_events {
            bump(&mut self.counters.events_lost);
        } else {
            self.events.push_back(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_refuses_settings_that_cannot_work() {
        let b = || DiscoveryConfig::builder("c");
        assert_eq!(
            b().announce_interval(Duration::ZERO).build(),
            Err(DiscoveryConfigError::ZeroAnnounceInterval)
        );
        assert_eq!(
            b().peer_expiry(Duration::ZERO).build(),
            Err(DiscoveryConfigError::ZeroPeerExpiry)
        );
        assert!(matches!(
            b().per_ip_rate(0).build(),
            Err(DiscoveryConfigError::ZeroRate { .. })
        ));
        assert!(matches!(
            b().per_node_rate(0).build(),
            Err(DiscoveryConfigError::ZeroRate { .. })
        ));
        for which in [
            b().replay_capacity(0),
            b().max_peers(0),
            b().max_tracked_sources(0),
            b().max_queued_events(0),
        ] {
            assert!(matches!(
                which.build(),
                Err(DiscoveryConfigError::ZeroCapacity { .. })
            ));
        }
        let zero: SocketAddr = "10.0.0.1:0".parse().unwrap();
        assert_eq!(
            b().unicast_targets(vec![zero]).build(),
            Err(DiscoveryConfigError::ZeroPort { addr: zero })
        );
        assert_eq!(b().build(), Ok(DiscoveryConfig::new("c")));
    }

    #[test]
    fn config_error_messages_name_the_setting() {
        let e = DiscoveryConfig::builder("c")
            .max_peers(0)
            .build()
            .unwrap_err();
        assert_eq!(e.to_string(), "discovery max_peers must be at least 1");
    }

    #[test]
    fn destinations_are_unicast_targets_else_broadcast() {
        let c = DiscoveryConfig::new("c");
        assert_eq!(c.destinations(), &["255.255.255.255:9999".parse().unwrap()]);
        let t: Vec<SocketAddr> = vec!["10.0.0.1:9999".parse().unwrap()];
        let c = DiscoveryConfig::builder("c")
            .unicast_targets(t.clone())
            .build()
            .unwrap();
        assert_eq!(c.destinations(), t.as_slice());
    }

    #[test]
    fn gcra_allows_a_burst_of_rate_then_one_per_emission() {
        let g = Gcra::per_second(10);
        assert_eq!(g.emission, Duration::from_millis(100));
        assert_eq!(g.tolerance, Duration::from_millis(900));
        let g1 = Gcra::per_second(1);
        assert_eq!(g1.tolerance, Duration::ZERO);
    }

    #[test]
    fn drop_reason_names_are_stable() {
        assert_eq!(DropReason::ReplayCacheFull.to_string(), "replay_cache_full");
        assert_eq!(DropReason::WrongLength.as_str(), "wrong_length");
    }
}
