//! Discovery settings and their validation.

use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::time::Duration;

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
        /// The name of the bound: `"replay_capacity"`,
        /// `"replay_share_per_node"`, `"max_peers"`,
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
    replay_share_per_node: usize,
    per_ip_rate: u32,
    per_node_rate: u32,
    max_peers: usize,
    max_tracked_sources: usize,
    max_queued_events: usize,
    broadcast: SocketAddr,
    unicast_targets: Vec<SocketAddr>,
    pub(crate) allow_v1: bool,
}

impl DiscoveryConfig {
    /// The defaults of WIRE.md §6 for `community`: announce every 3 s,
    /// peers expire after 15 s, ±60 s timestamp window, 65,536 replay
    /// entries of which at most 256 per node id, 10 messages per second per source IP, 1 per second per node,
    /// 1,024 peers, 65,536 tracked sources, 4,096 queued events, broadcast to
    /// `255.255.255.255:9999`, v2 announcements only (WIRE-v2.md §6).
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
            replay_share_per_node: 256,
            per_ip_rate: 10,
            per_node_rate: 1,
            max_peers: 1024,
            max_tracked_sources: 65_536,
            max_queued_events: 4096,
            broadcast: SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), DISCOVERY_PORT),
            unicast_targets: Vec::new(),
            allow_v1: false,
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

    /// Most v1 `(node, challenge)` pairs remembered for one node id (at
    /// most [`replay_capacity`](Self::replay_capacity)). A node whose share
    /// is full has its further v1 announcements dropped
    /// ([`DropReason::ReplayShareFull`](super::DropReason::ReplayShareFull))
    /// until some of its pairs expire, while other nodes keep their room: the
    /// copies of one node cannot fill the cache for everyone. An honest node
    /// sends one v1 announcement per round and its pairs live at most twice
    /// the timestamp window, so the default 256 leaves room for a round every
    /// 0.5 s.
    #[must_use]
    pub fn replay_share_per_node(&self) -> usize {
        self.replay_share_per_node
    }

    /// Valid messages honoured per second from one source IP.
    #[must_use]
    pub fn per_ip_rate(&self) -> u32 {
        self.per_ip_rate
    }

    /// Valid v1 messages honoured per second from one node id at one source
    /// IP.
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
    /// [`poll_event`](super::Discovery::poll_event).
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

    /// Whether v1 announcements are also sent and accepted (WIRE-v2.md §6);
    /// off by default. With it, every round sends a v1 announcement beside
    /// the v2 one, and the v2 one carries flag bit 0 (this node also accepts
    /// v1 HELLOs).
    #[must_use]
    pub fn allow_v1(&self) -> bool {
        self.allow_v1
    }

    /// Where each announcement round sends its v2 datagram (the same bytes
    /// to each), and with [`allow_v1`](Self::allow_v1) a v1 one: the unicast
    /// targets when there are any, otherwise the broadcast address alone.
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
            ("replay_share_per_node", self.replay_share_per_node),
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

    /// Most v1 pairs remembered per node id (default 256; capped at the
    /// replay capacity).
    pub fn replay_share_per_node(mut self, share: usize) -> Self {
        self.0.replay_share_per_node = share;
        self
    }

    /// Valid messages honoured per second per source IP (default 10).
    pub fn per_ip_rate(mut self, per_second: u32) -> Self {
        self.0.per_ip_rate = per_second;
        self
    }

    /// Valid v1 messages honoured per second per node and source IP
    /// (default 1).
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

    /// Also send and accept v1 announcements (default false: v2 only).
    pub fn allow_v1(mut self, yes: bool) -> Self {
        self.0.allow_v1 = yes;
        self
    }

    /// The configuration, or the first setting that cannot work.
    pub fn build(self) -> Result<DiscoveryConfig, DiscoveryConfigError> {
        self.0.validate()?;
        Ok(self.0)
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
            b().replay_share_per_node(0),
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
}
