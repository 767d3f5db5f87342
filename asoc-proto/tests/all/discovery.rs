//! The discovery machine against WIRE.md §5–§7, on a virtual clock: `t0` is
//! an arbitrary epoch and time advances only by adding durations.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use asoc_proto::auth::{
    community_hash, sign_announcement, verify_announcement, ApiKey, KeyId, KeyRing,
};
use asoc_proto::discovery::{
    Discovery, DiscoveryConfig, DiscoveryConfigBuilder, DiscoveryEvent, DropReason,
};
use asoc_proto::v2::WireVersion;
use asoc_proto::wire::Announcement;
use proptest::prelude::*;
use uuid::Uuid;

const COMMUNITY: &str = "test-cluster";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";
const UNIX: u64 = 1_800_000_000;
const ME: Uuid = Uuid::from_u128(0x1111);
const SEED: [u8; 32] = [42; 32];

fn key(s: &str) -> ApiKey {
    ApiKey::new(s).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new(key(KEY))
}

fn node(n: u128) -> Uuid {
    Uuid::from_u128(0xabcd_0000 + n)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn src(last: u8) -> SocketAddr {
    SocketAddr::new(ip(last), 40_000)
}

/// These tests are the v1 rules (WIRE.md §7), which hold under `allow_v1`;
/// `discovery_v2.rs` has the v2 rules.
fn builder() -> DiscoveryConfigBuilder {
    DiscoveryConfig::builder(COMMUNITY).allow_v1(true)
}

fn v1_config() -> DiscoveryConfig {
    builder().build().unwrap()
}

/// The wall clock the machine takes, in unix milliseconds, for `secs`.
fn ms(secs: u64) -> u64 {
    secs * 1000
}

fn machine(config: DiscoveryConfig, t0: Instant) -> Discovery {
    Discovery::new(config, ME, 9000, SEED, t0)
}

/// A signed announcement; every field chosen by the test.
#[derive(Clone)]
struct Msg {
    community: &'static str,
    node: Uuid,
    port: u16,
    timestamp: u64,
    challenge: u32,
    key: &'static str,
}

impl Msg {
    fn new(node: Uuid, challenge: u32) -> Self {
        Self {
            community: COMMUNITY,
            node,
            port: 9000,
            timestamp: UNIX,
            challenge,
            key: KEY,
        }
    }

    fn bytes(&self) -> [u8; 50] {
        let unsigned = Announcement {
            community_hash: community_hash(self.community),
            node_id: self.node,
            port: self.port,
            timestamp: u32::try_from(self.timestamp).unwrap(),
            challenge: self.challenge,
            mac: [0; 16],
        };
        sign_announcement(&key(self.key), unsigned).encode()
    }

    fn tampered(&self) -> [u8; 50] {
        let mut b = self.bytes();
        b[49] ^= 1;
        b
    }
}

fn drain(d: &mut Discovery) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

fn transmits(
    d: &mut Discovery,
    now: Instant,
    unix: u64,
    keys: &KeyRing,
) -> Vec<(SocketAddr, Announcement)> {
    // With v1 enabled each destination gets a v2 announcement and then a
    // v1 one; these tests look at the v1 ones.
    std::iter::from_fn(|| d.poll_transmit(now, ms(unix), keys))
        .filter_map(|t| Some((t.to, Announcement::decode(&t.datagram)?)))
        .collect()
}

/// Feeds one datagram and returns the single event it caused, if any.
fn feed(
    d: &mut Discovery,
    now: Instant,
    unix: u64,
    from: SocketAddr,
    bytes: &[u8],
) -> Option<DiscoveryEvent> {
    d.handle_datagram(now, ms(unix), from, bytes, &ring());
    let mut events = drain(d);
    assert!(events.len() <= 1, "{events:?}");
    events.pop()
}

fn dropped(from: SocketAddr, reason: DropReason) -> Option<DiscoveryEvent> {
    Some(DiscoveryEvent::Dropped { src: from, reason })
}

fn discovered(n: Uuid, addr: SocketAddr) -> Option<DiscoveryEvent> {
    Some(DiscoveryEvent::Discovered {
        node: n,
        addr,
        key: KeyId(0),
        version: WireVersion::V1,
    })
}

fn at(from: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(from.ip(), port)
}

// ---- interoperability -------------------------------------------------------

#[test]
fn python_vectors_are_accepted_and_reproduced() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/asoc-v1.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vectors = json["discovery"].as_array().unwrap();
    assert!(!vectors.is_empty());
    let t0 = Instant::now();
    for v in vectors {
        let community = v["community"].as_str().unwrap();
        let api_key = ApiKey::new_insecure(v["api_key"].as_str().unwrap().as_bytes()).unwrap();
        let node_id: Uuid = v["node_uuid"].as_str().unwrap().parse().unwrap();
        let port = u16::try_from(v["port"].as_u64().unwrap()).unwrap();
        let timestamp = v["timestamp"].as_u64().unwrap();
        let challenge = u32::try_from(v["challenge"].as_u64().unwrap()).unwrap();
        let message = hex::decode(v["message"].as_str().unwrap()).unwrap();

        let signed = sign_announcement(
            &api_key,
            Announcement {
                community_hash: community_hash(community),
                node_id,
                port,
                timestamp: u32::try_from(timestamp).unwrap(),
                challenge,
                mac: [0; 16],
            },
        );
        assert_eq!(
            signed.encode().as_slice(),
            message.as_slice(),
            "signing {community:?}"
        );

        let keys = KeyRing::new(api_key);
        let config = DiscoveryConfig::builder(community)
            .allow_v1(true)
            .build()
            .unwrap();
        let mut d = Discovery::new(config, ME, 9000, SEED, t0);
        let from: SocketAddr = "192.0.2.10:5555".parse().unwrap();
        d.handle_datagram(t0, ms(timestamp), from, &message, &keys);
        let addr = SocketAddr::new(from.ip(), port);
        assert_eq!(
            drain(&mut d),
            vec![DiscoveryEvent::Discovered {
                node: node_id,
                addr,
                key: KeyId(0),
                version: WireVersion::V1,
            }],
            "vector {community:?}"
        );
        let peer = d.peer(&node_id).unwrap();
        assert_eq!((peer.addr, peer.key, peer.last_seen), (addr, KeyId(0), t0));
    }
}

// ---- the validation pipeline -------------------------------------------------

#[test]
fn each_drop_reason_and_the_earlier_check_wins() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let x = Msg::new(node(1), 1);

    // Not 50 bytes, even though the first bytes are also another community's.
    let mut other = x.clone();
    other.community = "other";
    let long = [other.bytes().as_slice(), &[0]].concat();
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &long),
        dropped(src(1), DropReason::WrongLength)
    );
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &other.bytes()[..49]),
        dropped(src(1), DropReason::WrongLength)
    );
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &[]),
        dropped(src(1), DropReason::WrongLength)
    );

    // Other community, with a bad MAC too.
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &other.tampered()),
        dropped(src(1), DropReason::OtherCommunity)
    );

    // Bad MAC, claiming our own id too; and a MAC under a key we do not hold.
    let mut own = Msg::new(ME, 2);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &own.tampered()),
        dropped(src(1), DropReason::BadMac)
    );
    let mut foreign = x.clone();
    foreign.key = OTHER_KEY;
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &foreign.bytes()),
        dropped(src(1), DropReason::BadMac)
    );

    // Own id, stale too.
    own.timestamp = UNIX - 1000;
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &own.bytes()),
        dropped(src(1), DropReason::OwnNode)
    );

    // Accept x, then: stale/future-dated reuse of its (node, challenge) report
    // the timestamp, not the replay.
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &x.bytes()),
        discovered(node(1), at(src(1), 9000))
    );
    let mut old = x.clone();
    old.timestamp = UNIX - 61;
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &old.bytes()),
        dropped(src(1), DropReason::Stale)
    );
    old.timestamp = UNIX + 61;
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &old.bytes()),
        dropped(src(1), DropReason::FutureDated)
    );

    // Replayed, while node x is also over its rate.
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &x.bytes()),
        dropped(src(1), DropReason::Replayed)
    );

    // Fresh challenge inside the same second from another address: the
    // address is sticky, and that check comes before the rate.
    let x2 = Msg::new(node(1), 3);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(2), &x2.bytes()),
        dropped(src(2), DropReason::AddressSticky)
    );
    // The same from the peer's own address: node rate. The sticky drop did
    // not remember the pair.
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &x2.bytes()),
        dropped(src(1), DropReason::NodeRateLimited)
    );

    let c = d.counters();
    assert_eq!(c.received, 13);
    assert_eq!(c.accepted, 1);
    for (reason, n) in [
        (DropReason::WrongLength, 3),
        (DropReason::OtherCommunity, 1),
        (DropReason::BadMac, 2),
        (DropReason::OwnNode, 1),
        (DropReason::Stale, 1),
        (DropReason::FutureDated, 1),
        (DropReason::Replayed, 1),
        (DropReason::NodeRateLimited, 1),
        (DropReason::AddressSticky, 1),
        (DropReason::ReplayCacheFull, 0),
        (DropReason::ReplayShareFull, 0),
        (DropReason::SourceRateLimited, 0),
    ] {
        assert_eq!(c.dropped(reason), n, "{reason}");
    }
    assert_eq!(c.dropped_total(), 12);
    // Nothing but x was recorded.
    assert_eq!(d.peers().map(|p| p.node).collect::<Vec<_>>(), vec![node(1)]);
}

#[test]
fn replay_beats_a_full_cache_and_full_cache_beats_rate_limits() {
    let t0 = Instant::now();
    let mut d = machine(
        builder().replay_capacity(1).per_ip_rate(1).build().unwrap(),
        t0,
    );
    let x = Msg::new(node(1), 1);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &x.bytes()),
        discovered(node(1), at(src(1), 9000))
    );
    // Cache full and this pair already in it: a replay.
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &x.bytes()),
        dropped(src(1), DropReason::Replayed)
    );
    // Cache full, and the source and node are over their rates as well.
    let x2 = Msg::new(node(1), 2);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &x2.bytes()),
        dropped(src(1), DropReason::ReplayCacheFull)
    );
}

#[test]
fn source_rate_is_checked_before_node_rate() {
    let t0 = Instant::now();
    let mut d = machine(builder().per_ip_rate(1).build().unwrap(), t0);
    assert!(feed(&mut d, t0, UNIX, src(1), &Msg::new(node(1), 1).bytes()).is_some());
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &Msg::new(node(1), 2).bytes()),
        dropped(src(1), DropReason::SourceRateLimited)
    );
}

#[test]
fn timestamp_window_is_inclusive_at_60_seconds_both_directions() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let cases = [
        (UNIX - 60, None),
        (UNIX + 60, None),
        (UNIX - 61, Some(DropReason::Stale)),
        (UNIX + 61, Some(DropReason::FutureDated)),
        (UNIX - 100_000, Some(DropReason::Stale)),
        (UNIX + 100_000, Some(DropReason::FutureDated)),
    ];
    for (i, (timestamp, reason)) in cases.into_iter().enumerate() {
        let n = node(i as u128);
        let from = src(i as u8);
        let mut m = Msg::new(n, 7);
        m.timestamp = timestamp;
        let expected = match reason {
            None => discovered(n, at(from, 9000)),
            Some(r) => dropped(from, r),
        };
        assert_eq!(
            feed(&mut d, t0, UNIX, from, &m.bytes()),
            expected,
            "timestamp {timestamp}"
        );
    }
}

#[test]
fn a_custom_window_is_honoured() {
    let t0 = Instant::now();
    let mut d = machine(builder().timestamp_window_secs(5).build().unwrap(), t0);
    let mut m = Msg::new(node(1), 1);
    m.timestamp = UNIX - 6;
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &m.bytes()),
        dropped(src(1), DropReason::Stale)
    );
    m.timestamp = UNIX - 5;
    assert!(matches!(
        feed(&mut d, t0, UNIX, src(1), &m.bytes()),
        Some(DiscoveryEvent::Discovered { .. })
    ));
}

// ---- replay -----------------------------------------------------------------

#[test]
fn replay_is_rejected_for_as_long_as_the_message_is_fresh() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let m = Msg::new(node(1), 99);
    // Accepted at the earliest moment it is fresh (60 s ahead of our clock)...
    assert!(feed(&mut d, t0, UNIX - 60, src(1), &m.bytes()).is_some());
    // ...and still a replay at the last moment it is fresh, from any source,
    // long after the per-node rate allows another message.
    for (k, unix) in [UNIX - 60, UNIX, UNIX + 59, UNIX + 60]
        .into_iter()
        .enumerate()
    {
        let now = t0 + Duration::from_secs(2 + k as u64);
        assert_eq!(
            feed(&mut d, now, unix, src(2), &m.bytes()),
            dropped(src(2), DropReason::Replayed)
        );
    }
    // One second later it is simply stale.
    let now = t0 + Duration::from_secs(10);
    assert_eq!(
        feed(&mut d, now, UNIX + 61, src(2), &m.bytes()),
        dropped(src(2), DropReason::Stale)
    );
    // The replays did not move the peer.
    assert_eq!(d.peer(&node(1)).unwrap().addr, at(src(1), 9000));
}

#[test]
fn a_full_replay_cache_fails_closed_and_forgets_nothing() {
    let t0 = Instant::now();
    let mut d = machine(builder().replay_capacity(2).build().unwrap(), t0);
    let msgs: Vec<Msg> = (1..=3).map(|i| Msg::new(node(i), 5)).collect();
    assert!(feed(&mut d, t0, UNIX, src(1), &msgs[0].bytes()).is_some());
    assert!(feed(&mut d, t0, UNIX, src(2), &msgs[1].bytes()).is_some());
    assert_eq!(
        feed(&mut d, t0, UNIX, src(3), &msgs[2].bytes()),
        dropped(src(3), DropReason::ReplayCacheFull)
    );
    assert!(d.peer(&node(3)).is_none());
    // Both remembered pairs are still replays: nothing was evicted.
    let later = t0 + Duration::from_secs(5);
    for (i, m) in msgs.iter().take(2).enumerate() {
        let from = src(10 + i as u8);
        assert_eq!(
            feed(&mut d, later, UNIX + 60, from, &m.bytes()),
            dropped(from, DropReason::Replayed)
        );
    }
    assert_eq!(d.counters().replay_cache_full, 1);
    assert_eq!(d.occupancy().replay_entries, 2);
    // Once they can no longer be fresh, there is room again.
    let mut m = Msg::new(node(3), 6);
    m.timestamp = UNIX + 61;
    assert!(matches!(
        feed(&mut d, later, UNIX + 61, src(3), &m.bytes()),
        Some(DiscoveryEvent::Discovered { .. })
    ));
}

// ---- rate limits --------------------------------------------------------------

#[test]
fn ten_messages_per_second_per_source_ip() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    for i in 0..10 {
        assert!(matches!(
            feed(&mut d, t0, UNIX, src(1), &Msg::new(node(i), 1).bytes()),
            Some(DiscoveryEvent::Discovered { .. })
        ));
    }
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &Msg::new(node(10), 1).bytes()),
        dropped(src(1), DropReason::SourceRateLimited)
    );
    // Another source is unaffected.
    assert!(matches!(
        feed(&mut d, t0, UNIX, src(2), &Msg::new(node(11), 1).bytes()),
        Some(DiscoveryEvent::Discovered { .. })
    ));
    // A tenth of a second later, one more from the first source.
    let t1 = t0 + Duration::from_millis(100);
    assert!(
        feed(&mut d, t1, UNIX, src(1), &Msg::new(node(12), 1).bytes())
            .is_some_and(|e| matches!(e, DiscoveryEvent::Discovered { .. }))
    );
    assert_eq!(
        feed(&mut d, t1, UNIX, src(1), &Msg::new(node(13), 1).bytes()),
        dropped(src(1), DropReason::SourceRateLimited)
    );
    assert_eq!(d.counters().source_rate_limited, 2);
}

#[test]
fn one_message_per_second_per_node_is_honoured() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let n = node(1);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &Msg::new(n, 1).bytes()),
        discovered(n, at(src(1), 9000))
    );
    let half = t0 + Duration::from_millis(999);
    let mut moved = Msg::new(n, 2);
    moved.port = 9001;
    assert_eq!(
        feed(&mut d, half, UNIX, src(1), &moved.bytes()),
        dropped(src(1), DropReason::NodeRateLimited)
    );
    // Not honoured: neither the address nor the last-seen time moved.
    let p = d.peer(&n).unwrap();
    assert_eq!((p.addr, p.last_seen), (at(src(1), 9000), t0));
    let t1 = t0 + Duration::from_secs(1);
    moved.challenge = 3;
    assert_eq!(
        feed(&mut d, t1, UNIX, src(1), &moved.bytes()),
        Some(DiscoveryEvent::AddressChanged {
            node: n,
            old: at(src(1), 9000),
            new: at(src(1), 9001)
        })
    );
    assert_eq!(d.counters().node_rate_limited, 1);
}

#[test]
fn the_node_rate_is_per_source_ip_and_a_new_address_starts_with_a_full_burst() {
    let t0 = Instant::now();
    // Addresses may move after 0.2 s of silence, well inside the 1 s the
    // node rate takes to come back.
    let mut d = machine(
        builder()
            .announce_interval(Duration::from_millis(100))
            .build()
            .unwrap(),
        t0,
    );
    let n = node(1);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &Msg::new(n, 1).bytes()),
        discovered(n, at(src(1), 9000))
    );
    let t_half = t0 + Duration::from_millis(500);
    // From the current address the budget is spent until t0 + 1 s ...
    assert_eq!(
        feed(&mut d, t_half, UNIX, src(1), &Msg::new(n, 2).bytes()),
        dropped(src(1), DropReason::NodeRateLimited)
    );
    // ... but an address the node has not been honoured from has its own.
    assert_eq!(
        feed(&mut d, t_half, UNIX, src(2), &Msg::new(n, 3).bytes()),
        Some(DiscoveryEvent::AddressChanged {
            node: n,
            old: at(src(1), 9000),
            new: at(src(2), 9000)
        })
    );
    // And now that one is the current address, spent until t_half + 1 s.
    assert_eq!(
        feed(
            &mut d,
            t_half + Duration::from_millis(100),
            UNIX,
            src(2),
            &Msg::new(n, 4).bytes()
        ),
        dropped(src(2), DropReason::NodeRateLimited)
    );
}

#[test]
fn the_source_table_is_bounded_and_fails_closed() {
    let t0 = Instant::now();
    let mut d = machine(builder().max_tracked_sources(2).build().unwrap(), t0);
    assert!(feed(&mut d, t0, UNIX, src(1), &Msg::new(node(1), 1).bytes()).is_some());
    assert!(feed(&mut d, t0, UNIX, src(2), &Msg::new(node(2), 1).bytes()).is_some());
    assert_eq!(
        feed(&mut d, t0, UNIX, src(3), &Msg::new(node(3), 1).bytes()),
        dropped(src(3), DropReason::SourceTableFull)
    );
    assert_eq!(d.occupancy().tracked_sources, 2);
    // A source is forgotten once its limiter is back to a full burst
    // (one emission interval, 100 ms, after its single message).
    let t1 = t0 + Duration::from_millis(100);
    assert!(matches!(
        feed(&mut d, t1, UNIX, src(3), &Msg::new(node(3), 2).bytes()),
        Some(DiscoveryEvent::Discovered { .. })
    ));
    assert_eq!(d.occupancy().tracked_sources, 1);
}

#[test]
fn the_peer_table_is_bounded_and_fails_closed() {
    let t0 = Instant::now();
    let mut d = machine(builder().max_peers(2).build().unwrap(), t0);
    assert!(feed(&mut d, t0, UNIX, src(1), &Msg::new(node(1), 1).bytes()).is_some());
    assert!(feed(&mut d, t0, UNIX, src(2), &Msg::new(node(2), 1).bytes()).is_some());
    assert_eq!(
        feed(&mut d, t0, UNIX, src(3), &Msg::new(node(3), 1).bytes()),
        dropped(src(3), DropReason::PeerTableFull)
    );
    // Known peers still refresh while the table is full.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        feed(&mut d, t1, UNIX, src(1), &Msg::new(node(1), 2).bytes()),
        None
    );
    assert_eq!(d.peer(&node(1)).unwrap().last_seen, t1);
    assert_eq!(d.occupancy().peers, 2);
}

// ---- peers: expiry, refresh, address changes ------------------------------------

#[test]
fn peers_expire_15_seconds_after_their_last_valid_message() {
    let t0 = Instant::now();
    let mut d = machine(
        builder()
            .announce_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
        t0,
    );
    let keys = ring();
    assert_eq!(transmits(&mut d, t0, UNIX, &keys).len(), 1);
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
    let n = node(1);
    assert!(feed(&mut d, t0, UNIX, src(1), &Msg::new(n, 1).bytes()).is_some());
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(15)));

    d.handle_timeout(t0 + Duration::from_secs(15) - Duration::from_nanos(1));
    assert!(drain(&mut d).is_empty());
    assert!(d.peer(&n).is_some());

    d.handle_timeout(t0 + Duration::from_secs(15));
    assert_eq!(
        drain(&mut d),
        vec![DiscoveryEvent::Expired {
            node: n,
            addr: at(src(1), 9000)
        }]
    );
    assert_eq!(d.peers().count(), 0);
    assert_eq!(d.counters().expired, 1);
    assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(3600)));
}

#[test]
fn a_valid_message_refreshes_the_peer() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let n = node(1);
    assert!(feed(&mut d, t0, UNIX, src(1), &Msg::new(n, 1).bytes()).is_some());
    let t10 = t0 + Duration::from_secs(10);
    let mut again = Msg::new(n, 2);
    again.timestamp = UNIX + 10;
    // A refresh from the same address says nothing.
    assert_eq!(feed(&mut d, t10, UNIX + 10, src(1), &again.bytes()), None);
    // Invalid messages do not refresh.
    let t12 = t0 + Duration::from_secs(12);
    assert!(feed(&mut d, t12, UNIX + 12, src(1), &Msg::new(n, 3).tampered()).is_some());
    assert_eq!(d.peer(&n).unwrap().last_seen, t10);

    d.handle_timeout(t0 + Duration::from_secs(15));
    assert!(drain(&mut d).is_empty());
    d.handle_timeout(t0 + Duration::from_secs(25));
    assert_eq!(
        drain(&mut d),
        vec![DiscoveryEvent::Expired {
            node: n,
            addr: at(src(1), 9000)
        }]
    );
}

#[test]
fn an_expired_peer_is_reported_before_it_is_rediscovered() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let n = node(1);
    assert!(feed(&mut d, t0, UNIX, src(1), &Msg::new(n, 1).bytes()).is_some());
    // No handle_timeout in between: the datagram itself brings expiry up to date.
    let t20 = t0 + Duration::from_secs(20);
    let mut back = Msg::new(n, 2);
    back.timestamp = UNIX + 20;
    d.handle_datagram(t20, ms(UNIX + 20), src(2), &back.bytes(), &ring());
    assert_eq!(
        drain(&mut d),
        vec![
            DiscoveryEvent::Expired {
                node: n,
                addr: at(src(1), 9000)
            },
            DiscoveryEvent::Discovered {
                node: n,
                addr: at(src(2), 9000),
                key: KeyId(0),
                version: WireVersion::V1,
            },
        ]
    );
}

#[test]
fn the_address_changes_only_on_a_message_that_passed_every_check() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let n = node(1);
    let first = Msg::new(n, 1);
    assert!(feed(&mut d, t0, UNIX, src(1), &first.bytes()).is_some());
    let home = at(src(1), 9000);
    let t2 = t0 + Duration::from_secs(2);

    let mut forged = Msg::new(n, 2);
    forged.port = 6666;
    let mut wrong_community = forged.clone();
    wrong_community.community = "elsewhere";
    let mut stale = forged.clone();
    stale.timestamp = UNIX - 61;
    let mut other_key = forged.clone();
    other_key.key = OTHER_KEY;
    for bytes in [
        forged.tampered(),
        wrong_community.bytes(),
        stale.bytes(),
        other_key.bytes(),
        first.bytes(), // replayed from the attacker's address
    ] {
        let ev = feed(&mut d, t2, UNIX, src(66), &bytes);
        assert!(matches!(ev, Some(DiscoveryEvent::Dropped { .. })), "{ev:?}");
        assert_eq!(d.peer(&n).unwrap().addr, home);
    }
    // A valid message with a new port from the same IP moves it.
    let mut moved = Msg::new(n, 3);
    moved.port = 9100;
    assert_eq!(
        feed(&mut d, t2, UNIX, src(1), &moved.bytes()),
        Some(DiscoveryEvent::AddressChanged {
            node: n,
            old: home,
            new: at(src(1), 9100)
        })
    );
}

#[test]
fn ipv4_mapped_sources_are_recorded_as_ipv4() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let mapped: SocketAddr = "[::ffff:10.0.0.1]:40000".parse().unwrap();
    assert_eq!(
        feed(&mut d, t0, UNIX, mapped, &Msg::new(node(1), 1).bytes()),
        discovered(node(1), "10.0.0.1:9000".parse().unwrap())
    );
}

// ---- attacks on unicast announcements -----------------------------------------

/// The v1 half of each of `rounds` rounds of a sender announcing to
/// `targets`, round `i` at `t0 + 3 s * i` and `UNIX + 3 * i`.
fn v1_rounds(
    sender: Uuid,
    targets: Vec<SocketAddr>,
    t0: Instant,
    rounds: u64,
) -> Vec<Vec<(SocketAddr, [u8; 50])>> {
    let keys = ring();
    let config = builder().unicast_targets(targets).build().unwrap();
    let mut s = Discovery::new(config, sender, 9000, [9; 32], t0);
    (0..rounds)
        .map(|i| {
            let now = t0 + Duration::from_secs(3 * i);
            std::iter::from_fn(|| s.poll_transmit(now, ms(UNIX + 3 * i), &keys))
                .filter_map(|t| {
                    let a = Announcement::decode(&t.datagram)?;
                    Some((t.to, a.encode()))
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_v1_round_is_one_datagram_with_the_same_bytes_for_every_target() {
    let t0 = Instant::now();
    let targets: Vec<SocketAddr> = (1..=5).map(src).collect();
    let rounds = v1_rounds(node(1), targets.clone(), t0, 3);
    for round in &rounds {
        assert_eq!(round.iter().map(|(to, _)| *to).collect::<Vec<_>>(), targets);
        assert!(round.iter().all(|(_, b)| b == &round[0].1), "{round:?}");
    }
    // A fresh challenge per round, not per destination.
    assert_ne!(rounds[0][0].1, rounds[1][0].1);
    assert_ne!(rounds[1][0].1, rounds[2][0].1);
}

/// The attack: the victim knows the peer at its own address; 0.2 s before
/// each of the peer's rounds, an attacker relays from its own address a
/// copy the victim has not seen. With this build's sender that copy can
/// only be one the victim got already (the same bytes went to everyone);
/// an older sender that signed a copy per destination hands the attacker
/// copies the victim never saw. Either way the peer must stay where it is
/// and every one of its own announcements must be accepted.
fn relay_before_each_round(fresh_copies_per_destination: bool) {
    let t0 = Instant::now();
    let peer = node(1);
    let (peer_udp, victim_udp, attacker_udp) = (src(1), src(2), src(66));
    const ROUNDS: u64 = 20;
    let rounds = v1_rounds(peer, vec![attacker_udp, victim_udp], t0, ROUNDS);
    let mut d = machine(v1_config(), t0);
    let home = at(peer_udp, 9000);
    let mut expected_sticky = 0;
    for (i, round) in rounds.iter().enumerate() {
        let i = i as u64;
        let now = t0 + Duration::from_secs(3 * i);
        let unix = UNIX + 3 * i;
        let (to_victim, to_attacker) = if fresh_copies_per_destination {
            // An older sender: its own challenge for each destination.
            let mut m = Msg::new(peer, 1_000_000 + 2 * i as u32);
            m.timestamp = unix;
            let victim_copy = m.bytes();
            m.challenge += 1;
            (victim_copy, m.bytes())
        } else {
            let find = |to| round.iter().find(|(t, _)| *t == to).unwrap().1;
            (find(victim_udp), find(attacker_udp))
        };
        // The peer's own copy of this round.
        let ev = feed(&mut d, now, unix, peer_udp, &to_victim);
        if i == 0 {
            assert_eq!(ev, discovered(peer, home));
        } else {
            assert_eq!(ev, None, "round {i}: the peer's own copy was refused");
        }
        // The relay, 0.2 s before the next round, of the copy meant for the
        // attacker.
        let before_next = now + Duration::from_millis(2800);
        let ev = feed(&mut d, before_next, unix + 2, attacker_udp, &to_attacker);
        let want = if fresh_copies_per_destination {
            expected_sticky += 1;
            DropReason::AddressSticky
        } else {
            DropReason::Replayed
        };
        assert_eq!(ev, dropped(attacker_udp, want), "round {i}");
        let p = d.peer(&peer).unwrap();
        assert_eq!((p.addr, p.last_seen), (home, now), "round {i}");
    }
    let c = d.counters();
    assert_eq!(c.accepted, ROUNDS);
    assert_eq!(c.node_rate_limited, 0);
    assert_eq!(c.address_sticky, expected_sticky);
    assert_eq!(c.expired, 0);
}

#[test]
fn a_copy_relayed_before_the_next_round_is_a_replay_with_one_datagram_per_round() {
    relay_before_each_round(false);
}

#[test]
fn a_fresh_copy_relayed_before_the_next_round_moves_nothing_and_starves_nothing() {
    relay_before_each_round(true);
}

#[test]
fn a_relayed_copy_that_outruns_the_real_one_leaves_the_real_one_new() {
    let t0 = Instant::now();
    let peer = node(1);
    let (peer_udp, victim_udp, attacker_udp) = (src(1), src(2), src(66));
    let rounds = v1_rounds(peer, vec![attacker_udp, victim_udp], t0, 10);
    let mut d = machine(v1_config(), t0);
    let home = at(peer_udp, 9000);
    for (i, round) in rounds.iter().enumerate() {
        let i = i as u64;
        let now = t0 + Duration::from_secs(3 * i);
        let unix = UNIX + 3 * i;
        let copy = round[0].1;
        if i > 0 {
            // The attacker is first on the peer's list and relays at once:
            // its copy reaches the victim before the peer's own.
            assert_eq!(
                feed(&mut d, now, unix, attacker_udp, &copy),
                dropped(attacker_udp, DropReason::AddressSticky),
                "round {i}"
            );
        }
        let ev = feed(&mut d, now, unix, peer_udp, &copy);
        if i == 0 {
            assert_eq!(ev, discovered(peer, home));
        } else {
            assert_eq!(ev, None, "round {i}: the real copy was refused");
        }
        assert_eq!(d.peer(&peer).unwrap().last_seen, now);
    }
    assert_eq!(d.counters().accepted, 10);
}

#[test]
fn a_v1_peer_moves_only_after_two_silent_intervals() {
    let t0 = Instant::now();
    let mut d = machine(v1_config(), t0);
    let n = node(1);
    let home = at(src(1), 9000);
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &Msg::new(n, 1).bytes()),
        discovered(n, home)
    );
    let almost = t0 + Duration::from_secs(6) - Duration::from_millis(1);
    assert_eq!(
        feed(&mut d, almost, UNIX + 5, src(2), &Msg::new(n, 2).bytes()),
        dropped(src(2), DropReason::AddressSticky)
    );
    // The sticky drop did not remember the pair: the same copy moves the
    // peer once the home address has been silent for two intervals.
    let t6 = t0 + Duration::from_secs(6);
    assert_eq!(
        feed(&mut d, t6, UNIX + 6, src(2), &Msg::new(n, 2).bytes()),
        Some(DiscoveryEvent::AddressChanged {
            node: n,
            old: home,
            new: at(src(2), 9000)
        })
    );
    assert_eq!(
        feed(&mut d, t6, UNIX + 6, src(1), &Msg::new(n, 3).bytes()),
        dropped(src(1), DropReason::AddressSticky)
    );
}

#[test]
fn a_flood_of_one_nodes_fresh_copies_does_not_make_other_nodes_drop() {
    let t0 = Instant::now();
    // The default proportions scaled down so the test stays fast: a cache
    // of 4,096 pairs, 64 of them per node.
    let config = builder()
        .replay_capacity(4096)
        .replay_share_per_node(64)
        .build()
        .unwrap();
    let mut d = machine(config, t0);
    let flooded = node(0xf1);
    let honest = [node(1), node(2), node(3)];
    let attacker = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 7)), 40_000);
    let mut challenge = 0u32;
    // 30 rounds (90 s, longer than a pair is kept), each: 300 fresh copies
    // of one node (half from the attacker's address, half from as many
    // others), then one announcement of every honest node from its own.
    for round in 0..30u64 {
        let now = t0 + Duration::from_secs(3 * round);
        let unix = UNIX + 3 * round;
        for k in 0..300u32 {
            challenge += 1;
            let mut m = Msg::new(flooded, challenge);
            m.timestamp = unix;
            let from = if k % 2 == 0 {
                attacker
            } else {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 1, (k % 250) as u8)), 40_000)
            };
            d.handle_datagram(now, ms(unix), from, &m.bytes(), &ring());
        }
        for (j, n) in honest.iter().enumerate() {
            let mut m = Msg::new(*n, 7_000_000 + round as u32);
            m.timestamp = unix;
            d.handle_datagram(now, ms(unix), src(j as u8 + 1), &m.bytes(), &ring());
        }
        for e in drain(&mut d) {
            match e {
                DiscoveryEvent::Dropped { src: from, reason } => assert!(
                    from.ip().to_string().starts_with("10.1."),
                    "round {round}: an honest announcement was dropped: {reason} from {from}"
                ),
                DiscoveryEvent::Discovered { node, .. } if round == 0 => {
                    assert!(node == flooded || honest.contains(&node));
                }
                DiscoveryEvent::Discovered { node, .. }
                | DiscoveryEvent::AddressChanged { node, .. }
                | DiscoveryEvent::Expired { node, .. } => {
                    assert_eq!(node, flooded, "round {round}: {e:?}");
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        // At most a share for the flooded node, and the honest nodes' own
        // pairs (one per round, each kept 61 s).
        assert!(d.occupancy().replay_entries <= 64 + 3 * 21, "round {round}");
    }
    let c = d.counters();
    // The flooded node's share filled; the whole cache never did.
    assert!(c.replay_share_full > 0);
    assert_eq!(c.replay_cache_full, 0);
    for n in honest {
        assert_eq!(d.peer(&n).unwrap().last_seen, t0 + Duration::from_secs(87));
    }
}

#[test]
fn the_per_node_share_of_the_replay_cache_at_its_boundary() {
    let t0 = Instant::now();
    let config = builder()
        .replay_capacity(100)
        .replay_share_per_node(3)
        .build()
        .unwrap();
    let mut d = machine(config, t0);
    let (x, y) = (node(1), node(2));
    // Three pairs of x fit, whatever happens to the messages after they are
    // remembered (the second and third are over x's rate).
    assert_eq!(
        feed(&mut d, t0, UNIX, src(1), &Msg::new(x, 1).bytes()),
        discovered(x, at(src(1), 9000))
    );
    for ch in [2, 3] {
        assert_eq!(
            feed(&mut d, t0, UNIX, src(1), &Msg::new(x, ch).bytes()),
            dropped(src(1), DropReason::NodeRateLimited)
        );
    }
    assert_eq!(d.occupancy().replay_entries, 3);
    // The fourth does not, even a second later when x's rate would allow it.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(
        feed(&mut d, t1, UNIX + 1, src(1), &Msg::new(x, 4).bytes()),
        dropped(src(1), DropReason::ReplayShareFull)
    );
    // A remembered pair is still a replay, not a full share.
    assert_eq!(
        feed(&mut d, t1, UNIX + 1, src(1), &Msg::new(x, 1).bytes()),
        dropped(src(1), DropReason::Replayed)
    );
    // Another node has its own room.
    assert_eq!(
        feed(&mut d, t1, UNIX + 1, src(2), &Msg::new(y, 1).bytes()),
        discovered(y, at(src(2), 9000))
    );
    // x's pairs (timestamp UNIX) are kept through UNIX + 60 and forgotten at
    // UNIX + 61: its share is full until then and has room after.
    for (secs, want) in [(60, Some(DropReason::ReplayShareFull)), (61, None)] {
        let now = t0 + Duration::from_secs(secs);
        d.handle_timeout(now);
        drain(&mut d);
        let mut m = Msg::new(x, 5);
        m.timestamp = UNIX + secs;
        let ev = feed(&mut d, now, UNIX + secs, src(1), &m.bytes());
        match want {
            Some(reason) => assert_eq!(ev, dropped(src(1), reason)),
            None => assert_eq!(ev, discovered(x, at(src(1), 9000))),
        }
    }
    assert_eq!(d.counters().replay_share_full, 2);
}

#[test]
fn a_full_replay_cache_is_reported_before_a_full_share() {
    let t0 = Instant::now();
    let config = builder()
        .replay_capacity(4)
        .replay_share_per_node(3)
        .build()
        .unwrap();
    let mut d = machine(config, t0);
    let (x, y) = (node(1), node(2));
    for ch in 1..=3 {
        feed(&mut d, t0, UNIX, src(1), &Msg::new(x, ch).bytes());
    }
    assert!(feed(&mut d, t0, UNIX, src(2), &Msg::new(y, 1).bytes()).is_some());
    assert_eq!(d.occupancy().replay_entries, 4);
    let t1 = t0 + Duration::from_secs(1);
    for (from, n) in [(src(1), x), (src(2), y)] {
        assert_eq!(
            feed(&mut d, t1, UNIX + 1, from, &Msg::new(n, 9).bytes()),
            dropped(from, DropReason::ReplayCacheFull)
        );
    }
}

// ---- keys -----------------------------------------------------------------------

#[test]
fn a_previous_key_is_accepted_until_its_deadline_and_events_name_the_key() {
    let t0 = Instant::now();
    let mut keys = ring();
    let new_id = keys.rotate(key(OTHER_KEY), t0, Duration::from_secs(30));
    assert_eq!(new_id, KeyId(1));
    let mut d = machine(v1_config(), t0);

    let old_signed = Msg::new(node(1), 1);
    let mut new_signed = Msg::new(node(2), 1);
    new_signed.key = OTHER_KEY;
    let t29 = t0 + Duration::from_secs(29);
    d.handle_datagram(t29, ms(UNIX), src(1), &old_signed.bytes(), &keys);
    d.handle_datagram(t29, ms(UNIX), src(2), &new_signed.bytes(), &keys);
    assert_eq!(
        drain(&mut d),
        vec![
            DiscoveryEvent::Discovered {
                node: node(1),
                addr: at(src(1), 9000),
                key: KeyId(0),
                version: WireVersion::V1,
            },
            DiscoveryEvent::Discovered {
                node: node(2),
                addr: at(src(2), 9000),
                key: KeyId(1),
                version: WireVersion::V1,
            },
        ]
    );
    assert_eq!(d.peer(&node(2)).unwrap().key, KeyId(1));

    // At the deadline the old key no longer verifies.
    let t30 = t0 + Duration::from_secs(30);
    let late = Msg::new(node(3), 1);
    d.handle_datagram(t30, ms(UNIX), src(3), &late.bytes(), &keys);
    assert_eq!(
        drain(&mut d),
        vec![DiscoveryEvent::Dropped {
            src: src(3),
            reason: DropReason::BadMac
        }]
    );

    // Our own announcements are signed with the current key.
    let sent = transmits(&mut d, t30, UNIX, &keys);
    assert_eq!(sent.len(), 1);
    assert!(verify_announcement(&key(OTHER_KEY), &sent[0].1));
    assert!(!verify_announcement(&key(KEY), &sent[0].1));
}

// ---- announcing -------------------------------------------------------------------

#[test]
fn announcements_are_broadcast_every_interval_without_unicast_targets() {
    let t0 = Instant::now();
    let keys = ring();
    let mut d = machine(v1_config(), t0);
    assert_eq!(d.poll_timeout(), Some(t0));
    let sent = transmits(&mut d, t0, UNIX, &keys);
    assert_eq!(sent.len(), 1);
    let (to, a) = sent[0];
    assert_eq!(to, "255.255.255.255:9999".parse().unwrap());
    assert_eq!(a.community_hash, community_hash(COMMUNITY));
    assert_eq!(
        (a.node_id, a.port, u64::from(a.timestamp)),
        (ME, 9000, UNIX)
    );
    assert!(verify_announcement(&key(KEY), &a));

    let t3 = t0 + Duration::from_secs(3);
    assert_eq!(d.poll_timeout(), Some(t3));
    assert!(transmits(&mut d, t3 - Duration::from_millis(1), UNIX + 2, &keys).is_empty());
    d.set_tcp_port(9555);
    let next = transmits(&mut d, t3, UNIX + 3, &keys);
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].1.port, u64::from(next[0].1.timestamp)),
        (9555, UNIX + 3)
    );
    assert_ne!(
        next[0].1.challenge, a.challenge,
        "fresh challenge per announcement"
    );
    // Each round is a v2 and a v1 announcement.
    assert_eq!(d.counters().sent, 4);
}

#[test]
fn unicast_targets_replace_the_broadcast() {
    let t0 = Instant::now();
    let keys = ring();
    let targets: Vec<SocketAddr> = vec![
        "192.0.2.1:9999".parse().unwrap(),
        "[2001:db8::1]:7777".parse().unwrap(),
    ];
    let config = builder().unicast_targets(targets.clone()).build().unwrap();
    let mut d = machine(config, t0);
    let sent = transmits(&mut d, t0, UNIX, &keys);
    assert_eq!(sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(), targets);
    // One v1 announcement per round, the same bytes to every destination:
    // a copy one receiver relays to another is a replay there.
    assert_eq!(sent[0].1, sent[1].1);
    assert!(sent.iter().all(|(_, a)| verify_announcement(&key(KEY), a)));
    let t3 = t0 + Duration::from_secs(3);
    assert_eq!(d.poll_timeout(), Some(t3));
    assert_eq!(transmits(&mut d, t3, UNIX + 3, &keys).len(), 2);
}

#[test]
fn a_fixed_seed_gives_byte_identical_announcements() {
    let t0 = Instant::now();
    let keys = ring();
    let run = |seed: [u8; 32]| {
        let mut d = Discovery::new(v1_config(), ME, 9000, seed, t0);
        (0..4u32)
            .flat_map(|i| {
                let now = t0 + Duration::from_secs(3 * u64::from(i));
                std::iter::from_fn(|| d.poll_transmit(now, ms(UNIX + u64::from(i)), &keys))
                    .map(|t| t.datagram)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let a = run(SEED);
    // Four rounds of a v2 and a v1 announcement each.
    assert_eq!(a.len(), 8);
    assert_eq!(a, run(SEED));
    assert_ne!(a, run([43; 32]));
}

#[test]
fn our_own_echo_is_dropped() {
    let t0 = Instant::now();
    let keys = ring();
    let mut d = machine(v1_config(), t0);
    let t = d.poll_transmit(t0, ms(UNIX), &keys).unwrap();
    d.handle_datagram(t0, ms(UNIX), src(1), &t.datagram, &keys);
    assert_eq!(
        drain(&mut d),
        vec![DiscoveryEvent::Dropped {
            src: src(1),
            reason: DropReason::OwnNode
        }]
    );
}

#[test]
fn two_machines_discover_each_other() {
    let t0 = Instant::now();
    let keys = ring();
    let (a_id, b_id) = (node(1), node(2));
    let mut a = Discovery::new(v1_config(), a_id, 9001, [1; 32], t0);
    let mut b = Discovery::new(v1_config(), b_id, 9002, [2; 32], t0);
    for t in std::iter::from_fn(|| a.poll_transmit(t0, ms(UNIX), &keys)) {
        b.handle_datagram(t0, ms(UNIX), src(1), &t.datagram, &keys);
    }
    for t in std::iter::from_fn(|| b.poll_transmit(t0, ms(UNIX), &keys)) {
        a.handle_datagram(t0, ms(UNIX), src(2), &t.datagram, &keys);
    }
    assert_eq!(
        drain(&mut b),
        vec![DiscoveryEvent::Discovered {
            node: a_id,
            addr: at(src(1), 9001),
            key: KeyId(0),
            // The v2 announcement of a round goes first; the v1 one after
            // it refreshes the peer.
            version: WireVersion::V2,
        }]
    );
    assert_eq!(
        drain(&mut a),
        vec![DiscoveryEvent::Discovered {
            node: b_id,
            addr: at(src(2), 9002),
            key: KeyId(0),
            version: WireVersion::V2,
        }]
    );
}

#[test]
fn the_event_queue_is_bounded() {
    let t0 = Instant::now();
    let mut d = machine(builder().max_queued_events(2).build().unwrap(), t0);
    for _ in 0..5 {
        d.handle_datagram(t0, ms(UNIX), src(1), b"short", &ring());
    }
    assert_eq!(d.occupancy().queued_events, 2);
    assert_eq!(drain(&mut d).len(), 2);
    assert_eq!(d.counters().events_lost, 3);
    assert_eq!(d.counters().wrong_length, 5);
}

// ---- no panic, bounded memory ----------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Raw {
        bytes: Vec<u8>,
        ip: u8,
    },
    Signed {
        node: u8,
        challenge: u8,
        port: u16,
        skew: i16,
        ip: u8,
        v6: bool,
    },
    Advance {
        millis: u32,
        unix: i8,
    },
    Timeout,
    Transmit,
    Drain,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (proptest::collection::vec(any::<u8>(), 0..80), any::<u8>())
            .prop_map(|(bytes, ip)| Op::Raw { bytes, ip }),
        (
            0u8..12,
            0u8..6,
            any::<u16>(),
            -70i16..70,
            0u8..8,
            any::<bool>()
        )
            .prop_map(|(node, challenge, port, skew, ip, v6)| Op::Signed {
                node,
                challenge,
                port,
                skew,
                ip,
                v6
            }),
        (0u32..20_000, -3i8..8).prop_map(|(millis, unix)| Op::Advance { millis, unix }),
        Just(Op::Timeout),
        Just(Op::Transmit),
        Just(Op::Drain),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_traffic_never_panics_and_tables_stay_bounded(ops in proptest::collection::vec(op(), 1..120)) {
        let t0 = Instant::now();
        let keys = ring();
        let config = builder()
            .max_peers(3)
            .max_tracked_sources(4)
            .replay_capacity(5)
            .max_queued_events(6)
            .unicast_targets(vec!["192.0.2.1:9999".parse().unwrap()])
            .build()
            .unwrap();
        let mut d = Discovery::new(config, ME, 9000, SEED, t0);
        let (mut now, mut unix) = (t0, UNIX);
        for op in ops {
            match op {
                Op::Raw { bytes, ip } => d.handle_datagram(now, ms(unix), src(ip), &bytes, &keys),
                Op::Signed { node: n, challenge, port, skew, ip, v6 } => {
                    let mut m = Msg::new(node(u128::from(n)), u32::from(challenge));
                    m.port = port;
                    m.timestamp = unix.saturating_add_signed(i64::from(skew));
                    let from = if v6 {
                        SocketAddr::new(IpAddr::V6(Ipv4Addr::new(10, 0, 0, ip).to_ipv6_mapped()), 1)
                    } else {
                        src(ip)
                    };
                    d.handle_datagram(now, ms(unix), from, &m.bytes(), &keys);
                }
                Op::Advance { millis, unix: du } => {
                    now += Duration::from_millis(u64::from(millis));
                    unix = unix.saturating_add_signed(i64::from(du));
                }
                Op::Timeout => d.handle_timeout(now),
                Op::Transmit => {
                    let sent: Vec<_> = std::iter::from_fn(|| d.poll_transmit(now, ms(unix), &keys)).collect();
                    prop_assert!(sent.len() <= 2);
                }
                Op::Drain => { drain(&mut d); }
            }
            let o = d.occupancy();
            prop_assert!(o.peers <= 3, "{o:?}");
            prop_assert!(o.tracked_sources <= 4, "{o:?}");
            prop_assert!(o.replay_entries <= 5, "{o:?}");
            prop_assert!(o.queued_events <= 6, "{o:?}");
            prop_assert_eq!(o.peers, d.peers().count());
            // Every recorded peer came from one of the test's sources.
            for p in d.peers() {
                prop_assert!(matches!(p.addr.ip(), IpAddr::V4(v4) if v4.octets()[..3] == [10, 0, 0]));
            }
            let c = d.counters();
            prop_assert_eq!(c.received, c.accepted + c.dropped_total());
        }
    }

    #[test]
    fn arbitrary_bytes_are_dropped_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let t0 = Instant::now();
        let mut d = machine(v1_config(), t0);
        d.handle_datagram(t0, ms(UNIX), src(1), &bytes, &ring());
        prop_assert_eq!(d.counters().accepted, 0);
        prop_assert_eq!(d.occupancy().replay_entries, 0);
        prop_assert_eq!(d.occupancy().tracked_sources, 0);
    }
}
