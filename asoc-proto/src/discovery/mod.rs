//! The UDP discovery machine (WIRE-v2.md §5, and WIRE.md §7 for v1):
//! periodic signed announcements, the validation pipeline for received
//! ones, and the table of discovered peers with expiry, sticky addresses
//! and the version each peer is to be dialed with.
//!
//! | module | owns |
//! | --- | --- |
//! | `config` | [`DiscoveryConfig`] and its validation |
//! | `report` | what the machine hands out: transmits, events, drop reasons, peers, counters |
//! | `limits` | the GCRA rate limiter and the bounded per-source-IP table |
//! | this module | the [`Discovery`] machine: announce rounds, validation, the peer table |
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
//! expiry, rate limits, key deadlines) and `unix_ms` (wall-clock unix
//! milliseconds) is compared with the timestamps carried by announcements.
//!
//! ```
//! use std::time::Instant;
//! use asoc_proto::auth::{ApiKey, KeyRing};
//! use asoc_proto::discovery::{Discovery, DiscoveryConfig};
//! use uuid::Uuid;
//!
//! // `t0` and `unix_ms` come from the adapter's clocks; the machine never
//! // reads one.
//! fn run(t0: Instant, unix_ms: u64) -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyRing::new(ApiKey::new("0123456789abcdef0123456789abcdef")?);
//! let config = DiscoveryConfig::builder("my-cluster")
//!     .unicast_targets(vec!["192.0.2.7:9999".parse()?, "192.0.2.8:9999".parse()?])
//!     .build()?;
//! let mut disc = Discovery::new(config, Uuid::from_u128(1), 9000, [7; 32], t0);
//! let mut round = Vec::new();
//! while let Some(t) = disc.poll_transmit(t0, unix_ms, &keys) {
//!     // socket.send_to(&t.datagram, t.to)
//!     round.push(t);
//! }
//! // One v2 announcement per round, the same bytes to every destination.
//! assert_eq!(round.len(), 2);
//! assert_eq!(round[0].datagram, round[1].datagram);
//! assert_eq!(round[0].datagram.len(), 52);
//! while let Some(event) = disc.poll_event() {
//!     println!("{event:?}");
//! }
//! assert!(disc.poll_timeout().is_some());
//! # Ok(())
//! }
//! ```
//!
//! # Announce rounds
//!
//! Every announce interval one round goes out: one v2 announcement, signed
//! once with the current key's discovery key, the same bytes to every
//! destination (the unicast targets, or the broadcast address), so a copy
//! relayed to another receiver is a replay there too. Its `unix_ms` is the
//! wall clock, pushed forward when needed so that it always exceeds the
//! previous round's. With [`allow_v1`](DiscoveryConfig::allow_v1) each
//! destination also gets the round's v1 announcement right after it: one
//! challenge per round, signed once, the same bytes to every destination
//! too (a receiver that already has it from the sender sees a relayed copy
//! as a replay, and nobody holds a copy that is new to the others); the v2
//! one carries flag bit 0.
//!
//! # Validation order
//!
//! A received datagram is dropped, cheapest check first, at the first of
//! the checks below; every drop is counted under its [`DropReason`].
//!
//! A v2 announcement (52 bytes, first byte 2): another community's hash
//! (constant-time compare); a MAC valid under the discovery key of none of
//! the accepted keys (current first; the event names the key that matched);
//! this node's own id; `unix_ms` more than the window (60 s) from the local
//! clock in either direction; `unix_ms` not strictly greater than the last
//! accepted from that node id (replay or reordering: per-node state kept in
//! the peer table, not a per-message cache; it outlives the peer's expiry
//! until every message at or below it is stale, and survives a restart
//! through [`replay_state`](Discovery::replay_state)); the per source-IP rate (or a
//! full source table); a full peer table; a known peer's other address
//! while its current one is still announcing.
//!
//! A v1 announcement (50 bytes): another community's hash; a MAC valid under
//! none of the accepted API keys; v1 disabled (an authentic v1 announcement
//! without `allow_v1`); own id; a timestamp more than the window (60 s) from
//! the local clock; a `(node, challenge)` pair already seen; a known peer's
//! other address while its current one is still announcing (sticky); a
//! full replay cache, or the node's full share of it
//! ([`replay_share_per_node`](DiscoveryConfig::replay_share_per_node), 256
//! by default); the per source-IP rate (or a full
//! source table); the rate per (node, source IP); a full peer table.
//!
//! A v1 pair enters the replay cache once it passed the sticky check, even
//! when a rate limit then drops the message: otherwise a copy captured
//! while the sender was over its rate could be accepted later from the
//! attacker's address. A sticky drop remembers nothing: a relayed copy that
//! outruns the sender's own to this node must leave that own copy new. The
//! per-node share bounds what one node id's copies can take of the cache,
//! which fails closed: a node with a full share has its own announcements
//! dropped until its pairs expire, every other node keeps its room.
//!
//! The per-node rate is per (node, source IP): a copy from another address
//! never spends the budget of the node's current one, so a relay cannot
//! make the real peer's own announcements `node_rate_limited`. v2 has no
//! per-node rate (each copy must carry a newer `unix_ms`), and its per-node
//! state, that timestamp, is written only by an accepted copy: a sticky or
//! rate-limited one from elsewhere spends nothing of the current address.
//!
//! Anything else is [`DropReason::WrongLength`]. A message that passes the
//! source check uses up source rate even if a later check drops it.
//!
//! # The peer table
//!
//! A message that passes every check records or refreshes the peer as (node
//! id, source IP of the datagram, TCP port from the message). Nothing
//! unauthenticated can move a peer's address, and even an authentic relayed
//! copy (v2 or v1) cannot while the peer is alive: its address changes to
//! another IP only once its current address has sent no valid announcement
//! for two announce intervals (sticky addresses; a new port announced from
//! the same IP is taken at once). A sticky drop records nothing, so the
//! real peer's own copy of the same round is still accepted.
//!
//! # Replay protection across restarts
//!
//! [`replay_state`](Discovery::replay_state) exports, in wall-clock terms,
//! the per-node v2 timestamps and the v1 pairs still inside their window;
//! [`restore_replay_state`](Discovery::restore_replay_state) merges them
//! into a fresh machine, and [`DiscoveryReplayState::to_bytes`] /
//! [`from_bytes`](DiscoveryReplayState::from_bytes) give a compact,
//! versioned file format. Without it, a restarted node would accept again
//! any announcement of the last 60 s.
//!
//! Each peer remembers whether any v2 announcement of it was accepted
//! ([`DiscoveredPeer::version`]): such a node is dialed with v2 only. Only a
//! node seen solely through v1 announcements (possible only with
//! `allow_v1`) is dialed with v1.

mod config;
mod limits;
mod report;
mod state;

use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use uuid::Uuid;

use crate::auth::{
    community_hash, ct_eq, sign_announcement, sign_announcement_v2, verify_announcement,
    verify_announcement_v2, KeyId, KeyRing,
};
use crate::rng::{Rng, Seed};
use crate::v2::{derive_discovery_key, WireVersion};
use crate::wire::{
    Announcement, AnnouncementV2, ANNOUNCEMENT_LEN, ANNOUNCEMENT_V2_LEN, FLAG_ACCEPTS_V1,
};

pub use config::{DiscoveryConfig, DiscoveryConfigBuilder, DiscoveryConfigError, DISCOVERY_PORT};
use limits::{Gcra, SourceLimiter};
use report::bump;
pub use report::{
    AnnouncementBytes, DiscoveredPeer, DiscoveryCounters, DiscoveryEvent, DiscoveryOccupancy,
    DiscoveryTransmit, DropReason,
};
pub use state::{DiscoveryReplayState, DiscoveryStateError, V1ReplayEntry};
use state::{V1Replay, V2Floors};

#[derive(Clone, Copy, Debug)]
struct PeerEntry {
    addr: SocketAddr,
    /// When its last valid announcement arrived; always from `addr`, since
    /// one from elsewhere either moved `addr` or was dropped.
    last_seen: Instant,
    /// `last_seen + peer_expiry`; `None` if that instant is unrepresentable.
    expires: Option<Instant>,
    key: KeyId,
    /// Rate state of its v1 announcements from `addr`'s IP: the limit is
    /// per (node, source IP), and only the current IP needs state, because
    /// a copy from another IP is either dropped as sticky before the rate
    /// check or moves the peer (and starts from a full burst there). It
    /// lives with the peer because only recorded peers can have been
    /// honoured recently. v2 announcements need none: each must carry a
    /// newer `unix_ms`.
    v1_tat: Option<Instant>,
    version: WireVersion,
    accepts_v1: bool,
    /// The `unix_ms` of its last accepted v2 announcement.
    last_unix_ms: Option<u64>,
}

impl PeerEntry {
    fn public(&self, node: Uuid) -> DiscoveredPeer {
        DiscoveredPeer {
            node,
            addr: self.addr,
            last_seen: self.last_seen,
            key: self.key,
            version: self.version,
            accepts_v1: self.accepts_v1,
        }
    }
}

/// What an accepted announcement says about its sender, whatever its
/// version.
#[derive(Clone, Copy, Debug)]
struct Sighting {
    node: Uuid,
    addr: SocketAddr,
    key: KeyId,
    /// `Some((unix_ms, accepts_v1))` for a v2 announcement.
    v2: Option<(u64, bool)>,
}

/// The datagrams of the round being sent.
#[derive(Clone, Copy, Debug)]
struct Round {
    /// The v2 announcement, the same bytes for every destination.
    v2: AnnouncementBytes,
    /// With `allow_v1`, the v1 announcement: one challenge per round, the
    /// same bytes for every destination too.
    v1: Option<AnnouncementBytes>,
    /// Index into the destinations.
    index: usize,
    /// The v1 announcement for `index` is due next (with `allow_v1`).
    v1_next: bool,
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
    round: Option<Round>,
    /// The `unix_ms` of the last v2 announcement built, so the next is
    /// strictly later even if the wall clock stepped back.
    last_sent_ms: Option<u64>,
    replay: V1Replay,
    v2_floors: V2Floors,
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
    /// announcement is due at `now`. `seed` drives the v1 challenges: a
    /// fixed seed and fixed inputs give byte-identical announcements;
    /// adapters seed from the OS.
    #[must_use]
    pub fn new(
        config: DiscoveryConfig,
        node_id: Uuid,
        tcp_port: u16,
        seed: Seed,
        now: Instant,
    ) -> Self {
        Self {
            community_hash: community_hash(config.community()),
            node_id,
            tcp_port,
            rng: Rng::from_seed(seed),
            next_announce: Some(now),
            round: None,
            last_sent_ms: None,
            replay: V1Replay::new(config.replay_capacity(), config.replay_share_per_node()),
            v2_floors: V2Floors::new(config.max_peers()),
            sources: SourceLimiter::new(config.per_ip_rate(), config.max_tracked_sources()),
            node_gcra: Gcra::per_second(config.per_node_rate()),
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
    /// round of announcements.
    pub fn set_tcp_port(&mut self, port: u16) {
        self.tcp_port = port;
    }

    // ---- inputs -----------------------------------------------------------

    /// Feeds one received datagram from `src`. Never fails: a datagram that
    /// fails a check is dropped (see the [module docs](self) for the order),
    /// counted, and reported as [`DiscoveryEvent::Dropped`]. `unix_ms` is
    /// the local wall-clock time in unix milliseconds, compared with the
    /// message's timestamp; `now` drives rate limits, expiry and key
    /// deadlines.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_ms: u64,
        src: SocketAddr,
        datagram: &[u8],
        keys: &KeyRing,
    ) {
        bump(&mut self.counters.received);
        // A peer past its deadline must be reported expired before the same
        // node can count as newly discovered.
        self.expire(now);
        let verdict = match datagram.len() {
            ANNOUNCEMENT_V2_LEN => self.validate_v2(now, unix_ms, src, datagram, keys),
            ANNOUNCEMENT_LEN => self.validate_v1(now, unix_ms / 1000, src, datagram, keys),
            _ => Err(DropReason::WrongLength),
        };
        if let Err(reason) = verdict {
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

    /// The next datagram to send, if a round is due at `now`; call until it
    /// returns `None`. A round is one v2 announcement (current key, `unix_ms`
    /// kept strictly increasing) whose same bytes go to every unicast
    /// target, or to the broadcast address when there are none; with
    /// [`allow_v1`](DiscoveryConfig::allow_v1) each destination also gets,
    /// right after the v2 one, the round's v1 announcement: one fresh
    /// challenge and the timestamp in seconds, the same bytes to every
    /// destination.
    #[must_use]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        unix_ms: u64,
        keys: &KeyRing,
    ) -> Option<DiscoveryTransmit> {
        let mut round = match self.round {
            Some(round) => round,
            None => {
                if now < self.next_announce? {
                    return None;
                }
                Round {
                    v2: self.build_v2(unix_ms, keys),
                    v1: self
                        .config
                        .allow_v1()
                        .then(|| self.build_v1(unix_ms / 1000, keys)),
                    index: 0,
                    v1_next: false,
                }
            }
        };
        let destinations = self.config.destinations();
        let to = *destinations.get(round.index)?;
        let count = destinations.len();
        let datagram = match (round.v1_next, round.v1) {
            (true, Some(v1)) => {
                round.v1_next = false;
                round.index = round.index.saturating_add(1);
                v1
            }
            (_, v1) => {
                if v1.is_some() {
                    round.v1_next = true;
                } else {
                    round.index = round.index.saturating_add(1);
                }
                round.v2
            }
        };
        if round.index >= count {
            self.round = None;
            self.next_announce = now.checked_add(self.config.announce_interval());
        } else {
            self.round = Some(round);
        }
        bump(&mut self.counters.sent);
        Some(DiscoveryTransmit { datagram, to })
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

    /// Whether `node` is in the table and was seen through a v2
    /// announcement: it is then dialed with v2 only, and a v1 HELLO claiming
    /// its id is refused as a downgrade (WIRE-v2.md §6).
    #[must_use]
    pub fn is_v2_only(&self, node: &Uuid) -> bool {
        self.peers
            .get(node)
            .is_some_and(|p| p.version == WireVersion::V2)
    }

    /// The version to dial `node` with, if it is in the table: v1 only for
    /// a node seen solely through v1 announcements while v1 is enabled.
    #[must_use]
    pub fn dial_version(&self, node: &Uuid) -> Option<WireVersion> {
        let p = self.peers.get(node)?;
        Some(if p.version == WireVersion::V1 && self.config.allow_v1() {
            WireVersion::V1
        } else {
            WireVersion::V2
        })
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
            v2_floors: self.v2_floors.len(),
            queued_events: self.events.len(),
        }
    }

    // ---- replay protection across restarts ------------------------------

    /// What replay protection needs to survive a restart, at wall-clock time
    /// `unix_ms`: the last accepted v2 `unix_ms` of every node (recorded or
    /// expired) that a replay inside the timestamp window could still
    /// match, and the v1 `(node, challenge)` pairs not yet expired, each
    /// with its expiry in unix milliseconds. Write it with
    /// [`DiscoveryReplayState::to_bytes`]; a restarted node puts it back
    /// with [`restore_replay_state`](Self::restore_replay_state).
    #[must_use]
    pub fn replay_state(&self, unix_ms: u64) -> DiscoveryReplayState {
        let window = self.config.timestamp_window_secs().saturating_mul(1000);
        let mut v2: BTreeMap<Uuid, u64> = self.v2_floors.entries().collect();
        for (node, peer) in &self.peers {
            if let Some(ms) = peer.last_unix_ms {
                let slot = v2.entry(*node).or_insert(ms);
                *slot = (*slot).max(ms);
            }
        }
        let v2_last_unix_ms = v2
            .into_iter()
            .filter(|(_, ms)| ms.saturating_add(window) >= unix_ms)
            .collect();
        let v1_seen = self
            .replay
            .entries()
            .map(|(node, challenge, secs)| {
                V1ReplayEntry::new(node, challenge, secs.saturating_mul(1000))
            })
            .filter(|e| e.expires_unix_ms > unix_ms)
            .collect();
        DiscoveryReplayState {
            v2_last_unix_ms,
            v1_seen,
        }
    }

    /// Merges `state` (taken by [`replay_state`](Self::replay_state), likely
    /// before a restart) into this machine at `now` / wall-clock `unix_ms`:
    /// a node's v2 timestamp floor becomes the higher of the two, and the v1
    /// pairs not yet expired are remembered again, so an announcement
    /// accepted before the restart stays a replay after it. Entries that
    /// can no longer matter are skipped, as are those the bounds have no
    /// room for ([`max_peers`](DiscoveryConfig::max_peers) floors, the
    /// replay capacity and each node's share); a v1 expiry is capped at
    /// the longest a fresh pair could be kept, and a v2 timestamp at the
    /// window ahead of `unix_ms`, so a bad file can neither pin pairs
    /// forever nor lock a node out.
    pub fn restore_replay_state(
        &mut self,
        now: Instant,
        unix_ms: u64,
        state: &DiscoveryReplayState,
    ) {
        self.expire(now);
        let window_secs = self.config.timestamp_window_secs();
        let window = window_secs.saturating_mul(1000);
        self.v2_floors.purge(unix_ms, window);
        for (node, ms) in &state.v2_last_unix_ms {
            if ms.saturating_add(window) < unix_ms || *node == self.node_id {
                continue;
            }
            // No announcement accepted before now was dated later than the
            // window ahead of now; a higher floor could only lock the node
            // out.
            let ms = (*ms).min(unix_ms.saturating_add(window));
            match self.peers.get_mut(node) {
                Some(peer) if peer.last_unix_ms.is_some() => {
                    peer.last_unix_ms = peer.last_unix_ms.max(Some(ms));
                }
                _ => self.v2_floors.raise(*node, ms),
            }
        }
        let unix_secs = unix_ms / 1000;
        let longest = unix_secs
            .saturating_add(window_secs.saturating_mul(2))
            .saturating_add(1);
        for e in &state.v1_seen {
            if e.expires_unix_ms <= unix_ms {
                continue;
            }
            let forget_at = e.expires_unix_ms.div_ceil(1000).min(longest);
            // A pair already there, or no room left: nothing more to do for
            // this entry either way.
            let _ = self
                .replay
                .insert(unix_secs, (e.node, e.challenge), forget_at);
        }
    }

    // ---- internals --------------------------------------------------------

    fn build_v2(&mut self, unix_ms: u64, keys: &KeyRing) -> AnnouncementBytes {
        let unix_ms = match self.last_sent_ms {
            Some(last) => unix_ms.max(last.saturating_add(1)),
            None => unix_ms,
        };
        self.last_sent_ms = Some(unix_ms);
        let unsigned = AnnouncementV2 {
            community_hash: self.community_hash,
            node_id: self.node_id,
            tcp_port: self.tcp_port,
            unix_ms,
            flags: if self.config.allow_v1() {
                FLAG_ACCEPTS_V1
            } else {
                0
            },
            mac: [0; 16],
        };
        let (_, key) = keys.current();
        let signed = sign_announcement_v2(&derive_discovery_key(key), unsigned);
        AnnouncementBytes::v2(signed.encode())
    }

    fn build_v1(&mut self, unix_secs: u64, keys: &KeyRing) -> AnnouncementBytes {
        let unsigned = Announcement {
            community_hash: self.community_hash,
            node_id: self.node_id,
            port: self.tcp_port,
            // The wire field is 32 bits (it runs out in 2106); the Python
            // implementation packs the same truncation.
            timestamp: (unix_secs & u64::from(u32::MAX)) as u32,
            challenge: self.rng.next_u32(),
            mac: [0; 16],
        };
        let (_, key) = keys.current();
        AnnouncementBytes::v1(sign_announcement(key, unsigned).encode())
    }

    fn validate_v2(
        &mut self,
        now: Instant,
        unix_ms: u64,
        src: SocketAddr,
        datagram: &[u8],
        keys: &KeyRing,
    ) -> Result<(), DropReason> {
        let msg = AnnouncementV2::decode(datagram).ok_or(DropReason::WrongLength)?;
        if !ct_eq(&msg.community_hash, &self.community_hash) {
            return Err(DropReason::OtherCommunity);
        }
        let key = keys
            .find(now, |k| {
                verify_announcement_v2(&derive_discovery_key(k), &msg)
            })
            .ok_or(DropReason::BadMac)?;
        if msg.node_id == self.node_id {
            return Err(DropReason::OwnNode);
        }
        let window = self.config.timestamp_window_secs().saturating_mul(1000);
        if msg.unix_ms < unix_ms && unix_ms - msg.unix_ms > window {
            return Err(DropReason::Stale);
        }
        if msg.unix_ms > unix_ms && msg.unix_ms - unix_ms > window {
            return Err(DropReason::FutureDated);
        }
        self.v2_floors.purge(unix_ms, window);
        let last = self
            .peers
            .get(&msg.node_id)
            .and_then(|p| p.last_unix_ms)
            .max(self.v2_floors.get(&msg.node_id));
        if last.is_some_and(|last| msg.unix_ms <= last) {
            return Err(DropReason::Replayed);
        }
        let ip = src.ip().to_canonical();
        self.sources.check(now, ip)?;
        self.record(
            now,
            Sighting {
                node: msg.node_id,
                addr: SocketAddr::new(ip, msg.tcp_port),
                key,
                v2: Some((msg.unix_ms, msg.accepts_v1())),
            },
        )
    }

    fn validate_v1(
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
        // After the MAC: the event then says a key holder speaks v1, not
        // that some 50-byte datagram arrived.
        if !self.config.allow_v1() {
            return Err(DropReason::V1Disabled);
        }
        if msg.node_id == self.node_id {
            return Err(DropReason::OwnNode);
        }
        let window = self.config.timestamp_window_secs();
        let timestamp = u64::from(msg.timestamp);
        if timestamp < unix_now && unix_now - timestamp > window {
            return Err(DropReason::Stale);
        }
        if timestamp > unix_now && timestamp - unix_now > window {
            return Err(DropReason::FutureDated);
        }
        let pair = (msg.node_id, msg.challenge);
        if self.replay.contains(unix_now, &pair) {
            return Err(DropReason::Replayed);
        }
        // A v4 peer seen through a dual-stack socket arrives as ::ffff:a.b.c.d;
        // it is the same host for rate limiting and for dialing.
        let ip = src.ip().to_canonical();
        let sighting = Sighting {
            node: msg.node_id,
            addr: SocketAddr::new(ip, msg.port),
            key,
            v2: None,
        };
        // Before the pair is remembered: a copy relayed from elsewhere that
        // reaches this node before the real peer's own must leave that own
        // copy new, or each such relay would cost the peer a round.
        if let Some(known) = self.peers.get(&msg.node_id) {
            if self.is_sticky(now, known, &sighting) {
                return Err(DropReason::AddressSticky);
            }
        }
        // Kept through `timestamp + window` inclusive: until then the same
        // message would still pass the freshness check above.
        let forget_at = timestamp.saturating_add(window).saturating_add(1);
        self.replay.insert(unix_now, pair, forget_at)?;
        self.sources.check(now, ip)?;
        self.record(now, sighting)
    }

    /// Whether `known`'s address may still not move at `now`: the sighting
    /// comes from another source IP (whatever either's version), and the
    /// current one sent a valid announcement less than two announce
    /// intervals ago. A new port from the same IP is the node's own word
    /// (the port is under the MAC, the source is not).
    fn is_sticky(&self, now: Instant, known: &PeerEntry, sighting: &Sighting) -> bool {
        if known.addr.ip() == sighting.addr.ip() {
            return false;
        }
        let hold = self.config.announce_interval().saturating_mul(2);
        known
            .last_seen
            .checked_add(hold)
            .is_none_or(|until| now < until)
    }

    fn record(&mut self, now: Instant, s: Sighting) -> Result<(), DropReason> {
        let node = s.node;
        let known = self.peers.get(&node).copied();
        // Rate state belongs to (node, source IP): a sighting from another IP
        // starts from a full burst and never spends the current IP's.
        let same_ip_tat = known
            .filter(|p| p.addr.ip() == s.addr.ip())
            .and_then(|p| p.v1_tat);
        let v1_tat = match s.v2 {
            Some(_) => same_ip_tat,
            None => Some(
                self.node_gcra
                    .admit(now, same_ip_tat)
                    .ok_or(DropReason::NodeRateLimited)?,
            ),
        };
        if known.is_none() && self.peers.len() >= self.config.max_peers() {
            return Err(DropReason::PeerTableFull);
        }
        if known.is_some_and(|p| self.is_sticky(now, &p, &s)) {
            return Err(DropReason::AddressSticky);
        }
        let expires = now.checked_add(self.config.peer_expiry());
        if let Some(old) = known.and_then(|p| p.expires) {
            self.expiries.remove(&(old, node));
        }
        if let Some(at) = expires {
            self.expiries.insert((at, node));
        }
        let (version, accepts_v1, last_unix_ms) = match (s.v2, known) {
            (Some((ms, accepts_v1)), _) => {
                // The entry now holds a newer timestamp than any floor.
                self.v2_floors.remove(&node);
                (WireVersion::V2, accepts_v1, Some(ms))
            }
            // A v1 announcement never downgrades a node seen through v2.
            (None, Some(p)) => (p.version, p.accepts_v1, p.last_unix_ms),
            (None, None) => (WireVersion::V1, true, None),
        };
        self.peers.insert(
            node,
            PeerEntry {
                addr: s.addr,
                last_seen: now,
                expires,
                key: s.key,
                v1_tat,
                version,
                accepts_v1,
                last_unix_ms,
            },
        );
        bump(&mut self.counters.accepted);
        match known {
            None => self.push_event(DiscoveryEvent::Discovered {
                node,
                addr: s.addr,
                key: s.key,
                version: if s.v2.is_some() {
                    WireVersion::V2
                } else {
                    WireVersion::V1
                },
            }),
            Some(old) if old.addr != s.addr => self.push_event(DiscoveryEvent::AddressChanged {
                node,
                old: old.addr,
                new: s.addr,
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
                // Its last announcement may still be inside the timestamp
                // window: it must stay a replay after the peer is gone.
                if let Some(ms) = peer.last_unix_ms {
                    self.v2_floors.raise(node, ms);
                }
                bump(&mut self.counters.expired);
                self.push_event(DiscoveryEvent::Expired {
                    node,
                    addr: peer.addr,
                });
            }
        }
    }

    fn push_event(&mut self, event: DiscoveryEvent) {
        if self.events.len() >= self.config.max_queued_events() {
            bump(&mut self.counters.events_lost);
        } else {
            self.events.push_back(event);
        }
    }
}
