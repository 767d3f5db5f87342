//! `Node` scenarios: two nodes (or a node and raw bytes) connected through
//! memory by the driver in `node_harness`, on a virtual clock: `t0` is an
//! arbitrary epoch and time only moves by adding durations to it.
//!
//! Covered: the handshake through the node on both sides, streams and
//! traffic accounting, admission policy (throttle, attempt rate, caps, aggregated reports), the
//! cross-connection replay cache and reflection guard, the reconnect
//! schedule of static peers, discovery-driven dialing, key rotation and
//! determinism (WIRE.md §3, §5–§7; RFC-0002 §4.3, §10.2; DESIGN.md §2, §5).

use crate::node_harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asoc_proto::auth::{AuthFailure, KeyId, KeyRing};
use asoc_proto::connection::{CloseReason, ConfigError, Event};
use asoc_proto::dial::DialTarget;
use asoc_proto::discovery::{DiscoveryConfig, DropReason};
use asoc_proto::handshake::{AuthenticatorConfig, ClientOptions};
use asoc_proto::node::{ConnId, Direction, Node, NodeEvent, PeerRef, PeerTraffic};
use asoc_proto::policy::{PolicyConfig, Refusal, ThrottleCause};
use asoc_proto::v2::WireVersion;
use asoc_proto::wire::{FrameType, Header};
use bytes::Bytes;
use node_harness::{
    accept, addr, blank_sessions, config, config_v2_only, drain, hello_frame, ip, key, node,
    node_id, node_with, pattern, pieces, speak, unix_at, End, Link, BLANK_SESSION, CHUNKINGS, KEY,
    OTHER_KEY,
};
use proptest::prelude::*;

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// Wall-clock seconds given to discovery; any value works.
const UNIX: u64 = 1_800_000_000;
/// [`UNIX`] as the node's wall clock takes it, in unix milliseconds.
const UNIX_MS: u64 = UNIX * 1000;

/// A peer's traffic as `(bytes_in, bytes_out, connections)`, for comparisons
/// (the struct is `#[non_exhaustive]`, so tests cannot build one).
fn traffic(t: PeerTraffic) -> (u64, u64, u64) {
    (t.bytes_in, t.bytes_out, t.connections)
}

fn server_addr() -> SocketAddr {
    addr(1, 9000)
}

fn auth_failed(conn: &End, from: SocketAddr, reason: AuthFailure) -> NodeEvent {
    NodeEvent::AuthFailed {
        conn: Some(conn.id),
        addr: from,
        reason,
    }
}

/// `events` without identity conflicts: a client node that connects from
/// several addresses at once is reported as one (the identity section
/// tests that); the scenarios that do so on purpose test something else.
fn without_conflicts(events: Vec<NodeEvent>) -> Vec<NodeEvent> {
    events
        .into_iter()
        .filter(|e| !matches!(e, NodeEvent::IdentityConflict { .. }))
        .collect()
}

fn refused(from: SocketAddr, reason: AuthFailure) -> NodeEvent {
    NodeEvent::AuthFailed {
        conn: None,
        addr: from,
        reason,
    }
}

// ---- 1. handshake, stream, close ------------------------------------------

#[test]
fn two_nodes_connect_stream_and_disconnect_with_traffic_accounted() {
    for (version, chunk) in [WireVersion::V1, WireVersion::V2]
        .into_iter()
        .flat_map(|v| CHUNKINGS.map(|c| (v, c)))
    {
        let _pieces = pieces(chunk);
        let _wire = speak(version);
        // v2 proves the server's node id to the client; v1 tells it none.
        let server_id = (version == WireVersion::V2).then(|| node_id(0x0b));
        let t0 = Instant::now();
        let (a_addr, b_addr) = (addr(9, 40_000), server_addr());
        let mut a = node(0x0a, KEY, t0);
        let mut b = node(0x0b, KEY, t0);

        let mut link = Link::open(&mut a, &mut b, t0, a_addr, b_addr).unwrap();
        assert!(link.is_established());
        let (cid, sid) = (link.client.id, link.server.id);
        assert_eq!(
            blank_sessions(drain(&mut a)).0,
            vec![NodeEvent::PeerConnected {
                conn: cid,
                peer_node: server_id,
                addr: b_addr,
                direction: Direction::Outbound,
                key: KeyId(0),
                session: BLANK_SESSION,
            }]
        );
        assert_eq!(
            blank_sessions(drain(&mut b)).0,
            vec![NodeEvent::PeerConnected {
                conn: sid,
                peer_node: Some(node_id(0x0a)),
                addr: a_addr,
                direction: Direction::Inbound,
                key: KeyId(0),
                session: BLANK_SESSION,
            }]
        );
        let info = b.connection(sid).unwrap();
        assert!(info.established);
        assert_eq!(info.peer_node, Some(node_id(0x0a)));
        assert_eq!((info.addr, info.direction), (a_addr, Direction::Inbound));
        let info = a.connection(cid).unwrap();
        assert!(info.established);
        assert_eq!((info.addr, info.direction), (b_addr, Direction::Outbound));
        assert_eq!(b.counters().auth.hellos_accepted, 1);
        assert_eq!(
            b.connection(sid).and_then(|i| i.session).map(|s| s.version),
            Some(version)
        );
        assert_eq!(a.counters().auth.accepts_verified, 1);
        assert_eq!(b.counters().policy.admitted, 1);
        assert_eq!(b.counters().policy.established, 1);
        assert_eq!(a.counters().policy.outbound, 1);
        assert_eq!(a.counters().policy.established, 1);

        // A stream of four chunks from the client arrives whole.
        let t1 = t0 + SECOND;
        let payload = pattern(100_000, 1);
        let stream = link.client.conn.open_stream().unwrap();
        for chunk in payload.chunks(30_000) {
            link.client
                .conn
                .send(t1, stream, Bytes::copy_from_slice(chunk))
                .unwrap();
        }
        link.client.conn.finish(t1, stream).unwrap();
        link.pump(&mut a, &mut b, t1);
        assert_eq!(link.server.received(stream), payload);
        assert!(link.server.events.contains(&Event::StreamEnd {
            stream,
            frames: 4,
            bytes: 100_000,
        }));
        // Live connections count as of their last drive.
        let (c2s, s2c) = (
            link.client.written.len() as u64,
            link.server.written.len() as u64,
        );
        assert!(c2s > payload.len() as u64, "frames carry headers");
        assert_eq!((b.counters().bytes_in, b.counters().bytes_out), (c2s, s2c));
        assert_eq!((a.counters().bytes_in, a.counters().bytes_out), (s2c, c2s));
        assert_eq!(
            b.peer_traffic(&node_id(0x0a)).map(traffic),
            Some((0, 0, 1)),
            "per-peer bytes are those of closed connections"
        );

        // The client closes; the server reads EOF.
        let t2 = t0 + 2 * SECOND;
        link.close_by_client(&mut a, &mut b, t2);
        assert_eq!(link.client.close_reason, Some(CloseReason::Local));
        assert_eq!(link.server.close_reason, Some(CloseReason::PeerClosed));
        assert_eq!(
            drain(&mut a),
            vec![NodeEvent::PeerDisconnected {
                conn: cid,
                peer_node: server_id,
                addr: b_addr,
                direction: Direction::Outbound,
                reason: CloseReason::Local,
            }]
        );
        assert_eq!(
            drain(&mut b),
            vec![NodeEvent::PeerDisconnected {
                conn: sid,
                peer_node: Some(node_id(0x0a)),
                addr: a_addr,
                direction: Direction::Inbound,
                reason: CloseReason::PeerClosed,
            }]
        );
        assert_eq!(link.client.written.len() as u64, c2s, "nothing after close");
        assert_eq!(
            b.peer_traffic(&node_id(0x0a)).map(traffic),
            Some((c2s, s2c, 1))
        );
        assert_eq!(link.server.conn.stats().bytes_in, c2s);
        assert_eq!(
            a.peer_traffic(&node_id(0x0b)).map(traffic),
            server_id.map(|_| (s2c, c2s, 1)),
            "{version}: only a proven server id lets the client attribute traffic"
        );
        assert_eq!((b.counters().bytes_in, b.counters().bytes_out), (c2s, s2c));
        assert_eq!((a.counters().bytes_in, a.counters().bytes_out), (s2c, c2s));
        assert_eq!(a.connections().count(), 0);
        assert_eq!(b.connections().count(), 0);
        assert!(b.connection(sid).is_none());
    }
}

// ---- 2. wrong key ---------------------------------------------------------

#[test]
fn wrong_key_is_refused_without_a_byte_and_without_peer_connected() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let a_addr = addr(9, 40_000);
        let mut a = node(0x0a, OTHER_KEY, t0);
        let mut b = node(0x0b, KEY, t0);
        let link = Link::open(&mut a, &mut b, t0, a_addr, server_addr()).unwrap();

        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&link.server, a_addr, AuthFailure::BadMac)]
        );
        assert!(link.server.written.is_empty(), "the server wrote nothing");
        assert_eq!(
            link.server.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::BadMac))
        );
        assert!(!link.client.is_established());
        assert_eq!(link.client.close_reason, Some(CloseReason::PeerClosed));
        assert_eq!(
            drain(&mut a),
            vec![],
            "a connection that never established neither connects nor disconnects"
        );
        let c = b.counters();
        assert_eq!(c.auth.bad_mac, 1);
        assert_eq!(c.auth.hellos_accepted, 0);
        assert_eq!(c.policy.auth_failures.bad_mac, 1);
        assert_eq!(c.policy.established, 0);
        assert_eq!(b.connections().count(), 0);
        assert_eq!(a.connections().count(), 0);
    }
}

// ---- 3. throttle ----------------------------------------------------------

#[test]
fn five_bad_macs_throttle_an_ip_and_a_correct_hello_is_still_accepted() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut b = node(0x0b, KEY, t0);
        let mut attacker = node(0x0e, OTHER_KEY, t0);
        let mut a = node(0x0a, KEY, t0);
        let duration = Duration::from_secs(600);
        let interval = Duration::from_secs(5);

        let mut now = t0;
        for i in 0..5u16 {
            now = t0 + SECOND * u32::from(i);
            assert!(!b.is_throttled(now, ip(9)), "attempt {i}");
            let from = addr(9, 40_000 + i);
            let link = Link::open(&mut attacker, &mut b, now, from, server_addr()).unwrap();
            assert!(link.server.written.is_empty());
            // Only the first failure of the report interval is reported on
            // its own.
            let mut expected = Vec::new();
            if i == 0 {
                expected.push(auth_failed(&link.server, from, AuthFailure::BadMac));
            }
            if i == 4 {
                expected.push(NodeEvent::Throttled {
                    ip: ip(9),
                    until: now + duration,
                    interval,
                    cause: ThrottleCause::Failures,
                });
            }
            assert_eq!(drain(&mut b), expected, "attempt {i}");
        }
        let until = now + duration;
        let next = now + interval;
        assert!(b.is_throttled(now, ip(9)));
        assert_eq!(b.counters().policy.throttles, 1);
        assert_eq!(b.counters().auth.bad_mac, 5);

        // Within the interval the next socket is refused before a byte is
        // read, even with the right key.
        let t1 = now + SECOND;
        assert_eq!(
            b.accept(t1, addr(9, 41_000)).err(),
            Some(Refusal::Throttled { next, until })
        );
        assert_eq!(
            Link::open(&mut a, &mut b, t1, addr(9, 41_001), server_addr()).err(),
            Some(Refusal::Throttled { next, until })
        );
        assert_eq!(drain(&mut b), vec![], "aggregated");
        assert_eq!(b.counters().policy.refused.throttled, 2);

        // Another address is not affected.
        let neighbour = addr(10, 40_000);
        let link = Link::open(&mut a, &mut b, t1, neighbour, server_addr()).unwrap();
        assert!(link.is_established());
        assert!(matches!(
            drain(&mut b).as_slice(),
            [NodeEvent::PeerConnected { addr, .. }] if *addr == neighbour
        ));

        // At the next interval a correct HELLO is verified and accepted;
        // the success lifts the throttle.
        let back = addr(9, 42_001);
        let link = Link::open(&mut a, &mut b, next, back, server_addr()).unwrap();
        assert!(link.is_established());
        assert!(matches!(
            without_conflicts(drain(&mut b)).as_slice(),
            [NodeEvent::PeerConnected { addr, direction: Direction::Inbound, .. }] if *addr == back
        ));
        assert!(!b.is_throttled(next, ip(9)));

        // The failures after the first come as one event when the report
        // interval (10 s from the first) ends.
        b.handle_timeout(t0 + Duration::from_secs(10));
        let events = drain(&mut b);
        let [NodeEvent::AuthFailuresAggregated {
            ip: Some(got),
            count,
            first,
            last,
            reasons,
        }] = events.as_slice()
        else {
            panic!("{events:?}");
        };
        assert_eq!((*got, *count), (ip(9), 6));
        assert_eq!((*first, *last), (t0 + SECOND, t1));
        assert_eq!((reasons.bad_mac, reasons.throttled), (4, 2));
        assert_eq!(b.counters().policy.aggregated, 6);
    }
}

#[test]
fn malformed_first_frames_count_fully_and_closes_before_a_hello_lightly() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut b = node(0x0b, KEY, t0);
        let now = t0;
        let mut port = 40_000;
        let mut next_from = || {
            port += 1;
            addr(9, port)
        };

        // Light: a connection that sends nothing is cut at the first-byte
        // deadline (2 s), well before the handshake deadline (10 s).
        let from = next_from();
        let mut e = accept(&mut b, now, from);
        e.timeout(&mut b, now + Duration::from_secs(2) - MS);
        assert!(!e.is_closed(), "the first-byte deadline is 2 s");
        e.timeout(&mut b, now + Duration::from_secs(2));
        assert_eq!(e.close_reason, Some(CloseReason::HandshakeTimeout));
        assert!(e.flush(now).is_empty());
        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&e, from, AuthFailure::Timeout)],
            "reported through Node::closed"
        );
        // Light: a connection that sent part of a HELLO has the whole
        // handshake deadline.
        let mut e = accept(&mut b, now, next_from());
        e.input(&mut b, now, &hello_frame(KEY, node_id(0x0a), 1)[..10]);
        e.timeout(&mut b, now + Duration::from_secs(10) - MS);
        assert!(!e.is_closed(), "the handshake deadline is 10 s");
        e.timeout(&mut b, now + Duration::from_secs(10));
        assert_eq!(e.close_reason, Some(CloseReason::HandshakeTimeout));
        // Light: connect and close without a byte.
        for _ in 0..2 {
            let mut e = accept(&mut b, now, next_from());
            e.eof(&mut b, now);
            assert_eq!(e.close_reason, Some(CloseReason::PeerClosed));
        }
        // Full: a first frame that is not a HELLO.
        let data_header = Header::new(FrameType::Data, 1, 0, 4).encode();
        for bytes in [&data_header[..], &[0xff; 20][..]] {
            let mut e = accept(&mut b, now, next_from());
            e.input(&mut b, now, bytes);
            assert!(matches!(
                e.close_reason,
                Some(CloseReason::MalformedHandshake(_))
            ));
            assert!(e.flush(now).is_empty());
        }
        // Full: a bad MAC. 4 light + 3 full = 4 full failures' worth.
        let mut e = accept(&mut b, now, next_from());
        e.input(&mut b, now, &hello_frame(OTHER_KEY, node_id(0x0e), 1));
        let p = b.counters().policy;
        assert_eq!(
            (
                p.abandoned,
                p.auth_failures.timeout,
                p.auth_failures.malformed,
                p.auth_failures.bad_mac,
                p.throttles
            ),
            (4, 2, 2, 1, 0)
        );
        assert!(!b.is_throttled(now, ip(9)));
        drain(&mut b);

        // Four more closes without a byte spend the rest of the budget.
        for i in 0..4 {
            let mut e = accept(&mut b, now, next_from());
            e.eof(&mut b, now);
            assert_eq!(b.is_throttled(now, ip(9)), i == 3, "close {i}");
        }
        assert!(drain(&mut b).contains(&NodeEvent::Throttled {
            ip: ip(9),
            until: now + Duration::from_secs(600),
            interval: Duration::from_secs(5),
            cause: ThrottleCause::Failures,
        }));
        assert_eq!(b.counters().policy.abandoned, 8);
    }
}

// ---- 4. attempt rate ------------------------------------------------------

#[test]
fn a_hundred_and_one_successful_handshakes_from_one_ip_are_all_accepted() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut a = node(0x0a, KEY, t0);
        let mut b = node(0x0b, KEY, t0);
        for i in 0..101u16 {
            let now = t0 + SECOND * u32::from(i);
            let mut link = Link::open(&mut a, &mut b, now, addr(9, 40_000 + i), server_addr())
                .unwrap_or_else(|r| panic!("attempt {i} refused: {r}"));
            assert!(link.is_established(), "attempt {i}");
            link.close_by_client(&mut a, &mut b, now);
            assert_eq!(link.server.close_reason, Some(CloseReason::PeerClosed));
        }
        assert_eq!(b.counters().policy.admitted, 101);
        assert_eq!(b.counters().policy.established, 101);
        assert_eq!(b.counters().policy.throttles, 0);
        assert_eq!(b.connections().count(), 0);
    }
}

#[test]
fn a_hundred_connect_and_closes_then_a_correct_hello_is_accepted() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut a = node(0x0a, KEY, t0);
        let mut b = node(0x0b, KEY, t0);
        let mut admitted = 0;
        for i in 0..100u16 {
            let now = t0 + MS * u32::from(i);
            if let Ok((id, conn)) = b.accept(now, addr(9, 40_000 + i)) {
                admitted += 1;
                let mut e = End::new(id, conn);
                e.eof(&mut b, now);
            }
        }
        // The 20th close spent the budget; the rest were refused at once.
        assert_eq!(admitted, 20);
        assert!(b.is_throttled(t0 + SECOND, ip(9)));
        drain(&mut b);
        // The throttle admits one handshake per 5 s, and a correct one is in.
        let at = t0 + MS * 19 + Duration::from_secs(5);
        let link = Link::open(&mut a, &mut b, at, addr(9, 50_000), server_addr()).unwrap();
        assert!(link.is_established());
        assert!(!b.is_throttled(at, ip(9)));
    }
}

// ---- 5. caps --------------------------------------------------------------

#[test]
fn pre_handshake_cap_refuses_the_fifth_and_frees_a_place_when_one_completes() {
    let t0 = Instant::now();
    let policy = PolicyConfig::builder()
        .max_handshaking(4)
        .max_connections(8)
        .build()
        .unwrap();
    let mut b = node_with(config(0x0b, KEY).policy(policy), 0x0b, t0);
    let mut a = node(0x0a, KEY, t0);

    let mut pending: Vec<End> = (0..4)
        .map(|i| accept(&mut b, t0, addr(20 + i, 40_000)))
        .collect();
    let fifth = addr(30, 40_000);
    assert_eq!(
        b.accept(t0, fifth).err(),
        Some(Refusal::TooManyHandshakes { max: 4 })
    );
    assert_eq!(drain(&mut b), vec![refused(fifth, AuthFailure::Capacity)]);
    assert_eq!(b.counters().policy.refused.too_many_handshakes, 1);

    // The node's own dials do not use pre-authentication places.
    let (own, _own_conn) = b
        .connect_to(t0, unix_at(t0), addr(50, 9000), ClientOptions::v2())
        .unwrap();
    assert_eq!(b.connections().count(), 5);
    assert!(b.accept(t0, fifth).is_err());
    drain(&mut b);

    // One pending handshake completes with a real client's HELLO (v1:
    // its verdict needs no second message from the client).
    let (cid, cconn) = a
        .connect_to(t0, unix_at(t0), server_addr(), ClientOptions::v1())
        .unwrap();
    let mut client = End::new(cid, cconn);
    let hello = client.flush(t0);
    pending[0].input(&mut b, t0, &hello);
    assert!(pending[0].is_established());
    assert!(matches!(
        drain(&mut b).as_slice(),
        [NodeEvent::PeerConnected { conn, .. }] if *conn == pending[0].id
    ));
    let fifth_end = accept(&mut b, t0, fifth);
    assert_eq!(drain(&mut b), vec![]);
    assert_eq!(
        b.accept(t0, addr(31, 40_000)).err(),
        Some(Refusal::TooManyHandshakes { max: 4 })
    );
    drain(&mut b);

    // A failed handshake keeps its place until it is closed, then frees it.
    pending[1].input(&mut b, t0, &[0xff; 14]);
    assert!(pending[1].is_closed());
    drain(&mut b);
    let sixth = accept(&mut b, t0, addr(31, 40_000));
    let inbound_handshaking = b
        .connections()
        .filter(|c| c.direction == Direction::Inbound && !c.established)
        .count();
    assert_eq!(inbound_handshaking, 4);
    assert!(b.connection(own).is_some());
    assert!(b.connection(fifth_end.id).is_some() && b.connection(sixth.id).is_some());
}

#[test]
fn connection_cap_covers_inbound_and_outbound_and_frees_on_close() {
    let t0 = Instant::now();
    let policy = PolicyConfig::builder()
        .max_connections(3)
        .max_handshaking(3)
        .build()
        .unwrap();
    let mut b = node_with(config(0x0b, KEY).policy(policy), 0x0b, t0);
    let mut a = node(0x0a, KEY, t0);
    let mut links: Vec<Link> = (0..3)
        .map(|i| Link::open(&mut a, &mut b, t0, addr(20 + i, 40_000), server_addr()).unwrap())
        .collect();
    assert!(links.iter().all(Link::is_established));
    assert_eq!(b.connections().count(), 3);
    drain(&mut b);

    let fourth = addr(30, 40_000);
    assert_eq!(
        Link::open(&mut a, &mut b, t0, fourth, server_addr()).err(),
        Some(Refusal::TooManyConnections { max: 3 })
    );
    assert_eq!(drain(&mut b), vec![refused(fourth, AuthFailure::Capacity)]);
    assert_eq!(
        b.connect_to(t0, unix_at(t0), addr(50, 9000), ClientOptions::v2())
            .err(),
        Some(Refusal::TooManyConnections { max: 3 }),
        "outbound connections count toward the same cap"
    );
    assert_eq!(b.counters().policy.refused.too_many_connections, 2);
    assert_eq!(b.connections().count(), 3);

    let t1 = t0 + SECOND;
    links[0].close_by_client(&mut a, &mut b, t1);
    assert!(matches!(
        drain(&mut b).as_slice(),
        [NodeEvent::PeerDisconnected {
            reason: CloseReason::PeerClosed,
            ..
        }]
    ));
    assert_eq!(b.connections().count(), 2);
    let link = Link::open(&mut a, &mut b, t1, fourth, server_addr()).unwrap();
    assert!(link.is_established());
    assert_eq!(b.connections().count(), 3);
}

// ---- 6. replay and reflection ---------------------------------------------

#[test]
fn a_hello_replayed_on_a_new_connection_is_refused_as_replay() {
    // v1's HELLO, replay cache and ACCEPT; v2's are tested in node_v2.rs.
    let _v1 = speak(WireVersion::V1);
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut a = node(0x0a, KEY, t0);
        let mut b = node(0x0b, KEY, t0);
        let link = Link::open(&mut a, &mut b, t0, addr(9, 40_000), server_addr()).unwrap();
        assert!(link.is_established());
        drain(&mut b);
        let hello = link.client.written[..50].to_vec();
        assert_eq!(
            hello[1],
            FrameType::Hello.to_byte(),
            "captured the HELLO frame"
        );

        // A recording of it, played back from elsewhere a little later...
        let t1 = t0 + SECOND;
        let from = addr(66, 40_000);
        let mut replay = accept(&mut b, t1, from);
        replay.input(&mut b, t1, &hello);
        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&replay, from, AuthFailure::Replay)]
        );
        assert!(replay.flush(t1).is_empty());
        assert_eq!(
            replay.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::Replay))
        );
        // ...and near the end of the 10-minute retention.
        let t2 = t0 + Duration::from_secs(599);
        let from = addr(66, 40_001);
        let mut replay = accept(&mut b, t2, from);
        replay.input(&mut b, t2, &hello);
        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&replay, from, AuthFailure::Replay)]
        );
        assert_eq!(b.counters().auth.replays, 2);
        assert_eq!(b.counters().policy.auth_failures.replay, 2);
        assert_eq!(b.counters().auth.hellos_accepted, 1);
    }
}

#[test]
fn a_nodes_own_hello_fed_back_to_it_is_refused_as_reflection() {
    // v1's HELLO, replay cache and ACCEPT; v2's are tested in node_v2.rs.
    let _v1 = speak(WireVersion::V1);
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut b = node(0x0b, KEY, t0);
        let (oid, oconn) = b
            .connect_to(t0, unix_at(t0), addr(77, 9000), ClientOptions::v1())
            .unwrap();
        let mut own = End::new(oid, oconn);
        let own_hello = own.flush(t0);
        assert_eq!(own_hello.len(), 50);

        let from = addr(77, 40_000);
        let mut mirror = accept(&mut b, t0, from);
        mirror.input(&mut b, t0, &own_hello);
        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&mirror, from, AuthFailure::Reflection)]
        );
        assert!(mirror.flush(t0).is_empty());
        assert_eq!(
            mirror.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::Reflection))
        );
        assert_eq!(b.counters().auth.reflections, 1);
        assert_eq!(b.counters().policy.auth_failures.reflection, 1);
        assert!(
            b.connection(oid).is_some(),
            "the node's own dial is untouched"
        );
    }
}

#[test]
fn a_full_hello_replay_cache_fails_closed_and_forgets_nothing_early() {
    // v1's HELLO, replay cache and ACCEPT; v2's are tested in node_v2.rs.
    let _v1 = speak(WireVersion::V1);
    let retention = Duration::from_secs(60);
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let auth = AuthenticatorConfig::builder(node_id(0x0b), KeyRing::new(key(KEY)))
            .hello_retention(retention)
            .hello_replay_capacity(2)
            .build()
            .unwrap();
        let mut b = node_with(config(0x0b, KEY).authenticator(auth), 0x0b, t0);
        let mut a = node(0x0a, KEY, t0);
        let mut attacker = node(0x0e, OTHER_KEY, t0);

        // HELLOs whose MAC fails are never recorded, so they cannot fill it.
        for i in 0..3 {
            let link = Link::open(
                &mut attacker,
                &mut b,
                t0,
                addr(20 + i, 40_000),
                server_addr(),
            );
            assert!(!link.unwrap().client.is_established());
        }
        // Two verified HELLOs do.
        let first = Link::open(&mut a, &mut b, t0, addr(9, 40_000), server_addr()).unwrap();
        assert!(first.is_established());
        let hello = first.client.written[..50].to_vec();
        let second = Link::open(&mut a, &mut b, t0, addr(9, 40_001), server_addr()).unwrap();
        assert!(second.is_established());
        drain(&mut b);

        // A third, valid HELLO cannot be recorded: refused without a byte,
        // reported and counted, and not held against its address.
        let t1 = t0 + SECOND;
        let from = addr(9, 40_002);
        let third = Link::open(&mut a, &mut b, t1, from, server_addr()).unwrap();
        assert!(!third.client.is_established());
        assert!(third.server.written.is_empty());
        assert_eq!(
            third.server.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::Capacity))
        );
        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&third.server, from, AuthFailure::Capacity)]
        );
        assert_eq!(b.counters().auth.replay_cache_full, 1);
        assert_eq!(b.counters().policy.auth_failures.capacity, 1);

        // Nothing was forgotten to make room: the first HELLO is still a
        // replay a millisecond before its 60 s are over...
        let t2 = t0 + retention - MS;
        let from = addr(66, 40_000);
        let mut replay = accept(&mut b, t2, from);
        replay.input(&mut b, t2, &hello);
        assert_eq!(
            drain(&mut b),
            vec![auth_failed(&replay, from, AuthFailure::Replay)]
        );
        // ...and at 60 s both pairs expire and new HELLOs fit again.
        let t3 = t0 + retention;
        for port in [40_003, 40_004] {
            let link = Link::open(&mut a, &mut b, t3, addr(9, port), server_addr()).unwrap();
            assert!(link.is_established(), "chunk {chunk}, port {port}");
        }
        assert_eq!(b.counters().auth.replay_cache_full, 1);
        assert_eq!(b.counters().auth.hellos_accepted, 4);
    }
}

#[test]
fn hello_retention_below_60_s_is_refused() {
    let auth = || AuthenticatorConfig::builder(node_id(1), KeyRing::new(key(KEY)));
    assert_eq!(
        auth()
            .hello_retention(Duration::from_secs(60) - MS)
            .build()
            .err(),
        Some(ConfigError::ReplayRetentionTooShort { secs: 59 })
    );
    assert!(auth()
        .hello_retention(Duration::from_secs(60))
        .build()
        .is_ok());
}

#[test]
fn node_config_refuses_a_zero_event_bound_in_build() {
    assert_eq!(
        config(1, KEY).max_pending_events(0).build().err(),
        Some(ConfigError::ZeroLimit {
            field: "max_pending_events"
        })
    );
    let built = config(1, KEY)
        .max_pending_events(1)
        .tcp_port(9100)
        .dial_discovered(false)
        .build()
        .unwrap();
    assert_eq!(built.max_pending_events(), 1);
    assert_eq!(built.tcp_port(), 9100);
    assert!(!built.dial_discovered());
    assert_eq!(built.node_id(), node_id(1));
}

// ---- 7. static peers ------------------------------------------------------

#[test]
fn static_peers_added_and_removed_while_running() {
    let t0 = Instant::now();
    let mut a = node_with(config(0x0a, KEY), 0x0a, t0);
    assert!(a.poll_dial(t0).is_none(), "no peer configured");
    let t1 = t0 + SECOND;
    let target = DialTarget::Name("10.0.0.9:9000".into());
    let peer = a.add_static_peer(t1, target.clone());
    let dial = a.poll_dial(t1).expect("an added peer is due at once");
    assert_eq!((dial.peer, dial.target.clone()), (peer, target));
    a.dial_failed(t1, &dial);
    assert!(
        a.poll_timeout().is_some(),
        "redialed like a configured peer"
    );
    a.remove_static_peer(peer);
    assert!(
        a.poll_timeout().is_none(),
        "a removed peer is never redialed"
    );
    assert!(a.poll_dial(t1 + 3600 * SECOND).is_none());
}

#[test]
fn static_peer_is_dialed_at_start_and_backs_off_forever() {
    let t0 = Instant::now();
    let target = DialTarget::Name("peer.example:9000".into());
    let mut a = node_with(config(0x0a, KEY).static_peer(target.clone()), 0x0a, t0);
    let dial = a.poll_dial(t0).expect("a static peer is due at start");
    assert_eq!(dial.target, target);
    assert!(a.poll_dial(t0).is_none(), "one dial at a time");

    a.dial_failed(t0, &dial);
    let due = a.poll_timeout().unwrap();
    assert!(
        due >= t0 + SECOND && due <= t0 + 5 * SECOND,
        "first retry after {:?}",
        due - t0
    );
    assert!(a.poll_dial(due - MS).is_none());
    let jitter = due - t0;
    let cap = Duration::from_secs(60);

    let mut now = due;
    for n in 2..=20u32 {
        let dial = a
            .poll_dial(now)
            .unwrap_or_else(|| panic!("static peers are redialed forever (dial {n})"));
        assert_eq!(dial.target, target);
        a.dial_failed(now, &dial);
        let next = a.poll_timeout().unwrap();
        let expected = jitter
            .checked_mul(1 << (n - 1).min(16))
            .map_or(cap, |d| d.min(cap));
        assert_eq!(next - now, expected, "wait after failure {n}");
        now = next;
    }
    assert_eq!(drain(&mut a), vec![], "a static peer is never given up");

    // It connects, and when the connection drops it is redialed in 1–5 s.
    let dial = a.poll_dial(now).unwrap();
    let mut b = node(0x0b, KEY, t0);
    let mut link = Link::dial(&mut a, &mut b, now, &dial, addr(9, 40_000), server_addr()).unwrap();
    assert!(link.is_established());
    assert_eq!(
        blank_sessions(drain(&mut a)).0,
        vec![NodeEvent::PeerConnected {
            conn: link.client.id,
            peer_node: Some(node_id(0x0b)),
            addr: server_addr(),
            direction: Direction::Outbound,
            key: KeyId(0),
            session: BLANK_SESSION,
        }]
    );
    assert_eq!(a.connection(link.client.id).unwrap().peer, Some(dial.peer));
    assert_eq!(a.poll_timeout(), None, "connected: nothing to redial");

    let dropped = now + Duration::from_secs(30);
    link.server.close(&mut b, dropped);
    link.pump(&mut a, &mut b, dropped);
    assert!(matches!(
        drain(&mut a).as_slice(),
        [NodeEvent::PeerDisconnected {
            reason: CloseReason::PeerClosed,
            ..
        }]
    ));
    let due = a.poll_timeout().unwrap();
    assert!(
        due >= dropped + SECOND && due <= dropped + 5 * SECOND,
        "redial after {:?}",
        due - dropped
    );
    assert!(a.poll_dial(due - MS).is_none());
    assert_eq!(a.poll_dial(due).map(|d| d.target), Some(target));
}

#[test]
fn a_dialed_connection_whose_handshake_fails_counts_as_a_failed_dial() {
    let t0 = Instant::now();
    let target = DialTarget::Addr(server_addr());
    let mut a = node_with(config(0x0a, KEY).static_peer(target.clone()), 0x0a, t0);
    let mut b = node(0x0b, OTHER_KEY, t0);
    let dial = a.poll_dial(t0).unwrap();
    let link = Link::dial(&mut a, &mut b, t0, &dial, addr(9, 40_000), server_addr()).unwrap();
    assert!(!link.client.is_established());
    assert_eq!(link.client.close_reason, Some(CloseReason::PeerClosed));
    assert_eq!(
        drain(&mut a),
        vec![NodeEvent::DialFailed {
            peer: dial.peer,
            node: None,
            target: DialTarget::Addr(server_addr()),
            error: CloseReason::PeerClosed.to_string(),
        }]
    );
    let due = a.poll_timeout().expect("the peer is scheduled again");
    assert!(due >= t0 + SECOND && due <= t0 + 5 * SECOND);
    assert_eq!(a.poll_dial(due).map(|d| d.target), Some(target));
}

#[test]
fn connect_at_the_cap_is_refused_and_counts_as_a_failed_dial() {
    let t0 = Instant::now();
    let policy = PolicyConfig::builder()
        .max_connections(1)
        .max_handshaking(1)
        .build()
        .unwrap();
    let target = DialTarget::Name("peer.example:9000".into());
    let mut a = node_with(
        config(0x0a, KEY).policy(policy).static_peer(target),
        0x0a,
        t0,
    );
    let _busy = a
        .connect_to(t0, unix_at(t0), addr(50, 9000), ClientOptions::v2())
        .unwrap();
    let dial = a.poll_dial(t0).unwrap();
    assert_eq!(
        a.connect(t0, unix_at(t0), &dial, server_addr()).err(),
        Some(Refusal::TooManyConnections { max: 1 })
    );
    let due = a.poll_timeout().expect("redial scheduled");
    assert!(due >= t0 + SECOND && due <= t0 + 5 * SECOND);
}

// ---- 8. discovery ---------------------------------------------------------

/// A node `n` with discovery announcing TCP `tcp_port` to `peer_udp` only.
fn discovering(
    n: u8,
    peer_udp: SocketAddr,
    tcp_port: u16,
    interval: Duration,
    t0: Instant,
) -> Node {
    let d = DiscoveryConfig::builder("node-tests")
        .unicast_targets(vec![peer_udp])
        .announce_interval(interval)
        .build()
        .unwrap();
    node_with(
        config_v2_only(n, KEY).discovery(d).tcp_port(tcp_port),
        n,
        t0,
    )
}

/// Delivers every announcement `from` has due to `to`; returns how many.
fn announce(
    from: &mut Node,
    from_udp: SocketAddr,
    to: &mut Node,
    to_udp: SocketAddr,
    now: Instant,
) -> usize {
    let mut sent = 0;
    while let Some(tx) = from.poll_datagram(now, UNIX_MS) {
        assert_eq!(tx.to, to_udp);
        to.handle_datagram(now, UNIX_MS, from_udp, &tx.datagram);
        sent += 1;
    }
    sent
}

struct Pair {
    small: Node,
    large: Node,
    small_udp: SocketAddr,
    large_udp: SocketAddr,
}

const SMALL_TCP: u16 = 9001;
const LARGE_TCP: u16 = 9002;

/// Two discovering nodes that have heard each other once at `t0`.
fn discovered_pair(t0: Instant, large_interval: Duration) -> Pair {
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let mut small = discovering(0x01, large_udp, SMALL_TCP, Duration::from_secs(3), t0);
    let mut large = discovering(0xf0, small_udp, LARGE_TCP, large_interval, t0);
    assert!(small.node_id() < large.node_id());
    assert_eq!(
        announce(&mut small, small_udp, &mut large, large_udp, t0),
        1
    );
    assert_eq!(
        announce(&mut large, large_udp, &mut small, small_udp, t0),
        1
    );
    assert_eq!(
        drain(&mut large),
        vec![NodeEvent::PeerDiscovered {
            node: node_id(0x01),
            addr: addr(1, SMALL_TCP),
            key: KeyId(0),
            version: WireVersion::V2,
        }]
    );
    assert_eq!(
        drain(&mut small),
        vec![NodeEvent::PeerDiscovered {
            node: node_id(0xf0),
            addr: addr(2, LARGE_TCP),
            key: KeyId(0),
            version: WireVersion::V2,
        }]
    );
    Pair {
        small,
        large,
        small_udp,
        large_udp,
    }
}

#[test]
fn the_smaller_id_dials_at_once_and_its_connection_cancels_the_deferred_dial() {
    let t0 = Instant::now();
    let Pair {
        mut small,
        mut large,
        ..
    } = discovered_pair(t0, Duration::from_secs(3));
    let dial = small.poll_dial(t0).expect("the smaller id dials at once");
    assert_eq!(dial.target, DialTarget::Addr(addr(2, LARGE_TCP)));
    assert!(large.poll_dial(t0).is_none(), "the larger id waits");
    let deferred_until = t0 + 6 * SECOND;
    assert!(large.poll_dial(deferred_until - MS).is_none());

    let t1 = t0 + SECOND;
    let small_tcp = addr(1, 50_000);
    let link = Link::dial(
        &mut small,
        &mut large,
        t1,
        &dial,
        small_tcp,
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(link.is_established());
    assert_eq!(
        blank_sessions(drain(&mut small)).0,
        vec![NodeEvent::PeerConnected {
            conn: link.client.id,
            peer_node: Some(node_id(0xf0)),
            addr: addr(2, LARGE_TCP),
            direction: Direction::Outbound,
            key: KeyId(0),
            session: BLANK_SESSION,
        }],
        "the dialer knows which node it dialed from discovery"
    );
    assert_eq!(
        blank_sessions(drain(&mut large)).0,
        vec![NodeEvent::PeerConnected {
            conn: link.server.id,
            peer_node: Some(node_id(0x01)),
            addr: small_tcp,
            direction: Direction::Inbound,
            key: KeyId(0),
            session: BLANK_SESSION,
        }]
    );
    assert!(
        large.poll_dial(deferred_until).is_none(),
        "deferred dial dropped"
    );
    assert!(large.poll_dial(t0 + 10 * SECOND).is_none());
    assert!(small.poll_dial(t0 + 10 * SECOND).is_none(), "connected");
}

#[test]
fn a_connection_established_and_closed_before_the_deadline_still_cancels_the_deferred_dial() {
    let t0 = Instant::now();
    let Pair {
        mut small,
        mut large,
        ..
    } = discovered_pair(t0, Duration::from_secs(3));
    let dial = small.poll_dial(t0).unwrap();
    let t1 = t0 + SECOND;
    let mut link = Link::dial(
        &mut small,
        &mut large,
        t1,
        &dial,
        addr(1, 50_000),
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(link.is_established());
    let t2 = t0 + 2 * SECOND;
    link.close_by_client(&mut small, &mut large, t2);
    assert!(matches!(
        drain(&mut large).as_slice(),
        [
            NodeEvent::PeerConnected { .. },
            NodeEvent::PeerDisconnected {
                reason: CloseReason::PeerClosed,
                ..
            }
        ]
    ));
    assert_eq!(large.connections().count(), 0);
    // Discovery named the node the small one dialed, so its traffic is
    // attributed on both sides.
    let (c2s, s2c) = (
        link.client.written.len() as u64,
        link.server.written.len() as u64,
    );
    assert_eq!(
        small.peer_traffic(&node_id(0xf0)).map(traffic),
        Some((s2c, c2s, 1))
    );
    assert_eq!(
        large.peer_traffic(&node_id(0x01)).map(traffic),
        Some((c2s, s2c, 1))
    );
    assert!(
        large.poll_dial(t0 + 6 * SECOND).is_none(),
        "the smaller node did connect; dialing it back is its business"
    );
}

#[test]
fn the_larger_id_dials_after_two_announce_intervals_without_a_connection() {
    let t0 = Instant::now();
    let interval = Duration::from_secs(2);
    let Pair {
        mut small,
        mut large,
        ..
    } = discovered_pair(t0, interval);
    // A connection from the smaller node that never completes its handshake
    // does not count.
    let mut half_open = accept(&mut large, t0 + SECOND, addr(1, 50_000));
    half_open.settle(&mut large, t0 + SECOND);
    assert!(small.poll_dial(t0).is_some());

    let deferred_until = t0 + 2 * interval;
    assert!(large.poll_dial(deferred_until - MS).is_none());
    let dial = large
        .poll_dial(deferred_until)
        .expect("the larger id steps in");
    assert_eq!(dial.target, DialTarget::Addr(addr(1, SMALL_TCP)));
    assert!(large.poll_dial(deferred_until).is_none(), "once");
}

#[test]
fn a_discovered_peer_is_given_up_after_three_failed_dials() {
    let t0 = Instant::now();
    let Pair { mut small, .. } = discovered_pair(t0, Duration::from_secs(3));
    let mut now = t0;
    let mut dials = Vec::new();
    for attempt in 1..=3 {
        let dial = loop {
            if let Some(dial) = small.poll_dial(now) {
                break dial;
            }
            now += 100 * MS;
            // Waits are d and 2d with d at most 5 s.
            assert!(now <= t0 + 15 * SECOND, "dial {attempt} never came");
        };
        assert_eq!(dial.target, DialTarget::Addr(addr(2, LARGE_TCP)));
        assert!(
            drain(&mut small).is_empty(),
            "not given up before dial {attempt}"
        );
        small.dial_failed(now, &dial);
        dials.push(dial.peer);
    }
    assert!(dials.iter().all(|p| *p == dials[0]));
    assert_eq!(
        drain(&mut small),
        vec![NodeEvent::DialGaveUp {
            peer: dials[0],
            node: node_id(0xf0),
            failures: 3,
        }]
    );
    assert!(small.poll_dial(now + Duration::from_secs(50)).is_none());
}

#[test]
fn a_silent_peer_expires_fifteen_seconds_after_its_last_announcement() {
    let t0 = Instant::now();
    let Pair {
        mut small,
        mut large,
        small_udp,
        large_udp,
    } = discovered_pair(t0, Duration::from_secs(3));
    // One more announcement at t0 + 3 s refreshes the entry.
    let t3 = t0 + 3 * SECOND;
    assert_eq!(
        announce(&mut small, small_udp, &mut large, large_udp, t3),
        1
    );
    assert_eq!(drain(&mut large), vec![], "a refresh is not news");

    let expiry = t3 + Duration::from_secs(15);
    large.handle_timeout(expiry - MS);
    assert_eq!(drain(&mut large), vec![]);
    assert_eq!(large.discovered_peers().count(), 1);
    large.handle_timeout(expiry);
    assert_eq!(
        drain(&mut large),
        vec![NodeEvent::PeerExpired {
            node: node_id(0x01),
            addr: addr(1, SMALL_TCP),
        }]
    );
    assert_eq!(large.discovered_peers().count(), 0);
    assert_eq!(large.counters().discovery.unwrap().expired, 1);
    assert!(
        large.poll_dial(expiry).is_none(),
        "a forgotten peer is not dialed"
    );
}

/// Takes every close order of `node`, checking each is a `PeerExpired`
/// one, and returns the connections named.
fn expiry_orders(node: &mut Node) -> Vec<ConnId> {
    std::iter::from_fn(|| node.poll_close())
        .map(|order| {
            assert_eq!(order.reason, CloseReason::PeerExpired);
            order.conn
        })
        .collect()
}

/// Sends (into the void) whatever announcements `node` has due at `now`.
fn announce_lost(node: &mut Node, now: Instant) {
    while node.poll_datagram(now, UNIX_MS).is_some() {}
}

#[test]
fn an_expired_peer_has_its_connections_closed_and_is_redialed_once_it_announces_again() {
    let t0 = Instant::now();
    let Pair {
        mut small,
        mut large,
        small_udp,
        large_udp,
    } = discovered_pair(t0, Duration::from_secs(3));
    let dial = small.poll_dial(t0).unwrap();
    let (small_tcp, t1) = (addr(1, 50_000), t0 + SECOND);
    let mut link = Link::dial(
        &mut small,
        &mut large,
        t1,
        &dial,
        small_tcp,
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(link.is_established());
    drain(&mut small);
    drain(&mut large);

    // The link is cut after t0: announcements are lost and the idle
    // connection carries nothing, so neither TCP side notices.
    let expiry = t0 + 15 * SECOND;
    for node in [&mut small, &mut large] {
        node.handle_timeout(expiry - MS);
        announce_lost(node, expiry - MS);
        assert_eq!(drain(node), vec![], "nothing expires early");
        assert_eq!(expiry_orders(node), vec![]);
        assert_eq!(node.connections().count(), 1);
    }

    large.handle_timeout(expiry);
    assert_eq!(
        drain(&mut large),
        vec![NodeEvent::PeerExpired {
            node: node_id(0x01),
            addr: addr(1, SMALL_TCP),
        }]
    );
    assert_eq!(expiry_orders(&mut large), vec![link.server.id]);
    link.server.conn.abort(expiry, CloseReason::PeerExpired);
    link.server.settle(&mut large, expiry);
    assert_eq!(
        drain(&mut large),
        vec![NodeEvent::PeerDisconnected {
            conn: link.server.id,
            peer_node: Some(node_id(0x01)),
            addr: small_tcp,
            direction: Direction::Inbound,
            reason: CloseReason::PeerExpired,
        }]
    );

    small.handle_timeout(expiry);
    assert_eq!(
        drain(&mut small),
        vec![NodeEvent::PeerExpired {
            node: node_id(0xf0),
            addr: addr(2, LARGE_TCP),
        }]
    );
    assert_eq!(expiry_orders(&mut small), vec![link.client.id]);
    // An order is given once, even if the adapter is slow to carry it out.
    small.handle_timeout(expiry + SECOND);
    assert_eq!(expiry_orders(&mut small), vec![]);
    link.client
        .conn
        .abort(expiry + SECOND, CloseReason::PeerExpired);
    link.client.settle(&mut small, expiry + SECOND);
    assert_eq!(
        drain(&mut small),
        vec![NodeEvent::PeerDisconnected {
            conn: link.client.id,
            peer_node: Some(node_id(0xf0)),
            addr: addr(2, LARGE_TCP),
            direction: Direction::Outbound,
            reason: CloseReason::PeerExpired,
        }]
    );
    for node in [&mut small, &mut large] {
        assert_eq!(node.connections().count(), 0);
        assert!(node.poll_dial(expiry + 30 * SECOND).is_none(), "forgotten");
    }

    // The link returns: the next announcements rediscover both sides and
    // the smaller id dials again.
    let back = expiry + 40 * SECOND;
    small.handle_timeout(back);
    large.handle_timeout(back);
    assert_eq!(
        announce(&mut small, small_udp, &mut large, large_udp, back),
        1
    );
    assert_eq!(
        announce(&mut large, large_udp, &mut small, small_udp, back),
        1
    );
    assert!(matches!(
        drain(&mut small).as_slice(),
        [NodeEvent::PeerDiscovered { node, .. }] if *node == node_id(0xf0)
    ));
    let redial = small.poll_dial(back).expect("redialed once it announces");
    assert_eq!(redial.target, DialTarget::Addr(addr(2, LARGE_TCP)));
    let relink = Link::dial(
        &mut small,
        &mut large,
        back,
        &redial,
        addr(1, 50_001),
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(relink.is_established());
    assert_eq!(small.connections().count(), 1);
    assert_eq!(large.connections().count(), 1);
}

#[test]
fn expiry_leaves_connections_to_static_peers_open() {
    let t0 = Instant::now();
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let d = DiscoveryConfig::builder("node-tests")
        .unicast_targets(vec![large_udp])
        .build()
        .unwrap();
    let mut small = node_with(
        config(0x01, KEY)
            .discovery(d)
            .tcp_port(SMALL_TCP)
            .static_peer(DialTarget::Addr(addr(2, LARGE_TCP))),
        0x01,
        t0,
    );
    let mut large = discovering(0xf0, small_udp, LARGE_TCP, Duration::from_secs(3), t0);
    let dial = small
        .poll_dial(t0)
        .expect("the static peer is dialed at start");
    let link = Link::dial(
        &mut small,
        &mut large,
        t0,
        &dial,
        addr(1, 50_000),
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(link.is_established());
    assert_eq!(
        announce(&mut large, large_udp, &mut small, small_udp, t0),
        1
    );
    drain(&mut small);

    let expiry = t0 + 15 * SECOND;
    small.handle_timeout(expiry);
    assert_eq!(
        drain(&mut small),
        vec![NodeEvent::PeerExpired {
            node: node_id(0xf0),
            addr: addr(2, LARGE_TCP),
        }]
    );
    assert_eq!(expiry_orders(&mut small), vec![], "a static peer stays");
    assert_eq!(small.connections().count(), 1);
}

/// Drops of each reason, for v1 announcements (under `allow_v1`) or v2
/// ones (the default): the reasons and their order are the same.
fn invalid_datagrams_are_dropped_with_their_reason(version: WireVersion) {
    let t0 = Instant::now();
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let interval = Duration::from_secs(3);
    let allow_v1 = version == WireVersion::V1;
    let node = |n: u8, to: SocketAddr, tcp: u16| {
        let d = DiscoveryConfig::builder("node-tests")
            .unicast_targets(vec![to])
            .announce_interval(interval)
            .allow_v1(allow_v1)
            .build()
            .unwrap();
        node_with(config(n, KEY).discovery(d).tcp_port(tcp), n, t0)
    };
    let mut small = node(0x01, large_udp, SMALL_TCP);
    let mut large = node(0xf0, small_udp, LARGE_TCP);
    let first = |n: &mut Node| {
        std::iter::from_fn(|| n.poll_datagram(t0, UNIX_MS))
            .map(|t| t.datagram.to_vec())
            .find(|d| d.len() == if allow_v1 { 50 } else { 52 })
            .unwrap()
    };
    let good = first(&mut small);
    let own = first(&mut large);
    let mut bad_mac = good.clone();
    *bad_mac.last_mut().unwrap() ^= 1;

    let cases: Vec<(&[u8], u64, SocketAddr, DropReason)> = vec![
        (&good[..49], UNIX_MS, small_udp, DropReason::WrongLength),
        (&bad_mac, UNIX_MS, small_udp, DropReason::BadMac),
        (&good, UNIX_MS + 61_000, small_udp, DropReason::Stale),
        (&good, UNIX_MS - 61_000, small_udp, DropReason::FutureDated),
        (&own, UNIX_MS, large_udp, DropReason::OwnNode),
    ];
    for (datagram, unix, src, reason) in cases {
        large.handle_datagram(t0, unix, src, datagram);
        assert_eq!(
            drain(&mut large),
            vec![NodeEvent::DatagramDropped { src, reason }]
        );
        assert_eq!(
            large.counters().discovery.unwrap().dropped(reason),
            1,
            "{reason}"
        );
    }
    assert_eq!(large.discovered_peers().count(), 0);

    // Within the window the same message is honoured once.
    large.handle_datagram(t0, UNIX_MS + 60_000, small_udp, &good);
    assert!(matches!(
        drain(&mut large).as_slice(),
        [NodeEvent::PeerDiscovered { version: v, .. }] if *v == version
    ));
    large.handle_datagram(t0 + 2 * SECOND, UNIX_MS, small_udp, &good);
    assert_eq!(
        drain(&mut large),
        vec![NodeEvent::DatagramDropped {
            src: small_udp,
            reason: DropReason::Replayed,
        }]
    );
    let d = large.counters().discovery.unwrap();
    assert_eq!((d.received, d.accepted, d.dropped_total()), (7, 1, 6));
}

#[test]
fn invalid_v1_datagrams_are_dropped_with_their_reason() {
    invalid_datagrams_are_dropped_with_their_reason(WireVersion::V1);
}

#[test]
fn invalid_v2_datagrams_are_dropped_with_their_reason() {
    invalid_datagrams_are_dropped_with_their_reason(WireVersion::V2);
}

#[test]
fn announcements_of_another_community_are_dropped() {
    let t0 = Instant::now();
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let other = DiscoveryConfig::builder("another-cluster")
        .unicast_targets(vec![large_udp])
        .build()
        .unwrap();
    let mut small = node_with(config(0x01, KEY).discovery(other), 0x01, t0);
    let mut large = discovering(0xf0, small_udp, LARGE_TCP, Duration::from_secs(3), t0);
    let tx = small.poll_datagram(t0, UNIX_MS).unwrap();
    large.handle_datagram(t0, UNIX_MS, small_udp, &tx.datagram);
    assert_eq!(
        drain(&mut large),
        vec![NodeEvent::DatagramDropped {
            src: small_udp,
            reason: DropReason::OtherCommunity,
        }]
    );
}

// ---- 9. key rotation ------------------------------------------------------

#[test]
fn rotated_key_keeps_old_clients_in_during_the_grace_period_only() {
    // Every key of the ring is tried, current first, for HELLO and HELLO2.
    for version in [WireVersion::V1, WireVersion::V2] {
        let _wire = speak(version);
        for chunk in CHUNKINGS {
            let _pieces = pieces(chunk);
            let t0 = Instant::now();
            let mut b = node(0x0b, KEY, t0);
            let mut old = node(0x0a, KEY, t0);
            let mut new = node(0x0c, OTHER_KEY, t0);
            let grace = Duration::from_secs(60);
            assert_eq!(b.rotate_key(t0, key(OTHER_KEY), grace), KeyId(1));
            assert_eq!(b.keys().current().0, KeyId(1));

            let t1 = t0 + grace - MS;
            let from_old = addr(10, 40_000);
            let link = Link::open(&mut old, &mut b, t1, from_old, server_addr()).unwrap();
            assert!(link.is_established(), "old key still accepted");
            assert_eq!(
                blank_sessions(drain(&mut b)).0,
                vec![NodeEvent::PeerConnected {
                    conn: link.server.id,
                    peer_node: Some(node_id(0x0a)),
                    addr: from_old,
                    direction: Direction::Inbound,
                    key: KeyId(0),
                    session: BLANK_SESSION,
                }]
            );
            assert!(
                matches!(
                    drain(&mut old).as_slice(),
                    [NodeEvent::PeerConnected { key: KeyId(0), .. }]
                ),
                "the ACCEPT is signed with the key the client used"
            );
            let from_new = addr(11, 40_000);
            let link = Link::open(&mut new, &mut b, t1, from_new, server_addr()).unwrap();
            assert!(link.is_established());
            assert!(matches!(
                drain(&mut b).as_slice(),
                [NodeEvent::PeerConnected { key: KeyId(1), .. }]
            ));

            // At the deadline the old key is refused, housekeeping or not.
            let t2 = t0 + grace;
            let link = Link::open(&mut old, &mut b, t2, addr(10, 40_001), server_addr()).unwrap();
            assert!(!link.client.is_established());
            assert_eq!(
                drain(&mut b),
                vec![auth_failed(
                    &link.server,
                    addr(10, 40_001),
                    AuthFailure::BadMac
                )]
            );
            b.handle_timeout(t2);
            assert_eq!(b.keys().accepted(t2).count(), 1);
            let link = Link::open(&mut old, &mut b, t2, addr(10, 40_002), server_addr()).unwrap();
            assert!(!link.client.is_established());
            let link = Link::open(&mut new, &mut b, t2, addr(11, 40_001), server_addr()).unwrap();
            assert!(link.is_established());
            assert_eq!(b.counters().auth.bad_mac, 2);
        }
    }
}

// ---- 10. determinism ------------------------------------------------------

#[test]
fn same_seed_same_inputs_give_identical_bytes() {
    let t0 = Instant::now();
    let build = |n: u8, seed: u8| {
        let d = DiscoveryConfig::builder("node-tests")
            .unicast_targets(vec![addr(2, 9999)])
            // Far enough out that `poll_timeout` below is the redial.
            .announce_interval(Duration::from_secs(100))
            // The v1 announcement carries a challenge from the seed; the
            // v2 one has no randomness.
            .allow_v1(true)
            .build()
            .unwrap();
        let c = config(n, KEY)
            .discovery(d)
            .static_peer(DialTarget::Name("peer.example:9000".into()));
        node_with(c, seed, t0)
    };
    let run = |client_seed: u8| {
        let mut a = build(0x0a, client_seed);
        let mut b = build(0x0b, 0x42);
        let link = Link::open(&mut a, &mut b, t0, addr(9, 40_000), server_addr()).unwrap();
        assert!(link.is_established());
        let announcement: Vec<_> = std::iter::from_fn(|| a.poll_datagram(t0, UNIX_MS)).collect();
        assert_eq!(announcement.len(), 2);
        let dial = a.poll_dial(t0).unwrap();
        a.dial_failed(t0, &dial);
        (
            link.client.written,
            link.server.written,
            announcement,
            a.poll_timeout().unwrap(),
        )
    };
    let (hello1, accept1, ann1, redial1) = run(7);
    let (hello2, accept2, ann2, redial2) = run(7);
    // HELLO2 and CONFIRM; ACCEPT2.
    assert_eq!(hello1.len(), 86 + 30);
    assert_eq!(accept1.len(), 86);
    assert_eq!(hello1, hello2);
    assert_eq!(accept1, accept2);
    assert_eq!(ann1, ann2);
    assert_eq!(redial1, redial2);

    // The seed is what makes them so.
    let (hello3, _, ann3, _) = run(8);
    assert_ne!(hello1, hello3);
    assert_eq!(ann1[0].datagram, ann3[0].datagram, "v2: no randomness");
    assert_ne!(ann1[1].datagram, ann3[1].datagram);
}

// ---- 11. arbitrary operation sequences ------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Accept {
        from: u8,
    },
    Hello {
        conn: usize,
        node: u8,
        challenge: u8,
        good_key: bool,
    },
    Bytes {
        conn: usize,
        bytes: Vec<u8>,
    },
    Eof {
        conn: usize,
    },
    Close {
        conn: usize,
    },
    ConnectTo,
    Advance {
        millis: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3).prop_map(|from| Op::Accept { from }),
        3 => (any::<usize>(), prop::sample::select(vec![0x0a, 0x0b, 0x0c]), 0u8..4, any::<bool>())
            .prop_map(|(conn, node, challenge, good_key)| Op::Hello { conn, node, challenge, good_key }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(conn, bytes)| Op::Bytes { conn, bytes }),
        1 => any::<usize>().prop_map(|conn| Op::Eof { conn }),
        1 => any::<usize>().prop_map(|conn| Op::Close { conn }),
        1 => Just(Op::ConnectTo),
        2 => (0u32..20_000).prop_map(|millis| Op::Advance { millis }),
    ]
}

const PROP_MAX_CONNECTIONS: usize = 5;
const PROP_MAX_HANDSHAKING: usize = 3;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_node_operations_never_panic_or_exceed_caps(ops in prop::collection::vec(op(), 1..60)) {
        let t0 = Instant::now();
        let policy = PolicyConfig::builder()
            .max_connections(PROP_MAX_CONNECTIONS)
            .max_handshaking(PROP_MAX_HANDSHAKING)
            .max_auth_failures(2)
            .throttle_duration(Duration::from_secs(30))
            .max_attempts_per_window(6)
            .attempt_window(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut b = node_with(config(0x0b, KEY).policy(policy), 0x0b, t0);
        let mut now = t0;
        let mut ends: Vec<(End, Direction)> = Vec::new();
        let mut port = 40_000u16;
        for op in ops {
            now += MS;
            let pick = |conn: usize, len: usize| (len > 0).then(|| conn % len);
            match op {
                Op::Accept { from } => {
                    port = port.wrapping_add(1);
                    let from = addr(20 + from, port);
                    let aggregated_before = b.counters().policy.aggregated;
                    match b.accept(now, from) {
                        Ok((id, conn)) => ends.push((End::new(id, conn), Direction::Inbound)),
                        Err(refusal) => {
                            let aggregated = b.counters().policy.aggregated;
                            let events = drain(&mut b);
                            prop_assert!(
                                events.contains(&NodeEvent::AuthFailed {
                                    conn: None,
                                    addr: from,
                                    reason: refusal.as_auth_failure(),
                                }) || aggregated > aggregated_before,
                                "refusal {refusal:?} not reported: {events:?}"
                            );
                            if let Refusal::Throttled { next, until } = refusal {
                                prop_assert!(until > now && next > now);
                            }
                        }
                    }
                }
                Op::Hello { conn, node, challenge, good_key } => {
                    if let Some(i) = pick(conn, ends.len()) {
                        let k = if good_key { KEY } else { OTHER_KEY };
                        let frame = hello_frame(k, node_id(node), u32::from(challenge));
                        ends[i].0.input(&mut b, now, &frame);
                    }
                }
                Op::Bytes { conn, bytes } => {
                    if let Some(i) = pick(conn, ends.len()) {
                        ends[i].0.input(&mut b, now, &bytes);
                    }
                }
                Op::Eof { conn } => {
                    if let Some(i) = pick(conn, ends.len()) {
                        ends[i].0.eof(&mut b, now);
                    }
                }
                Op::Close { conn } => {
                    if let Some(i) = pick(conn, ends.len()) {
                        ends[i].0.close(&mut b, now);
                    }
                }
                Op::ConnectTo => {
                    port = port.wrapping_add(1);
                    if let Ok((id, conn)) = b.connect_to(now, unix_at(now), addr(50, port), ClientOptions::v2()) {
                        ends.push((End::new(id, conn), Direction::Outbound));
                    }
                }
                Op::Advance { millis } => {
                    now += Duration::from_millis(u64::from(millis));
                    b.handle_timeout(now);
                    for (end, _) in &mut ends {
                        end.timeout(&mut b, now);
                    }
                }
            }
            for (end, _) in &mut ends {
                end.flush(now);
                end.settle(&mut b, now);
            }
            for event in drain(&mut b) {
                if let NodeEvent::PeerConnected { peer_node, direction, .. } = event {
                    prop_assert_ne!(peer_node, Some(node_id(0x0b)), "reflection let in");
                    if direction == Direction::Inbound {
                        prop_assert_ne!(peer_node, None);
                    }
                }
            }
            // An inbound end that failed authentication wrote nothing.
            for (end, direction) in &ends {
                if *direction == Direction::Inbound
                    && end.close_reason.as_ref().and_then(CloseReason::auth_failure).is_some()
                {
                    prop_assert!(end.written.is_empty(), "wrote {:?}", end.written);
                }
            }
            ends.retain(|(end, _)| !end.is_closed());

            let conns: Vec<_> = b.connections().collect();
            prop_assert!(conns.len() <= PROP_MAX_CONNECTIONS);
            let pre_auth = conns
                .iter()
                .filter(|c| c.direction == Direction::Inbound && !c.established)
                .count();
            prop_assert!(pre_auth <= PROP_MAX_HANDSHAKING);
            prop_assert_eq!(conns.len(), ends.len(), "the node tracks exactly the open connections");
            for (end, _) in &ends {
                let info = b.connection(end.id);
                prop_assert!(info.is_some());
                prop_assert_eq!(info.unwrap().established, end.is_established());
            }
        }
    }
}

// ---- peer resolution ---------------------------------------------------------

#[test]
fn a_peer_resolves_to_its_oldest_established_connection_only() {
    let t0 = Instant::now();
    let (a1, a2, a3) = (addr(9, 40_001), addr(9, 40_002), addr(9, 40_003));
    let mut a = node(0x0a, KEY, t0);
    let mut b = node(0x0b, KEY, t0);

    // A socket still in its handshake is no peer yet, whatever names it.
    let pending = accept(&mut b, t0, a3);
    assert_eq!(b.resolve(PeerRef::Conn(pending.id)), None);
    assert_eq!(b.resolve(PeerRef::Addr(a3)), None);

    let mut first = Link::open(&mut a, &mut b, t0, a1, server_addr()).unwrap();
    let mut second = Link::open(&mut a, &mut b, t0, a2, server_addr()).unwrap();
    assert!(first.is_established() && second.is_established());
    let (s1, s2) = (first.server.id, second.server.id);
    assert!(s1 < s2);

    // By node id: both match (inbound connections carry the HELLO's id);
    // the oldest wins.
    assert_eq!(b.resolve(PeerRef::Node(node_id(0x0a))), Some(s1));
    // By address and by id: exactly the one named.
    assert_eq!(b.resolve(PeerRef::Addr(a2)), Some(s2));
    assert_eq!(b.resolve(PeerRef::Conn(s2)), Some(s2));
    assert_eq!(b.resolve(s2.into()), Some(s2));
    assert_eq!(b.resolve(a1.into()), Some(s1));
    // Nothing matches: no connection to that node, none from that address.
    assert_eq!(b.resolve(PeerRef::Node(node_id(0x0c))), None);
    assert_eq!(b.resolve(node_id(0x0c).into()), None);
    assert_eq!(b.resolve(PeerRef::Addr(addr(9, 40_009))), None);
    // The client's connections to b learned its node id (v2's ACCEPT2
    // proves it): by node id and by address they resolve to the oldest.
    assert_eq!(
        a.resolve(PeerRef::Node(node_id(0x0b))),
        Some(first.client.id)
    );
    assert_eq!(
        a.resolve(PeerRef::Addr(server_addr())),
        Some(first.client.id)
    );

    // The oldest closes: the next one takes over; the closed id names
    // nothing any more.
    first.close_by_client(&mut a, &mut b, t0 + SECOND);
    assert!(first.server.is_closed());
    assert_eq!(b.resolve(PeerRef::Node(node_id(0x0a))), Some(s2));
    assert_eq!(b.resolve(PeerRef::Conn(s1)), None);
    assert_eq!(
        a.resolve(PeerRef::Addr(server_addr())),
        Some(second.client.id)
    );

    second.close_by_client(&mut a, &mut b, t0 + SECOND);
    assert_eq!(b.resolve(PeerRef::Node(node_id(0x0a))), None);
}

#[test]
fn peer_refs_convert_from_ids_node_ids_and_addresses() {
    let t0 = Instant::now();
    let mut a = node(0x0a, KEY, t0);
    let (id, _conn) = a
        .connect_to(t0, unix_at(t0), server_addr(), ClientOptions::v2())
        .unwrap();
    assert_eq!(PeerRef::from(id), PeerRef::Conn(id));
    assert_eq!(PeerRef::from(node_id(3)), PeerRef::Node(node_id(3)));
    assert_eq!(PeerRef::from(server_addr()), PeerRef::Addr(server_addr()));
    assert_eq!(
        PeerRef::Addr(server_addr()).to_string(),
        "address 127.0.0.1:9000"
    );
}

// ---- connection events the node reports ----------------------------------------

#[test]
fn stream_endings_handed_to_the_node_become_node_events_naming_the_peer() {
    let t0 = Instant::now();
    let a_addr = addr(9, 40_010);
    let mut a = node(0x0a, KEY, t0);
    let mut b = node(0x0b, KEY, t0);
    let mut link = Link::open(&mut a, &mut b, t0, a_addr, server_addr()).unwrap();
    let sid = link.server.id;
    drain(&mut b);

    let done = link.client.conn.open_stream().unwrap();
    link.client
        .conn
        .send(t0, done, Bytes::from_static(&[1; 1000]))
        .unwrap();
    link.client.conn.finish(t0, done).unwrap();
    let cut = link.client.conn.open_stream().unwrap();
    link.client
        .conn
        .send(t0, cut, Bytes::from_static(&[2; 300]))
        .unwrap();
    link.pump(&mut a, &mut b, t0);
    for e in &link.server.events {
        b.observe(sid, e);
    }
    // The peer goes away with `cut` open; the adapter hands over each event
    // before reporting the close.
    link.server.conn.handle_eof(t0);
    while let Some(e) = link.server.conn.poll_event() {
        match &e {
            Event::Closed { reason } => b.closed(t0, sid, reason, link.server.conn.stats()),
            other => b.observe(sid, other),
        }
    }
    assert_eq!(
        drain(&mut b),
        vec![
            NodeEvent::StreamComplete {
                conn: sid,
                peer_node: Some(node_id(0x0a)),
                addr: a_addr,
                stream: done,
                frames: 1,
                bytes: 1000,
            },
            NodeEvent::StreamIncomplete {
                conn: sid,
                peer_node: Some(node_id(0x0a)),
                addr: a_addr,
                stream: cut,
                bytes: 300,
                reason: CloseReason::PeerClosed,
            },
            NodeEvent::PeerDisconnected {
                conn: sid,
                peer_node: Some(node_id(0x0a)),
                addr: a_addr,
                direction: Direction::Inbound,
                reason: CloseReason::PeerClosed,
            },
        ]
    );
    // A connection the node no longer knows reports nothing.
    b.observe(
        sid,
        &Event::StreamEnd {
            stream: done,
            frames: 1,
            bytes: 1000,
        },
    );
    assert_eq!(drain(&mut b), vec![]);
}

/// Hands the node the server side's events it has not seen yet.
fn observe_new(node: &mut Node, end: &End, seen: &mut usize) {
    for e in &end.events[*seen..] {
        node.observe(end.id, e);
    }
    *seen = end.events.len();
}

#[test]
fn the_node_stream_cap_closes_the_connection_that_opens_one_more_across_connections() {
    let t0 = Instant::now();
    let policy = PolicyConfig::builder()
        .max_incoming_streams(3)
        .build()
        .unwrap();
    let mut a = node(0x0a, KEY, t0);
    let mut c = node(0x0c, KEY, t0);
    let mut b = node_with(config(0x0b, KEY).policy(policy), 0x0b, t0);
    let mut one = Link::open(&mut a, &mut b, t0, addr(9, 40_020), server_addr()).unwrap();
    let mut two = Link::open(&mut c, &mut b, t0, addr(10, 40_021), server_addr()).unwrap();
    let (mut seen_one, mut seen_two) = (one.server.events.len(), two.server.events.len());
    drain(&mut b);
    let open = |link: &mut Link, byte: u8| {
        let s = link.client.conn.open_stream().unwrap();
        link.client
            .conn
            .send(t0, s, Bytes::from(vec![byte; 100]))
            .unwrap();
        s
    };
    // Two on the first connection, one on the second: the cap.
    let first = open(&mut one, 1);
    let second = open(&mut one, 2);
    one.pump(&mut a, &mut b, t0);
    observe_new(&mut b, &one.server, &mut seen_one);
    let third = open(&mut two, 3);
    two.pump(&mut c, &mut b, t0);
    observe_new(&mut b, &two.server, &mut seen_two);
    assert_eq!(b.poll_close(), None, "three streams are within the cap");
    assert_eq!(drain(&mut b), vec![]);
    // An END alone (an empty tensor) opens nothing; a fourth stream with
    // data is one over the cap.
    let empty = two.client.conn.open_stream().unwrap();
    two.client.conn.finish(t0, empty).unwrap();
    let fourth = open(&mut two, 4);
    two.pump(&mut c, &mut b, t0);
    observe_new(&mut b, &two.server, &mut seen_two);
    let order = b
        .poll_close()
        .expect("the second connection is ordered closed");
    assert_eq!(order.conn, two.server.id);
    assert_eq!(order.reason, CloseReason::StreamLimit { max: 3 });
    assert_eq!(b.poll_close(), None);
    let events = drain(&mut b);
    assert!(
        events.contains(&NodeEvent::StreamRefused {
            conn: two.server.id,
            peer_node: Some(node_id(0x0c)),
            addr: addr(10, 40_021),
            stream: fourth,
            max: 3,
        }),
        "{events:?}"
    );
    assert_eq!(b.counters().policy.streams_refused, 1);
    // The adapter carries the order out: the connection's streams are cut
    // with the reason, and its places are given back.
    two.server.conn.abort(t0, order.reason.clone());
    while let Some(e) = two.server.conn.poll_event() {
        match &e {
            Event::Closed { reason } => {
                b.closed(t0, two.server.id, reason, two.server.conn.stats())
            }
            other => b.observe(two.server.id, other),
        }
    }
    let cut: Vec<_> = drain(&mut b)
        .into_iter()
        .filter_map(|e| match e {
            NodeEvent::StreamIncomplete { stream, reason, .. } => Some((stream, reason)),
            _ => None,
        })
        .collect();
    let limit = CloseReason::StreamLimit { max: 3 };
    assert_eq!(cut, vec![(third, limit.clone()), (fourth, limit)]);
    // The first connection's streams were untouched; one ends, and then two
    // more fit again (the cut connection's place is free too).
    one.client.conn.finish(t0, first).unwrap();
    let fifth = open(&mut one, 5);
    let sixth = open(&mut one, 6);
    one.pump(&mut a, &mut b, t0);
    observe_new(&mut b, &one.server, &mut seen_one);
    assert_eq!(b.poll_close(), None);
    assert_eq!(b.counters().policy.streams_refused, 1);
    let _ = (second, fifth, sixth);
}

// ---- identity: squatted node ids and reconnect churn -----------------------

/// A node `n` announcing TCP `tcp_port` to `peer_udp` every `interval`, v1
/// enabled (a squatter's v1 HELLO must be accepted to test what it claims),
/// dialing discovered peers when `dials`.
fn discovering_v1(
    n: u8,
    peer_udp: SocketAddr,
    tcp_port: u16,
    interval: Duration,
    dials: bool,
    t0: Instant,
) -> Node {
    let d = DiscoveryConfig::builder("node-tests")
        .unicast_targets(vec![peer_udp])
        .announce_interval(interval)
        .allow_v1(true)
        .build()
        .unwrap();
    node_with(
        config(n, KEY)
            .discovery(d)
            .tcp_port(tcp_port)
            .dial_discovered(dials),
        n,
        t0,
    )
}

fn conflicts(events: &[NodeEvent]) -> Vec<NodeEvent> {
    events
        .iter()
        .filter(|e| matches!(e, NodeEvent::IdentityConflict { .. }))
        .cloned()
        .collect()
}

/// A key holder at 127.0.0.7 claims node X with a v1 HELLO before this node
/// hears of X: the dial to X's discovered address still goes out, the
/// operation naming X goes to the real X, and the second claim is reported.
#[test]
fn a_squatted_node_id_does_not_stop_the_dial_and_loses_to_the_dialed_connection() {
    let _wire = speak(WireVersion::V1);
    let t0 = Instant::now();
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let mut small = discovering_v1(0x01, large_udp, SMALL_TCP, 3 * SECOND, true, t0);
    let mut large = discovering_v1(0xf0, small_udp, LARGE_TCP, 3 * SECOND, true, t0);
    let mut squatter = node(0xf0, KEY, t0);
    let squat_from = addr(7, 40_000);
    let squat = Link::open(
        &mut squatter,
        &mut small,
        t0,
        squat_from,
        addr(1, SMALL_TCP),
    )
    .unwrap();
    assert!(squat.is_established());
    assert_eq!(
        small.resolve(PeerRef::Node(node_id(0xf0))),
        Some(squat.server.id),
        "the squatter is the only candidate so far"
    );
    drain(&mut small);

    announce(&mut large, large_udp, &mut small, small_udp, t0);
    let dial = small
        .poll_dial(t0)
        .expect("the claim of an unverified connection does not stop the dial");
    assert_eq!(dial.target, DialTarget::Addr(addr(2, LARGE_TCP)));
    let real = Link::dial(
        &mut small,
        &mut large,
        t0,
        &dial,
        addr(1, 50_000),
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(real.is_established());
    assert!(squat.server.id < real.client.id);
    assert_eq!(
        small.resolve(PeerRef::Node(node_id(0xf0))),
        Some(real.client.id),
        "the connection to the discovered address wins over the older squatter"
    );
    assert_eq!(
        conflicts(&drain(&mut small)),
        vec![NodeEvent::IdentityConflict {
            node: node_id(0xf0),
            conn: real.client.id,
            addr: addr(2, LARGE_TCP),
            other: squat.server.id,
            other_addr: squat_from,
        }]
    );
    // Bytes sent to "node X" arrive at the real X.
    let mut real = real;
    let stream = real.client.conn.open_stream().unwrap();
    let t1 = t0 + SECOND;
    real.client
        .conn
        .send(t1, stream, Bytes::from_static(b"for X"))
        .unwrap();
    real.client.conn.finish(t1, stream).unwrap();
    real.pump(&mut small, &mut large, t1);
    assert_eq!(real.server.received(stream), b"for X");
}

/// The node with the larger id defers its dial; a squatter claiming the
/// smaller node's id from another address must not cancel it.
#[test]
fn a_squatted_node_id_does_not_cancel_the_deferred_dial() {
    let t0 = Instant::now();
    let Pair {
        mut small,
        mut large,
        ..
    } = discovered_pair(t0, Duration::from_secs(3));
    let _dial_not_made = small.poll_dial(t0).unwrap();
    let mut squatter = node(0x01, KEY, t0);
    let squat_from = addr(7, 40_000);
    let squat = Link::open(
        &mut squatter,
        &mut large,
        t0,
        squat_from,
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(squat.is_established());
    assert_eq!(
        large.resolve(PeerRef::Node(node_id(0x01))),
        Some(squat.server.id)
    );
    let dial = large
        .poll_dial(t0 + 6 * SECOND)
        .expect("the deferred dial still goes out");
    assert_eq!(dial.target, DialTarget::Addr(addr(1, SMALL_TCP)));
    let real = Link::dial(
        &mut large,
        &mut small,
        t0 + 6 * SECOND,
        &dial,
        addr(2, 50_000),
        addr(1, SMALL_TCP),
    )
    .unwrap();
    assert!(real.is_established());
    assert_eq!(
        large.resolve(PeerRef::Node(node_id(0x01))),
        Some(real.client.id)
    );
    assert_eq!(
        conflicts(&drain(&mut large)).len(),
        1,
        "one conflict, for the second claim"
    );
}

/// Applies every close order of `node` to the ends in `links` (`node` is
/// the server of `inbound`, the client of `outbound`) and returns the
/// reasons given.
fn carry_out_closes(
    node: &mut Node,
    peer: &mut Node,
    inbound: &mut [Link],
    outbound: &mut [Link],
    now: Instant,
) -> Vec<CloseReason> {
    let mut reasons = Vec::new();
    while let Some(order) = node.poll_close() {
        reasons.push(order.reason.clone());
        if let Some(link) = inbound.iter_mut().find(|l| l.server.id == order.conn) {
            link.server.conn.abort(now, order.reason);
            link.pump(peer, node, now);
        } else if let Some(link) = outbound.iter_mut().find(|l| l.client.id == order.conn) {
            link.client.conn.abort(now, order.reason);
            link.pump(node, peer, now);
        }
    }
    reasons
}

fn established(node: &Node) -> usize {
    node.connections().filter(|c| c.established).count()
}

/// A peer with the smaller id that opens a new connection every 2 s and
/// never uses the ones it opened (it never sees them as established):
/// the node with the larger id closes the idle duplicates, dials it back,
/// and the live connections stay at most two. With `stops_once_dialed`
/// the peer settles once it is dialed, as the Python implementation does;
/// otherwise it churns for ever and the count must still stay bounded.
fn churning_peer_is_settled(stops_once_dialed: bool) {
    let t0 = Instant::now();
    let interval = 2 * SECOND;
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let mut churner = discovering_v1(0x01, large_udp, SMALL_TCP, interval, false, t0);
    let mut large = discovering_v1(0xf0, small_udp, LARGE_TCP, 3 * SECOND, true, t0);
    let (mut inbound, mut outbound): (Vec<Link>, Vec<Link>) = (Vec::new(), Vec::new());
    let mut superseded = 0;
    let mut history = Vec::new();
    for round in 0..30u16 {
        let now = t0 + u32::from(round) * interval;
        announce(&mut churner, small_udp, &mut large, large_udp, now);
        announce_lost(&mut large, now);
        large.handle_timeout(now);
        let dialed_back = !outbound.is_empty();
        if !(stops_once_dialed && dialed_back) {
            let from = addr(1, 40_000 + round);
            let link = Link::open(&mut churner, &mut large, now, from, addr(2, LARGE_TCP)).unwrap();
            assert!(link.is_established());
            inbound.push(link);
        }
        superseded += carry_out_closes(&mut large, &mut churner, &mut inbound, &mut outbound, now)
            .into_iter()
            .inspect(|r| assert_eq!(*r, CloseReason::Superseded))
            .count();
        while let Some(dial) = large.poll_dial(now) {
            assert_eq!(dial.target, DialTarget::Addr(addr(1, SMALL_TCP)));
            let link = Link::dial(
                &mut large,
                &mut churner,
                now,
                &dial,
                addr(2, 50_000 + round),
                addr(1, SMALL_TCP),
            )
            .unwrap();
            assert!(link.is_established());
            outbound.push(link);
        }
        let live = established(&large);
        assert!(live <= 2, "round {round}: {live} live connections");
        history.push(live);
    }
    assert_eq!(outbound.len(), 1, "dialed back once");
    assert!(outbound[0].client.close_reason.is_none());
    assert!(
        large
            .connections()
            .any(|c| c.direction == Direction::Outbound && c.established),
        "the connection this node dialed is kept"
    );
    assert!(drain(&mut large).iter().any(|e| matches!(
        e,
        NodeEvent::DialingBack { node, addr: a, .. }
            if *node == node_id(0x01) && *a == addr(1, SMALL_TCP)
    )));
    assert!(superseded >= 1);
    if stops_once_dialed {
        // Settled: the same two connections from the dial back on.
        let tail = &history[history.len() - 10..];
        assert!(tail.iter().all(|n| *n == 2), "{history:?}");
        assert_eq!(large.connections().count(), 2);
    } else {
        assert_eq!(superseded, inbound.len() - 1, "all but the newest closed");
    }
}

#[test]
fn a_peer_that_stops_once_dialed_back_settles_on_two_connections() {
    churning_peer_is_settled(true);
}

#[test]
fn a_peer_that_reconnects_for_ever_keeps_at_most_two_live_connections() {
    churning_peer_is_settled(false);
}

/// Duplicates that carry streams are not idle: they stay open.
#[test]
fn duplicate_connections_in_use_are_not_closed() {
    let t0 = Instant::now();
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let mut small = discovering_v1(0x01, large_udp, SMALL_TCP, 3 * SECOND, false, t0);
    let mut large = discovering_v1(0xf0, small_udp, LARGE_TCP, 3 * SECOND, true, t0);
    announce(&mut small, small_udp, &mut large, large_udp, t0);
    let mut first = Link::open(
        &mut small,
        &mut large,
        t0,
        addr(1, 40_000),
        addr(2, LARGE_TCP),
    )
    .unwrap();
    let stream = first.client.conn.open_stream().unwrap();
    first
        .client
        .conn
        .send(t0, stream, Bytes::from_static(b"busy"))
        .unwrap();
    first.pump(&mut small, &mut large, t0);
    let second = Link::open(
        &mut small,
        &mut large,
        t0,
        addr(1, 40_001),
        addr(2, LARGE_TCP),
    )
    .unwrap();
    assert!(second.is_established());
    assert_eq!(large.poll_close(), None, "the busy one stays");
    assert_eq!(established(&large), 2);
}

/// Handshakes may complete out of order: the newest connection is kept
/// whichever finishes last, and an older one that finishes after it is the
/// idle duplicate.
#[test]
fn the_newest_duplicate_is_kept_when_an_older_one_completes_last() {
    let t0 = Instant::now();
    let (small_udp, large_udp) = (addr(1, 9999), addr(2, 9999));
    let mut small = discovering_v1(0x01, large_udp, SMALL_TCP, 3 * SECOND, false, t0);
    let mut large = discovering_v1(0xf0, small_udp, LARGE_TCP, 3 * SECOND, true, t0);
    announce(&mut small, small_udp, &mut large, large_udp, t0);
    let half = |port: u16, small: &mut Node, large: &mut Node| {
        let (cid, c) = small
            .connect_to(t0, unix_at(t0), addr(2, LARGE_TCP), ClientOptions::v2())
            .unwrap();
        Link {
            client: End::new(cid, c),
            server: accept(large, t0, addr(1, port)),
        }
    };
    let mut older = half(40_000, &mut small, &mut large);
    let mut newer = half(40_001, &mut small, &mut large);
    assert!(older.server.id < newer.server.id);
    newer.pump(&mut small, &mut large, t0);
    assert!(newer.is_established());
    assert_eq!(large.poll_close(), None, "one connection so far");
    older.pump(&mut small, &mut large, t0);
    assert!(older.is_established());
    let order = large.poll_close().expect("a duplicate is closed");
    assert_eq!(
        (order.conn, order.reason),
        (older.server.id, CloseReason::Superseded)
    );
    assert_eq!(large.poll_close(), None);
}

/// The adapter's error for a failed dial is reported with the dial.
#[test]
fn a_dial_error_is_reported_with_its_target_and_error() {
    let t0 = Instant::now();
    let target = DialTarget::Addr(server_addr());
    let mut a = node_with(config(0x0a, KEY).static_peer(target.clone()), 0x0a, t0);
    let dial = a.poll_dial(t0).unwrap();
    a.dial_error(t0, &dial, "connection refused");
    assert_eq!(
        drain(&mut a),
        vec![NodeEvent::DialFailed {
            peer: dial.peer,
            node: None,
            target,
            error: "connection refused".into(),
        }]
    );
    assert!(
        a.poll_timeout().is_some(),
        "rescheduled like any failed dial"
    );
}
