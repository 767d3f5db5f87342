//! Dial decisions for static and discovered peers, with the reconnect
//! schedule of WIRE.md §6 (RFC-0001 §9.4).
//!
//! The [`Dialer`] never dials: [`poll_dial`](Dialer::poll_dial) hands the
//! adapter a [`Dial`] (a peer and where to connect) when one is due, and the
//! adapter reports back with [`connected`](Dialer::connected),
//! [`dial_failed`](Dialer::dial_failed) and
//! [`disconnected`](Dialer::disconnected).
//!
//! # Reconnect schedule
//!
//! A *streak* is a run of waits between losing a peer and being connected to
//! it again. It starts when a connection drops, or when a dial fails while no
//! streak is running (the first dial of a new peer is immediate), and ends
//! when the peer is connected. At its start the dialer draws a jitter `d`
//! uniformly from `[first_delay_min, first_delay_max]` (default 1–5 s, at
//! nanosecond resolution, from the seeded [`Rng`]). The `n`-th wait of the
//! streak (`n` = 1, 2, …) is
//!
//! ```text
//! wait(n) = min(d · 2^(n-1), max_backoff)        max_backoff default 60 s
//! ```
//!
//! so with `d` = 2 s: 2, 4, 8, 16, 32, 60, 60, … seconds
//! ([`DialConfig::retry_delay`] computes it). Concretely:
//!
//! - a new peer is dialed at once; its k-th consecutive failed dial waits
//!   `wait(k)`;
//! - a dropped connection waits `wait(1)` = `d` (a fresh `d`), and the k-th
//!   consecutive failed dial after it waits `wait(k + 1)`.
//!
//! Static peers are retried forever. A discovered peer whose
//! `discovered_max_failures`-th consecutive dial fails (default 3) is given
//! up ([`DialEvent::GaveUp`]): it is not dialed again until its node announces
//! a different address, or `give_up_cooldown` (default 60 s) has passed and
//! it announces again; until [`forget_discovered`](Dialer::forget_discovered)
//! it stays in the table so that a node that keeps announcing cannot be
//! re-dialed on every announcement.
//!
//! # Storm protection
//!
//! Whatever the schedule says and however many announcements arrive, no peer
//! is dialed more than once per `min_redial_interval` (default 1 s): every
//! due time is pushed back to at least the last dial plus that interval. An
//! announcement never moves a peer's due time earlier unless the address
//! changed, and discovered peers are capped at `max_discovered`.
//!
//! Peers are kept in id order and the only randomness is the seeded jitter,
//! so a fixed seed and the same calls give the same dials at the same times.

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use uuid::Uuid;

use crate::rng::{Rng, Seed};
use crate::time::after;
use crate::v2::WireVersion;

/// Why a [`DialConfig`] was not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialConfigError {
    /// A setting that MUST be positive was zero.
    #[error("dial setting `{name}` must be greater than zero")]
    Zero {
        /// The setting's name, as spelled by its builder method.
        name: &'static str,
    },
    /// The jitter range is empty.
    #[error("first_delay_min ({min:?}) exceeds first_delay_max ({max:?})")]
    FirstDelayRange {
        /// The configured lower bound.
        min: Duration,
        /// The configured upper bound.
        max: Duration,
    },
    /// The backoff cap would cut the first delay short.
    #[error("max_backoff ({max_backoff:?}) is below first_delay_max ({first_delay_max:?})")]
    BackoffBelowFirstDelay {
        /// The configured cap.
        max_backoff: Duration,
        /// The configured upper bound of the first delay.
        first_delay_max: Duration,
    },
}

/// Settings of a [`Dialer`]. Build one with [`DialConfig::builder`]; the
/// [`Default`] is the WIRE.md §6 schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialConfig {
    first_delay_min: Duration,
    first_delay_max: Duration,
    max_backoff: Duration,
    discovered_max_failures: u32,
    give_up_cooldown: Duration,
    min_redial_interval: Duration,
    max_discovered: usize,
    max_pending_events: usize,
}

impl Default for DialConfig {
    fn default() -> Self {
        Self {
            first_delay_min: Duration::from_secs(1),
            first_delay_max: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            discovered_max_failures: 3,
            give_up_cooldown: Duration::from_secs(60),
            min_redial_interval: Duration::from_secs(1),
            max_discovered: 1024,
            max_pending_events: 1024,
        }
    }
}

impl DialConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> DialConfigBuilder {
        DialConfigBuilder(Self::default())
    }

    /// Lower bound of the jitter `d` (default 1 s).
    #[must_use]
    pub fn first_delay_min(&self) -> Duration {
        self.first_delay_min
    }

    /// Upper bound of the jitter `d`, inclusive (default 5 s).
    #[must_use]
    pub fn first_delay_max(&self) -> Duration {
        self.first_delay_max
    }

    /// Longest wait between two dials of one peer (default 60 s).
    #[must_use]
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// Consecutive failed dials after which a discovered peer is given up
    /// (default 3).
    #[must_use]
    pub fn discovered_max_failures(&self) -> u32 {
        self.discovered_max_failures
    }

    /// How long a given-up discovered peer is ignored while it keeps
    /// announcing the same address (default 60 s).
    #[must_use]
    pub fn give_up_cooldown(&self) -> Duration {
        self.give_up_cooldown
    }

    /// Shortest time between two dials of one peer (default 1 s).
    #[must_use]
    pub fn min_redial_interval(&self) -> Duration {
        self.min_redial_interval
    }

    /// Most discovered peers tracked at once, given-up ones included
    /// (default 1024). Static peers are not limited: they are configuration.
    #[must_use]
    pub fn max_discovered(&self) -> usize {
        self.max_discovered
    }

    /// Undrained events kept before new ones are dropped (default 1024).
    #[must_use]
    pub fn max_pending_events(&self) -> usize {
        self.max_pending_events
    }

    /// The `n`-th wait of a streak whose jitter is `jitter`:
    /// `min(jitter · 2^(n-1), max_backoff)`; `n` = 0 is treated as 1.
    #[must_use]
    pub fn retry_delay(&self, jitter: Duration, n: u32) -> Duration {
        1u32.checked_shl(n.saturating_sub(1))
            .and_then(|factor| jitter.checked_mul(factor))
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }

    fn validate(&self) -> Result<(), DialConfigError> {
        let zero = |name| Err(DialConfigError::Zero { name });
        if self.discovered_max_failures == 0 {
            return zero("discovered_max_failures");
        }
        if self.min_redial_interval.is_zero() {
            return zero("min_redial_interval");
        }
        if self.first_delay_min > self.first_delay_max {
            return Err(DialConfigError::FirstDelayRange {
                min: self.first_delay_min,
                max: self.first_delay_max,
            });
        }
        if self.max_backoff < self.first_delay_max {
            return Err(DialConfigError::BackoffBelowFirstDelay {
                max_backoff: self.max_backoff,
                first_delay_max: self.first_delay_max,
            });
        }
        Ok(())
    }
}

/// Builds a validated [`DialConfig`]; every setter has the meaning of the
/// getter of the same name.
#[derive(Clone, Debug)]
#[must_use]
pub struct DialConfigBuilder(DialConfig);

impl DialConfigBuilder {
    /// See [`DialConfig::first_delay_min`]; at most `first_delay_max`.
    pub fn first_delay_min(mut self, d: Duration) -> Self {
        self.0.first_delay_min = d;
        self
    }

    /// See [`DialConfig::first_delay_max`]; at most `max_backoff`.
    pub fn first_delay_max(mut self, d: Duration) -> Self {
        self.0.first_delay_max = d;
        self
    }

    /// See [`DialConfig::max_backoff`].
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.0.max_backoff = d;
        self
    }

    /// See [`DialConfig::discovered_max_failures`]; at least 1.
    pub fn discovered_max_failures(mut self, n: u32) -> Self {
        self.0.discovered_max_failures = n;
        self
    }

    /// See [`DialConfig::give_up_cooldown`].
    pub fn give_up_cooldown(mut self, d: Duration) -> Self {
        self.0.give_up_cooldown = d;
        self
    }

    /// See [`DialConfig::min_redial_interval`]; positive.
    pub fn min_redial_interval(mut self, d: Duration) -> Self {
        self.0.min_redial_interval = d;
        self
    }

    /// See [`DialConfig::max_discovered`]; 0 turns dialing discovered peers
    /// off.
    pub fn max_discovered(mut self, n: usize) -> Self {
        self.0.max_discovered = n;
        self
    }

    /// See [`DialConfig::max_pending_events`].
    pub fn max_pending_events(mut self, n: usize) -> Self {
        self.0.max_pending_events = n;
        self
    }

    /// The configuration, or the first setting that is out of range.
    pub fn build(self) -> Result<DialConfig, DialConfigError> {
        self.0.validate()?;
        Ok(self.0)
    }
}

/// Where to connect.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DialTarget {
    /// `host:port`, resolved by the adapter each time it dials (a failed
    /// resolution is a failed dial).
    Name(String),
    /// A socket address.
    Addr(SocketAddr),
}

impl fmt::Display for DialTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Addr(addr) => addr.fmt(f),
        }
    }
}

/// Identifies a peer of a [`Dialer`]; never reused by that dialer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(u64);

impl PeerId {
    /// The raw number, for logs.
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}

/// A dial the adapter should make now.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Dial {
    /// The peer to report the outcome for.
    pub peer: PeerId,
    /// Where to connect.
    pub target: DialTarget,
    /// The wire version to dial with. The dialer hands out
    /// [`WireVersion::V2`]; [`Node::poll_dial`](crate::node::Node::poll_dial)
    /// turns it to v1 only for a discovered peer seen solely through v1
    /// announcements (with v1 enabled). A failed v2 dial is never retried
    /// as v1.
    pub version: WireVersion,
}

/// Where a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerState {
    /// Will be dialed at `due`.
    Waiting {
        /// When [`Dialer::poll_dial`] hands it out.
        due: Instant,
    },
    /// Handed out by [`Dialer::poll_dial`]; the outcome is pending.
    Dialing,
    /// Connected.
    Connected,
    /// A discovered peer that failed too often; not dialed again until its
    /// node announces a new address, or announces again from `until` on.
    GaveUp {
        /// End of the cool-down.
        until: Instant,
    },
}

/// Something the dialer decided, as plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialEvent {
    /// A discovered peer failed `failures` consecutive dials and is no
    /// longer dialed.
    GaveUp {
        /// The peer.
        peer: PeerId,
        /// Its node id.
        node: Uuid,
        /// Consecutive failed dials.
        failures: u32,
    },
}

#[derive(Clone, Debug)]
struct Peer {
    target: DialTarget,
    // `Some` for discovered peers.
    node: Option<Uuid>,
    state: PeerState,
    // Consecutive failed dials.
    failures: u32,
    // Waits scheduled in the current streak and its jitter, `None` between
    // streaks.
    waits: u32,
    jitter: Option<Duration>,
    last_dial: Option<Instant>,
}

impl Peer {
    fn new(target: DialTarget, node: Option<Uuid>, now: Instant) -> Self {
        Self {
            target,
            node,
            state: PeerState::Waiting { due: now },
            failures: 0,
            waits: 0,
            jitter: None,
            last_dial: None,
        }
    }

    fn end_streak(&mut self) {
        self.failures = 0;
        self.waits = 0;
        self.jitter = None;
    }

    // Waits until `at`, but never sooner than `min_redial` after the last
    // dial: the per-target storm guard.
    fn wait_until(&mut self, at: Instant, min_redial: Duration) {
        let due = self
            .last_dial
            .map_or(at, |last| at.max(after(last, min_redial)));
        self.state = PeerState::Waiting { due };
    }
}

/// Static and discovered peers and when to dial each. See the
/// [module docs](self) for the schedule and the call order.
#[derive(Clone, Debug)]
pub struct Dialer {
    config: DialConfig,
    rng: Rng,
    peers: BTreeMap<PeerId, Peer>,
    by_node: BTreeMap<Uuid, PeerId>,
    next_id: u64,
    events: VecDeque<DialEvent>,
    dropped_events: u64,
}

impl Dialer {
    /// A dialer with no peers, drawing jitter from `seed`.
    #[must_use]
    pub fn new(config: DialConfig, seed: Seed) -> Self {
        Self {
            config,
            rng: Rng::from_seed(seed),
            peers: BTreeMap::new(),
            by_node: BTreeMap::new(),
            next_id: 0,
            events: VecDeque::new(),
            dropped_events: 0,
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &DialConfig {
        &self.config
    }

    /// Adds a configured peer, retried forever; its first dial is due at
    /// `now`.
    pub fn add_static(&mut self, now: Instant, target: DialTarget) -> PeerId {
        self.insert(Peer::new(target, None, now))
    }

    /// Records a valid announcement of `node` at `addr` and returns the peer
    /// that stands for it, or `None` when `max_discovered` peers are tracked
    /// already. A new node is due at once. A known node at a new address is
    /// due at once unless it is being dialed or connected (the new address
    /// is used next time); its failure streak starts over. A known node at
    /// the same address changes nothing, except that a given-up peer whose
    /// cool-down has passed is due again. Every due time respects
    /// `min_redial_interval`.
    pub fn discovered(&mut self, now: Instant, node: Uuid, addr: SocketAddr) -> Option<PeerId> {
        let min_redial = self.config.min_redial_interval;
        let target = DialTarget::Addr(addr);
        if let Some(id) = self.by_node.get(&node).copied() {
            if let Some(peer) = self.peers.get_mut(&id) {
                let moved = peer.target != target;
                peer.target = target;
                let revive = match peer.state {
                    PeerState::Waiting { .. } => moved,
                    PeerState::GaveUp { until } => moved || now >= until,
                    PeerState::Dialing | PeerState::Connected => false,
                };
                if revive {
                    peer.end_streak();
                    peer.wait_until(now, min_redial);
                }
                return Some(id);
            }
            // An index entry without its peer cannot happen; repair it.
            self.by_node.remove(&node);
        }
        if self.by_node.len() >= self.config.max_discovered {
            return None;
        }
        let id = self.insert(Peer::new(target, Some(node), now));
        self.by_node.insert(node, id);
        Some(id)
    }

    /// The discovery entry of `node` expired: its peer is forgotten, in
    /// whatever state. A connection to it is the caller's to keep or close.
    pub fn forget_discovered(&mut self, node: Uuid) {
        if let Some(id) = self.by_node.remove(&node) {
            self.peers.remove(&id);
        }
    }

    /// The next due dial at `now`, earliest due first (ties by id); the peer
    /// is then [`PeerState::Dialing`] until the adapter reports the outcome.
    /// Call until `None`.
    #[must_use]
    pub fn poll_dial(&mut self, now: Instant) -> Option<Dial> {
        let (id, _) = self
            .peers
            .iter()
            .filter_map(|(id, p)| match p.state {
                PeerState::Waiting { due } if due <= now => Some((*id, due)),
                _ => None,
            })
            .min_by_key(|(id, due)| (*due, *id))?;
        let peer = self.peers.get_mut(&id)?;
        peer.state = PeerState::Dialing;
        peer.last_dial = Some(now);
        Some(Dial {
            peer: id,
            target: peer.target.clone(),
            version: WireVersion::V2,
        })
    }

    /// The dial of `peer` failed (connect, resolution or handshake). A
    /// discovered peer at its `discovered_max_failures`-th consecutive
    /// failure is given up; otherwise the next dial waits per the schedule.
    /// Ignored unless `peer` is being dialed.
    pub fn dial_failed(&mut self, now: Instant, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.state != PeerState::Dialing {
            return;
        }
        p.failures = p.failures.saturating_add(1);
        if let Some(node) = p.node {
            if p.failures >= self.config.discovered_max_failures {
                let failures = p.failures;
                p.state = PeerState::GaveUp {
                    until: after(now, self.config.give_up_cooldown),
                };
                self.push_event(DialEvent::GaveUp {
                    peer,
                    node,
                    failures,
                });
                return;
            }
        }
        let wait = next_wait(&self.config, &mut self.rng, p);
        p.wait_until(after(now, wait), self.config.min_redial_interval);
    }

    /// `peer` is connected: its failure streak ends.
    pub fn connected(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.end_streak();
            p.state = PeerState::Connected;
        }
    }

    /// The connection to `peer` closed: it is redialed after a fresh jitter
    /// `d` (1–5 s by default). Ignored unless `peer` is connected.
    pub fn disconnected(&mut self, now: Instant, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        if p.state != PeerState::Connected {
            return;
        }
        p.end_streak();
        let wait = next_wait(&self.config, &mut self.rng, p);
        p.wait_until(after(now, wait), self.config.min_redial_interval);
    }

    /// Forgets `peer`, static or discovered. Unknown ids are ignored.
    pub fn remove(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.remove(&peer) {
            if let Some(node) = p.node {
                self.by_node.remove(&node);
            }
        }
    }

    /// Where `peer` stands, or `None` if it is not (or no longer) tracked.
    #[must_use]
    pub fn state(&self, peer: PeerId) -> Option<PeerState> {
        self.peers.get(&peer).map(|p| p.state)
    }

    /// The peer that stands for discovered `node`.
    #[must_use]
    pub fn peer_of(&self, node: Uuid) -> Option<PeerId> {
        self.by_node.get(&node).copied()
    }

    /// Peers tracked, static and discovered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// When the next dial is due; `None` while none is waiting.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| match p.state {
                PeerState::Waiting { due } => Some(due),
                _ => None,
            })
            .min()
    }

    /// The next event, oldest first.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DialEvent> {
        self.events.pop_front()
    }

    /// Events dropped because `max_pending_events` were undrained.
    #[must_use]
    pub fn dropped_events(&self) -> u64 {
        self.dropped_events
    }

    fn insert(&mut self, peer: Peer) -> PeerId {
        // 2^64 peers are never added; wrapping keeps this panic-free.
        let id = PeerId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.peers.insert(id, peer);
        id
    }

    fn push_event(&mut self, event: DialEvent) {
        if self.events.len() < self.config.max_pending_events {
            self.events.push_back(event);
        } else {
            self.dropped_events = self.dropped_events.saturating_add(1);
        }
    }
}

// The next wait of `peer`'s streak, starting the streak (drawing its jitter)
// if none is running.
fn next_wait(config: &DialConfig, rng: &mut Rng, peer: &mut Peer) -> Duration {
    let jitter = *peer.jitter.get_or_insert_with(|| draw_jitter(config, rng));
    peer.waits = peer.waits.saturating_add(1);
    config.retry_delay(jitter, peer.waits)
}

fn draw_jitter(config: &DialConfig, rng: &mut Rng) -> Duration {
    let span = config
        .first_delay_max
        .saturating_sub(config.first_delay_min)
        .as_nanos();
    let span = u64::try_from(span).unwrap_or(u64::MAX);
    let offset = rng.below(span.saturating_add(1));
    config
        .first_delay_min
        .saturating_add(Duration::from_nanos(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let c = DialConfig::default();
        let d = Duration::from_secs(2);
        let waits: Vec<u64> = (1..=8).map(|n| c.retry_delay(d, n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(c.retry_delay(d, 0), d);
        assert_eq!(c.retry_delay(d, u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn config_rejects_out_of_range_settings() {
        let b = DialConfig::builder;
        assert_eq!(
            b().first_delay_min(Duration::from_secs(6)).build(),
            Err(DialConfigError::FirstDelayRange {
                min: Duration::from_secs(6),
                max: Duration::from_secs(5)
            })
        );
        assert_eq!(
            b().max_backoff(Duration::from_secs(4)).build(),
            Err(DialConfigError::BackoffBelowFirstDelay {
                max_backoff: Duration::from_secs(4),
                first_delay_max: Duration::from_secs(5)
            })
        );
        assert_eq!(
            b().discovered_max_failures(0).build(),
            Err(DialConfigError::Zero {
                name: "discovered_max_failures"
            })
        );
        assert_eq!(
            b().min_redial_interval(Duration::ZERO).build(),
            Err(DialConfigError::Zero {
                name: "min_redial_interval"
            })
        );
        assert_eq!(b().build(), Ok(DialConfig::default()));
    }

    #[test]
    fn jitter_stays_in_range_even_when_degenerate() {
        let mut rng = Rng::from_seed([7; 32]);
        let c = DialConfig::default();
        for _ in 0..1000 {
            let d = draw_jitter(&c, &mut rng);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(5));
        }
        let fixed = DialConfig::builder()
            .first_delay_min(Duration::from_secs(3))
            .first_delay_max(Duration::from_secs(3))
            .build()
            .unwrap();
        assert_eq!(draw_jitter(&fixed, &mut rng), Duration::from_secs(3));
    }
}
