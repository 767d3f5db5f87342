//! Per-node admission policy (WIRE.md §6, RFC-0002 §10.2, DESIGN.md §5),
//! shared by every connection of one node.
//!
//! The node asks [`Policy::admit`] before it lets a new inbound TCP connection
//! start its handshake, and reports what happens to that connection after:
//! [`established`](Policy::established), [`auth_failed`](Policy::auth_failed),
//! [`release`](Policy::release). The policy enforces, per source address:
//!
//! - **lockout**: the `max_auth_failures`-th counted authentication failure
//!   (default 5; only [`AuthFailure::counts_toward_lockout`] reasons count)
//!   refuses the address for `lockout` (default 10 min). A successful
//!   handshake resets the count. Locking also resets it, so an address gets
//!   the full number of tries again once the lockout ends.
//! - **attempt rate**: at most `max_attempts_per_window` connection attempts
//!   (default 100) per `attempt_window` (default 1 h). The window is fixed: it
//!   opens at the first attempt after the previous window closed. Attempts
//!   refused for lockout or for the rate itself do not count; attempts refused
//!   for capacity do, because the peer still made them. A fixed window admits
//!   at most twice the limit in any span of one window length (the end of one
//!   window and the start of the next); the sliding alternative needs one
//!   timestamp per attempt, which a bounded table cannot afford.
//!
//! and per node:
//!
//! - **connections**: at most `max_connections` (default 1024) inbound and
//!   outbound ([`admit_outbound`](Policy::admit_outbound)) together.
//! - **handshakes**: at most `max_handshaking` (default 64) inbound
//!   connections that have not authenticated yet, a separate and much smaller
//!   cap, because those cost the node work before anyone proved anything.
//!   Our own dials are not counted here: their number is ours to choose.
//! - **tracking table**: at most `max_tracked_ips` (default 65536) addresses.
//!   When the table is full of entries that still matter, a new address is
//!   refused ([`Refusal::TrackingFull`]): forgetting an entry early would
//!   forget a lockout or a rate window, so the policy fails closed.
//!
//! An address entry is forgotten once it holds no connection, its lockout has
//! ended and `attempt_window` has passed since its last activity; its failure
//! count goes with it. [`poll_timeout`](Policy::poll_timeout) tells when the
//! next entry may be forgotten; stale entries are also purged whenever a new
//! connection is admitted, so the table never grows past the configured bound.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what dual-stack sockets
//! report) count as the IPv4 address. Other IPv6 addresses count by their
//! `ipv6_prefix_len` prefix (default /64): one host usually owns a whole /64,
//! and tracking single IPv6 addresses would let it step around every per-address
//! limit and fill the table by itself.
//!
//! # Call order
//!
//! 1. `admit(now, ip)` or `admit_outbound()` for each new connection; on
//!    `Err` close the socket without sending anything (RFC-0001 §9.1).
//! 2. `established(now, slot)` when its handshake succeeds, or
//!    `auth_failed(now, slot, reason)` when it fails.
//! 3. `release(slot)` when the connection is gone, in any state.
//! 4. Drain [`poll_event`](Policy::poll_event) after each call; call
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
    max_auth_failures: u32,
    lockout: Duration,
    max_attempts_per_window: u32,
    attempt_window: Duration,
    max_tracked_ips: usize,
    ipv6_prefix_len: u8,
    max_pending_events: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_handshaking: 64,
            max_auth_failures: 5,
            lockout: Duration::from_secs(10 * 60),
            max_attempts_per_window: 100,
            attempt_window: Duration::from_secs(60 * 60),
            max_tracked_ips: 65_536,
            ipv6_prefix_len: 64,
            max_pending_events: 1024,
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

    /// Counted authentication failures that lock an address out (default 5).
    #[must_use]
    pub fn max_auth_failures(&self) -> u32 {
        self.max_auth_failures
    }

    /// How long a lockout lasts (default 10 min).
    #[must_use]
    pub fn lockout(&self) -> Duration {
        self.lockout
    }

    /// Connection attempts allowed per address per window (default 100).
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

    /// Undrained events kept before new ones are dropped (default 1024).
    #[must_use]
    pub fn max_pending_events(&self) -> usize {
        self.max_pending_events
    }

    fn validate(&self) -> Result<(), PolicyConfigError> {
        let zero = |name| Err(PolicyConfigError::Zero { name });
        if self.max_connections == 0 {
            return zero("max_connections");
        }
        if self.max_handshaking == 0 {
            return zero("max_handshaking");
        }
        if self.max_auth_failures == 0 {
            return zero("max_auth_failures");
        }
        if self.lockout.is_zero() {
            return zero("lockout");
        }
        if self.max_attempts_per_window == 0 {
            return zero("max_attempts_per_window");
        }
        if self.attempt_window.is_zero() {
            return zero("attempt_window");
        }
        if self.max_tracked_ips == 0 {
            return zero("max_tracked_ips");
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

    /// See [`PolicyConfig::max_auth_failures`]; at least 1.
    pub fn max_auth_failures(mut self, n: u32) -> Self {
        self.0.max_auth_failures = n;
        self
    }

    /// See [`PolicyConfig::lockout`]; positive.
    pub fn lockout(mut self, d: Duration) -> Self {
        self.0.lockout = d;
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

    /// See [`PolicyConfig::max_pending_events`]; 0 disables events (counters
    /// still count).
    pub fn max_pending_events(mut self, n: usize) -> Self {
        self.0.max_pending_events = n;
        self
    }

    /// The configuration, or the first setting that is out of range.
    pub fn build(self) -> Result<PolicyConfig, PolicyConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// Why a new connection was refused. The peer is never told (RFC-0001 §9.1):
/// the socket is closed without a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The source address MUST NOT connect before `until`: it failed
    /// authentication too often.
    #[error("source address is locked out after repeated authentication failures")]
    LockedOut {
        /// When the lockout ends.
        until: Instant,
    },
    /// The source address used up its connection attempts for this window.
    #[error("source address exceeded its connection-attempt rate")]
    RateLimited,
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
    /// The address table is full of entries that still matter; an untracked
    /// address is refused rather than let in without limits.
    #[error("address tracking table is full; refusing untracked addresses (fail closed)")]
    TrackingFull,
}

impl Refusal {
    /// The [`AuthFailure`] reason reported for this refusal: `LockedOut` and
    /// `RateLimited` map to themselves, every capacity limit to `Capacity`.
    #[must_use]
    pub const fn as_auth_failure(self) -> AuthFailure {
        match self {
            Self::LockedOut { .. } => AuthFailure::LockedOut,
            Self::RateLimited => AuthFailure::RateLimited,
            Self::TooManyConnections { .. }
            | Self::TooManyHandshakes { .. }
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

/// A lockout that [`Policy::auth_failed`] just imposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lockout {
    /// The address as tracked (IPv6 masked to the configured prefix).
    pub ip: IpAddr,
    /// When it ends.
    pub until: Instant,
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
    /// An address was locked out.
    LockedOut {
        /// The address as tracked (IPv6 masked to the configured prefix).
        ip: IpAddr,
        /// When the lockout ends.
        until: Instant,
    },
}

/// Refusals by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusalCounts {
    /// [`Refusal::LockedOut`].
    pub locked_out: u64,
    /// [`Refusal::RateLimited`].
    pub rate_limited: u64,
    /// [`Refusal::TooManyConnections`], inbound and outbound.
    pub too_many_connections: u64,
    /// [`Refusal::TooManyHandshakes`].
    pub too_many_handshakes: u64,
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
        self.locked_out
            .saturating_add(self.rate_limited)
            .saturating_add(self.too_many_connections)
            .saturating_add(self.too_many_handshakes)
            .saturating_add(self.tracking_full)
    }

    fn bump(&mut self, reason: &Refusal) {
        let c = self.counter(reason);
        *c = c.saturating_add(1);
    }

    fn counter(&mut self, reason: &Refusal) -> &mut u64 {
        match reason {
            Refusal::LockedOut { .. } => &mut self.locked_out,
            Refusal::RateLimited => &mut self.rate_limited,
            Refusal::TooManyConnections { .. } => &mut self.too_many_connections,
            Refusal::TooManyHandshakes { .. } => &mut self.too_many_handshakes,
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
    /// [`AuthFailure::LockedOut`].
    pub locked_out: u64,
    /// [`AuthFailure::RateLimited`].
    pub rate_limited: u64,
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
        [
            self.bad_mac,
            self.replay,
            self.malformed,
            self.timeout,
            self.locked_out,
            self.rate_limited,
            self.reflection,
            self.capacity,
            self.stale,
            self.unexpected_peer,
            self.bad_frame_mac,
            self.v1_disabled,
            self.downgrade,
        ]
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b))
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
            AuthFailure::LockedOut => &mut self.locked_out,
            AuthFailure::RateLimited => &mut self.rate_limited,
            AuthFailure::Reflection => &mut self.reflection,
            AuthFailure::Capacity => &mut self.capacity,
            AuthFailure::Stale => &mut self.stale,
            AuthFailure::UnexpectedPeer { .. } => &mut self.unexpected_peer,
            AuthFailure::BadFrameMac => &mut self.bad_frame_mac,
            AuthFailure::V1Disabled => &mut self.v1_disabled,
            AuthFailure::Downgrade => &mut self.downgrade,
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
    /// Lockouts imposed.
    pub lockouts: u64,
    /// Events dropped because `max_pending_events` were undrained.
    pub events_dropped: u64,
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
}

impl Slot {
    fn in_handshake_cap(&self) -> bool {
        self.ip.is_some() && self.state != SlotState::Established
    }
}

#[derive(Clone, Copy, Debug)]
struct IpEntry {
    live: usize,
    failures: u32,
    locked_until: Option<Instant>,
    window_start: Instant,
    attempts: u32,
    last_activity: Instant,
}

impl IpEntry {
    fn new(now: Instant) -> Self {
        Self {
            live: 0,
            failures: 0,
            locked_until: None,
            window_start: now,
            attempts: 0,
            last_activity: now,
        }
    }

    fn locked_at(&self, now: Instant) -> Option<Instant> {
        self.locked_until.filter(|until| *until > now)
    }

    // When nothing this entry holds matters any more (if it holds no
    // connection by then).
    fn expiry(&self, window: Duration) -> Instant {
        let idle = after(self.last_activity, window);
        self.locked_until.map_or(idle, |l| idle.max(l))
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
    slots: BTreeMap<SlotId, Slot>,
    handshaking: usize,
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
            slots: BTreeMap::new(),
            handshaking: 0,
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
    /// handshake, and counts the attempt. Checks, in order: lockout, the
    /// tracking table (fail closed), the attempt rate, the connection cap,
    /// the handshake cap. On `Err` the caller closes the socket at once.
    pub fn admit(&mut self, now: Instant, ip: IpAddr) -> Result<SlotId, Refusal> {
        self.counters.attempts = self.counters.attempts.saturating_add(1);
        self.purge(now);
        let key = self.key(ip);
        match self.check_inbound(now, key) {
            Ok(()) => {
                if let Some(entry) = self.ips.get_mut(&key) {
                    entry.live = entry.live.saturating_add(1);
                }
                self.handshaking = self.handshaking.saturating_add(1);
                self.counters.admitted = self.counters.admitted.saturating_add(1);
                Ok(self.insert_slot(Slot {
                    ip: Some(key),
                    state: SlotState::Handshaking,
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
        if let Some(until) = self.ips.get(&key).and_then(|e| e.locked_at(now)) {
            return Err(Refusal::LockedOut { until });
        }
        if !self.ips.contains_key(&key) {
            if self.ips.len() >= self.config.max_tracked_ips {
                return Err(Refusal::TrackingFull);
            }
            self.ips.insert(key, IpEntry::new(now));
            self.purge_queue
                .push(Reverse((after(now, self.config.attempt_window), key)));
        }
        let window = self.config.attempt_window;
        let max_attempts = self.config.max_attempts_per_window;
        let entry = self.ips.get_mut(&key).ok_or(Refusal::TrackingFull)?;
        entry.last_activity = now;
        if now >= after(entry.window_start, window) {
            entry.window_start = now;
            entry.attempts = 0;
        }
        if entry.attempts >= max_attempts {
            return Err(Refusal::RateLimited);
        }
        entry.attempts = entry.attempts.saturating_add(1);
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
        }))
    }

    /// The handshake of `slot` succeeded: it leaves the handshake cap, and its
    /// address's failure count starts over. A lockout already in force stays.
    pub fn established(&mut self, now: Instant, slot: SlotId) {
        let Some(s) = self.slots.get_mut(&slot) else {
            return;
        };
        if s.state != SlotState::Handshaking {
            return;
        }
        let was_in_cap = s.in_handshake_cap();
        s.state = SlotState::Established;
        let ip = s.ip;
        if was_in_cap {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        if let Some(entry) = ip.and_then(|ip| self.ips.get_mut(&ip)) {
            entry.failures = 0;
            entry.last_activity = now;
        }
        self.counters.established = self.counters.established.saturating_add(1);
    }

    /// The handshake of `slot` failed for `failure`. Every failure is counted
    /// by reason; one that [`counts_toward_lockout`](AuthFailure::counts_toward_lockout)
    /// on an inbound slot also counts toward its address's lockout, and the
    /// `max_auth_failures`-th locks the address for `lockout` (returned, and
    /// reported as [`PolicyEvent::LockedOut`]). The slot keeps its place in
    /// the caps until [`release`](Self::release). Only the first failure of a
    /// slot still in its handshake is counted.
    pub fn auth_failed(
        &mut self,
        now: Instant,
        slot: SlotId,
        failure: AuthFailure,
    ) -> Option<Lockout> {
        let s = self.slots.get_mut(&slot)?;
        if s.state != SlotState::Handshaking {
            return None;
        }
        s.state = SlotState::Failed;
        let ip = s.ip;
        self.counters.auth_failures.bump(failure);
        if !failure.counts_toward_lockout() {
            return None;
        }
        let ip = ip?;
        let entry = self.ips.get_mut(&ip)?;
        entry.last_activity = now;
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < self.config.max_auth_failures {
            return None;
        }
        // Failures of handshakes that were already running count toward the
        // next lockout, which extends this one rather than shortening it.
        entry.failures = 0;
        let until = after(now, self.config.lockout);
        let until = entry.locked_until.map_or(until, |l| l.max(until));
        entry.locked_until = Some(until);
        self.counters.lockouts = self.counters.lockouts.saturating_add(1);
        self.push_event(PolicyEvent::LockedOut { ip, until });
        Some(Lockout { ip, until })
    }

    /// The connection of `slot` is gone, in whatever state it was. Unknown
    /// or already released slots are ignored.
    pub fn release(&mut self, slot: SlotId) {
        let Some(s) = self.slots.remove(&slot) else {
            return;
        };
        if s.in_handshake_cap() {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        if let Some(entry) = s.ip.and_then(|ip| self.ips.get_mut(&ip)) {
            entry.live = entry.live.saturating_sub(1);
        }
    }

    /// Whether `ip` is refused for a lockout at `now`.
    #[must_use]
    pub fn is_locked_out(&self, now: Instant, ip: IpAddr) -> bool {
        self.ips
            .get(&self.key(ip))
            .and_then(|e| e.locked_at(now))
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

    /// Addresses currently tracked.
    #[must_use]
    pub fn tracked_ips(&self) -> usize {
        self.ips.len()
    }

    /// Forgets address entries that no longer matter at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.purge(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) may next forget an
    /// entry; `None` while nothing is tracked.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.purge_queue.peek().map(|Reverse((at, _))| *at)
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
            if entry.live == 0 && expiry <= now {
                self.ips.remove(&key);
            } else {
                // An entry that holds connections is looked at again a
                // window later; both cases lie strictly after `now`, so the
                // loop ends.
                let next = if entry.live > 0 {
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
            b().lockout(Duration::ZERO).build(),
            Err(PolicyConfigError::Zero { name: "lockout" })
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
            Refusal::RateLimited.as_auth_failure(),
            AuthFailure::RateLimited
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
