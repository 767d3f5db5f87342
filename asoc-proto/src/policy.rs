//! Per-node admission policy (WIRE.md §6, RFC-0002 §10.2, DESIGN.md §5),
//! shared by every connection of one node.
//!
//! The node asks [`Policy::admit`] before it lets a new inbound TCP connection
//! start its handshake, and reports what happens to that connection after:
//! [`established`](Policy::established), [`auth_failed`](Policy::auth_failed),
//! [`abandoned`](Policy::abandoned), [`release`](Policy::release). The policy
//! enforces, per source address:
//!
//! - **throttle**, not lockout: an address that used up its failure budget
//!   is not refused outright. For `throttle_duration` (default 10 min) after
//!   it, its connections are admitted at a low rate, one handshake per
//!   `throttle_interval` (default 5 s, a GCRA with a burst of one), and the
//!   others are refused ([`Refusal::Throttled`]). A HELLO admitted at that
//!   rate is verified like any other, and a correct one is accepted: a
//!   128-bit MAC cannot be guessed online, so refusing a correct HELLO would
//!   buy no security, only hand whoever shares the address (the same host,
//!   a NAT, an IPv6 /64) a way to lock a legitimate peer out. The throttle
//!   only bounds the work spent on an address that sends junk.
//! - **failure budget**: `max_auth_failures` (default 5) counted failures
//!   (only [`AuthFailure::counts_toward_throttle`] reasons count) throttle
//!   the address. A connection that ends before a complete HELLO (closed,
//!   reset, or silent until its deadline; see [`abandoned`](Policy::abandoned))
//!   is a light failure: it weighs a quarter of a real one, so 20 of them
//!   spend the default budget. A successful handshake resets the budget and
//!   lifts a throttle in force: the address demonstrably carries a holder of
//!   the key. Throttling also resets the budget; failures while throttled
//!   spend it again and extend the throttle.
//! - **attempt rate**: `max_attempts_per_window` (default 100) connection
//!   attempts per `attempt_window` (default 1 h) throttle the address until
//!   the window ends. Only attempts that did not end in a successful
//!   handshake count (a success gives its attempt back), and attempts refused
//!   for the throttle or for capacity never count: a peer that reconnects
//!   successfully a thousand times an hour is never limited. The window is
//!   fixed: it opens at the first attempt after the previous window closed.
//!   A fixed window admits at most twice the limit in any span of one window
//!   length; the sliding alternative needs one timestamp per attempt, which
//!   a bounded table cannot afford.
//! - **share of the handshake cap**: at most `max_handshaking_per_ip`
//!   (default 8) of the node's `max_handshaking` places, so that one address
//!   cannot hold every place while legitimate peers are refused.
//!
//! and per node:
//!
//! - **connections**: at most `max_connections` (default 1024) inbound and
//!   outbound ([`admit_outbound`](Policy::admit_outbound)) together.
//! - **handshakes**: at most `max_handshaking` (default 64) inbound
//!   connections that have not authenticated yet, a separate and much smaller
//!   cap, because those cost the node work before anyone proved anything.
//!   Our own dials are not counted here: their number is ours to choose.
//! - **incoming streams**: at most `max_incoming_streams` (default 16384)
//!   streams open at once over all connections
//!   ([`admit_stream`](Policy::admit_stream)), on top of each connection's
//!   own cap: every open stream costs the application memory and work, and
//!   many connections each under their own cap could otherwise add up to
//!   more than the node can carry. The connection that opens one more is
//!   closed, as one that breaks its own cap is.
//! - **tracking table**: at most `max_tracked_ips` (default 65536) addresses.
//!   When the table is full of entries that still matter, a new address is
//!   refused ([`Refusal::TrackingFull`]): forgetting an entry early would
//!   forget a throttle or a rate window, so the policy fails closed.
//!
//! **Failure reports** are aggregated per address, so that a flood of
//! refused connections cannot flood the log: [`report_failure`](Policy::report_failure)
//! says whether a failure is reported on its own. The first failure of an
//! address opens a `report_interval` (default 10 s); the later ones within
//! it are counted and reported together, when the interval ends, as one
//! [`PolicyEvent::FailuresAggregated`] with their count, their reasons and
//! the first and last time. A flooding address thus yields at most two
//! events per interval, whatever the number of its connections.
//!
//! An address entry is forgotten once it holds no connection, its throttle
//! and its report interval have ended, and `attempt_window` has passed since
//! its last activity; its failure budget goes with it.
//! [`poll_timeout`](Policy::poll_timeout) tells when the next entry may be
//! forgotten or the next report is due; stale entries are also purged
//! whenever a new connection is admitted, so the table never grows past the
//! configured bound.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what dual-stack sockets
//! report) count as the IPv4 address. Other IPv6 addresses count by their
//! `ipv6_prefix_len` prefix (default /64) for every limit above (throttle,
//! budget, attempt rate, share of the cap, reports): one host usually owns a
//! whole /64, and tracking single IPv6 addresses would let it step around
//! every per-address limit and fill the table by itself.
//!
//! # Call order
//!
//! 1. `admit(now, ip)` or `admit_outbound()` for each new connection; on
//!    `Err` close the socket without sending anything (RFC-0001 §9.1).
//! 2. `established(now, slot)` when its handshake succeeds, or
//!    `auth_failed(now, slot, reason)` when it fails, or `abandoned(now,
//!    slot, reason)` when it ends before a complete HELLO.
//! 3. `release(slot)` when the connection is gone, in any state.
//! 4. Before logging a refusal or failure of an inbound connection, ask
//!    [`report_failure`](Policy::report_failure).
//! 5. Drain [`poll_event`](Policy::poll_event) after each call; call
//!    [`handle_timeout`](Policy::handle_timeout) at
//!    [`poll_timeout`](Policy::poll_timeout).
//!
//! Misuse (an unknown or already released slot, `established` after
//! `auth_failed`, a second `auth_failed`) is ignored rather than counted twice.

use core::fmt;
use core::net::{IpAddr, Ipv6Addr};
use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::Instant;

use crate::auth::AuthFailure;
use crate::time::after;

/// Budget units a counted failure spends; a light failure spends one.
const FAILURE_UNITS: u32 = 4;
/// Budget units of a connection that ended before a complete HELLO.
const LIGHT_FAILURE_UNITS: u32 = 1;

/// Why a [`PolicyConfig`] was not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyConfigError {
    /// A limit or duration that MUST be positive was zero.
    #[error("policy setting `{name}` must be greater than zero")]
    Zero {
        /// The setting's name, as spelled by its builder method.
        name: &'static str,
    },
    /// Connections in the handshake are connections, so their cap cannot
    /// exceed the total.
    #[error("max_handshaking ({max_handshaking}) exceeds max_connections ({max_connections})")]
    HandshakingAboveConnections {
        /// The configured handshake cap.
        max_handshaking: usize,
        /// The configured connection cap.
        max_connections: usize,
    },
    /// An IPv6 prefix has at most 128 bits.
    #[error("ipv6_prefix_len is {0}; an IPv6 prefix is at most 128 bits")]
    Ipv6PrefixTooLong(u8),
}

/// Limits of a [`Policy`]. Build one with [`PolicyConfig::builder`]; the
/// [`Default`] is the WIRE.md §6 defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    max_connections: usize,
    max_handshaking: usize,
    max_handshaking_per_ip: usize,
    max_auth_failures: u32,
    throttle_duration: Duration,
    throttle_interval: Duration,
    max_attempts_per_window: u32,
    attempt_window: Duration,
    max_tracked_ips: usize,
    ipv6_prefix_len: u8,
    report_interval: Duration,
    max_pending_events: usize,
    max_incoming_streams: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_handshaking: 64,
            max_handshaking_per_ip: 8,
            max_auth_failures: 5,
            throttle_duration: Duration::from_secs(10 * 60),
            throttle_interval: Duration::from_secs(5),
            max_attempts_per_window: 100,
            attempt_window: Duration::from_secs(60 * 60),
            max_tracked_ips: 65_536,
            ipv6_prefix_len: 64,
            report_interval: Duration::from_secs(10),
            max_pending_events: 1024,
            max_incoming_streams: 16_384,
        }
    }
}

impl PolicyConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> PolicyConfigBuilder {
        PolicyConfigBuilder(Self::default())
    }

    /// Maximum open connections, inbound and outbound (default 1024).
    #[must_use]
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Maximum inbound connections still in the handshake (default 64).
    #[must_use]
    pub fn max_handshaking(&self) -> usize {
        self.max_handshaking
    }

    /// Maximum inbound connections still in the handshake from one address
    /// (IPv6: one prefix), its share of `max_handshaking` (default 8). A
    /// share above `max_handshaking` leaves only the node-wide cap.
    #[must_use]
    pub fn max_handshaking_per_ip(&self) -> usize {
        self.max_handshaking_per_ip
    }

    /// Counted authentication failures that throttle an address (default 5;
    /// a light failure counts a quarter).
    #[must_use]
    pub fn max_auth_failures(&self) -> u32 {
        self.max_auth_failures
    }

    /// How long an address stays throttled after it spent its failure
    /// budget (default 10 min).
    #[must_use]
    pub fn throttle_duration(&self) -> Duration {
        self.throttle_duration
    }

    /// While an address is throttled, one of its connections is admitted
    /// (and its HELLO verified) per this interval (default 5 s).
    #[must_use]
    pub fn throttle_interval(&self) -> Duration {
        self.throttle_interval
    }

    /// Unsuccessful connection attempts per address per window before it is
    /// throttled until the window ends (default 100).
    #[must_use]
    pub fn max_attempts_per_window(&self) -> u32 {
        self.max_attempts_per_window
    }

    /// Length of the attempt-rate window (default 1 h); also how long an idle
    /// address entry is kept.
    #[must_use]
    pub fn attempt_window(&self) -> Duration {
        self.attempt_window
    }

    /// Maximum addresses tracked at once (default 65536).
    #[must_use]
    pub fn max_tracked_ips(&self) -> usize {
        self.max_tracked_ips
    }

    /// IPv6 prefix length that counts as one address (default 64).
    #[must_use]
    pub fn ipv6_prefix_len(&self) -> u8 {
        self.ipv6_prefix_len
    }

    /// The interval over which the failures of one address after its first
    /// are reported as one aggregated event (default 10 s).
    #[must_use]
    pub fn report_interval(&self) -> Duration {
        self.report_interval
    }

    /// Undrained events kept before new ones are dropped (default 1024).
    #[must_use]
    pub fn max_pending_events(&self) -> usize {
        self.max_pending_events
    }

    /// Maximum incoming streams open at once over all of the node's
    /// connections (default 16,384); each connection's own cap
    /// (`ConnectionConfig::max_incoming_streams`) applies as well.
    #[must_use]
    pub fn max_incoming_streams(&self) -> usize {
        self.max_incoming_streams
    }

    fn validate(&self) -> Result<(), PolicyConfigError> {
        let zero = |name| Err(PolicyConfigError::Zero { name });
        for (name, n) in [
            ("max_connections", self.max_connections),
            ("max_handshaking", self.max_handshaking),
            ("max_handshaking_per_ip", self.max_handshaking_per_ip),
            ("max_auth_failures", self.max_auth_failures as usize),
            (
                "max_attempts_per_window",
                self.max_attempts_per_window as usize,
            ),
            ("max_tracked_ips", self.max_tracked_ips),
            ("max_incoming_streams", self.max_incoming_streams),
        ] {
            if n == 0 {
                return zero(name);
            }
        }
        for (name, d) in [
            ("throttle_duration", self.throttle_duration),
            ("throttle_interval", self.throttle_interval),
            ("attempt_window", self.attempt_window),
            ("report_interval", self.report_interval),
        ] {
            if d.is_zero() {
                return zero(name);
            }
        }
        if self.max_handshaking > self.max_connections {
            return Err(PolicyConfigError::HandshakingAboveConnections {
                max_handshaking: self.max_handshaking,
                max_connections: self.max_connections,
            });
        }
        if self.ipv6_prefix_len > 128 {
            return Err(PolicyConfigError::Ipv6PrefixTooLong(self.ipv6_prefix_len));
        }
        Ok(())
    }
}

/// Builds a validated [`PolicyConfig`]; every setter has the meaning of the
/// getter of the same name.
#[derive(Clone, Debug)]
#[must_use]
pub struct PolicyConfigBuilder(PolicyConfig);

impl PolicyConfigBuilder {
    /// See [`PolicyConfig::max_connections`]; at least 1.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.0.max_connections = n;
        self
    }

    /// See [`PolicyConfig::max_handshaking`]; at least 1, at most
    /// `max_connections`.
    pub fn max_handshaking(mut self, n: usize) -> Self {
        self.0.max_handshaking = n;
        self
    }

    /// See [`PolicyConfig::max_handshaking_per_ip`]; at least 1.
    pub fn max_handshaking_per_ip(mut self, n: usize) -> Self {
        self.0.max_handshaking_per_ip = n;
        self
    }

    /// See [`PolicyConfig::max_auth_failures`]; at least 1.
    pub fn max_auth_failures(mut self, n: u32) -> Self {
        self.0.max_auth_failures = n;
        self
    }

    /// See [`PolicyConfig::throttle_duration`]; positive.
    pub fn throttle_duration(mut self, d: Duration) -> Self {
        self.0.throttle_duration = d;
        self
    }

    /// See [`PolicyConfig::throttle_interval`]; positive.
    pub fn throttle_interval(mut self, d: Duration) -> Self {
        self.0.throttle_interval = d;
        self
    }

    /// See [`PolicyConfig::max_attempts_per_window`]; at least 1.
    pub fn max_attempts_per_window(mut self, n: u32) -> Self {
        self.0.max_attempts_per_window = n;
        self
    }

    /// See [`PolicyConfig::attempt_window`]; positive.
    pub fn attempt_window(mut self, d: Duration) -> Self {
        self.0.attempt_window = d;
        self
    }

    /// See [`PolicyConfig::max_tracked_ips`]; at least 1.
    pub fn max_tracked_ips(mut self, n: usize) -> Self {
        self.0.max_tracked_ips = n;
        self
    }

    /// See [`PolicyConfig::ipv6_prefix_len`]; 0..=128 (128 tracks single
    /// addresses).
    pub fn ipv6_prefix_len(mut self, bits: u8) -> Self {
        self.0.ipv6_prefix_len = bits;
        self
    }

    /// See [`PolicyConfig::report_interval`]; positive.
    pub fn report_interval(mut self, d: Duration) -> Self {
        self.0.report_interval = d;
        self
    }

    /// See [`PolicyConfig::max_pending_events`]; 0 disables events (counters
    /// still count).
    pub fn max_pending_events(mut self, n: usize) -> Self {
        self.0.max_pending_events = n;
        self
    }

    /// See [`PolicyConfig::max_incoming_streams`]; at least 1.
    pub fn max_incoming_streams(mut self, n: usize) -> Self {
        self.0.max_incoming_streams = n;
        self
    }

    /// The configuration, or the first setting that is out of range.
    pub fn build(self) -> Result<PolicyConfig, PolicyConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// An incoming stream refused because the node already has `max` open
/// ([`Policy::admit_stream`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this node already has {max} incoming streams open")]
#[non_exhaustive]
pub struct StreamRefused {
    /// The node's cap, [`PolicyConfig::max_incoming_streams`].
    pub max: usize,
}

/// Why a new connection was refused. The peer is never told (RFC-0001 §9.1):
/// the socket is closed without a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The source address is throttled (it spent its failure budget or its
    /// attempt rate) and already had its handshake of this interval; it may
    /// try again at `next`, until `until` at the low rate.
    #[error("source address is throttled after repeated failures or attempts")]
    Throttled {
        /// When its next handshake is admitted.
        next: Instant,
        /// When the throttle ends.
        until: Instant,
    },
    /// The node holds its maximum number of connections.
    #[error("node is at its connection limit ({max})")]
    TooManyConnections {
        /// The configured limit.
        max: usize,
    },
    /// The node holds its maximum number of connections still in the
    /// handshake.
    #[error("node is at its limit of connections still in the handshake ({max})")]
    TooManyHandshakes {
        /// The configured limit.
        max: usize,
    },
    /// The source address holds its share of the connections still in the
    /// handshake.
    #[error("source address holds its share of connections still in the handshake ({max})")]
    TooManyHandshakesFromIp {
        /// The configured share.
        max: usize,
    },
    /// The address table is full of entries that still matter; an untracked
    /// address is refused rather than let in without limits.
    #[error("address tracking table is full; refusing untracked addresses (fail closed)")]
    TrackingFull,
}

impl Refusal {
    /// The [`AuthFailure`] reason reported for this refusal: `Throttled`
    /// maps to itself, every capacity limit to `Capacity`.
    #[must_use]
    pub const fn as_auth_failure(self) -> AuthFailure {
        match self {
            Self::Throttled { .. } => AuthFailure::Throttled,
            Self::TooManyConnections { .. }
            | Self::TooManyHandshakes { .. }
            | Self::TooManyHandshakesFromIp { .. }
            | Self::TrackingFull => AuthFailure::Capacity,
        }
    }
}

/// Identifies one admitted connection until it is [`release`](Policy::release)d.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(u64);

impl SlotId {
    /// The raw number, for logs.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot#{}", self.0)
    }
}

/// What made an address throttled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThrottleCause {
    /// It spent its failure budget (`max_auth_failures`).
    Failures,
    /// It made `max_attempts_per_window` unsuccessful attempts in one window.
    Attempts,
}

impl ThrottleCause {
    /// Stable snake_case name: `failures`, `attempts`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Failures => "failures",
            Self::Attempts => "attempts",
        }
    }
}

/// A throttle that the policy just imposed or extended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Throttle {
    /// The address as tracked (IPv6 masked to the configured prefix).
    pub ip: IpAddr,
    /// When it ends.
    pub until: Instant,
    /// One handshake is admitted per this interval until then.
    pub interval: Duration,
    /// Why.
    pub cause: ThrottleCause,
}

/// Failures of one address reported together (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailureSummary {
    /// The address as tracked (IPv6 masked to the configured prefix);
    /// `None` for addresses the full tracking table could not hold.
    pub ip: Option<IpAddr>,
    /// Failures and refusals not reported one by one.
    pub count: u64,
    /// When the first of them happened.
    pub first: Instant,
    /// When the last of them happened.
    pub last: Instant,
    /// Their reasons.
    pub reasons: AuthFailureCounts,
}

/// A security decision of the policy, as plain data for logs and audits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyEvent {
    /// An inbound connection was refused.
    Refused {
        /// Its source address, as the socket reported it.
        ip: IpAddr,
        /// Why.
        reason: Refusal,
    },
    /// An address was throttled, or its throttle extended.
    Throttled(Throttle),
    /// The failures of one address over one report interval, after the
    /// first (which was reported on its own).
    FailuresAggregated(FailureSummary),
}

/// Refusals by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// [`Refusal::Throttled`].
    pub throttled: u64,
    /// [`Refusal::TooManyConnections`], inbound and outbound.
    pub too_many_connections: u64,
    /// [`Refusal::TooManyHandshakes`].
    pub too_many_handshakes: u64,
    /// [`Refusal::TooManyHandshakesFromIp`].
    pub too_many_handshakes_from_ip: u64,
    /// [`Refusal::TrackingFull`].
    pub tracking_full: u64,
}

impl RefusalCounts {
    /// The count for `reason`'s kind.
    #[must_use]
    pub fn get(&self, reason: &Refusal) -> u64 {
        // A copy, so that one match serves both reading and counting.
        let mut copy = *self;
        *copy.counter(reason)
    }

    /// All refusals.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.throttled
            .saturating_add(self.too_many_connections)
            .saturating_add(self.too_many_handshakes)
            .saturating_add(self.too_many_handshakes_from_ip)
            .saturating_add(self.tracking_full)
    }

    fn bump(&mut self, reason: &Refusal) {
        let c = self.counter(reason);
        *c = c.saturating_add(1);
    }

    fn counter(&mut self, reason: &Refusal) -> &mut u64 {
        match reason {
            Refusal::Throttled { .. } => &mut self.throttled,
            Refusal::TooManyConnections { .. } => &mut self.too_many_connections,
            Refusal::TooManyHandshakes { .. } => &mut self.too_many_handshakes,
            Refusal::TooManyHandshakesFromIp { .. } => &mut self.too_many_handshakes_from_ip,
            Refusal::TrackingFull => &mut self.tracking_full,
        }
    }
}

/// Authentication failures reported to the policy, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthFailureCounts {
    /// [`AuthFailure::BadMac`].
    pub bad_mac: u64,
    /// [`AuthFailure::Replay`].
    pub replay: u64,
    /// [`AuthFailure::Malformed`].
    pub malformed: u64,
    /// [`AuthFailure::Timeout`].
    pub timeout: u64,
    /// [`AuthFailure::Throttled`].
    pub throttled: u64,
    /// [`AuthFailure::Reflection`].
    pub reflection: u64,
    /// [`AuthFailure::Capacity`].
    pub capacity: u64,
    /// [`AuthFailure::Stale`].
    pub stale: u64,
    /// [`AuthFailure::UnexpectedPeer`].
    pub unexpected_peer: u64,
    /// [`AuthFailure::BadFrameMac`].
    pub bad_frame_mac: u64,
    /// [`AuthFailure::V1Disabled`].
    pub v1_disabled: u64,
    /// [`AuthFailure::Downgrade`].
    pub downgrade: u64,
    /// [`AuthFailure::RetiredKey`].
    pub retired_key: u64,
}

impl AuthFailureCounts {
    /// The count for `reason`.
    #[must_use]
    pub fn get(&self, reason: AuthFailure) -> u64 {
        // A copy, so that one match serves both reading and counting.
        let mut copy = *self;
        *copy.counter(reason)
    }

    /// All failures.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.iter().fold(0u64, |a, (_, n)| a.saturating_add(n))
    }

    /// Each reason's name ([`AuthFailure::as_str`]) with its count, zeros
    /// included, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("bad_mac", self.bad_mac),
            ("replay", self.replay),
            ("malformed", self.malformed),
            ("timeout", self.timeout),
            ("throttled", self.throttled),
            ("reflection", self.reflection),
            ("capacity", self.capacity),
            ("stale", self.stale),
            ("unexpected_peer", self.unexpected_peer),
            ("bad_frame_mac", self.bad_frame_mac),
            ("v1_disabled", self.v1_disabled),
            ("downgrade", self.downgrade),
            ("retired_key", self.retired_key),
        ]
        .into_iter()
    }

    fn bump(&mut self, reason: AuthFailure) {
        let c = self.counter(reason);
        *c = c.saturating_add(1);
    }

    fn counter(&mut self, reason: AuthFailure) -> &mut u64 {
        match reason {
            AuthFailure::BadMac => &mut self.bad_mac,
            AuthFailure::Replay => &mut self.replay,
            AuthFailure::Malformed => &mut self.malformed,
            AuthFailure::Timeout => &mut self.timeout,
            AuthFailure::Throttled => &mut self.throttled,
            AuthFailure::Reflection => &mut self.reflection,
            AuthFailure::Capacity => &mut self.capacity,
            AuthFailure::Stale => &mut self.stale,
            AuthFailure::UnexpectedPeer { .. } => &mut self.unexpected_peer,
            AuthFailure::BadFrameMac => &mut self.bad_frame_mac,
            AuthFailure::V1Disabled => &mut self.v1_disabled,
            AuthFailure::Downgrade => &mut self.downgrade,
            AuthFailure::RetiredKey => &mut self.retired_key,
        }
    }
}

/// What the policy has seen and decided since it was created. All counts
/// saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PolicyCounters {
    /// Inbound connection attempts ([`Policy::admit`] calls).
    pub attempts: u64,
    /// Inbound connections admitted.
    pub admitted: u64,
    /// Outbound connections admitted.
    pub outbound: u64,
    /// Connections whose handshake succeeded.
    pub established: u64,
    /// Refusals by reason.
    pub refused: RefusalCounts,
    /// Authentication failures by reason.
    pub auth_failures: AuthFailureCounts,
    /// Inbound connections that ended before a complete HELLO (light
    /// failures; a timeout among them is also in `auth_failures.timeout`).
    pub abandoned: u64,
    /// Throttles imposed or extended.
    pub throttles: u64,
    /// Failures and refusals folded into an aggregated report instead of
    /// being reported one by one.
    pub aggregated: u64,
    /// Events dropped because `max_pending_events` were undrained.
    pub events_dropped: u64,
    /// Incoming streams refused because `max_incoming_streams` were open.
    pub streams_refused: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Handshaking,
    Established,
    // Still holds its socket (and its pre-auth place) until released.
    Failed,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    // `None` for our own dials.
    ip: Option<IpAddr>,
    state: SlotState,
    // When an inbound slot was admitted, to give its attempt back on
    // success if that attempt still belongs to the current window.
    admitted_at: Option<Instant>,
    // Incoming streams of this connection counted in `Policy::streams`.
    streams: usize,
    // A stream of this connection was refused: it is being closed, and its
    // streams are no longer counted one by one (`release` gives them back).
    stream_refused: bool,
}

impl Slot {
    fn in_handshake_cap(&self) -> bool {
        self.ip.is_some() && self.state != SlotState::Established
    }
}

#[derive(Clone, Copy, Debug)]
struct Report {
    ends: Instant,
    first: Instant,
    last: Instant,
    count: u64,
    reasons: AuthFailureCounts,
}

impl Report {
    fn open(now: Instant, interval: Duration) -> Self {
        Self {
            ends: after(now, interval),
            first: now,
            last: now,
            count: 0,
            reasons: AuthFailureCounts::default(),
        }
    }

    fn add(&mut self, now: Instant, failure: AuthFailure) {
        if self.count == 0 {
            self.first = now;
        }
        self.last = now;
        self.count = self.count.saturating_add(1);
        self.reasons.bump(failure);
    }

    fn summary(&self, ip: Option<IpAddr>) -> FailureSummary {
        FailureSummary {
            ip,
            count: self.count,
            first: self.first,
            last: self.last,
            reasons: self.reasons,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct IpEntry {
    live: usize,
    handshaking: usize,
    // In budget units (`FAILURE_UNITS` per counted failure).
    spent: u32,
    throttled_until: Option<Instant>,
    // GCRA: the next instant a throttled address's handshake is admitted.
    next_token: Instant,
    window_start: Instant,
    attempts: u32,
    last_activity: Instant,
    report: Option<Report>,
}

impl IpEntry {
    fn new(now: Instant) -> Self {
        Self {
            live: 0,
            handshaking: 0,
            spent: 0,
            throttled_until: None,
            next_token: now,
            window_start: now,
            attempts: 0,
            last_activity: now,
            report: None,
        }
    }

    fn throttled_at(&self, now: Instant) -> Option<Instant> {
        self.throttled_until.filter(|until| *until > now)
    }

    // When nothing this entry holds matters any more (if it holds no
    // connection by then).
    fn expiry(&self, window: Duration) -> Instant {
        let idle = after(self.last_activity, window);
        let idle = self.throttled_until.map_or(idle, |l| idle.max(l));
        self.report.map_or(idle, |r| idle.max(r.ends))
    }
}

/// The admission policy of one node. See the [module docs](self) for the
/// rules and the call order.
#[derive(Clone, Debug)]
pub struct Policy {
    config: PolicyConfig,
    ips: BTreeMap<IpAddr, IpEntry>,
    // Exactly one record per `ips` entry, at or before the time the entry
    // may be forgotten; a record that comes due early is pushed back.
    purge_queue: BinaryHeap<Reverse<(Instant, IpAddr)>>,
    // One record per open report (`None`: the untracked addresses' report).
    report_queue: BinaryHeap<Reverse<(Instant, Option<IpAddr>)>>,
    // Failures of addresses the full table could not track.
    untracked_report: Option<Report>,
    slots: BTreeMap<SlotId, Slot>,
    handshaking: usize,
    // Incoming streams open over all slots.
    streams: usize,
    next_slot: u64,
    events: VecDeque<PolicyEvent>,
    counters: PolicyCounters,
}

impl Policy {
    /// An empty policy. Nothing is allocated until the first connection.
    #[must_use]
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            ips: BTreeMap::new(),
            purge_queue: BinaryHeap::new(),
            report_queue: BinaryHeap::new(),
            untracked_report: None,
            slots: BTreeMap::new(),
            handshaking: 0,
            streams: 0,
            next_slot: 0,
            events: VecDeque::new(),
            counters: PolicyCounters::default(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Decides whether a new inbound TCP connection from `ip` may start its
    /// handshake, and counts the attempt. Checks, in order: the throttle,
    /// the tracking table (fail closed), the connection cap, the handshake
    /// cap, the address's share of it; then counts the attempt toward the
    /// attempt rate. On `Err` the caller closes the socket at once.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Result<SlotId, Refusal> {
        self.counters.attempts = self.counters.attempts.saturating_add(1);
        self.flush_reports(now);
        self.purge(now);
        let key = self.key(ip);
        match self.check_inbound(now, key) {
            Ok(()) => {
                if let Some(entry) = self.ips.get_mut(&key) {
                    entry.live = entry.live.saturating_add(1);
                    entry.handshaking = entry.handshaking.saturating_add(1);
                }
                self.handshaking = self.handshaking.saturating_add(1);
                self.counters.admitted = self.counters.admitted.saturating_add(1);
                Ok(self.insert_slot(Slot {
                    ip: Some(key),
                    state: SlotState::Handshaking,
                    admitted_at: Some(now),
                    streams: 0,
                    stream_refused: false,
                }))
            }
            Err(reason) => {
                self.counters.refused.bump(&reason);
                self.push_event(PolicyEvent::Refused { ip, reason });
                Err(reason)
            }
        }
    }

    fn check_inbound(&mut self, now: Instant, key: IpAddr) -> Result<(), Refusal> {
        if let Some(entry) = self.ips.get(&key) {
            if let Some(until) = entry.throttled_at(now) {
                if now < entry.next_token {
                    return Err(Refusal::Throttled {
                        next: entry.next_token,
                        until,
                    });
                }
            }
        }
        if !self.ips.contains_key(&key) {
            if self.ips.len() >= self.config.max_tracked_ips {
                return Err(Refusal::TrackingFull);
            }
            self.ips.insert(key, IpEntry::new(now));
            self.purge_queue
                .push(Reverse((after(now, self.config.attempt_window), key)));
        }
        // Capacity refusals come before the attempt is counted: they are the
        // node's state, not the address's doing.
        if self.slots.len() >= self.config.max_connections {
            return Err(Refusal::TooManyConnections {
                max: self.config.max_connections,
            });
        }
        if self.handshaking >= self.config.max_handshaking {
            return Err(Refusal::TooManyHandshakes {
                max: self.config.max_handshaking,
            });
        }
        let config = &self.config;
        let entry = self.ips.get_mut(&key).ok_or(Refusal::TrackingFull)?;
        if entry.handshaking >= config.max_handshaking_per_ip {
            return Err(Refusal::TooManyHandshakesFromIp {
                max: config.max_handshaking_per_ip,
            });
        }
        entry.last_activity = now;
        if entry.throttled_at(now).is_some() {
            entry.next_token = after(now, config.throttle_interval);
        }
        if now >= after(entry.window_start, config.attempt_window) {
            entry.window_start = now;
            entry.attempts = 0;
        }
        entry.attempts = entry.attempts.saturating_add(1);
        if entry.attempts >= config.max_attempts_per_window {
            // This attempt is still admitted; the next ones wait their turn.
            let until = after(entry.window_start, config.attempt_window);
            self.throttle(now, key, until, ThrottleCause::Attempts);
        }
        Ok(())
    }

    /// Takes a connection slot for a dial of our own. Outbound connections
    /// count toward `max_connections` only; the only refusal is
    /// [`Refusal::TooManyConnections`].
    pub fn admit_outbound(&mut self) -> Result<SlotId, Refusal> {
        if self.slots.len() >= self.config.max_connections {
            let reason = Refusal::TooManyConnections {
                max: self.config.max_connections,
            };
            self.counters.refused.bump(&reason);
            return Err(reason);
        }
        self.counters.outbound = self.counters.outbound.saturating_add(1);
        Ok(self.insert_slot(Slot {
            ip: None,
            state: SlotState::Handshaking,
            admitted_at: None,
            streams: 0,
            stream_refused: false,
        }))
    }

    /// The handshake of `slot` succeeded: it leaves the handshake cap, its
    /// attempt no longer counts toward the attempt rate, its address's
    /// failure budget starts over, and a throttle in force is lifted.
    pub fn established(&mut self, now: Instant, slot: SlotId) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        if s.state != SlotState::Handshaking {
            return;
        }
        let was_in_cap = s.in_handshake_cap();
        s.state = SlotState::Established;
        let (ip, admitted_at) = (s.ip, s.admitted_at);
        if was_in_cap {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        if let Some(entry) = ip.and_then(|ip| self.ips.get_mut(&ip)) {
            entry.handshaking = entry.handshaking.saturating_sub(1);
            entry.spent = 0;
            entry.throttled_until = None;
            entry.last_activity = now;
            if admitted_at.is_some_and(|at| at >= entry.window_start) {
                entry.attempts = entry.attempts.saturating_sub(1);
            }
        }
        self.counters.established = self.counters.established.saturating_add(1);
    }

    /// The handshake of `slot` failed for `failure`. Every failure is counted
    /// by reason; one that [`counts_toward_throttle`](AuthFailure::counts_toward_throttle)
    /// on an inbound slot also spends its address's failure budget, and the
    /// `max_auth_failures`-th throttles the address for `throttle_duration`
    /// (returned, and reported as [`PolicyEvent::Throttled`]). The slot keeps
    /// its place in the caps until [`release`](Self::release). Only the first
    /// failure of a slot still in its handshake is counted.
    pub fn auth_failed(
        &mut self,
        now: Instant,
        slot: SlotId,
        failure: AuthFailure,
    ) -> Option<Throttle> {
        let ip = self.fail_slot(slot)?;
        self.counters.auth_failures.bump(failure);
        if !failure.counts_toward_throttle() {
            return None;
        }
        self.spend(now, ip?, FAILURE_UNITS)
    }

    /// The inbound connection of `slot` ended before a complete HELLO
    /// arrived: the peer closed or reset it, or sent nothing (or too little)
    /// before its deadline (`failure` is then [`AuthFailure::Timeout`],
    /// counted by reason). That is a light failure: a quarter of a counted
    /// one. It is what a legitimate peer's broken network also looks like,
    /// but a stream of them holds pre-authentication places for nothing.
    pub fn abandoned(
        &mut self,
        now: Instant,
        slot: SlotId,
        failure: Option<AuthFailure>,
    ) -> Option<Throttle> {
        let ip = self.fail_slot(slot)?;
        if let Some(f) = failure {
            self.counters.auth_failures.bump(f);
        }
        let ip = ip?;
        self.counters.abandoned = self.counters.abandoned.saturating_add(1);
        self.spend(now, ip, LIGHT_FAILURE_UNITS)
    }

    // Marks a slot still in its handshake failed; `None` when it was not.
    fn fail_slot(&mut self, slot: SlotId) -> Option<Option<IpAddr>> {
        let s = self.slots.get_mut(&slot)?;
        if s.state != SlotState::Handshaking {
            return None;
        }
        s.state = SlotState::Failed;
        Some(s.ip)
    }

    fn spend(&mut self, now: Instant, ip: IpAddr, units: u32) -> Option<Throttle> {
        let budget = self.config.max_auth_failures.saturating_mul(FAILURE_UNITS);
        let duration = self.config.throttle_duration;
        let entry = self.ips.get_mut(&ip)?;
        entry.last_activity = now;
        entry.spent = entry.spent.saturating_add(units);
        if entry.spent < budget {
            return None;
        }
        // Failures of handshakes admitted later spend a fresh budget, which
        // extends this throttle rather than shortening it.
        entry.spent = 0;
        self.throttle(now, ip, after(now, duration), ThrottleCause::Failures)
    }

    fn throttle(
        &mut self,
        now: Instant,
        ip: IpAddr,
        until: Instant,
        cause: ThrottleCause,
    ) -> Option<Throttle> {
        let interval = self.config.throttle_interval;
        let entry = self.ips.get_mut(&ip)?;
        let already = entry.throttled_at(now);
        if already.is_some_and(|u| u >= until) {
            return None;
        }
        if already.is_none() {
            // The handshake that spent the budget was this interval's.
            entry.next_token = after(now, interval);
        }
        entry.throttled_until = Some(until);
        self.counters.throttles = self.counters.throttles.saturating_add(1);
        let t = Throttle {
            ip,
            until,
            interval,
            cause,
        };
        self.push_event(PolicyEvent::Throttled(t));
        Some(t)
    }

    /// The connection of `slot` is gone, in whatever state it was. Unknown
    /// or already released slots are ignored.
    pub fn release(&mut self, slot: SlotId) {
        let Some(s) = self.slots.remove(&slot) else {
            return;
        };
        let in_cap = s.in_handshake_cap();
        if in_cap {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        self.streams = self.streams.saturating_sub(s.streams);
        if let Some(entry) = s.ip.and_then(|ip| self.ips.get_mut(&ip)) {
            entry.live = entry.live.saturating_sub(1);
            if in_cap {
                entry.handshaking = entry.handshaking.saturating_sub(1);
            }
        }
    }

    /// A new incoming stream on `slot`'s connection (its first DATA frame):
    /// counted toward `max_incoming_streams`, or refused with that cap
    /// when as many are open (counted in `streams_refused`). The caller
    /// closes a refused stream's connection; until
    /// [`release`](Self::release) its further streams are neither counted
    /// nor refused again. Unknown slots are ignored.
    pub fn admit_stream(&mut self, slot: SlotId) -> Result<(), StreamRefused> {
        let max = self.config.max_incoming_streams;
        let Some(s) = self.slots.get_mut(&slot) else {
            return Ok(());
        };
        if s.stream_refused {
            return Ok(());
        }
        if self.streams >= max {
            s.stream_refused = true;
            self.counters.streams_refused = self.counters.streams_refused.saturating_add(1);
            return Err(StreamRefused { max });
        }
        s.streams += 1;
        self.streams += 1;
        Ok(())
    }

    /// A stream [`admit_stream`](Self::admit_stream) took on `slot` ended
    /// (complete or cut off). Unknown slots are ignored.
    pub fn stream_ended(&mut self, slot: SlotId) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        if s.stream_refused || s.streams == 0 {
            return;
        }
        s.streams -= 1;
        self.streams = self.streams.saturating_sub(1);
    }

    /// Incoming streams open over all connections, as counted by
    /// [`admit_stream`](Self::admit_stream).
    #[must_use]
    pub fn open_streams(&self) -> usize {
        self.streams
    }

    /// Whether a refusal or failure of an inbound connection from `ip` at
    /// `now` should be reported on its own (`true`), or has been folded into
    /// the address's aggregated report (`false`), which a
    /// [`PolicyEvent::FailuresAggregated`] delivers when its interval ends.
    /// Call it once per refusal or failure that would be logged.
    pub fn report_failure(&mut self, now: Instant, ip: IpAddr, failure: AuthFailure) -> bool {
        let interval = self.config.report_interval;
        let key = self.key(ip);
        let queue_key = self.ips.contains_key(&key).then_some(key);
        let report = match queue_key {
            Some(k) => match self.ips.get_mut(&k) {
                Some(entry) => &mut entry.report,
                None => return true,
            },
            None => &mut self.untracked_report,
        };
        if let Some(r) = report.as_mut().filter(|r| now < r.ends) {
            r.add(now, failure);
            self.counters.aggregated = self.counters.aggregated.saturating_add(1);
            return false;
        }
        let fresh = Report::open(now, interval);
        let ends = fresh.ends;
        // A report past its end whose timer was not handled yet is
        // delivered before the new one replaces it.
        let old = report.replace(fresh);
        self.report_queue.push(Reverse((ends, queue_key)));
        if let Some(old) = old.filter(|o| o.count > 0) {
            self.push_event(PolicyEvent::FailuresAggregated(old.summary(queue_key)));
        }
        true
    }

    /// Whether `ip` is throttled at `now`.
    #[must_use]
    pub fn is_throttled(&self, now: Instant, ip: IpAddr) -> bool {
        self.ips
            .get(&self.key(ip))
            .and_then(|e| e.throttled_at(now))
            .is_some()
    }

    /// The next security event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PolicyEvent> {
        self.events.pop_front()
    }

    /// What the policy has counted so far.
    #[must_use]
    pub fn counters(&self) -> &PolicyCounters {
        &self.counters
    }

    /// Open connections, inbound and outbound.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.slots.len()
    }

    /// Inbound connections that have not finished their handshake (including
    /// failed ones not yet released).
    #[must_use]
    pub fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// The part of [`handshaking`](Self::handshaking) from `ip` (IPv6: its
    /// prefix).
    #[must_use]
    pub fn handshaking_from(&self, ip: IpAddr) -> usize {
        self.ips.get(&self.key(ip)).map_or(0, |e| e.handshaking)
    }

    /// Addresses currently tracked.
    #[must_use]
    pub fn tracked_ips(&self) -> usize {
        self.ips.len()
    }

    /// Delivers the aggregated reports whose interval has ended and forgets
    /// address entries that no longer matter at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.flush_reports(now);
        self.purge(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) has work next (a report
    /// to deliver, an entry that may be forgotten); `None` while nothing is
    /// tracked.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let purge = self.purge_queue.peek().map(|Reverse((at, _))| *at);
        let report = self.report_queue.peek().map(|Reverse((at, _))| *at);
        purge.into_iter().chain(report).min()
    }

    fn flush_reports(&mut self, now: Instant) {
        while let Some(Reverse((at, key))) = self.report_queue.peek().copied() {
            if at > now {
                break;
            }
            self.report_queue.pop();
            let report = match key {
                Some(ip) => self.ips.get_mut(&ip).map(|e| &mut e.report),
                None => Some(&mut self.untracked_report),
            };
            let Some(report) = report else {
                continue;
            };
            // A record for a report that was since replaced by a later one
            // (with a later end) is stale: that one has its own record.
            if report.is_some_and(|r| r.ends <= now) {
                if let Some(r) = report.take() {
                    if r.count > 0 {
                        self.push_event(PolicyEvent::FailuresAggregated(r.summary(key)));
                    }
                }
            }
        }
    }

    fn purge(&mut self, now: Instant) {
        let window = self.config.attempt_window;
        while let Some(Reverse((at, key))) = self.purge_queue.peek().copied() {
            if at > now {
                break;
            }
            self.purge_queue.pop();
            let Some(entry) = self.ips.get(&key) else {
                continue;
            };
            let expiry = entry.expiry(window);
            if entry.live == 0 && expiry <= now && entry.report.is_none() {
                self.ips.remove(&key);
            } else {
                // An entry that holds connections (or a report whose timer
                // has not fired yet) is looked at again later; every case
                // lies strictly after `now`, so the loop ends.
                let next = if entry.live > 0 || expiry <= now {
                    expiry.max(after(now, window))
                } else {
                    expiry
                };
                self.purge_queue.push(Reverse((next, key)));
            }
        }
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let keep = u32::from(self.config.ipv6_prefix_len.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        }
    }

    fn insert_slot(&mut self, slot: Slot) -> SlotId {
        // 2^64 connections do not happen; wrapping keeps this panic-free.
        let id = SlotId(self.next_slot);
        self.next_slot = self.next_slot.wrapping_add(1);
        self.slots.insert(id, slot);
        id
    }

    fn push_event(&mut self, event: PolicyEvent) {
        if self.events.len() < self.config.max_pending_events {
            self.events.push_back(event);
        } else {
            self.counters.events_dropped = self.counters.events_dropped.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::Ipv4Addr;

    fn policy_with_prefix(bits: u8) -> Policy {
        Policy::new(
            PolicyConfig::builder()
                .ipv6_prefix_len(bits)
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let p = policy_with_prefix(128);
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(p.key(mapped), v4);
    }

    #[test]
    fn ipv6_is_masked_to_the_configured_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        assert_eq!(
            policy_with_prefix(64).key(a),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(policy_with_prefix(128).key(a), a);
        assert_eq!(
            policy_with_prefix(0).key(a),
            "::".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn config_rejects_out_of_range_settings() {
        let b = PolicyConfig::builder;
        assert_eq!(
            b().max_connections(0).build(),
            Err(PolicyConfigError::Zero {
                name: "max_connections"
            })
        );
        assert_eq!(
            b().throttle_duration(Duration::ZERO).build(),
            Err(PolicyConfigError::Zero {
                name: "throttle_duration"
            })
        );
        assert_eq!(
            b().throttle_interval(Duration::ZERO).build(),
            Err(PolicyConfigError::Zero {
                name: "throttle_interval"
            })
        );
        assert_eq!(
            b().max_handshaking_per_ip(0).build(),
            Err(PolicyConfigError::Zero {
                name: "max_handshaking_per_ip"
            })
        );
        assert_eq!(
            b().max_incoming_streams(0).build(),
            Err(PolicyConfigError::Zero {
                name: "max_incoming_streams"
            })
        );
        assert_eq!(
            b().max_connections(10).max_handshaking(11).build(),
            Err(PolicyConfigError::HandshakingAboveConnections {
                max_handshaking: 11,
                max_connections: 10
            })
        );
        assert_eq!(
            b().ipv6_prefix_len(129).build(),
            Err(PolicyConfigError::Ipv6PrefixTooLong(129))
        );
        assert_eq!(b().build(), Ok(PolicyConfig::default()));
    }

    #[test]
    fn refusal_maps_to_auth_failure() {
        assert_eq!(
            Refusal::TooManyHandshakesFromIp { max: 8 }.as_auth_failure(),
            AuthFailure::Capacity
        );
        assert_eq!(
            Refusal::TrackingFull.as_auth_failure(),
            AuthFailure::Capacity
        );
        assert_eq!(
            Refusal::TooManyHandshakes { max: 1 }.as_auth_failure(),
            AuthFailure::Capacity
        );
        assert_eq!(
            Refusal::TooManyConnections { max: 3 }.to_string(),
            "node is at its connection limit (3)"
        );
    }
}
