//! v2 attacks on nodes of one cluster (WIRE-v2.md §3, §6), performed from
//! outside with raw bytes on an accepted connection: what the attacked node
//! wrote, the node events it reported and the policy counters it moved;
//! and, last, the same attacks succeeding against v1.

use crate::node_harness::*;

use std::time::{Duration, Instant};

use asoc_proto::auth::AuthFailure;
use asoc_proto::connection::CloseReason;
use asoc_proto::handshake::ClientOptions;
use asoc_proto::node::{Node, NodeEvent};
use asoc_proto::v2::{Suite, WireVersion};

use crate::harness::v2peer::{RawClient, HANDSHAKE_FRAME_LEN};

const ATTACKER: u8 = 66;

fn v2_node(n: u8, t0: Instant) -> Node {
    node_with(config_v2_only(n, KEY), n, t0)
}

/// Node X (3) connected to node A (1): X's recorded HELLO2 and the link.
fn genuine(x: &mut Node, a: &mut Node, t0: Instant) -> (Vec<u8>, Link) {
    let link = Link::open(x, a, t0, addr(3, 40_000), addr(1, 7000)).unwrap();
    assert!(link.is_established());
    drain(x);
    drain(a);
    let hello = link.client.written[..HANDSHAKE_FRAME_LEN].to_vec();
    (hello, link)
}

fn peer_connected(events: &[NodeEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(e, NodeEvent::PeerConnected { .. }))
}

#[test]
fn hello2_recorded_at_one_node_and_replayed_to_another_never_establishes() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let (mut x, mut a, mut b) = (v2_node(3, t0), v2_node(1, t0), v2_node(4, t0));
        let (recorded, _link) = genuine(&mut x, &mut a, t0);
        // The attacker replays it to node B, which has never seen it.
        let from = addr(ATTACKER, 50_000);
        let mut end = accept(&mut b, t0, from);
        end.input(&mut b, t0, &recorded);
        let answer = end.flush(t0);
        assert_eq!(
            answer.len(),
            HANDSHAKE_FRAME_LEN,
            "ACCEPT2 and nothing more"
        );
        assert!(!peer_connected(&drain(&mut b)), "no peer before CONFIRM");
        assert!(!end.is_established());
        // Without the ephemeral private key there is no CONFIRM to send:
        // garbage in its place is a bad frame MAC, silence a timeout.
        let mut end2 = accept(&mut b, t0, addr(ATTACKER, 50_001));
        let mut replay2 = RawClient::new(&key(KEY), Suite::AesGcm, node_id(3), unix_at(t0), 5);
        end2.input(&mut b, t0, &replay2.hello);
        let accept2 = end2.flush(t0);
        let (_, mut confirm) = replay2.finish(&accept2).unwrap();
        confirm[20] ^= 1;
        end2.input(&mut b, t0, &confirm);
        assert_eq!(
            end2.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::BadFrameMac))
        );
        let later = t0 + Duration::from_secs(10);
        end.timeout(&mut b, later);
        assert_eq!(end.close_reason, Some(CloseReason::HandshakeTimeout));
        assert_eq!(end.flush(later), b"", "nothing after ACCEPT2");
        let events = drain(&mut b);
        assert!(!peer_connected(&events), "{events:?}");
        assert!(events.contains(&NodeEvent::AuthFailed {
            conn: Some(end.id),
            addr: from,
            reason: AuthFailure::Timeout,
        }));
        assert!(events.contains(&NodeEvent::AuthFailed {
            conn: Some(end2.id),
            addr: addr(ATTACKER, 50_001),
            reason: AuthFailure::BadFrameMac,
        }));
        assert_eq!(b.peer_traffic(&node_id(3)), None, "node 3 never claimed");
        assert_eq!(b.connections().count(), 0);
        let counters = b.counters();
        assert_eq!(counters.policy.established, 0);
        assert_eq!(counters.policy.auth_failures.timeout, 1);
        assert_eq!(counters.policy.auth_failures.bad_frame_mac, 1);
        assert_eq!(counters.auth.v2_established, 0);
    }
}

#[test]
fn squatting_a_connected_node_id_with_its_replayed_hello2_is_a_replay() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let (mut x, mut a) = (v2_node(3, t0), v2_node(1, t0));
        let (recorded, mut link) = genuine(&mut x, &mut a, t0);
        let t1 = t0 + Duration::from_secs(2);
        let from = addr(ATTACKER, 50_000);
        let mut end = accept(&mut a, t1, from);
        end.input(&mut a, t1, &recorded);
        assert_eq!(end.flush(t1), b"", "nothing sent for a replay");
        assert_eq!(
            end.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::Replay))
        );
        assert_eq!(
            drain(&mut a),
            vec![NodeEvent::AuthFailed {
                conn: Some(end.id),
                addr: from,
                reason: AuthFailure::Replay,
            }]
        );
        assert_eq!(a.counters().policy.auth_failures.replay, 1);
        // The genuine connection of node 3 is untouched and still carries data.
        let s = link.client.conn.open_stream().unwrap();
        link.client
            .conn
            .send(t1, s, bytes::Bytes::from_static(b"still me"))
            .unwrap();
        link.client.conn.finish(t1, s).unwrap();
        link.pump(&mut x, &mut a, t1);
        assert_eq!(link.server.received(s), b"still me");
        let claims: Vec<_> = a
            .connections()
            .filter(|c| c.peer_node == Some(node_id(3)))
            .collect();
        assert_eq!(claims.len(), 1, "one connection claims node 3");
    }
}

#[test]
fn v1_hellos_to_a_v2_only_node_are_v1_disabled_and_never_lock_out() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let mut s = v2_node(1, t0);
        let from_ip = ATTACKER;
        // Twice the lockout threshold of v1 HELLOs, correctly signed or not.
        for i in 0..10u16 {
            let t = t0 + Duration::from_secs(u64::from(i));
            let from = addr(from_ip, 50_000 + i);
            let mut end = accept(&mut s, t, from);
            let k = if i % 2 == 0 { KEY } else { OTHER_KEY };
            end.input(&mut s, t, &hello_frame(k, node_id(5), u32::from(i)));
            assert_eq!(end.flush(t), b"", "silent close");
            assert_eq!(
                end.close_reason,
                Some(CloseReason::AuthFailed(AuthFailure::V1Disabled))
            );
            // The first is reported on its own, the rest aggregated.
            let reported = if i == 0 {
                vec![NodeEvent::AuthFailed {
                    conn: Some(end.id),
                    addr: from,
                    reason: AuthFailure::V1Disabled,
                }]
            } else {
                vec![]
            };
            assert_eq!(drain(&mut s), reported);
        }
        assert_eq!(s.counters().policy.aggregated, 9);
        let t = t0 + Duration::from_secs(10);
        assert!(!s.is_throttled(t, ip(from_ip)));
        let counters = s.counters();
        assert_eq!(counters.policy.auth_failures.v1_disabled, 10);
        assert_eq!(counters.policy.throttles, 0);
        assert_eq!(counters.auth.v1_disabled, 10);
        assert_eq!(counters.auth.bad_mac, 0);
        // A v2 client from that address still gets in.
        let mut c = v2_node(2, t0);
        let link = Link::open(&mut c, &mut s, t, addr(from_ip, 60_000), addr(1, 7000)).unwrap();
        assert!(link.is_established());
        // Whereas five HELLO2s under another key do throttle it.
        let mut throttles = 0;
        for i in 0..5u32 {
            let t = t + Duration::from_secs(1 + u64::from(i));
            let mut end = accept(&mut s, t, addr(from_ip, 61_000 + i as u16));
            let forged = RawClient::new(
                &key(OTHER_KEY),
                Suite::AesGcm,
                node_id(5),
                unix_at(t),
                900 + i,
            );
            end.input(&mut s, t, &forged.hello);
            assert_eq!(
                end.close_reason,
                Some(CloseReason::AuthFailed(AuthFailure::BadMac))
            );
            throttles += drain(&mut s)
                .iter()
                .filter(|e| matches!(e, NodeEvent::Throttled { .. }))
                .count();
        }
        assert_eq!(throttles, 1);
        assert_eq!(s.counters().policy.throttles, 1);
    }
}

#[test]
fn a_node_dialing_an_expected_id_refuses_another_server() {
    for chunk in CHUNKINGS {
        let _pieces = pieces(chunk);
        let t0 = Instant::now();
        let (mut c, mut s) = (v2_node(2, t0), v2_node(1, t0));
        let (cid, conn) = c
            .connect_to(
                t0,
                unix_at(t0),
                addr(1, 7000),
                ClientOptions::v2().expect_peer(Some(node_id(9))),
            )
            .unwrap();
        let mut client = End::new(cid, conn);
        let mut server = accept(&mut s, t0, addr(2, 40_000));
        let hello = client.flush(t0);
        server.input(&mut s, t0, &hello);
        let accept2 = server.flush(t0);
        client.input(&mut c, t0, &accept2);
        assert_eq!(
            client.close_reason,
            Some(CloseReason::AuthFailed(AuthFailure::UnexpectedPeer {
                expected: node_id(9),
                proven: node_id(1),
            }))
        );
        assert_eq!(client.flush(t0), b"", "no CONFIRM");
        assert_eq!(client.written.len(), HANDSHAKE_FRAME_LEN);
        let events = drain(&mut c);
        assert!(!peer_connected(&events));
        assert!(events.contains(&NodeEvent::AuthFailed {
            conn: Some(cid),
            addr: addr(1, 7000),
            reason: AuthFailure::UnexpectedPeer {
                expected: node_id(9),
                proven: node_id(1),
            },
        }));
        assert_eq!(c.counters().auth.unexpected_peer, 1);
        // The server, never confirmed, reports no peer either.
        assert!(!peer_connected(&drain(&mut s)));
    }
}

// ----- the same attacks against v1, which cannot stop them -------------------------
//
// These pass because v1 is weak: they keep the difference visible, and
// would start failing if v1 changed its bytes.

fn v1_node(n: u8, t0: Instant) -> Node {
    node_with(config(n, KEY), n, t0)
}

#[test]
fn v1_lets_a_hello_recorded_at_one_node_open_another() {
    let t0 = Instant::now();
    let _v1 = speak(WireVersion::V1);
    let (mut x, mut a, mut b) = (v1_node(3, t0), v1_node(1, t0), v1_node(4, t0));
    let link = Link::open(&mut x, &mut a, t0, addr(3, 40_000), addr(1, 7000)).unwrap();
    assert!(link.is_established());
    let recorded = link.client.written[..50].to_vec();
    let from = addr(ATTACKER, 50_000);
    let mut end = accept(&mut b, t0, from);
    end.input(&mut b, t0, &recorded);
    assert_eq!(end.flush(t0).len(), 30, "ACCEPT sent to the attacker");
    assert!(end.is_established());
    let (events, _) = blank_sessions(drain(&mut b));
    assert!(events.contains(&NodeEvent::PeerConnected {
        conn: end.id,
        peer_node: Some(node_id(3)),
        addr: from,
        direction: asoc_proto::node::Direction::Inbound,
        key: asoc_proto::auth::KeyId(0),
        session: BLANK_SESSION,
    }));
}

#[test]
fn v1_lets_a_recorded_accept_fool_a_client_and_a_relay_rewrite_a_tensor() {
    let t0 = Instant::now();
    let _v1 = speak(WireVersion::V1);
    let (mut x, mut a) = (v1_node(3, t0), v1_node(1, t0));
    let link = Link::open(&mut x, &mut a, t0, addr(3, 40_000), addr(1, 7000)).unwrap();
    let recorded_accept = link.server.written[..30].to_vec();
    // Node 3 dials again, this time an impostor that replays the ACCEPT.
    let (cid, conn) = x
        .connect_to(t0, unix_at(t0), addr(ATTACKER, 7000), ClientOptions::v1())
        .unwrap();
    let mut victim = End::new(cid, conn);
    let _hello = victim.flush(t0);
    victim.input(&mut x, t0, &recorded_accept);
    assert!(victim.is_established(), "v1 accepts a recorded ACCEPT");
    // And on the genuine link a relay flips a payload byte unnoticed.
    let mut link = link;
    let s = link.client.conn.open_stream().unwrap();
    link.client
        .conn
        .send(t0, s, bytes::Bytes::from_static(b"tensor"))
        .unwrap();
    link.client.conn.finish(t0, s).unwrap();
    let mut wire = link.client.flush(t0);
    wire[14] ^= 0x20;
    link.server.input(&mut a, t0, &wire);
    assert_eq!(link.server.received(s), b"Tensor", "altered and delivered");
    assert!(
        link.server
            .events
            .iter()
            .any(|e| matches!(e, asoc_proto::connection::Event::StreamEnd { bytes: 6, .. })),
        "the altered tensor is reported complete"
    );
}
