//! A node: everything one ASoc endpoint decides that spans connections.
//!
//! A [`Node`] owns the [`Authenticator`] (keys, replay caches, reflection
//! guard), the admission [`Policy`] (caps, per-address throttle and rate), the
//! [`Dialer`] (static and discovered peers, reconnect schedule) and, when
//! enabled, [`Discovery`]. It hands out [`Connection`]s and tells the adapter
//! what to do: accept or refuse a socket, dial this address, send this
//! datagram. It never does any of it itself.
//!
//! # Call order
//!
//! - Inbound TCP: [`accept`](Node::accept) for each accepted socket; on
//!   `Err` close the socket at once without writing.
//! - Outbound TCP: take [`poll_dial`](Node::poll_dial); connect; then
//!   [`connect`](Node::connect) on success or
//!   [`dial_error`](Node::dial_error) (or [`dial_failed`](Node::dial_failed)
//!   when there is no error to report) on failure. Application-initiated
//!   connections use [`connect_to`](Node::connect_to).
//! - For every connection: after each input call [`drive`](Node::drive)
//!   (it gives handshake verdicts); after its `Closed` event call
//!   [`closed`](Node::closed).
//! - UDP: [`handle_datagram`](Node::handle_datagram) for each datagram
//!   received; send what [`poll_datagram`](Node::poll_datagram) returns.
//! - Timers: [`handle_timeout`](Node::handle_timeout) at
//!   [`poll_timeout`](Node::poll_timeout).
//! - Closes the node orders: after each of the above, take
//!   [`poll_close`](Node::poll_close) and
//!   [`abort`](Connection::abort) each connection named with the reason
//!   given (then report its `Closed` with [`closed`](Node::closed) as usual).
//! - Connection events: hand each to [`observe`](Node::observe) (it reports
//!   the end of incoming streams as node events).
//! - Operations naming a peer: [`resolve`](Node::resolve) picks the
//!   connection.
//! - Drain [`poll_event`](Node::poll_event) after each of the above.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use uuid::Uuid;

use crate::auth::{ApiKey, AuthFailure, KeyId, KeyRing};
use crate::connection::{
    CloseReason, ConfigError, Connection, ConnectionConfig, ConnectionStats, Event,
    HandshakeMessage, SessionInfo,
};
use crate::dial::{Dial, DialConfig, DialEvent, DialTarget, Dialer, PeerId};
use crate::discovery::{
    Discovery, DiscoveryConfig, DiscoveryEvent, DiscoveryReplayState, DiscoveryTransmit, DropReason,
};
use crate::handshake::{
    AuthCounters, Authenticator, AuthenticatorConfig, ClientOptions, HandshakeOutcome,
};
use crate::persist::{AuthReplayState, RestoreReport};
use crate::policy::{
    AuthFailureCounts, Policy, PolicyConfig, PolicyCounters, PolicyEvent, Refusal, ThrottleCause,
};
use crate::rng::{Rng, Seed};
use crate::rotation::{
    AckStatus, ControlTransmit, Rotation, RotationError, RotationRefusal, Step as RotationStep,
};
use crate::time::after;
use crate::v2::WireVersion;

/// Everything a [`Node`] is configured with, built by
/// [`NodeConfig::builder`]. Sub-configurations are built (and validated) by
/// their own builders.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    auth: AuthenticatorConfig,
    connection: ConnectionConfig,
    policy: PolicyConfig,
    dial: DialConfig,
    discovery: Option<DiscoveryConfig>,
    static_peers: Vec<DialTarget>,
    static_peers_v1: Vec<DialTarget>,
    dial_discovered: bool,
    tcp_port: u16,
    max_pending_events: usize,
    allow_v1: Option<bool>,
}

impl NodeConfig {
    /// A builder for node `node_id` authenticating with `keys`, starting
    /// from every default of WIRE.md §6, no discovery and no static peers.
    pub fn builder(node_id: Uuid, keys: KeyRing) -> NodeConfigBuilder {
        NodeConfigBuilder(Self {
            auth: AuthenticatorConfig::new(node_id, keys),
            allow_v1: None,
            connection: ConnectionConfig::default(),
            policy: PolicyConfig::default(),
            dial: DialConfig::default(),
            discovery: None,
            static_peers: Vec::new(),
            static_peers_v1: Vec::new(),
            dial_discovered: true,
            tcp_port: 9000,
            max_pending_events: 65_536,
        })
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        self.auth.node_id()
    }

    /// The authenticator settings.
    #[must_use]
    pub fn authenticator_config(&self) -> &AuthenticatorConfig {
        &self.auth
    }

    /// The connection configuration.
    #[must_use]
    pub fn connection_config(&self) -> &ConnectionConfig {
        &self.connection
    }

    /// The admission policy.
    #[must_use]
    pub fn policy_config(&self) -> &PolicyConfig {
        &self.policy
    }

    /// The reconnect schedule.
    #[must_use]
    pub fn dial_config(&self) -> &DialConfig {
        &self.dial
    }

    /// The discovery settings, `None` when discovery is off.
    #[must_use]
    pub fn discovery_config(&self) -> Option<&DiscoveryConfig> {
        self.discovery.as_ref()
    }

    /// The static peers, dialed at start and redialed forever.
    #[must_use]
    pub fn static_peers(&self) -> &[DialTarget] {
        &self.static_peers
    }

    /// Whether discovered peers are dialed.
    #[must_use]
    pub fn dial_discovered(&self) -> bool {
        self.dial_discovered
    }

    /// The TCP port announced by discovery.
    #[must_use]
    pub fn tcp_port(&self) -> u16 {
        self.tcp_port
    }

    /// Node events kept while undrained before further ones are dropped.
    #[must_use]
    pub fn max_pending_events(&self) -> usize {
        self.max_pending_events
    }
}

/// Builds a [`NodeConfig`]; every setting is checked in
/// [`build`](Self::build), so no setter fails.
#[derive(Clone, Debug)]
#[must_use]
pub struct NodeConfigBuilder(NodeConfig);

impl NodeConfigBuilder {
    /// Replaces the authenticator settings (replay retention and capacity);
    /// its node id and keys become the node's.
    pub fn authenticator(mut self, auth: AuthenticatorConfig) -> Self {
        self.0.auth = auth;
        self
    }

    /// Also speak v1 (WIRE-v2.md §6): accept v1 HELLOs and, with
    /// discovery, send and accept v1 announcements. Off by default; v2 is
    /// always spoken. Overrides the authenticator settings' own switch.
    pub fn allow_v1(mut self, yes: bool) -> Self {
        self.0.allow_v1 = Some(yes);
        self
    }

    /// Limits and timers of every connection.
    pub fn connection(mut self, config: ConnectionConfig) -> Self {
        self.0.connection = config;
        self
    }

    /// Admission policy.
    pub fn policy(mut self, config: PolicyConfig) -> Self {
        self.0.policy = config;
        self
    }

    /// Reconnect schedule.
    pub fn dial(mut self, config: DialConfig) -> Self {
        self.0.dial = config;
        self
    }

    /// Enables UDP discovery.
    pub fn discovery(mut self, config: DiscoveryConfig) -> Self {
        self.0.discovery = Some(config);
        self
    }

    /// Adds a static peer, dialed at start and redialed forever, with v2.
    pub fn static_peer(mut self, target: DialTarget) -> Self {
        self.0.static_peers.push(target);
        self
    }

    /// Adds a static peer dialed with v1, for peers that speak only v1
    /// (the Python implementation). A failed v2 dial is never retried as
    /// v1 (WIRE-v2.md §6), so v1 peers are named explicitly.
    pub fn static_peer_v1(mut self, target: DialTarget) -> Self {
        self.0.static_peers_v1.push(target);
        self
    }

    /// Whether discovered peers are dialed (default true).
    pub fn dial_discovered(mut self, yes: bool) -> Self {
        self.0.dial_discovered = yes;
        self
    }

    /// The TCP port announced by discovery (default 9000; adapters set the
    /// bound port with [`Node::set_tcp_port`]).
    pub fn tcp_port(mut self, port: u16) -> Self {
        self.0.tcp_port = port;
        self
    }

    /// Node events kept while undrained before further ones are dropped and
    /// counted (default 65,536; at least 1).
    pub fn max_pending_events(mut self, n: usize) -> Self {
        self.0.max_pending_events = n;
        self
    }

    /// The configuration, or why it cannot be used.
    pub fn build(mut self) -> Result<NodeConfig, ConfigError> {
        if self.0.max_pending_events == 0 {
            return Err(ConfigError::ZeroLimit {
                field: "max_pending_events",
            });
        }
        if let Some(yes) = self.0.allow_v1 {
            self.0.auth.allow_v1 = yes;
            if let Some(d) = self.0.discovery.as_mut() {
                d.allow_v1 = yes;
            }
        }
        Ok(self.0)
    }
}

/// An order of the node to close one of its connections at once: call
/// [`Connection::abort`] on it with `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseOrder {
    /// The connection.
    pub conn: ConnId,
    /// The reason to close it with.
    pub reason: CloseReason,
}

/// Identifies one connection of a [`Node`]; never reused by that node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

impl ConnId {
    /// The raw number, for logs.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// Names the peer an operation is for; [`Node::resolve`] turns it into
/// one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerRef {
    /// A connection by id.
    Conn(ConnId),
    /// Any established connection to this node id.
    Node(Uuid),
    /// Any established connection to this remote address.
    Addr(SocketAddr),
}

impl From<ConnId> for PeerRef {
    fn from(id: ConnId) -> Self {
        Self::Conn(id)
    }
}

impl From<Uuid> for PeerRef {
    fn from(node: Uuid) -> Self {
        Self::Node(node)
    }
}

impl From<SocketAddr> for PeerRef {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl core::fmt::Display for PeerRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Conn(id) => write!(f, "connection {}", id.as_u64()),
            Self::Node(node) => write!(f, "node {node}"),
            Self::Addr(addr) => write!(f, "address {addr}"),
        }
    }
}

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(clippy::exhaustive_enums)] // a connection is either dialed or accepted
pub enum Direction {
    /// The peer dialed us; we are the server.
    Inbound,
    /// We dialed the peer; we are the client.
    Outbound,
}

impl Direction {
    /// `inbound` or `outbound`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// What a node knows of one of its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnId,
    /// The remote address.
    pub addr: SocketAddr,
    /// Who opened it.
    pub direction: Direction,
    /// The peer's node id when known: from its HELLO or HELLO2 (inbound),
    /// proven by ACCEPT2 (outbound v2), or from discovery (outbound v1 to
    /// a discovered peer).
    pub peer_node: Option<Uuid>,
    /// The dialer's peer this connection serves, if any.
    pub peer: Option<PeerId>,
    /// Whether the handshake completed.
    pub established: bool,
    /// What the handshake established: version, suite, session id and
    /// channel binding; `None` until then.
    pub session: Option<SessionInfo>,
    /// The connection's counters as of the last [`Node::drive`] or
    /// [`Node::record_stats`].
    pub stats: ConnectionStats,
}

/// A decision or observation of a node, with its reason.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A connection completed its handshake.
    PeerConnected {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// Remote address.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
        /// The key that verified the handshake.
        key: KeyId,
        /// The version, suite, session id and channel binding.
        session: SessionInfo,
    },
    /// An established connection closed.
    PeerDisconnected {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// Remote address.
        addr: SocketAddr,
        /// Who dialed.
        direction: Direction,
        /// Why it closed.
        reason: CloseReason,
    },
    /// A peer was refused: at admission (`conn` is `None`; close the socket
    /// without writing) or during the handshake. For inbound connections
    /// only the first failure of an address per report interval is
    /// reported this way; the rest come as one
    /// [`AuthFailuresAggregated`](Self::AuthFailuresAggregated).
    AuthFailed {
        /// The connection, if one was created.
        conn: Option<ConnId>,
        /// Remote address.
        addr: SocketAddr,
        /// Why.
        reason: AuthFailure,
    },
    /// A source address is throttled (or its throttle extended): until
    /// `until`, one of its handshakes is admitted per `interval` and the
    /// other connections are refused (a correct HELLO among the admitted
    /// ones is still accepted).
    Throttled {
        /// The address as tracked (IPv6: its /64, or the configured prefix).
        ip: core::net::IpAddr,
        /// When the throttle ends.
        until: Instant,
        /// One handshake per this interval until then.
        interval: Duration,
        /// Failures or attempts.
        cause: ThrottleCause,
    },
    /// The refusals and failures of one source address over one report
    /// interval, after the first (reported as [`AuthFailed`](Self::AuthFailed)),
    /// folded into one event so that a flood cannot flood the log.
    AuthFailuresAggregated {
        /// The address as tracked; `None` for addresses the full tracking
        /// table could not hold.
        ip: Option<core::net::IpAddr>,
        /// How many.
        count: u64,
        /// When the first happened.
        first: Instant,
        /// When the last happened.
        last: Instant,
        /// Their reasons.
        reasons: AuthFailureCounts,
    },
    /// A node announced itself for the first time.
    PeerDiscovered {
        /// Its id.
        node: Uuid,
        /// Its address (datagram source IP, announced port).
        addr: SocketAddr,
        /// The key that verified its announcement.
        key: KeyId,
        /// The version of that announcement.
        version: WireVersion,
    },
    /// A known node announced a new address (after passing every check).
    PeerAddressChanged {
        /// Its id.
        node: Uuid,
        /// Previous address.
        old: SocketAddr,
        /// New address.
        new: SocketAddr,
    },
    /// A discovered node stopped announcing and was forgotten. Its
    /// connections (except those to static peers) are ordered closed with
    /// [`CloseReason::PeerExpired`] through [`Node::poll_close`].
    PeerExpired {
        /// Its id.
        node: Uuid,
        /// Its last address.
        addr: SocketAddr,
    },
    /// A discovery datagram was dropped.
    DatagramDropped {
        /// Its source.
        src: SocketAddr,
        /// The first check it failed.
        reason: DropReason,
    },
    /// A discovered peer failed too many dials and is no longer dialed.
    DialGaveUp {
        /// The dialer's peer.
        peer: PeerId,
        /// Its node id.
        node: Uuid,
        /// Consecutive failures.
        failures: u32,
    },
    /// A dial failed before its connection was established: the transport
    /// could not connect (reported by the adapter with its error), this
    /// node was at its connection cap, or the handshake failed.
    DialFailed {
        /// The dialer's peer.
        peer: PeerId,
        /// Its node id, when discovery named it.
        node: Option<Uuid>,
        /// Where the dial went.
        target: DialTarget,
        /// Why it failed, for humans.
        error: String,
    },
    /// Two live connections from different addresses claim one node id:
    /// one of them is not that node (any holder of the key can claim any
    /// id). Operations naming the node prefer the connection to the address
    /// that discovery or static configuration names; see
    /// [`Node::resolve`].
    IdentityConflict {
        /// The node id both claim.
        node: Uuid,
        /// The connection that completed its handshake last.
        conn: ConnId,
        /// Its remote address.
        addr: SocketAddr,
        /// The connection that already claimed the id.
        other: ConnId,
        /// Its remote address.
        other_addr: SocketAddr,
    },
    /// A known peer keeps opening new connections to this node while it has
    /// none of its own to it (a peer that does not see the connections it
    /// opened as established, such as the Python implementation when it has
    /// the smaller id): this node dials it back to settle on a connection
    /// both sides use.
    DialingBack {
        /// The peer's node id.
        node: Uuid,
        /// Where it is dialed (its discovered address).
        addr: SocketAddr,
        /// Duplicate connections it had opened.
        duplicates: u32,
    },
    /// An incoming stream was refused: the node already had `max` open over
    /// all its connections (`PolicyConfig::max_incoming_streams`). Its
    /// connection is ordered closed with [`CloseReason::StreamLimit`]; its
    /// open streams are then reported incomplete.
    StreamRefused {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// The peer's address.
        addr: SocketAddr,
        /// The refused stream's id.
        stream: crate::connection::StreamId,
        /// The node's cap.
        max: usize,
    },
    /// An incoming stream ended with its END: it is complete. Reported from
    /// the connection's events handed to [`Node::observe`].
    StreamComplete {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// The peer's address.
        addr: SocketAddr,
        /// Stream id.
        stream: crate::connection::StreamId,
        /// DATA frames.
        frames: u32,
        /// Payload bytes.
        bytes: u64,
    },
    /// This node started key rotation `epoch` ([`Node::start_key_rotation`]):
    /// the new key is accepted from now, signs from `activate_at`, and the
    /// old one is accepted until `old_key_until`.
    KeyRotationStarted {
        /// The rotation's epoch.
        epoch: u64,
        /// When the new key starts signing.
        activate_at: Instant,
        /// When the old key stops being accepted.
        old_key_until: Instant,
    },
    /// A peer sent rotation `epoch`, higher than this node's: the node took
    /// the new key (accepted from now) and forwards the rotation to its
    /// other peers.
    KeyRotationLearned {
        /// The rotation's epoch.
        epoch: u64,
        /// The connection it came on.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// When the new key starts signing.
        activate_at: Instant,
        /// When the old key stops being accepted.
        old_key_until: Instant,
    },
    /// Rotation `epoch` was queued to a peer (to all on a start or on
    /// learning it; to a peer whose handshake just completed, which may
    /// have missed it).
    KeyRotationSent {
        /// The rotation's epoch.
        epoch: u64,
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
    },
    /// A peer acknowledged rotation `epoch`.
    KeyRotationAcked {
        /// The epoch acknowledged.
        epoch: u64,
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// What the peer did with it.
        status: AckStatus,
    },
    /// The new key of rotation `epoch` became the signing key.
    KeyRotationActivated {
        /// The rotation's epoch.
        epoch: u64,
        /// The key's id in the ring.
        key: KeyId,
    },
    /// A rotated-out key's grace period ended: it was dropped (its bytes
    /// wiped) and is refused from now on ([`AuthFailure::RetiredKey`]).
    KeyRotationOldKeyPurged {
        /// The dropped key's id.
        key: KeyId,
    },
    /// A rotation control message was not acted on.
    KeyRotationRefused {
        /// The connection it came on.
        conn: ConnId,
        /// The peer's address.
        addr: SocketAddr,
        /// Why.
        reason: RotationRefusal,
    },
    /// An incoming stream was cut off by its connection closing: what was
    /// received MUST NOT be used as a complete tensor. Reported from the
    /// connection's events handed to [`Node::observe`].
    StreamIncomplete {
        /// The connection.
        conn: ConnId,
        /// The peer's node id when known.
        peer_node: Option<Uuid>,
        /// The peer's address.
        addr: SocketAddr,
        /// Stream id.
        stream: crate::connection::StreamId,
        /// Payload bytes received before the cut.
        bytes: u64,
        /// Why the connection closed.
        reason: CloseReason,
    },
}

/// All counters of a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeCounters {
    /// Handshake verification.
    pub auth: AuthCounters,
    /// Admission policy.
    pub policy: PolicyCounters,
    /// Discovery, when enabled.
    pub discovery: Option<crate::discovery::DiscoveryCounters>,
    /// Payload and frame bytes over connections that have closed, plus live
    /// ones as of their last `drive` or `record_stats`.
    pub bytes_in: u64,
    /// See `bytes_in`.
    pub bytes_out: u64,
    /// Node events dropped because too many were undrained.
    pub events_dropped: u64,
    /// Established v2 connections closed because a frame failed its tag
    /// (altered, forged, replayed or reordered on the way); during the
    /// handshake the same failure is an authentication failure
    /// (`policy.auth_failures.bad_frame_mac`).
    pub bad_frame_mac: u64,
    /// Dials of static and discovered peers started (each ends connected
    /// or as a [`NodeEvent::DialFailed`]).
    pub dials: u64,
}

/// Traffic exchanged with one peer node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerTraffic {
    /// Bytes received from the peer over connections that closed.
    pub bytes_in: u64,
    /// Bytes sent to the peer over connections that closed.
    pub bytes_out: u64,
    /// Connections to or from the peer that completed a handshake.
    pub connections: u64,
    /// Frames received from the peer over connections that closed.
    pub frames_in: u64,
    /// Frames sent to the peer over connections that closed.
    pub frames_out: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    info: ConnectionInfo,
    slot: crate::policy::SlotId,
    /// A failure was already reported for this connection.
    failure_reported: bool,
    /// Frames in and out when the handshake completed: a connection whose
    /// counts are still these has carried nothing since.
    frames_at_established: (u64, u64),
}

/// Upper bound on peers whose traffic totals are remembered.
const MAX_PEER_TRAFFIC: usize = 4096;

/// Duplicate inbound connections from one peer, while this node has no
/// outbound connection to it, after which it is dialed back. One duplicate
/// is an ordinary reconnect over a connection this node had not yet seen
/// die; a second is a peer that does not use the connections it opens.
const CHURN_DIAL_BACK: u32 = 2;

/// One ASoc endpoint. See the [module docs](self).
#[derive(Debug)]
pub struct Node {
    auth: Authenticator,
    policy: Policy,
    dialer: Dialer,
    discovery: Option<Discovery>,
    connection_config: ConnectionConfig,
    dial_discovered: bool,
    conns: HashMap<ConnId, Entry>,
    next_conn: u64,
    /// Discovered nodes with a larger id than ours wait before we dial them,
    /// giving them the chance to dial us first (one connection per pair).
    deferred_dials: BTreeMap<Uuid, (SocketAddr, Instant)>,
    events: VecDeque<NodeEvent>,
    max_pending_events: usize,
    /// Connections ordered closed and not yet reported closed; at most one
    /// order per open connection, so bounded by the connection cap.
    close_orders: VecDeque<CloseOrder>,
    traffic: HashMap<Uuid, PeerTraffic>,
    closed_bytes_in: u64,
    closed_bytes_out: u64,
    events_dropped: u64,
    /// Static peers configured to be dialed with v1.
    v1_peers: HashSet<PeerId>,
    bad_frame_mac: u64,
    /// Dials the dialer scheduled.
    dials: u64,
    /// Per node: duplicate inbound connections it opened while this node had
    /// no outbound connection to it. Bounded like `deferred_dials`.
    churn: BTreeMap<Uuid, u32>,
    rotation: Rotation,
}

impl Node {
    /// A node whose randomness (challenges, tokens, jitter) is expanded from
    /// `seed`. Static peers are due for dialing at `now`.
    #[must_use]
    pub fn new(config: NodeConfig, seed: Seed, now: Instant) -> Self {
        let mut rng = Rng::from_seed(seed);
        let node_id = config.auth.node_id();
        let mut dialer = Dialer::new(config.dial, rng.fork());
        for target in config.static_peers {
            dialer.add_static(now, target);
        }
        let v1_peers = config
            .static_peers_v1
            .into_iter()
            .map(|target| dialer.add_static(now, target))
            .collect();
        let discovery = config
            .discovery
            .map(|d| Discovery::new(d, node_id, config.tcp_port, rng.fork(), now));
        Self {
            auth: Authenticator::new(config.auth, rng.fork()),
            policy: Policy::new(config.policy),
            dialer,
            discovery,
            connection_config: config.connection,
            dial_discovered: config.dial_discovered,
            conns: HashMap::new(),
            next_conn: 0,
            deferred_dials: BTreeMap::new(),
            events: VecDeque::new(),
            max_pending_events: config.max_pending_events,
            close_orders: VecDeque::new(),
            traffic: HashMap::new(),
            closed_bytes_in: 0,
            closed_bytes_out: 0,
            events_dropped: 0,
            v1_peers,
            bad_frame_mac: 0,
            dials: 0,
            churn: BTreeMap::new(),
            // Forked last, so that every other stream stays what it was.
            rotation: Rotation::new(rng.fork()),
        }
    }

    // ----- identity and keys ----------------------------------------------

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> Uuid {
        self.auth.node_id()
    }

    /// The key ring.
    #[must_use]
    pub fn keys(&self) -> &KeyRing {
        self.auth.keys()
    }

    /// Makes `key` the signing key; the previous one stays accepted for
    /// `grace`. Returns the new key's id.
    pub fn rotate_key(&mut self, now: Instant, key: ApiKey, grace: Duration) -> KeyId {
        self.auth.keys_mut().rotate(key, now, grace)
    }

    /// Starts key rotation to `key` across the cluster: it is accepted from
    /// now, sent in a KEY_ROTATION to every encrypted peer (which floods it
    /// on), signs from `activate_in` after `unix_ms`, and the current key is
    /// accepted until `grace` after that, then dropped. Returns the
    /// rotation's epoch. Outputs come from
    /// [`poll_control`](Self::poll_control) and the timers.
    pub fn start_key_rotation(
        &mut self,
        now: Instant,
        unix_ms: u64,
        key: ApiKey,
        activate_in: Duration,
        grace: Duration,
    ) -> Result<u64, RotationError> {
        let peers = self.rotation_peers(None);
        let epoch = self.rotation.start(
            now,
            unix_ms,
            self.auth.keys_mut(),
            key,
            activate_in,
            grace,
            &peers,
        )?;
        self.push(NodeEvent::KeyRotationStarted {
            epoch,
            activate_at: after(now, activate_in),
            old_key_until: after(after(now, activate_in), grace),
        });
        self.pump_rotation();
        Ok(epoch)
    }

    /// The epoch of the newest rotation this node took part in (0: none).
    #[must_use]
    pub fn rotation_epoch(&self) -> u64 {
        self.rotation.epoch()
    }

    /// Marks connection `id` as running over an encrypted transport (TLS):
    /// a v1 connection so marked may carry key rotations. v2 connections
    /// are always encrypted and need no mark.
    pub fn mark_encrypted_transport(&mut self, id: ConnId) {
        if self.conns.contains_key(&id) {
            self.rotation.mark_encrypted(id);
        }
    }

    /// Hands the node an [`Event::Control`] of connection `id`: key
    /// rotations and their acknowledgements are acted on (only from an
    /// encrypted connection), other kinds are ignored.
    pub fn handle_control(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: ConnId,
        kind: u32,
        body: &[u8],
    ) {
        let Some(info) = self.conns.get(&id).map(|e| e.info) else {
            return;
        };
        if !info.established {
            return;
        }
        let encrypted = self.is_encrypted(&info);
        let others = self.rotation_peers(Some(id));
        self.rotation.control(
            now,
            unix_ms,
            self.auth.keys_mut(),
            id,
            encrypted,
            kind,
            body,
            &others,
        );
        self.pump_rotation();
    }

    /// The next control message to queue, with
    /// [`Connection::send_control`], on the connection it names.
    #[must_use]
    pub fn poll_control(&mut self) -> Option<ControlTransmit> {
        self.rotation.poll_transmit()
    }

    fn is_encrypted(&self, info: &ConnectionInfo) -> bool {
        info.session.is_some_and(|s| s.version == WireVersion::V2)
            || self.rotation.is_marked_encrypted(info.id)
    }

    /// Established encrypted connections, but `except`, in id order.
    fn rotation_peers(&self, except: Option<ConnId>) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = self
            .conns
            .values()
            .filter(|e| e.info.established && Some(e.info.id) != except)
            .filter(|e| self.is_encrypted(&e.info))
            .map(|e| e.info.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn pump_rotation(&mut self) {
        while let Some(step) = self.rotation.poll_step() {
            let peer_of = |conn: ConnId| self.conns.get(&conn).and_then(|e| e.info.peer_node);
            let event = match step {
                RotationStep::Learned {
                    epoch,
                    conn,
                    activate_at,
                    old_until,
                } => NodeEvent::KeyRotationLearned {
                    epoch,
                    conn,
                    peer_node: peer_of(conn),
                    activate_at,
                    old_key_until: old_until,
                },
                RotationStep::Sent { epoch, conn } => NodeEvent::KeyRotationSent {
                    epoch,
                    conn,
                    peer_node: peer_of(conn),
                },
                RotationStep::Acked { conn, ack } => NodeEvent::KeyRotationAcked {
                    epoch: ack.epoch,
                    conn,
                    peer_node: peer_of(conn),
                    status: ack.status,
                },
                RotationStep::Activated { epoch, key } => {
                    NodeEvent::KeyRotationActivated { epoch, key }
                }
                RotationStep::Purged { key } => NodeEvent::KeyRotationOldKeyPurged { key },
                RotationStep::Refused { conn, reason } => {
                    let Some(addr) = self.conns.get(&conn).map(|e| e.info.addr) else {
                        continue;
                    };
                    NodeEvent::KeyRotationRefused { conn, addr, reason }
                }
            };
            self.push(event);
        }
    }

    /// Sets the TCP port that discovery announces (after binding port 0).
    pub fn set_tcp_port(&mut self, port: u16) {
        if let Some(d) = self.discovery.as_mut() {
            d.set_tcp_port(port);
        }
    }

    /// Whether v1 is spoken besides v2 (WIRE-v2.md §6).
    #[must_use]
    pub fn allow_v1(&self) -> bool {
        self.auth.allow_v1()
    }

    /// The connection configuration every connection of this node uses.
    #[must_use]
    pub fn connection_config(&self) -> &ConnectionConfig {
        &self.connection_config
    }

    // ----- connections ----------------------------------------------------

    /// A socket from `remote` was accepted. `Err` means: close it at once
    /// without writing a byte (an [`NodeEvent::AuthFailed`] says why).
    pub fn accept(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<(ConnId, Connection), Refusal> {
        let slot = match self.policy.admit(now, remote.ip()) {
            Ok(slot) => {
                // Admitting may have throttled the address (its attempt rate).
                self.pump_policy();
                slot
            }
            Err(refusal) => {
                self.pump_policy();
                self.report_inbound_failure(now, None, remote, refusal.as_auth_failure());
                return Err(refusal);
            }
        };
        let conn = Connection::server(self.connection_config, now);
        Ok((
            self.register(slot, remote, Direction::Inbound, None, None),
            conn,
        ))
    }

    /// Adds a static peer while the node runs, dialed with v2 and redialed
    /// for ever like those of the configuration; its first dial is due at
    /// `now`. For peer lists that change under a running node (DNS records
    /// re-resolved, a scheduler's allocation).
    pub fn add_static_peer(&mut self, now: Instant, target: DialTarget) -> PeerId {
        self.dialer.add_static(now, target)
    }

    /// Stops dialing a static peer (added by the configuration or by
    /// [`add_static_peer`](Self::add_static_peer)). Its connection, if one
    /// is open, stays open: only its redials end. Ids of discovered peers
    /// and unknown ids are ignored.
    pub fn remove_static_peer(&mut self, peer: PeerId) {
        if self.discovered_node_of(peer).is_some() {
            return;
        }
        self.dialer.remove(peer);
        self.v1_peers.remove(&peer);
    }

    /// The next dial to make, if one is due.
    #[must_use]
    pub fn poll_dial(&mut self, now: Instant) -> Option<Dial> {
        self.release_deferred_dials(now);
        let mut dial = self.dialer.poll_dial(now)?;
        self.dials = self.dials.saturating_add(1);
        if let Some(version) = self
            .discovered_node_of(dial.peer)
            .and_then(|node| self.discovery.as_ref()?.dial_version(&node))
        {
            dial.version = version;
        }
        Some(dial)
    }

    /// The TCP connection for `dial` is open: returns the client connection
    /// whose first frame is a fresh HELLO. `Err` when this node is at its
    /// connection cap (the dial counts as failed).
    pub fn connect(
        &mut self,
        now: Instant,
        unix_ms: u64,
        dial: &Dial,
        remote: SocketAddr,
    ) -> Result<(ConnId, Connection), Refusal> {
        let node = self.discovered_node_of(dial.peer);
        let options = self.dial_options(dial, node);
        match self.open_outbound(now, unix_ms, remote, Some(dial.peer), node, options) {
            Ok(pair) => Ok(pair),
            Err(refusal) => {
                self.push_dial_failed(dial.peer, dial.target.clone(), refusal.to_string());
                self.dialer.dial_failed(now, dial.peer);
                self.pump_dialer();
                Err(refusal)
            }
        }
    }

    /// Dialing `dial` failed (resolution, refusal, timeout): the reconnect
    /// schedule takes over. Prefer [`dial_error`](Self::dial_error), which
    /// also reports why.
    pub fn dial_failed(&mut self, now: Instant, dial: &Dial) {
        self.dialer.dial_failed(now, dial.peer);
        self.pump_dialer();
    }

    /// Dialing `dial` failed with `error` (the adapter's description of the
    /// resolution, connect or TLS failure): reported as
    /// [`NodeEvent::DialFailed`], then as [`dial_failed`](Self::dial_failed).
    pub fn dial_error(&mut self, now: Instant, dial: &Dial, error: &str) {
        self.push_dial_failed(dial.peer, dial.target.clone(), error.to_string());
        self.dial_failed(now, dial);
    }

    fn push_dial_failed(&mut self, peer: PeerId, target: DialTarget, error: String) {
        let node = self.discovered_node_of(peer);
        self.push(NodeEvent::DialFailed {
            peer,
            node,
            target,
            error,
        });
    }

    /// A connection the application opened itself to `remote` (not
    /// scheduled by the dialer, never redialed), with `options` choosing
    /// the version and the node id the server must prove.
    pub fn connect_to(
        &mut self,
        now: Instant,
        unix_ms: u64,
        remote: SocketAddr,
        options: ClientOptions,
    ) -> Result<(ConnId, Connection), Refusal> {
        self.open_outbound(now, unix_ms, remote, None, options.expected_peer, options)
    }

    /// How `dial` is made (WIRE-v2.md §6): v1 only to a static peer
    /// configured as v1 or to a discovered peer seen only through v1
    /// announcements; otherwise v2, and a discovered peer must prove the
    /// node id it announced, so that a relayed announcement cannot redirect
    /// the dial to someone else.
    fn dial_options(&self, dial: &Dial, node: Option<Uuid>) -> ClientOptions {
        if self.v1_peers.contains(&dial.peer) || dial.version == WireVersion::V1 {
            ClientOptions::v1()
        } else {
            ClientOptions::v2().expect_peer(node)
        }
    }

    fn open_outbound(
        &mut self,
        now: Instant,
        unix_ms: u64,
        remote: SocketAddr,
        peer: Option<PeerId>,
        node: Option<Uuid>,
        options: ClientOptions,
    ) -> Result<(ConnId, Connection), Refusal> {
        let slot = self.policy.admit_outbound()?;
        let conn = self
            .auth
            .client(now, unix_ms, self.connection_config, options);
        Ok((
            self.register(slot, remote, Direction::Outbound, peer, node),
            conn,
        ))
    }

    fn register(
        &mut self,
        slot: crate::policy::SlotId,
        addr: SocketAddr,
        direction: Direction,
        peer: Option<PeerId>,
        peer_node: Option<Uuid>,
    ) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conns.insert(
            id,
            Entry {
                info: ConnectionInfo {
                    id,
                    addr,
                    direction,
                    peer_node,
                    peer,
                    established: false,
                    session: None,
                    stats: ConnectionStats::default(),
                },
                slot,
                failure_reported: false,
                frames_at_established: (0, 0),
            },
        );
        id
    }

    /// Call after every input to connection `id`: gives a pending handshake
    /// message its verdict and records the outcome. `unix_ms` is this
    /// node's wall-clock time (HELLO2 timestamps are judged against it).
    pub fn drive(&mut self, now: Instant, unix_ms: u64, id: ConnId, conn: &mut Connection) {
        // A verified v1 HELLO claiming a node id discovery saw speak v2 is
        // a downgrade.
        let discovery = &self.discovery;
        let speaks_v2 = |node: &Uuid| discovery.as_ref().is_some_and(|d| d.is_v2_only(node));
        let pending = conn.poll_handshake();
        let mut outcome = self.auth.drive_with(now, unix_ms, conn, speaks_v2);
        if let (
            Some(HandshakeOutcome::Rejected(AuthFailure::BadMac)),
            Some(HandshakeMessage::Hello2 { suite, message }),
        ) = (&outcome, pending)
        {
            // A key dropped after a rotation's grace period is told apart
            // from a wrong one: the peer missed the rotation.
            if self.rotation.is_retired(suite, &message) {
                outcome = Some(HandshakeOutcome::Rejected(AuthFailure::RetiredKey));
            }
        }
        let Some(entry) = self.conns.get_mut(&id) else {
            return;
        };
        entry.info.stats = conn.stats();
        let Some(outcome) = outcome else {
            return;
        };
        match outcome {
            HandshakeOutcome::AwaitingConfirm => {}
            HandshakeOutcome::Accepted {
                key,
                peer_node,
                session,
            } => {
                entry.info.established = true;
                entry.info.session = Some(session);
                let stats = conn.stats();
                entry.frames_at_established = (stats.frames_in, stats.frames_out);
                if peer_node.is_some() {
                    entry.info.peer_node = peer_node;
                }
                let info = entry.info;
                self.policy.established(now, entry.slot);
                if let Some(peer) = info.peer {
                    self.dialer.connected(peer);
                }
                if let Some(node) = info.peer_node {
                    if let Some(t) = self.traffic_entry(node) {
                        t.connections += 1;
                    }
                }
                self.push(NodeEvent::PeerConnected {
                    conn: id,
                    peer_node: info.peer_node,
                    addr: info.addr,
                    direction: info.direction,
                    key,
                    session,
                });
                if let Some(node) = info.peer_node {
                    self.claimed(now, &info, node);
                }
                if self.is_encrypted(&info) {
                    self.rotation.established(id);
                    self.pump_rotation();
                }
            }
            HandshakeOutcome::Rejected(failure) => {
                entry.failure_reported = true;
                let (slot, addr, direction) = (entry.slot, entry.info.addr, entry.info.direction);
                self.policy.auth_failed(now, slot, failure);
                // The failure first, then the throttle it may have caused.
                self.report_failure(now, id, addr, direction, failure);
                self.pump_policy();
            }
        }
    }

    /// Hands the node an event connection `id` produced, before its
    /// `Closed` is reported with [`closed`](Self::closed): the first chunk
    /// of each incoming stream counts toward the node's stream cap (one
    /// over it orders the connection closed, see
    /// [`NodeEvent::StreamRefused`]), and the end of each, complete or cut
    /// off, becomes a node event naming the peer. Other events, and the
    /// later chunks of a stream, are the connection's own business.
    pub fn observe(&mut self, id: ConnId, event: &Event) {
        let Some((info, slot)) = self.conns.get(&id).map(|e| (e.info, e.slot)) else {
            return;
        };
        match event {
            Event::Data { stream, seq: 0, .. } => {
                if let Err(refused) = self.policy.admit_stream(slot) {
                    self.close_orders.push_back(CloseOrder {
                        conn: id,
                        reason: CloseReason::StreamLimit { max: refused.max },
                    });
                    self.push(NodeEvent::StreamRefused {
                        conn: id,
                        peer_node: info.peer_node,
                        addr: info.addr,
                        stream: *stream,
                        max: refused.max,
                    });
                }
            }
            Event::StreamEnd {
                stream,
                frames,
                bytes,
            } => {
                if *frames > 0 {
                    self.policy.stream_ended(slot);
                }
                self.push(NodeEvent::StreamComplete {
                    conn: id,
                    peer_node: info.peer_node,
                    addr: info.addr,
                    stream: *stream,
                    frames: *frames,
                    bytes: *bytes,
                });
            }
            Event::StreamIncomplete {
                stream,
                frames,
                bytes,
                reason,
            } => {
                if *frames > 0 {
                    self.policy.stream_ended(slot);
                }
                self.push(NodeEvent::StreamIncomplete {
                    conn: id,
                    peer_node: info.peer_node,
                    addr: info.addr,
                    stream: *stream,
                    bytes: *bytes,
                    reason: reason.clone(),
                });
            }
            _ => {}
        }
    }

    /// Records connection `id`'s current counters. [`drive`](Self::drive)
    /// records them too; an adapter that stops calling `drive` once the
    /// handshake is over (there is nothing left to judge) calls this instead
    /// whenever the connection has moved bytes, so that
    /// [`connections`](Self::connections) and [`counters`](Self::counters)
    /// stay current for the connection's whole life.
    pub fn record_stats(&mut self, id: ConnId, stats: ConnectionStats) {
        if let Some(entry) = self.conns.get_mut(&id) {
            entry.info.stats = stats;
        }
    }

    /// Call once connection `id` has closed (after its `Closed` event), with
    /// the reason and its final counters.
    pub fn closed(
        &mut self,
        now: Instant,
        id: ConnId,
        reason: &CloseReason,
        stats: ConnectionStats,
    ) {
        let Some(entry) = self.conns.remove(&id) else {
            return;
        };
        self.close_orders.retain(|o| o.conn != id);
        self.rotation.closed(id);
        let info = entry.info;
        if !info.established && !entry.failure_reported {
            // An inbound connection that ends before a complete HELLO (no
            // frame received) by a close, a reset or the deadline is a light
            // failure: it may be a broken network as well as a slot holder.
            let abandoned = info.direction == Direction::Inbound
                && stats.frames_in == 0
                && matches!(
                    reason,
                    CloseReason::PeerClosed
                        | CloseReason::Transport
                        | CloseReason::HandshakeTimeout
                );
            if abandoned {
                let failure = reason.auth_failure();
                self.policy.abandoned(now, entry.slot, failure);
                if let Some(failure) = failure {
                    self.report_failure(now, id, info.addr, info.direction, failure);
                }
                self.pump_policy();
            } else if let Some(failure) = reason.auth_failure() {
                self.policy.auth_failed(now, entry.slot, failure);
                self.report_failure(now, id, info.addr, info.direction, failure);
                self.pump_policy();
            }
        }
        self.policy.release(entry.slot);
        if *reason == CloseReason::BadFrameMac {
            self.bad_frame_mac = self.bad_frame_mac.saturating_add(1);
        }
        if let Some(peer) = info.peer {
            if info.established {
                self.dialer.disconnected(now, peer);
            } else {
                self.push_dial_failed(peer, DialTarget::Addr(info.addr), reason.to_string());
                self.dialer.dial_failed(now, peer);
            }
            self.pump_dialer();
        }
        self.closed_bytes_in = self.closed_bytes_in.saturating_add(stats.bytes_in);
        self.closed_bytes_out = self.closed_bytes_out.saturating_add(stats.bytes_out);
        if let Some(node) = info.peer_node.filter(|_| info.established) {
            if let Some(t) = self.traffic_entry(node) {
                t.bytes_in = t.bytes_in.saturating_add(stats.bytes_in);
                t.bytes_out = t.bytes_out.saturating_add(stats.bytes_out);
                t.frames_in = t.frames_in.saturating_add(stats.frames_in);
                t.frames_out = t.frames_out.saturating_add(stats.frames_out);
            }
        }
        if info.established {
            self.push(NodeEvent::PeerDisconnected {
                conn: id,
                peer_node: info.peer_node,
                addr: info.addr,
                direction: info.direction,
                reason: reason.clone(),
            });
        }
    }

    /// The node's open connections.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionInfo> + '_ {
        self.conns.values().map(|e| e.info)
    }

    /// The connection an operation on `peer` uses, `None` when no
    /// established connection matches.
    ///
    /// The rule, the same on every adapter: only connections whose
    /// handshake completed count (a stream cannot be opened before it);
    /// [`PeerRef::Conn`] names exactly that connection, [`PeerRef::Node`]
    /// any connection whose peer node id is known to be that one, and
    /// [`PeerRef::Addr`] any connection whose remote address is that one.
    /// When several match, the oldest (lowest [`ConnId`]) wins: it is the
    /// one the peer has known longest, and the choice does not change while
    /// it lives, so consecutive sends to one peer share one connection and
    /// stay in order.
    ///
    /// A node id in a handshake is only a claim (any holder of the key can
    /// make it), so for [`PeerRef::Node`] the connections whose claim the
    /// configuration backs come first: one this node dialed to the address
    /// that static configuration or discovery names for the node, or one
    /// accepted from the IP discovery names for it (or from the IP of such a
    /// dialed connection). Among those, and failing those among the rest,
    /// the oldest wins. A squatter that connected first under a stolen id
    /// thus loses the node's traffic as soon as the real node is connected.
    #[must_use]
    pub fn resolve(&self, peer: PeerRef) -> Option<ConnId> {
        if let PeerRef::Conn(id) = peer {
            return self
                .conns
                .get(&id)
                .filter(|e| e.info.established)
                .map(|e| e.info.id);
        }
        let matching = self
            .conns
            .values()
            .map(|e| &e.info)
            .filter(|c| c.established)
            .filter(|c| match peer {
                PeerRef::Conn(id) => c.id == id,
                PeerRef::Node(node) => c.peer_node == Some(node),
                PeerRef::Addr(addr) => c.addr == addr,
            });
        match peer {
            PeerRef::Node(node) => matching
                .map(|c| (!self.backs_claim(c, node), c.id))
                .min()
                .map(|(_, id)| id),
            _ => matching.map(|c| c.id).min(),
        }
    }

    /// Whether configuration backs `conn`'s claim to be `node`: this node
    /// dialed it for a static or discovered peer (a v2 server proved the id
    /// in ACCEPT2, a v1 dial goes to the address discovery names for it), or
    /// it came from the IP that discovery names for `node`, or from the IP
    /// of such a dialed connection to `node`.
    fn backs_claim(&self, conn: &ConnectionInfo, node: Uuid) -> bool {
        if conn.peer_node != Some(node) {
            return false;
        }
        match conn.direction {
            Direction::Outbound => conn.peer.is_some(),
            Direction::Inbound => {
                let ip = conn.addr.ip();
                self.discovered_addr(node).is_some_and(|a| a.ip() == ip)
                    || self.conns.values().any(|e| {
                        e.info.established
                            && e.info.direction == Direction::Outbound
                            && e.info.peer.is_some()
                            && e.info.peer_node == Some(node)
                            && e.info.addr.ip() == ip
                    })
            }
        }
    }

    fn discovered_addr(&self, node: Uuid) -> Option<SocketAddr> {
        self.discovery.as_ref()?.peer(&node).map(|p| p.addr)
    }

    /// Connection `info` completed its handshake claiming `node`: reports a
    /// claim from a second address, cancels a deferred dial the connection
    /// makes moot, and settles a peer that keeps opening new connections.
    fn claimed(&mut self, now: Instant, info: &ConnectionInfo, node: Uuid) {
        let other = self
            .conns
            .values()
            .map(|e| &e.info)
            .filter(|c| c.id != info.id && c.established && c.peer_node == Some(node))
            .filter(|c| c.addr.ip() != info.addr.ip())
            .map(|c| (c.id, c.addr))
            .min();
        if let Some((other, other_addr)) = other {
            self.push(NodeEvent::IdentityConflict {
                node,
                conn: info.id,
                addr: info.addr,
                other,
                other_addr,
            });
        }
        if !self.backs_claim(info, node) {
            // An unbacked claim must not stop this node from reaching the
            // real node at the address it was given.
            return;
        }
        self.deferred_dials.remove(&node);
        match info.direction {
            Direction::Outbound => {
                self.churn.remove(&node);
            }
            Direction::Inbound => self.inbound_duplicate(now, info, node),
        }
    }

    /// Inbound connection `info` is backed for `node`. Inbound connections
    /// from the same IP claiming `node`, except the newest, that carried
    /// nothing since their handshake are surplus: they are closed. A peer that keeps
    /// opening such connections while this node has none of its own to it
    /// never sees the ones it opened as established; it is dialed back.
    fn inbound_duplicate(&mut self, now: Instant, info: &ConnectionInfo, node: Uuid) {
        let ip = info.addr.ip();
        // This connection included: handshakes may complete out of order.
        let same_peer = |e: &Entry| {
            e.info.established
                && e.info.direction == Direction::Inbound
                && e.info.peer_node == Some(node)
                && e.info.addr.ip() == ip
        };
        if self.conns.values().filter(|e| same_peer(e)).count() < 2 {
            return;
        }
        // The newest is kept: it is the one the peer opened last, so the
        // one it is likeliest to use.
        let newest = self
            .conns
            .values()
            .filter(|e| same_peer(e))
            .map(|e| e.info.id)
            .max();
        let mut surplus: Vec<ConnId> = self
            .conns
            .values()
            .filter(|e| same_peer(e) && Some(e.info.id) != newest)
            .filter(|e| {
                (e.info.stats.frames_in, e.info.stats.frames_out) == e.frames_at_established
            })
            .map(|e| e.info.id)
            .collect();
        surplus.sort_unstable();
        for conn in surplus {
            if !self.close_orders.iter().any(|o| o.conn == conn) {
                self.close_orders.push_back(CloseOrder {
                    conn,
                    reason: CloseReason::Superseded,
                });
            }
        }
        let dials_it = self.conns.values().any(|e| {
            e.info.direction == Direction::Outbound
                && e.info.peer.is_some()
                && e.info.peer_node == Some(node)
        });
        if dials_it {
            return;
        }
        let cap = self.policy.config().max_connections();
        if self.churn.len() >= cap && !self.churn.contains_key(&node) {
            return;
        }
        let count = self.churn.entry(node).or_insert(0);
        *count = count.saturating_add(1);
        let duplicates = *count;
        if duplicates < CHURN_DIAL_BACK {
            return;
        }
        let Some(addr) = self.discovered_addr(node).filter(|_| self.dial_discovered) else {
            return;
        };
        self.churn.remove(&node);
        if self.dialer.discovered(now, node, addr).is_some() {
            self.push(NodeEvent::DialingBack {
                node,
                addr,
                duplicates,
            });
        }
    }

    /// One connection's info.
    #[must_use]
    pub fn connection(&self, id: ConnId) -> Option<ConnectionInfo> {
        self.conns.get(&id).map(|e| e.info)
    }

    /// Traffic totals of connections to `node` that have closed.
    #[must_use]
    pub fn peer_traffic(&self, node: &Uuid) -> Option<PeerTraffic> {
        self.traffic.get(node).copied()
    }

    /// How full the handshake replay caches are; see
    /// [`Authenticator::replay_fill`].
    #[must_use]
    pub fn replay_fill(&self) -> [(usize, usize); 2] {
        self.auth.replay_fill()
    }

    /// Traffic totals of every remembered peer, over connections that have
    /// closed (at most a bounded number of peers are remembered).
    pub fn peers_traffic(&self) -> impl Iterator<Item = (Uuid, PeerTraffic)> + '_ {
        self.traffic.iter().map(|(n, t)| (*n, *t))
    }

    /// Whether `ip` is throttled at `now`.
    #[must_use]
    pub fn is_throttled(&self, now: Instant, ip: core::net::IpAddr) -> bool {
        self.policy.is_throttled(now, ip)
    }

    /// Reports a handshake failure of connection `id`: on its own, or for
    /// an inbound one folded into its address's aggregated report.
    fn report_failure(
        &mut self,
        now: Instant,
        id: ConnId,
        addr: SocketAddr,
        direction: Direction,
        reason: AuthFailure,
    ) {
        if direction == Direction::Inbound {
            self.report_inbound_failure(now, Some(id), addr, reason);
        } else {
            self.push(NodeEvent::AuthFailed {
                conn: Some(id),
                addr,
                reason,
            });
        }
    }

    fn report_inbound_failure(
        &mut self,
        now: Instant,
        conn: Option<ConnId>,
        addr: SocketAddr,
        reason: AuthFailure,
    ) {
        if self.policy.report_failure(now, addr.ip(), reason) {
            self.push(NodeEvent::AuthFailed { conn, addr, reason });
        }
        self.pump_policy();
    }

    fn traffic_entry(&mut self, node: Uuid) -> Option<&mut PeerTraffic> {
        // Bounded: peers beyond the cap are not tracked individually (the
        // node-wide totals still count them).
        if !self.traffic.contains_key(&node) && self.traffic.len() >= MAX_PEER_TRAFFIC {
            return None;
        }
        Some(self.traffic.entry(node).or_default())
    }

    fn discovered_node_of(&self, peer: PeerId) -> Option<Uuid> {
        let d = self.discovery.as_ref()?;
        d.peers()
            .find(|p| self.dialer.peer_of(p.node) == Some(peer))
            .map(|p| p.node)
    }

    /// Orders every connection to `node` closed, except those serving a
    /// static peer: a discovered peer that stopped announcing is taken for
    /// gone, and a TCP connection across a cut link would otherwise live on
    /// unnoticed (nothing is sent on an idle one), blocking the reconnect
    /// that follows when its announcements resume.
    fn order_closes_to(&mut self, node: Uuid) {
        let mut ids: Vec<ConnId> = self
            .conns
            .values()
            .filter(|e| e.info.peer_node == Some(node))
            // Called after the discovered peer was forgotten: a peer id
            // the dialer still tracks is a static one.
            .filter(|e| e.info.peer.is_none_or(|p| self.dialer.state(p).is_none()))
            .map(|e| e.info.id)
            .collect();
        ids.sort_unstable();
        for conn in ids {
            if !self.close_orders.iter().any(|o| o.conn == conn) {
                self.close_orders.push_back(CloseOrder {
                    conn,
                    reason: CloseReason::PeerExpired,
                });
            }
        }
    }

    /// Whether an established connection to `node` makes a dial to it moot:
    /// only one whose claim configuration backs, so that a squatter
    /// claiming the id cannot keep this node from dialing the real node.
    fn is_connected_to(&self, node: Uuid) -> bool {
        self.conns
            .values()
            .any(|e| e.info.established && self.backs_claim(&e.info, node))
    }

    // ----- discovery --------------------------------------------------------

    /// A UDP datagram arrived from `src`. `unix_ms` is the wall clock in
    /// unix milliseconds, used for the ±60 s timestamp window.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        unix_ms: u64,
        src: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(d) = self.discovery.as_mut() else {
            return;
        };
        d.handle_datagram(now, unix_ms, src, datagram, self.auth.keys());
        self.pump_discovery(now);
    }

    /// The next announcement to send, when one is due; `unix_ms` is the
    /// wall clock in unix milliseconds.
    #[must_use]
    pub fn poll_datagram(&mut self, now: Instant, unix_ms: u64) -> Option<DiscoveryTransmit> {
        let keys = self.auth.keys();
        self.discovery.as_mut()?.poll_transmit(now, unix_ms, keys)
    }

    /// Whether discovery accepted a v2 announcement of `node` (still in its
    /// table): `node` is then dialed with v2 only, and a v1 HELLO claiming
    /// it is a downgrade to refuse (WIRE-v2.md §6).
    #[must_use]
    pub fn peer_is_v2_only(&self, node: &Uuid) -> bool {
        self.discovery.as_ref().is_some_and(|d| d.is_v2_only(node))
    }

    /// Discovery's peer table (empty when discovery is off).
    pub fn discovered_peers(&self) -> impl Iterator<Item = crate::discovery::DiscoveredPeer> + '_ {
        self.discovery.iter().flat_map(|d| d.peers())
    }

    fn release_deferred_dials(&mut self, now: Instant) {
        let due: Vec<(Uuid, SocketAddr)> = self
            .deferred_dials
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(node, (addr, _))| (*node, *addr))
            .collect();
        for (node, addr) in due {
            self.deferred_dials.remove(&node);
            if !self.is_connected_to(node) {
                self.dialer.discovered(now, node, addr);
            }
        }
    }

    fn consider_dialing(&mut self, now: Instant, node: Uuid, addr: SocketAddr) {
        if !self.dial_discovered || self.is_connected_to(node) {
            return;
        }
        if self.node_id() < node {
            self.dialer.discovered(now, node, addr);
        } else {
            // The node with the smaller id dials; we step in only if it has
            // not connected within two announce intervals (it may be an
            // implementation that never dials).
            let wait = self.discovery.as_ref().map_or(Duration::from_secs(6), |d| {
                d.config().announce_interval() * 2
            });
            let cap = self.policy.config().max_connections();
            if self.deferred_dials.len() < cap || self.deferred_dials.contains_key(&node) {
                self.deferred_dials.insert(node, (addr, after(now, wait)));
            }
        }
    }

    // ----- timers and events ------------------------------------------------

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// or [`poll_dial`](Self::poll_dial) has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.policy.poll_timeout(),
            self.dialer.poll_timeout(),
            self.discovery.as_ref().and_then(Discovery::poll_timeout),
            self.deferred_dials.values().map(|(_, at)| *at).min(),
            self.rotation.poll_timeout(self.auth.keys()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires due timers: policy housekeeping, discovery expiry, retired keys.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.policy.handle_timeout(now);
        self.pump_policy();
        // Activates a rotation that is due and drops keys past their grace
        // period, remembering them as retired.
        self.rotation.handle_timeout(now, self.auth.keys_mut());
        self.pump_rotation();
        if let Some(d) = self.discovery.as_mut() {
            d.handle_timeout(now);
        }
        self.pump_discovery(now);
        self.release_deferred_dials(now);
    }

    /// The next connection to close at once, oldest order first. Take these
    /// after every call into the node and [`abort`](Connection::abort) each
    /// with its reason; an order for a connection already closed (or never
    /// started by the adapter) is harmless to skip.
    #[must_use]
    pub fn poll_close(&mut self) -> Option<CloseOrder> {
        self.close_orders.pop_front()
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// The handshake replay memory, to carry across a restart: see
    /// [`Authenticator::replay_state`].
    #[must_use]
    pub fn auth_replay_state(&self, now: Instant, unix_ms: u64) -> AuthReplayState {
        self.auth.replay_state(now, unix_ms)
    }

    /// Restores what [`auth_replay_state`](Self::auth_replay_state) took in
    /// an earlier process: see [`Authenticator::restore_replay_state`].
    pub fn restore_auth_replay_state(
        &mut self,
        now: Instant,
        unix_ms: u64,
        state: &AuthReplayState,
    ) -> RestoreReport {
        self.auth.restore_replay_state(now, unix_ms, state)
    }

    /// Discovery's replay memory, to carry across a restart (`None`
    /// without discovery): see [`Discovery::replay_state`].
    #[must_use]
    pub fn discovery_replay_state(&self, unix_ms: u64) -> Option<DiscoveryReplayState> {
        self.discovery.as_ref().map(|d| d.replay_state(unix_ms))
    }

    /// Restores what [`discovery_replay_state`](Self::discovery_replay_state)
    /// took in an earlier process; a node without discovery ignores it.
    pub fn restore_discovery_replay_state(
        &mut self,
        now: Instant,
        unix_ms: u64,
        state: &DiscoveryReplayState,
    ) {
        if let Some(d) = self.discovery.as_mut() {
            d.restore_replay_state(now, unix_ms, state);
        }
    }

    /// All counters.
    #[must_use]
    pub fn counters(&self) -> NodeCounters {
        let live_in: u64 = self.conns.values().map(|e| e.info.stats.bytes_in).sum();
        let live_out: u64 = self.conns.values().map(|e| e.info.stats.bytes_out).sum();
        NodeCounters {
            auth: self.auth.counters(),
            policy: *self.policy.counters(),
            discovery: self.discovery.as_ref().map(|d| d.counters().clone()),
            bytes_in: self.closed_bytes_in.saturating_add(live_in),
            bytes_out: self.closed_bytes_out.saturating_add(live_out),
            events_dropped: self.events_dropped,
            bad_frame_mac: self.bad_frame_mac,
            dials: self.dials,
        }
    }

    fn push(&mut self, event: NodeEvent) {
        if self.events.len() >= self.max_pending_events {
            self.events_dropped = self.events_dropped.saturating_add(1);
            return;
        }
        self.events.push_back(event);
    }

    fn pump_policy(&mut self) {
        while let Some(e) = self.policy.poll_event() {
            match e {
                PolicyEvent::Throttled(t) => self.push(NodeEvent::Throttled {
                    ip: t.ip,
                    until: t.until,
                    interval: t.interval,
                    cause: t.cause,
                }),
                PolicyEvent::FailuresAggregated(f) => {
                    self.push(NodeEvent::AuthFailuresAggregated {
                        ip: f.ip,
                        count: f.count,
                        first: f.first,
                        last: f.last,
                        reasons: f.reasons,
                    });
                }
                // Refusals are reported as AuthFailed by `accept`.
                PolicyEvent::Refused { .. } => {}
            }
        }
    }

    fn pump_dialer(&mut self) {
        while let Some(e) = self.dialer.poll_event() {
            match e {
                DialEvent::GaveUp {
                    peer,
                    node,
                    failures,
                } => {
                    self.push(NodeEvent::DialGaveUp {
                        peer,
                        node,
                        failures,
                    });
                }
            }
        }
    }

    fn pump_discovery(&mut self, now: Instant) {
        while let Some(e) = self.discovery.as_mut().and_then(Discovery::poll_event) {
            match e {
                DiscoveryEvent::Discovered {
                    node,
                    addr,
                    key,
                    version,
                } => {
                    self.consider_dialing(now, node, addr);
                    self.push(NodeEvent::PeerDiscovered {
                        node,
                        addr,
                        key,
                        version,
                    });
                }
                DiscoveryEvent::AddressChanged { node, old, new } => {
                    self.consider_dialing(now, node, new);
                    self.push(NodeEvent::PeerAddressChanged { node, old, new });
                }
                DiscoveryEvent::Expired { node, addr } => {
                    self.dialer.forget_discovered(node);
                    self.deferred_dials.remove(&node);
                    self.churn.remove(&node);
                    self.push(NodeEvent::PeerExpired { node, addr });
                    self.order_closes_to(node);
                }
                DiscoveryEvent::Dropped { src, reason } => {
                    self.push(NodeEvent::DatagramDropped { src, reason });
                }
            }
        }
        self.pump_dialer();
    }
}
