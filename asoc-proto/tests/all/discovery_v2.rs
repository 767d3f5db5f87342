//! Discovery v2 against WIRE-v2.md §5 and the discovery rules of §6, on a
//! virtual clock: the 52-byte announcement and its vectors, one round with
//! the same bytes to every destination, per-node monotonic timestamps,
//! sticky addresses, and the version each peer is dialed with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use asoc_proto::auth::{
    community_hash, sign_announcement, sign_announcement_v2, verify_announcement_v2, ApiKey, KeyId,
    KeyRing,
};
use asoc_proto::discovery::{
    Discovery, DiscoveryConfig, DiscoveryEvent, DiscoveryReplayState, DropReason, V1ReplayEntry,
};
use asoc_proto::node::{Node, NodeConfig, NodeEvent};
use asoc_proto::v2::{derive_discovery_key, WireVersion};
use asoc_proto::wire::{Announcement, AnnouncementV2, ANNOUNCEMENT_V2_LEN};
use proptest::prelude::*;
use uuid::Uuid;

use crate::common::v2_section;

const COMMUNITY: &str = "test-cluster";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";
/// The receivers' wall clock, unix milliseconds.
const NOW_MS: u64 = 1_800_000_000_123;
const ME: Uuid = Uuid::from_u128(0x1111);
const SECOND: Duration = Duration::from_secs(1);

fn key(s: &str) -> ApiKey {
    ApiKey::new(s).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new(key(KEY))
}

fn node(n: u128) -> Uuid {
    Uuid::from_u128(0xabcd_0000 + n)
}

fn src(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), 40_000)
}

fn at(from: SocketAddr, port: u16) -> SocketAddr {
    SocketAddr::new(from.ip(), port)
}

fn v2_machine(t0: Instant) -> Discovery {
    Discovery::new(DiscoveryConfig::new(COMMUNITY), ME, 9000, [42; 32], t0)
}

fn v1_machine(t0: Instant) -> Discovery {
    let config = DiscoveryConfig::builder(COMMUNITY)
        .allow_v1(true)
        .build()
        .unwrap();
    Discovery::new(config, ME, 9000, [42; 32], t0)
}

/// A v2 announcement; every field chosen by the test.
#[derive(Clone, Copy)]
struct Msg {
    node: Uuid,
    port: u16,
    unix_ms: u64,
    flags: u8,
    key: &'static str,
}

impl Msg {
    fn new(node: Uuid, unix_ms: u64) -> Self {
        Self {
            node,
            port: 9000,
            unix_ms,
            flags: 0,
            key: KEY,
        }
    }

    fn bytes(&self) -> [u8; ANNOUNCEMENT_V2_LEN] {
        let unsigned = AnnouncementV2 {
            community_hash: community_hash(COMMUNITY),
            node_id: self.node,
            tcp_port: self.port,
            unix_ms: self.unix_ms,
            flags: self.flags,
            mac: [0; 16],
        };
        sign_announcement_v2(&derive_discovery_key(&key(self.key)), unsigned).encode()
    }
}

/// A signed v1 announcement of `node` at `unix_secs`.
fn v1_bytes(node: Uuid, unix_secs: u32, challenge: u32) -> [u8; 50] {
    let unsigned = Announcement {
        community_hash: community_hash(COMMUNITY),
        node_id: node,
        port: 9000,
        timestamp: unix_secs,
        challenge,
        mac: [0; 16],
    };
    sign_announcement(&key(KEY), unsigned).encode()
}

fn drain(d: &mut Discovery) -> Vec<DiscoveryEvent> {
    std::iter::from_fn(|| d.poll_event()).collect()
}

/// Feeds one datagram at the receivers' clock and returns the single event
/// it caused, if any.
fn feed(d: &mut Discovery, now: Instant, from: SocketAddr, bytes: &[u8]) -> Option<DiscoveryEvent> {
    feed_at(d, now, NOW_MS, from, bytes)
}

fn feed_at(
    d: &mut Discovery,
    now: Instant,
    unix_ms: u64,
    from: SocketAddr,
    bytes: &[u8],
) -> Option<DiscoveryEvent> {
    d.handle_datagram(now, unix_ms, from, bytes, &ring());
    let mut events = drain(d);
    assert!(events.len() <= 1, "{events:?}");
    events.pop()
}

fn dropped(from: SocketAddr, reason: DropReason) -> Option<DiscoveryEvent> {
    Some(DiscoveryEvent::Dropped { src: from, reason })
}

fn discovered(n: Uuid, addr: SocketAddr, version: WireVersion) -> Option<DiscoveryEvent> {
    Some(DiscoveryEvent::Discovered {
        node: n,
        addr,
        key: KeyId(0),
        version,
    })
}

fn hex_field(v: &serde_json::Value, name: &str) -> Vec<u8> {
    hex::decode(v[name].as_str().unwrap()).unwrap()
}

// ---- the vectors --------------------------------------------------------------

#[test]
fn every_vector_is_reproduced_accepted_and_refused_after_any_bit_flip() {
    let t0 = Instant::now();
    for v in v2_section("discovery") {
        let api_key = ApiKey::new_insecure(v["api_key"].as_str().unwrap().as_bytes()).unwrap();
        let community = v["community"].as_str().unwrap();
        let node_id = Uuid::from_slice(&hex_field(&v, "node_id")).unwrap();
        let port = u16::try_from(v["tcp_port"].as_u64().unwrap()).unwrap();
        let unix_ms = v["unix_ms"].as_u64().unwrap();
        let flags = u8::try_from(v["flags"].as_u64().unwrap()).unwrap();
        let datagram = hex_field(&v, "datagram");
        let discovery_key = derive_discovery_key(&api_key);

        // Encoding gives the vector's bytes.
        let signed = sign_announcement_v2(
            &discovery_key,
            AnnouncementV2 {
                community_hash: community_hash(community),
                node_id,
                tcp_port: port,
                unix_ms,
                flags,
                mac: [0; 16],
            },
        );
        assert_eq!(
            signed.encode().as_slice(),
            datagram.as_slice(),
            "{community:?}"
        );
        // Decoding gives the fields back, and the MAC verifies.
        let decoded = AnnouncementV2::decode(&datagram).unwrap();
        assert_eq!(decoded, signed);
        assert!(verify_announcement_v2(&discovery_key, &decoded));
        assert_eq!(decoded.accepts_v1(), flags & 1 == 1);

        // A machine with that key and community refuses every one-bit
        // change, each for the first check it breaks, then accepts the
        // vector itself.
        let keys = KeyRing::new(api_key);
        let mut d = Discovery::new(DiscoveryConfig::new(community), ME, 9000, [1; 32], t0);
        let from: SocketAddr = "192.0.2.10:5555".parse().unwrap();
        for bit in 0..datagram.len() * 8 {
            let mut flipped = datagram.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            if let Some(a) = AnnouncementV2::decode(&flipped) {
                assert!(!verify_announcement_v2(&discovery_key, &a), "bit {bit}");
            }
            d.handle_datagram(t0, unix_ms, from, &flipped, &keys);
            let reason = match bit / 8 {
                0 => DropReason::WrongLength,
                1..=8 => DropReason::OtherCommunity,
                _ => DropReason::BadMac,
            };
            assert_eq!(
                drain(&mut d),
                vec![DiscoveryEvent::Dropped { src: from, reason }],
                "{community:?} bit {bit}"
            );
        }
        assert_eq!(d.counters().accepted, 0);
        d.handle_datagram(t0, unix_ms, from, &datagram, &keys);
        let addr = SocketAddr::new(from.ip(), port);
        assert_eq!(
            drain(&mut d),
            vec![DiscoveryEvent::Discovered {
                node: node_id,
                addr,
                key: KeyId(0),
                version: WireVersion::V2,
            }]
        );
        let peer = d.peer(&node_id).unwrap();
        assert_eq!(
            (peer.addr, peer.version, peer.accepts_v1),
            (addr, WireVersion::V2, flags & 1 == 1)
        );
    }
}

// ---- validation ------------------------------------------------------------------

#[test]
fn the_checks_run_in_order_and_each_drop_has_its_reason() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    let good = Msg::new(node(1), NOW_MS);
    let mut bad_version = good.bytes();
    bad_version[0] = 3;
    let mut other_community = good.bytes();
    other_community[1] ^= 0xff;
    let mut wrong_key = good;
    wrong_key.key = OTHER_KEY;
    let own = Msg::new(ME, NOW_MS);
    let mut stale = good;
    stale.unix_ms = NOW_MS - 61_000;
    let mut future = good;
    future.unix_ms = NOW_MS + 61_000;
    let cases: [(&[u8], DropReason); 8] = [
        (&good.bytes()[..51], DropReason::WrongLength),
        (
            &[good.bytes().as_slice(), &[0]].concat(),
            DropReason::WrongLength,
        ),
        (&bad_version, DropReason::WrongLength),
        (&other_community, DropReason::OtherCommunity),
        (&wrong_key.bytes(), DropReason::BadMac),
        (&own.bytes(), DropReason::OwnNode),
        (&stale.bytes(), DropReason::Stale),
        (&future.bytes(), DropReason::FutureDated),
    ];
    for (bytes, reason) in cases {
        assert_eq!(feed(&mut d, t0, src(1), bytes), dropped(src(1), reason));
    }
    for (_, reason) in cases {
        let expected = if reason == DropReason::WrongLength {
            3
        } else {
            1
        };
        assert_eq!(d.counters().dropped(reason), expected, "{reason}");
    }
    assert_eq!(d.peers().count(), 0);
    assert_eq!(
        feed(&mut d, t0, src(1), &good.bytes()),
        discovered(node(1), at(src(1), 9000), WireVersion::V2)
    );
    assert_eq!(
        feed(&mut d, t0, src(1), &good.bytes()),
        dropped(src(1), DropReason::Replayed)
    );
    let c = d.counters();
    assert_eq!((c.received, c.accepted, c.dropped_total()), (10, 1, 9));
    // v2 keeps no per-message cache.
    assert_eq!(d.occupancy().replay_entries, 0);
}

#[test]
fn the_window_is_60_seconds_inclusive_in_both_directions_to_the_millisecond() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    let cases = [
        (1, NOW_MS - 60_000, None),
        (2, NOW_MS - 60_001, Some(DropReason::Stale)),
        (3, NOW_MS + 60_000, None),
        (4, NOW_MS + 60_001, Some(DropReason::FutureDated)),
    ];
    for (n, unix_ms, verdict) in cases {
        let ev = feed(
            &mut d,
            t0,
            src(n),
            &Msg::new(node(u128::from(n)), unix_ms).bytes(),
        );
        match verdict {
            None => assert_eq!(
                ev,
                discovered(node(u128::from(n)), at(src(n), 9000), WireVersion::V2)
            ),
            Some(reason) => assert_eq!(ev, dropped(src(n), reason)),
        }
    }
    assert_eq!(d.peers().count(), 2);
}

#[test]
fn an_equal_or_older_timestamp_is_refused_and_a_greater_one_accepted() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    let n = node(1);
    let first = Msg::new(n, NOW_MS);
    assert!(matches!(
        feed(&mut d, t0, src(1), &first.bytes()),
        Some(DiscoveryEvent::Discovered { .. })
    ));
    // Same timestamp, even with other content and a valid MAC: refused.
    let mut same = first;
    same.port = 9100;
    assert_eq!(
        feed(&mut d, t0 + SECOND, src(1), &same.bytes()),
        dropped(src(1), DropReason::Replayed)
    );
    // Older: reordered or replayed.
    let older = Msg::new(n, NOW_MS - 1);
    assert_eq!(
        feed(&mut d, t0 + SECOND, src(1), &older.bytes()),
        dropped(src(1), DropReason::Replayed)
    );
    assert_eq!(d.peer(&n).unwrap().addr, at(src(1), 9000));
    // One millisecond later: accepted, and its new port taken.
    let mut newer = Msg::new(n, NOW_MS + 1);
    newer.port = 9100;
    assert_eq!(
        feed(&mut d, t0 + SECOND, src(1), &newer.bytes()),
        Some(DiscoveryEvent::AddressChanged {
            node: n,
            old: at(src(1), 9000),
            new: at(src(1), 9100)
        })
    );
    assert_eq!(d.counters().replayed, 2);
}

#[test]
fn ten_announcements_per_second_per_source_ip() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    for i in 0..10u8 {
        let n = node(u128::from(i) + 1);
        assert!(matches!(
            feed(&mut d, t0, src(1), &Msg::new(n, NOW_MS).bytes()),
            Some(DiscoveryEvent::Discovered { .. })
        ));
    }
    assert_eq!(
        feed(&mut d, t0, src(1), &Msg::new(node(99), NOW_MS).bytes()),
        dropped(src(1), DropReason::SourceRateLimited)
    );
    // Another source is not affected.
    assert!(matches!(
        feed(&mut d, t0, src(2), &Msg::new(node(99), NOW_MS).bytes()),
        Some(DiscoveryEvent::Discovered { .. })
    ));
}

#[test]
fn every_key_of_the_ring_is_tried_and_the_event_names_the_one_that_matched() {
    let t0 = Instant::now();
    let mut keys = KeyRing::new(key(OTHER_KEY));
    let current = keys.rotate(key(KEY), t0, 10 * SECOND);
    let mut d = v2_machine(t0);
    let mut old = Msg::new(node(1), NOW_MS);
    old.key = OTHER_KEY;
    d.handle_datagram(t0, NOW_MS, src(1), &old.bytes(), &keys);
    d.handle_datagram(
        t0,
        NOW_MS,
        src(2),
        &Msg::new(node(2), NOW_MS).bytes(),
        &keys,
    );
    assert_eq!(
        drain(&mut d),
        vec![
            DiscoveryEvent::Discovered {
                node: node(1),
                addr: at(src(1), 9000),
                key: KeyId(0),
                version: WireVersion::V2
            },
            DiscoveryEvent::Discovered {
                node: node(2),
                addr: at(src(2), 9000),
                key: current,
                version: WireVersion::V2
            },
        ]
    );
    // After its deadline the old key no longer verifies.
    let mut late = old;
    late.node = node(3);
    d.handle_datagram(t0 + 10 * SECOND, NOW_MS, src(3), &late.bytes(), &keys);
    assert_eq!(
        drain(&mut d),
        vec![DiscoveryEvent::Dropped {
            src: src(3),
            reason: DropReason::BadMac
        }]
    );
}

// ---- sticky addresses -----------------------------------------------------------

#[test]
fn a_relayed_copy_neither_moves_the_peer_nor_blocks_its_real_announcements() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    let n = node(1);
    let home = at(src(1), 9000);
    assert_eq!(
        feed(&mut d, t0, src(1), &Msg::new(n, NOW_MS).bytes()),
        discovered(n, home, WireVersion::V2)
    );

    // The next round, relayed by an attacker from its own address, arrives
    // before the real copy: valid, fresh, newer, and refused.
    let t3 = t0 + 3 * SECOND;
    let round2 = Msg::new(n, NOW_MS + 3000).bytes();
    assert_eq!(
        feed(&mut d, t3, src(66), &round2),
        dropped(src(66), DropReason::AddressSticky)
    );
    let p = d.peer(&n).unwrap();
    assert_eq!((p.addr, p.last_seen), (home, t0));
    // The real copy of the same round is still accepted, and so is the
    // next round.
    assert_eq!(feed(&mut d, t3, src(1), &round2), None);
    assert_eq!(d.peer(&n).unwrap().last_seen, t3);
    let t6 = t0 + 6 * SECOND;
    assert_eq!(
        feed(&mut d, t6, src(1), &Msg::new(n, NOW_MS + 6000).bytes()),
        None
    );
    assert_eq!(d.peer(&n).unwrap().addr, home);
    // After the real one, the relayed copy is a replay.
    assert_eq!(
        feed(&mut d, t6, src(66), &round2),
        dropped(src(66), DropReason::Replayed)
    );
    assert_eq!(d.counters().address_sticky, 1);
}

#[test]
fn the_address_moves_once_the_current_one_is_silent_for_two_intervals() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    let n = node(1);
    let home = at(src(1), 9000);
    assert_eq!(
        feed(&mut d, t0, src(1), &Msg::new(n, NOW_MS).bytes()),
        discovered(n, home, WireVersion::V2)
    );
    // Two announce intervals of the default 3 s.
    let almost = t0 + 6 * SECOND - Duration::from_millis(1);
    let moved = Msg::new(n, NOW_MS + 5000).bytes();
    assert_eq!(
        feed(&mut d, almost, src(2), &moved),
        dropped(src(2), DropReason::AddressSticky)
    );
    assert_eq!(
        feed(&mut d, t0 + 6 * SECOND, src(2), &moved),
        Some(DiscoveryEvent::AddressChanged {
            node: n,
            old: home,
            new: at(src(2), 9000)
        })
    );
    // Now the new address is the sticky one.
    assert_eq!(
        feed(
            &mut d,
            t0 + 7 * SECOND,
            src(1),
            &Msg::new(n, NOW_MS + 7000).bytes()
        ),
        dropped(src(1), DropReason::AddressSticky)
    );
}

#[test]
fn a_relayed_copy_before_or_after_each_round_never_moves_or_starves_the_peer() {
    let t0 = Instant::now();
    let keys = ring();
    let peer = node(1);
    let (peer_udp, victim_udp, attacker_udp) = (src(1), src(2), src(66));
    let config = DiscoveryConfig::builder(COMMUNITY)
        .unicast_targets(vec![attacker_udp, victim_udp])
        .build()
        .unwrap();
    let mut s = Discovery::new(config, peer, 9000, [1; 32], t0);
    let mut d = v2_machine(t0);
    let home = at(peer_udp, 9000);
    const ROUNDS: u32 = 20;
    for i in 0..ROUNDS {
        let now = t0 + 3 * i * SECOND;
        let unix = NOW_MS + 3000 * u64::from(i);
        let round: Vec<_> = std::iter::from_fn(|| s.poll_transmit(now, unix, &keys)).collect();
        let copy = round[0].datagram;
        if i > 0 {
            // The attacker is first on the list and relays at once.
            assert_eq!(
                feed_at(&mut d, now, unix, attacker_udp, &copy),
                dropped(attacker_udp, DropReason::AddressSticky),
                "round {i}"
            );
        }
        let ev = feed_at(&mut d, now, unix, peer_udp, &copy);
        if i == 0 {
            assert_eq!(ev, discovered(peer, home, WireVersion::V2));
        } else {
            assert_eq!(ev, None, "round {i}: the peer's own copy was refused");
        }
        // And again 0.2 s before the next round.
        let before_next = now + Duration::from_millis(2800);
        assert_eq!(
            feed_at(&mut d, before_next, unix + 2800, attacker_udp, &copy),
            dropped(attacker_udp, DropReason::Replayed),
            "round {i}"
        );
        let p = d.peer(&peer).unwrap();
        assert_eq!((p.addr, p.last_seen), (home, now), "round {i}");
    }
    let c = d.counters();
    assert_eq!(c.accepted, u64::from(ROUNDS));
    assert_eq!(c.address_sticky, u64::from(ROUNDS - 1));
    assert_eq!(c.expired, 0);
}

#[test]
fn a_peers_last_announcement_stays_a_replay_after_the_peer_expires() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    let n = node(1);
    let last = Msg::new(n, NOW_MS).bytes();
    assert!(feed(&mut d, t0, src(1), &last).is_some());
    // Expired after 15 s, but its announcement is fresh for 60 s.
    let t20 = t0 + 20 * SECOND;
    d.handle_timeout(t20);
    assert!(matches!(
        drain(&mut d)[..],
        [DiscoveryEvent::Expired { node, .. }] if node == n
    ));
    assert_eq!(d.occupancy().v2_floors, 1);
    assert_eq!(
        feed_at(&mut d, t20, NOW_MS + 20_000, src(66), &last),
        dropped(src(66), DropReason::Replayed)
    );
    // A newer announcement brings it back, wherever it comes from now.
    assert_eq!(
        feed_at(
            &mut d,
            t20,
            NOW_MS + 20_000,
            src(2),
            &Msg::new(n, NOW_MS + 20_000).bytes()
        ),
        discovered(n, at(src(2), 9000), WireVersion::V2)
    );
    assert_eq!(d.occupancy().v2_floors, 0);
}

#[test]
fn a_floor_is_forgotten_once_everything_below_it_is_stale() {
    let t0 = Instant::now();
    let mut d = v2_machine(t0);
    assert!(feed(&mut d, t0, src(1), &Msg::new(node(1), NOW_MS).bytes()).is_some());
    d.handle_timeout(t0 + 20 * SECOND);
    drain(&mut d);
    let other = |ms| Msg::new(node(2), ms).bytes();
    feed_at(
        &mut d,
        t0 + 60 * SECOND,
        NOW_MS + 60_000,
        src(2),
        &other(NOW_MS + 60_000),
    );
    assert_eq!(
        d.occupancy().v2_floors,
        1,
        "NOW_MS is still inside the window"
    );
    feed_at(
        &mut d,
        t0 + 61 * SECOND,
        NOW_MS + 60_001,
        src(2),
        &other(NOW_MS + 60_001),
    );
    assert_eq!(d.occupancy().v2_floors, 0);
    assert!(d
        .replay_state(NOW_MS + 60_001)
        .v2_last_unix_ms
        .iter()
        .all(|(n, _)| *n != node(1)));
}

// ---- replay protection across a restart -----------------------------------------------

fn v1_config() -> DiscoveryConfig {
    DiscoveryConfig::builder(COMMUNITY)
        .allow_v1(true)
        .build()
        .unwrap()
}

#[test]
fn a_restored_node_refuses_replays_of_what_it_accepted_before_the_restart() {
    let t0 = Instant::now();
    let (a, b) = (node(1), node(2));
    let secs = u32::try_from(NOW_MS / 1000).unwrap();
    let a_v2 = Msg::new(a, NOW_MS).bytes();
    let b_v1 = v1_bytes(b, secs, 77);
    let mut before = v1_machine(t0);
    assert!(feed(&mut before, t0, src(1), &a_v2).is_some());
    assert!(feed(&mut before, t0, src(2), &b_v1).is_some());

    // Written at shutdown, 5 s later; read back by the next process.
    let down_ms = NOW_MS + 5_000;
    let state = before.replay_state(down_ms);
    assert_eq!(state.v2_last_unix_ms, vec![(a, NOW_MS)]);
    assert_eq!(
        state.v1_seen,
        vec![V1ReplayEntry::new(b, 77, (u64::from(secs) + 61) * 1000)]
    );
    let bytes = state.to_bytes();
    assert_eq!(bytes.len(), 5 + 4 + 24 + 4 + 28);
    let read = DiscoveryReplayState::from_bytes(&bytes, &v1_config()).unwrap();
    assert_eq!(read, state);

    // The restarted process: a new monotonic clock, 10 s of wall clock on.
    let t1 = t0 + 1000 * SECOND;
    let up_ms = NOW_MS + 10_000;
    let replays = |d: &mut Discovery| {
        [
            feed_at(d, t1, up_ms, src(66), &a_v2),
            feed_at(d, t1, up_ms, src(66), &b_v1),
        ]
    };
    // Without the state, both captures would be taken as new: the attacker's
    // address would become the peers'.
    let mut forgetful = v1_machine(t1);
    assert!(replays(&mut forgetful)
        .iter()
        .all(|e| matches!(e, Some(DiscoveryEvent::Discovered { .. }))));
    let mut after = v1_machine(t1);
    after.restore_replay_state(t1, up_ms, &read);
    assert_eq!(
        replays(&mut after),
        [
            dropped(src(66), DropReason::Replayed),
            dropped(src(66), DropReason::Replayed)
        ]
    );
    assert_eq!(after.peers().count(), 0);
    // Their next announcements are new.
    assert_eq!(
        feed_at(&mut after, t1, up_ms, src(1), &Msg::new(a, up_ms).bytes()),
        discovered(a, at(src(1), 9000), WireVersion::V2)
    );
    assert_eq!(
        feed_at(&mut after, t1, up_ms, src(2), &v1_bytes(b, secs + 10, 78)),
        discovered(b, at(src(2), 9000), WireVersion::V1)
    );
    // Restoring merges: a lower timestamp never lowers a node's floor.
    after.restore_replay_state(t1, up_ms, &read);
    assert_eq!(after.replay_state(up_ms).v2_last_unix_ms, vec![(a, up_ms)]);
}

#[test]
fn nothing_outside_the_window_is_exported_or_restored() {
    let t0 = Instant::now();
    let secs = u32::try_from(NOW_MS / 1000).unwrap();
    let mut d = v1_machine(t0);
    assert!(feed(&mut d, t0, src(1), &Msg::new(node(1), NOW_MS).bytes()).is_some());
    assert!(feed(&mut d, t0, src(2), &v1_bytes(node(2), secs, 1)).is_some());
    let full = d.replay_state(NOW_MS);
    assert_eq!((full.v2_last_unix_ms.len(), full.v1_seen.len()), (1, 1));
    // 61 s on, both are stale: nothing to keep.
    let later = (u64::from(secs) + 61) * 1000;
    assert_eq!(d.replay_state(later), DiscoveryReplayState::default());
    let mut fresh = v1_machine(t0);
    fresh.restore_replay_state(t0, later, &full);
    let o = fresh.occupancy();
    assert_eq!((o.v2_floors, o.replay_entries), (0, 0));
}

#[test]
fn a_restored_state_stays_within_the_configured_bounds() {
    let t0 = Instant::now();
    let config = DiscoveryConfig::builder(COMMUNITY)
        .allow_v1(true)
        .max_peers(2)
        .replay_capacity(10)
        .replay_share_per_node(4)
        .build()
        .unwrap();
    let mut state = DiscoveryReplayState::default();
    for i in 0..4u128 {
        state.v2_last_unix_ms.push((node(i), NOW_MS + i as u64));
    }
    for ch in 0..100u32 {
        // Far in the future: capped at the longest a pair can be kept.
        state
            .v1_seen
            .push(V1ReplayEntry::new(node(u128::from(ch % 2)), ch, u64::MAX));
    }
    let mut d = Discovery::new(config, ME, 9000, [1; 32], t0);
    d.restore_replay_state(t0, NOW_MS, &state);
    let o = d.occupancy();
    // Two floors (the highest timestamps), a share of four for each node.
    assert_eq!((o.v2_floors, o.replay_entries), (2, 8));
    let kept = d.replay_state(NOW_MS);
    assert_eq!(
        kept.v2_last_unix_ms,
        vec![(node(2), NOW_MS + 2), (node(3), NOW_MS + 3)]
    );
    let longest = (NOW_MS / 1000 + 121) * 1000;
    assert!(kept.v1_seen.iter().all(|e| e.expires_unix_ms == longest));
    // Forgotten on schedule rather than never.
    assert_eq!(d.replay_state(longest).v1_seen, vec![]);
    // A timestamp from the far future is taken as the latest a fresh
    // announcement could carry: the node is locked out for no longer than
    // the window.
    let mut future = DiscoveryReplayState::default();
    future.v2_last_unix_ms.push((node(7), u64::MAX));
    let mut d = v2_machine(t0);
    d.restore_replay_state(t0, NOW_MS, &future);
    assert_eq!(
        d.replay_state(NOW_MS).v2_last_unix_ms,
        vec![(node(7), NOW_MS + 60_000)]
    );
    let t61 = t0 + 61 * SECOND;
    assert_eq!(
        feed_at(
            &mut d,
            t61,
            NOW_MS + 61_000,
            src(7),
            &Msg::new(node(7), NOW_MS + 61_000).bytes()
        ),
        discovered(node(7), at(src(7), 9000), WireVersion::V2)
    );
}

#[test]
fn replay_state_bytes_refuse_truncated_garbage_and_oversized_input() {
    use asoc_proto::discovery::DiscoveryStateError as E;
    let config = DiscoveryConfig::builder(COMMUNITY)
        .max_peers(2)
        .replay_capacity(3)
        .build()
        .unwrap();
    let mut state = DiscoveryReplayState::default();
    state.v2_last_unix_ms.push((node(1), NOW_MS));
    state.v1_seen.push(V1ReplayEntry::new(node(2), 9, NOW_MS));
    let bytes = state.to_bytes();
    assert_eq!(DiscoveryReplayState::from_bytes(&bytes, &config), Ok(state));
    for cut in 0..bytes.len() {
        let r = DiscoveryReplayState::from_bytes(&bytes[..cut], &config);
        assert!(matches!(r, Err(E::Truncated { .. })), "{cut}: {r:?}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        DiscoveryReplayState::from_bytes(&trailing, &config),
        Err(E::TrailingBytes { extra: 1 })
    );
    let mut magic = bytes.clone();
    magic[0] ^= 1;
    assert_eq!(
        DiscoveryReplayState::from_bytes(&magic, &config),
        Err(E::BadMagic)
    );
    let mut version = bytes.clone();
    version[4] = 2;
    assert_eq!(
        DiscoveryReplayState::from_bytes(&version, &config),
        Err(E::UnsupportedVersion {
            version: 2,
            expected: 1
        })
    );
    // Counts are checked against the configuration before anything is
    // allocated: at most twice max_peers v2 entries, replay_capacity v1.
    let mut huge = b"ASDR\x01".to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        DiscoveryReplayState::from_bytes(&huge, &config),
        Err(E::TooManyEntries {
            which: "v2 timestamp",
            count: u32::MAX,
            max: 4
        })
    );
    let mut v1_over = b"ASDR\x01\0\0\0\0".to_vec();
    v1_over.extend_from_slice(&4u32.to_be_bytes());
    v1_over.extend_from_slice(&[0; 4 * 28]);
    assert_eq!(
        DiscoveryReplayState::from_bytes(&v1_over, &config),
        Err(E::TooManyEntries {
            which: "v1 replay",
            count: 4,
            max: 3
        })
    );
    let mut short = b"ASDR\x01".to_vec();
    short.extend_from_slice(&4u32.to_be_bytes());
    assert_eq!(
        DiscoveryReplayState::from_bytes(&short, &config),
        Err(E::Truncated {
            needed: 9 + 4 * 24,
            got: 9
        })
    );
    assert!(!E::BadMagic.to_string().is_empty());
}

// ---- announcing --------------------------------------------------------------------

#[test]
fn a_round_is_one_datagram_with_the_same_bytes_for_every_unicast_target() {
    let t0 = Instant::now();
    let keys = ring();
    let targets: Vec<SocketAddr> = vec![
        "192.0.2.1:9999".parse().unwrap(),
        "192.0.2.2:9999".parse().unwrap(),
        "[2001:db8::1]:7777".parse().unwrap(),
    ];
    let config = DiscoveryConfig::builder(COMMUNITY)
        .unicast_targets(targets.clone())
        .build()
        .unwrap();
    let mut d = Discovery::new(config, ME, 9000, [42; 32], t0);
    let round: Vec<_> = std::iter::from_fn(|| d.poll_transmit(t0, NOW_MS, &keys)).collect();
    assert_eq!(round.iter().map(|t| t.to).collect::<Vec<_>>(), targets);
    assert!(round.iter().all(|t| t.datagram == round[0].datagram));
    let a = AnnouncementV2::decode(&round[0].datagram).unwrap();
    assert!(verify_announcement_v2(&derive_discovery_key(&key(KEY)), &a));
    assert_eq!(
        (a.community_hash, a.node_id, a.tcp_port, a.unix_ms, a.flags),
        (community_hash(COMMUNITY), ME, 9000, NOW_MS, 0)
    );
    assert_eq!(d.counters().sent, 3);

    // The next round is due one interval later; its timestamp exceeds the
    // previous one even when the wall clock stepped back.
    let t3 = t0 + 3 * SECOND;
    assert!(d
        .poll_transmit(t3 - Duration::from_millis(1), NOW_MS, &keys)
        .is_none());
    d.set_tcp_port(9555);
    let next: Vec<_> = std::iter::from_fn(|| d.poll_transmit(t3, NOW_MS - 10_000, &keys)).collect();
    assert_eq!(next.len(), 3);
    let b = AnnouncementV2::decode(&next[0].datagram).unwrap();
    assert_eq!((b.tcp_port, b.unix_ms), (9555, NOW_MS + 1));
    let t6 = t0 + 6 * SECOND;
    let third = d.poll_transmit(t6, NOW_MS + 6000, &keys).unwrap();
    assert_eq!(
        AnnouncementV2::decode(&third.datagram).unwrap().unix_ms,
        NOW_MS + 6000
    );
}

#[test]
fn with_v1_enabled_each_destination_gets_a_v2_then_a_v1_announcement() {
    let t0 = Instant::now();
    let keys = ring();
    let targets: Vec<SocketAddr> = vec![
        "192.0.2.1:9999".parse().unwrap(),
        "192.0.2.2:9999".parse().unwrap(),
    ];
    let config = DiscoveryConfig::builder(COMMUNITY)
        .unicast_targets(targets.clone())
        .allow_v1(true)
        .build()
        .unwrap();
    let mut d = Discovery::new(config, ME, 9000, [42; 32], t0);
    let round: Vec<_> = std::iter::from_fn(|| d.poll_transmit(t0, NOW_MS, &keys)).collect();
    let shape: Vec<_> = round
        .iter()
        .map(|t| (t.to, t.datagram.version(), t.datagram.len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (targets[0], WireVersion::V2, 52),
            (targets[0], WireVersion::V1, 50),
            (targets[1], WireVersion::V2, 52),
            (targets[1], WireVersion::V1, 50),
        ]
    );
    assert_eq!(round[0].datagram, round[2].datagram);
    // The v1 announcement too: one challenge per round.
    assert_eq!(round[1].datagram, round[3].datagram);
    let v2 = AnnouncementV2::decode(&round[0].datagram).unwrap();
    assert!(
        v2.accepts_v1(),
        "flag bit 0: this node also accepts v1 HELLOs"
    );
    assert_eq!(v2.flags, 1);
    let v1 = Announcement::decode(&round[1].datagram).unwrap();
    assert_eq!(u64::from(v1.timestamp), NOW_MS / 1000);
}

#[test]
fn a_copy_relayed_to_another_receiver_that_saw_it_is_a_replay_there() {
    let t0 = Instant::now();
    let keys = ring();
    let (b_udp, c_udp) = (src(2), src(3));
    let sender = node(1);
    let config = DiscoveryConfig::builder(COMMUNITY)
        .unicast_targets(vec![b_udp, c_udp])
        .build()
        .unwrap();
    let mut s = Discovery::new(config, sender, 9000, [1; 32], t0);
    let mut b = Discovery::new(DiscoveryConfig::new(COMMUNITY), node(2), 9000, [2; 32], t0);
    let mut c = Discovery::new(DiscoveryConfig::new(COMMUNITY), node(3), 9000, [3; 32], t0);
    let round: Vec<_> = std::iter::from_fn(|| s.poll_transmit(t0, NOW_MS, &keys)).collect();
    let s_udp = src(1);
    for t in &round {
        let to = if t.to == b_udp { &mut b } else { &mut c };
        to.handle_datagram(t0, NOW_MS, s_udp, &t.datagram, &keys);
    }
    assert_eq!(
        drain(&mut b),
        vec![discovered(sender, at(s_udp, 9000), WireVersion::V2).unwrap()]
    );
    assert_eq!(
        drain(&mut c),
        vec![discovered(sender, at(s_udp, 9000), WireVersion::V2).unwrap()]
    );
    // An attacker captured B's copy and relays it to C, from anywhere.
    let captured = round.iter().find(|t| t.to == b_udp).unwrap().datagram;
    for from in [src(66), s_udp] {
        assert_eq!(
            feed(&mut c, t0 + SECOND, from, &captured),
            dropped(from, DropReason::Replayed)
        );
    }
}

// ---- versions ---------------------------------------------------------------------

#[test]
fn v1_announcements_are_refused_without_allow_v1_and_accepted_with_it() {
    let t0 = Instant::now();
    let n = node(1);
    let secs = u32::try_from(NOW_MS / 1000).unwrap();
    let v1 = v1_bytes(n, secs, 7);

    let mut off = v2_machine(t0);
    assert_eq!(
        feed(&mut off, t0, src(1), &v1),
        dropped(src(1), DropReason::V1Disabled)
    );
    assert_eq!(off.counters().v1_disabled, 1);
    assert_eq!(off.peers().count(), 0);
    // A forged one says nothing about a v1 peer: the MAC check comes first.
    let mut forged = v1;
    forged[49] ^= 1;
    assert_eq!(
        feed(&mut off, t0, src(1), &forged),
        dropped(src(1), DropReason::BadMac)
    );

    let mut on = v1_machine(t0);
    assert_eq!(
        feed(&mut on, t0, src(1), &v1),
        discovered(n, at(src(1), 9000), WireVersion::V1)
    );
    let p = on.peer(&n).unwrap();
    assert_eq!((p.version, p.accepts_v1), (WireVersion::V1, true));
    assert!(!on.is_v2_only(&n));
    assert_eq!(on.dial_version(&n), Some(WireVersion::V1));

    // Its first v2 announcement makes it v2-only for good (while known);
    // later v1 announcements refresh it without a downgrade.
    let t1 = t0 + SECOND;
    assert_eq!(
        feed(&mut on, t1, src(1), &Msg::new(n, NOW_MS).bytes()),
        None
    );
    let p = on.peer(&n).unwrap();
    assert_eq!(
        (p.version, p.accepts_v1, p.last_seen),
        (WireVersion::V2, false, t1)
    );
    assert!(on.is_v2_only(&n));
    assert_eq!(on.dial_version(&n), Some(WireVersion::V2));
    let t2 = t0 + 2 * SECOND;
    assert_eq!(feed(&mut on, t2, src(1), &v1_bytes(n, secs, 8)), None);
    let p = on.peer(&n).unwrap();
    assert_eq!((p.version, p.last_seen), (WireVersion::V2, t2));
    assert_eq!(on.dial_version(&n), Some(WireVersion::V2));
    // A v1 copy from elsewhere cannot move a v2 peer either.
    assert_eq!(
        feed(&mut on, t0 + 3 * SECOND, src(66), &v1_bytes(n, secs, 9)),
        dropped(src(66), DropReason::AddressSticky)
    );
}

#[test]
fn the_node_dials_v2_unless_the_peer_was_seen_only_through_v1() {
    let t0 = Instant::now();
    let me = Uuid::from_u128(1);
    let node_with = |allow_v1: bool| {
        let d = DiscoveryConfig::builder(COMMUNITY)
            .unicast_targets(vec![src(9)])
            .allow_v1(allow_v1)
            .build()
            .unwrap();
        let config = NodeConfig::builder(me, ring())
            .discovery(d)
            .build()
            .unwrap();
        Node::new(config, [5; 32], t0)
    };
    let (v1_peer, v2_peer) = (node(1), node(2));
    let secs = u32::try_from(NOW_MS / 1000).unwrap();

    let mut a = node_with(true);
    a.handle_datagram(t0, NOW_MS, src(1), &v1_bytes(v1_peer, secs, 1));
    a.handle_datagram(t0, NOW_MS, src(2), &Msg::new(v2_peer, NOW_MS).bytes());
    let found: Vec<_> = std::iter::from_fn(|| a.poll_event())
        .filter_map(|e| match e {
            NodeEvent::PeerDiscovered { node, version, .. } => Some((node, version)),
            _ => None,
        })
        .collect();
    assert_eq!(
        found,
        vec![(v1_peer, WireVersion::V1), (v2_peer, WireVersion::V2)]
    );
    assert!(!a.peer_is_v2_only(&v1_peer));
    assert!(a.peer_is_v2_only(&v2_peer));
    let mut dials: Vec<_> = std::iter::from_fn(|| a.poll_dial(t0))
        .map(|d| (d.target.to_string(), d.version))
        .collect();
    dials.sort();
    assert_eq!(
        dials,
        vec![
            ("10.0.0.1:9000".to_owned(), WireVersion::V1),
            ("10.0.0.2:9000".to_owned(), WireVersion::V2)
        ]
    );

    // Without v1 the v1 peer is never recorded, and nothing is dialed with v1.
    let mut b = node_with(false);
    b.handle_datagram(t0, NOW_MS, src(1), &v1_bytes(v1_peer, secs, 1));
    b.handle_datagram(t0, NOW_MS, src(2), &Msg::new(v2_peer, NOW_MS).bytes());
    assert!(!b.peer_is_v2_only(&v1_peer));
    let dials: Vec<_> = std::iter::from_fn(|| b.poll_dial(t0))
        .map(|d| (d.target.to_string(), d.version))
        .collect();
    assert_eq!(dials, vec![("10.0.0.2:9000".to_owned(), WireVersion::V2)]);
    assert_eq!(b.counters().discovery.unwrap().v1_disabled, 1);
}

// ---- arbitrary input ----------------------------------------------------------------

/// A datagram for the property below: random bytes, or a valid
/// announcement with some bytes overwritten.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::collection::vec(any::<u8>(), 52..=52).prop_map(|mut b| {
            b[0] = 2;
            b
        }),
        (
            1u128..6,
            -70_000i64..70_000,
            any::<u8>(),
            proptest::collection::vec((0usize..52, any::<u8>()), 0..3)
        )
            .prop_map(|(n, skew, flags, edits)| {
                let mut m = Msg::new(node(n), NOW_MS.saturating_add_signed(skew));
                m.flags = flags;
                let mut b = m.bytes().to_vec();
                for (i, x) in edits {
                    b[i] = x;
                }
                b
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn only_valid_v2_announcements_are_accepted(
        steps in proptest::collection::vec((datagram(), 0u8..4, 0u64..2000), 1..60)
    ) {
        let t0 = Instant::now();
        let keys = ring();
        let discovery_key = derive_discovery_key(&key(KEY));
        let mut d = v2_machine(t0);
        let (mut now, mut unix_ms) = (t0, NOW_MS);
        let mut last: std::collections::BTreeMap<Uuid, u64> = Default::default();
        for (bytes, ip, advance) in steps {
            now += Duration::from_millis(advance);
            unix_ms += advance;
            // Expiry first, so that what is known below is what the
            // datagram meets.
            d.handle_timeout(now);
            // A node's last timestamp outlives its expiry while messages at
            // or below it can still be fresh.
            last.retain(|n, l| d.peer(n).is_some() || *l + 60_000 >= unix_ms);
            let accepted = d.counters().accepted;
            d.handle_datagram(now, unix_ms, src(ip), &bytes, &keys);
            drain(&mut d);
            if d.counters().accepted > accepted {
                let a = AnnouncementV2::decode(&bytes);
                prop_assert!(a.is_some());
                let a = a.unwrap();
                prop_assert!(verify_announcement_v2(&discovery_key, &a));
                prop_assert!(a.node_id != ME);
                prop_assert!(a.unix_ms.abs_diff(unix_ms) <= 60_000);
                prop_assert!(last.get(&a.node_id).is_none_or(|l| a.unix_ms > *l));
                prop_assert_eq!(d.peer(&a.node_id).map(|p| p.last_seen), Some(now));
                last.insert(a.node_id, a.unix_ms);
            }
            let c = d.counters();
            prop_assert_eq!(c.received, c.accepted + c.dropped_total());
            prop_assert_eq!(d.occupancy().replay_entries, 0);
        }
    }
    #[test]
    fn replay_state_decoding_never_panics_and_round_trips_what_it_accepts(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(any::<u8>(), 0..120).prop_map(|tail| {
                let mut b = b"ASDR\x01".to_vec();
                b.extend_from_slice(&tail);
                b
            }),
        ]
    ) {
        let config = DiscoveryConfig::builder(COMMUNITY).max_peers(4).replay_capacity(4).build().unwrap();
        if let Ok(state) = DiscoveryReplayState::from_bytes(&bytes, &config) {
            prop_assert_eq!(state.to_bytes(), bytes);
            let t0 = Instant::now();
            let mut d = v1_machine(t0);
            d.restore_replay_state(t0, NOW_MS, &state);
            let o = d.occupancy();
            prop_assert!(o.v2_floors <= 1024 && o.replay_entries <= 4);
        }
    }

}
