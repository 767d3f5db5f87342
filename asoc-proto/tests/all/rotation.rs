//! Key rotation across a cluster on a virtual clock: KEY_ROTATION floods by
//! epoch over encrypted connections, every node switches at the activation
//! time without dropping a connection, a node that was down learns the key
//! when it reconnects within the grace period, and the old key is refused
//! as `retired_key` after it; a rotation sent over v1 in the clear is
//! refused.

use std::time::{Duration, Instant};

use asoc_proto::auth::{AuthFailure, KeyId};
use asoc_proto::connection::{CloseReason, Connection, Event, StreamId};
use asoc_proto::handshake::ClientOptions;
use asoc_proto::node::{ConnId, Node, NodeEvent};
use asoc_proto::rotation::{
    AckStatus, KeyRotation, RotationAck, RotationRefusal, KIND_KEY_ROTATION, KIND_KEY_ROTATION_ACK,
};
use asoc_proto::v2::WireVersion;
use asoc_proto::wire::{FrameType, Header};
use bytes::{Bytes, BytesMut};

use crate::node_harness::{addr, config, config_v2_only, key, node_with, unix_at, KEY, OTHER_KEY};

const SECOND: Duration = Duration::from_secs(1);

/// One end of a link.
struct Side {
    node: usize,
    id: ConnId,
    conn: Connection,
    rx: BytesMut,
    closed: Option<CloseReason>,
    eof: bool,
    established: bool,
    received: Vec<u8>,
}

impl Side {
    fn new(node: usize, id: ConnId, conn: Connection) -> Self {
        Self {
            node,
            id,
            conn,
            rx: BytesMut::new(),
            closed: None,
            eof: false,
            established: false,
            received: Vec::new(),
        }
    }
}

/// Nodes (a `None` is down) and the links between them, driven the way an
/// adapter drives them: every input followed by `drive`, control events to
/// `handle_control`, control transmits to `send_control`.
struct Cluster {
    nodes: Vec<Option<Node>>,
    links: Vec<[Side; 2]>,
    events: Vec<Vec<NodeEvent>>,
}

impl Cluster {
    fn node(&mut self, n: usize) -> &mut Node {
        self.nodes[n].as_mut().expect("node is up")
    }

    fn settle(&mut self, now: Instant, link: usize, side: usize) {
        let s = &mut self.links[link][side];
        let node = self.nodes[s.node].as_mut().expect("node is up");
        if s.closed.is_none() {
            node.drive(now, unix_at(now), s.id, &mut s.conn);
        }
        while let Some(e) = s.conn.poll_event() {
            node.observe(s.id, &e);
            match &e {
                Event::Established { .. } => s.established = true,
                Event::Control { kind, payload } => {
                    node.handle_control(now, unix_at(now), s.id, *kind, payload);
                }
                Event::Data { payload, .. } => s.received.extend_from_slice(payload),
                Event::Closed { reason } => {
                    node.closed(now, s.id, reason, s.conn.stats());
                    s.closed = Some(reason.clone());
                }
                _ => {}
            }
        }
    }

    /// Queues every node's control transmits on their connections.
    fn route_controls(&mut self, now: Instant) {
        for n in 0..self.nodes.len() {
            let Some(node) = self.nodes[n].as_mut() else {
                continue;
            };
            while let Some(t) = node.poll_control() {
                let side = self
                    .links
                    .iter_mut()
                    .flatten()
                    .find(|s| s.node == n && s.id == t.conn)
                    .expect("a transmit names a live connection");
                side.conn.send_control(now, t.kind, &t.body).unwrap();
            }
            self.events[n].extend(std::iter::from_fn(|| node.poll_event()));
        }
    }

    /// Moves bytes until nothing moves.
    fn run(&mut self, now: Instant) {
        for _ in 0..10_000 {
            let mut moved = false;
            for l in 0..self.links.len() {
                self.settle(now, l, 0);
                self.settle(now, l, 1);
                self.route_controls(now);
                for from in 0..2 {
                    let mut out = Vec::new();
                    self.links[l][from].conn.write_to(now, &mut out).unwrap();
                    if !out.is_empty() {
                        moved = true;
                        let to = &mut self.links[l][1 - from];
                        if to.closed.is_none() {
                            to.rx.extend_from_slice(&out);
                            to.conn.handle_input(now, &mut to.rx);
                        }
                        self.settle(now, l, 1 - from);
                    }
                }
                for side in 0..2 {
                    let other_closed = self.links[l][1 - side].closed.is_some();
                    let s = &mut self.links[l][side];
                    if other_closed && s.closed.is_none() && !s.eof {
                        s.eof = true;
                        s.conn.handle_eof(now);
                        moved = true;
                        self.settle(now, l, side);
                    }
                }
                self.route_controls(now);
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never went quiet");
    }

    /// Node `a` dials node `b` (v2); returns the link's index.
    fn link(&mut self, now: Instant, a: usize, b: usize) -> usize {
        let (cid, c) = self
            .node(a)
            .connect_to(
                now,
                unix_at(now),
                addr(b as u8 + 1, 9000),
                ClientOptions::v2(),
            )
            .unwrap();
        let (sid, s) = self
            .node(b)
            .accept(now, addr(a as u8 + 1, 40_000 + b as u16))
            .unwrap();
        self.links
            .push([Side::new(a, cid, c), Side::new(b, sid, s)]);
        self.run(now);
        self.links.len() - 1
    }

    /// Fires every node's timers at `now`, then runs.
    fn advance(&mut self, now: Instant) {
        for n in 0..self.nodes.len() {
            if let Some(node) = self.nodes[n].as_mut() {
                node.handle_timeout(now);
            }
        }
        for l in 0..self.links.len() {
            for side in 0..2 {
                let s = &mut self.links[l][side];
                if s.closed.is_none() {
                    s.conn.handle_timeout(now);
                }
                self.settle(now, l, side);
            }
        }
        self.route_controls(now);
        self.run(now);
    }

    fn take_events(&mut self, n: usize) -> Vec<NodeEvent> {
        std::mem::take(&mut self.events[n])
    }

    /// Sends `bytes` as one stream over link `l` from side 0.
    fn send(&mut self, now: Instant, l: usize, bytes: &'static [u8]) {
        let c = &mut self.links[l][0].conn;
        let s = c.open_stream().unwrap();
        c.send(now, s, Bytes::from_static(bytes)).unwrap();
        c.finish(now, s).unwrap();
        self.run(now);
    }
}

fn cluster(up: &[bool], t0: Instant) -> Cluster {
    let nodes = up
        .iter()
        .enumerate()
        .map(|(i, up)| up.then(|| node_with(config_v2_only(i as u8 + 1, KEY), i as u8 + 1, t0)))
        .collect();
    Cluster {
        nodes,
        links: Vec::new(),
        events: vec![Vec::new(); up.len()],
    }
}

fn current_key(node: &Node) -> Vec<u8> {
    node.keys().current().1.expose_secret().to_vec()
}

#[test]
fn five_node_cluster_rotates_with_one_node_down() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    // Node 4 is down during the rotation.
    let mut c = cluster(&[true, true, true, true, false], t0);
    // A mesh with cycles: a flood that looped would show here.
    let links: Vec<usize> = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]
        .into_iter()
        .map(|(a, b)| c.link(t0, a, b))
        .collect();
    for &l in &links {
        assert!(c.links[l][0].established && c.links[l][1].established);
    }
    for n in 0..4 {
        c.take_events(n);
    }

    let t1 = t0 + SECOND;
    let epoch = c
        .node(0)
        .start_key_rotation(t1, unix_at(t1), key(OTHER_KEY), 10 * SECOND, 30 * SECOND)
        .unwrap();
    assert_eq!(epoch, 1);
    c.route_controls(t1);
    c.run(t1);

    // Every node learned it exactly once, and sent it once to each other
    // peer: degree 3 for node 0, 2 for the others (less the sender).
    let degree = [3, 2, 3, 2];
    for (n, &degree) in degree.iter().enumerate() {
        let events = c.take_events(n);
        let learned = events
            .iter()
            .filter(|e| matches!(e, NodeEvent::KeyRotationLearned { epoch: 1, .. }))
            .count();
        let started = events
            .iter()
            .filter(|e| matches!(e, NodeEvent::KeyRotationStarted { epoch: 1, .. }))
            .count();
        assert_eq!(learned + started, 1, "node {n}: {events:?}");
        let sent = events
            .iter()
            .filter(|e| matches!(e, NodeEvent::KeyRotationSent { epoch: 1, .. }))
            .count();
        let expected = if n == 0 { degree } else { degree - 1 };
        assert_eq!(sent, expected, "node {n}: {events:?}");
        // Each sent rotation came back acknowledged.
        let acked: Vec<AckStatus> = events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::KeyRotationAcked {
                    epoch: 1, status, ..
                } => Some(*status),
                _ => None,
            })
            .collect();
        assert_eq!(acked.len(), sent, "node {n}: {events:?}");
        // Before activation: still signing with the old key, the new one
        // accepted.
        let node = c.node(n);
        assert_eq!(current_key(node), KEY.as_bytes(), "node {n}");
        assert!(node.keys().staged().is_some());
        assert_eq!(node.rotation_epoch(), 1);
    }
    // Nothing more moves: no loop.
    c.run(t1);
    for n in 0..4 {
        assert!(c.take_events(n).is_empty());
    }

    // Data keeps flowing across the switch.
    c.send(t1 + SECOND, links[0], b"before the switch");

    let t_act = t1 + 10 * SECOND;
    c.advance(t_act);
    for n in 0..4 {
        let events = c.take_events(n);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, NodeEvent::KeyRotationActivated { epoch: 1, .. })),
            "node {n}: {events:?}"
        );
        assert_eq!(current_key(c.node(n)), OTHER_KEY.as_bytes(), "node {n}");
    }
    c.send(t_act + SECOND, links[0], b" and after");
    assert_eq!(
        c.links[links[0]][1].received,
        b"before the switch and after"
    );
    // A new connection between switched nodes uses the new key.
    let l13 = c.link(t_act + SECOND, 1, 3);
    assert!(c.links[l13][0].established && c.links[l13][1].established);

    // Node 4 comes back within the grace period, with the old key.
    let t_back = t0 + 20 * SECOND;
    c.nodes[4] = Some(node_with(config_v2_only(5, KEY), 5, t_back));
    let l40 = c.link(t_back, 4, 0);
    assert!(
        c.links[l40][0].established,
        "the old key is accepted in grace"
    );
    let events = c.take_events(4);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, NodeEvent::KeyRotationLearned { epoch: 1, .. })),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, NodeEvent::KeyRotationActivated { epoch: 1, .. })),
        "activation is past: it switches at once: {events:?}"
    );
    assert_eq!(current_key(c.node(4)), OTHER_KEY.as_bytes());
    let events = c.take_events(0);
    assert!(
        events.iter().any(|e| matches!(
            e,
            NodeEvent::KeyRotationAcked {
                epoch: 1,
                status: AckStatus::Adopted,
                ..
            }
        )),
        "{events:?}"
    );

    // The grace period ends 30 s after activation.
    let t_end = t_act + 30 * SECOND;
    c.advance(t_end);
    for n in 0..5 {
        let events = c.take_events(n);
        assert!(
            events
                .iter()
                .any(|e| matches!(e, NodeEvent::KeyRotationOldKeyPurged { key: KeyId(0) })),
            "node {n}: {events:?}"
        );
        let node = c.node(n);
        assert_eq!(node.keys().accepted(t_end).count(), 1, "node {n}");
    }
    // No connection was dropped during the switch.
    for (l, link) in c.links.iter().enumerate() {
        for s in link {
            assert_eq!(s.closed, None, "link {l} node {}", s.node);
        }
    }

    // Node 4 dials node 2 with the new key it learned.
    let l42 = c.link(t_end + SECOND, 4, 2);
    assert!(c.links[l42][0].established);

    // A node still holding the old key is refused, and told why.
    let t_late = t_end + 2 * SECOND;
    c.nodes
        .push(Some(node_with(config_v2_only(9, KEY), 9, t_late)));
    c.events.push(Vec::new());
    c.take_events(0);
    let (cid, conn) = c
        .node(5)
        .connect_to(t_late, unix_at(t_late), addr(1, 9000), ClientOptions::v2())
        .unwrap();
    let (sid, s) = c.node(0).accept(t_late, addr(9, 41_000)).unwrap();
    c.links
        .push([Side::new(5, cid, conn), Side::new(0, sid, s)]);
    c.run(t_late);
    let late = c.links.last().unwrap();
    assert!(!late[0].established && !late[1].established);
    assert_eq!(
        late[1].closed,
        Some(CloseReason::AuthFailed(AuthFailure::BadMac)),
        "the connection closes silently, as for any failure"
    );
    let events = c.take_events(0);
    assert!(
        events.iter().any(|e| matches!(
            e,
            NodeEvent::AuthFailed {
                reason: AuthFailure::RetiredKey,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(AuthFailure::RetiredKey.as_str(), "retired_key");
    assert_eq!(c.node(0).counters().policy.auth_failures.retired_key, 1);
}

#[test]
fn equal_and_lower_epochs_are_acknowledged_and_go_no_further() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    let mut c = cluster(&[true, true, true], t0);
    let l01 = c.link(t0, 0, 1);
    c.link(t0, 1, 2);
    c.node(0)
        .start_key_rotation(t0, unix_at(t0), key(OTHER_KEY), SECOND, SECOND)
        .unwrap();
    c.route_controls(t0);
    c.run(t0);
    let t1 = t0 + 5 * SECOND;
    c.advance(t1);
    let second = key("0011223344556677889900aabbccddeeff");
    assert_eq!(
        c.node(0)
            .start_key_rotation(t1, unix_at(t1), second.clone(), SECOND, SECOND)
            .unwrap(),
        2
    );
    c.route_controls(t1);
    c.run(t1);
    for n in 0..3 {
        c.take_events(n);
        assert_eq!(c.node(n).rotation_epoch(), 2);
    }
    // Node 0 sends epoch 2 again, then epoch 1: node 1 acknowledges both
    // (known, superseded) and neither learns nor forwards them.
    for (epoch, k) in [(2, second.clone()), (1, key(OTHER_KEY))] {
        let body = KeyRotation::new(epoch, unix_at(t1), 1000, k).encode();
        c.links[l01][0]
            .conn
            .send_control(t1, KIND_KEY_ROTATION, &body)
            .unwrap();
    }
    c.run(t1);
    let events = c.take_events(0);
    let statuses: Vec<(u64, AckStatus)> = events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::KeyRotationAcked { epoch, status, .. } => Some((*epoch, *status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        [(2, AckStatus::Known), (1, AckStatus::Superseded)],
        "{events:?}"
    );
    let events = c.take_events(1);
    assert!(events.is_empty(), "node 1 did nothing else: {events:?}");
    assert!(c.take_events(2).is_empty(), "nothing was forwarded");
    assert_eq!(c.node(1).rotation_epoch(), 2);
    assert_eq!(c.node(1).keys().staged(), c.node(0).keys().staged());
}

/// A v1 link between node 0 (client) and node 1 (server), both with v1
/// enabled.
fn v1_pair(t0: Instant) -> (Cluster, usize) {
    let mut c = Cluster {
        nodes: vec![
            Some(node_with(config(1, KEY), 1, t0)),
            Some(node_with(config(2, KEY), 2, t0)),
        ],
        links: Vec::new(),
        events: vec![Vec::new(); 2],
    };
    let (cid, conn) = c
        .node(0)
        .connect_to(t0, unix_at(t0), addr(2, 9000), ClientOptions::v1())
        .unwrap();
    let (sid, s) = c.node(1).accept(t0, addr(1, 40_000)).unwrap();
    c.links
        .push([Side::new(0, cid, conn), Side::new(1, sid, s)]);
    c.run(t0);
    assert!(c.links[0][0].established && c.links[0][1].established);
    assert_eq!(
        c.links[0][1].conn.session().unwrap().version,
        WireVersion::V1
    );
    (c, 0)
}

#[test]
fn a_rotation_never_goes_over_v1_in_the_clear() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    let (mut c, l) = v1_pair(t0);
    c.take_events(0);
    c.node(0)
        .start_key_rotation(t0, unix_at(t0), key(OTHER_KEY), SECOND, SECOND)
        .unwrap();
    assert!(c.node(0).poll_control().is_none(), "nothing for a v1 peer");
    c.run(t0);
    let events = c.take_events(0);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, NodeEvent::KeyRotationSent { .. })),
        "{events:?}"
    );
    assert_eq!(c.node(1).rotation_epoch(), 0);
    // Nothing the client wrote after the handshake carries the key.
    let mut out = Vec::new();
    c.links[l][0].conn.write_to(t0, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn a_rotation_crafted_over_v1_cleartext_is_refused() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    let (mut c, l) = v1_pair(t0);
    c.take_events(1);
    // The attacker (any v1 peer, or anyone rewriting a cleartext
    // connection) writes a well-formed KEY_ROTATION as raw v1 bytes.
    let body = KeyRotation::new(7, unix_at(t0), 1000, key(OTHER_KEY)).encode();
    let mut raw = Header::new(FrameType::Control, 0, KIND_KEY_ROTATION, body.len() as u32)
        .encode()
        .to_vec();
    raw.extend_from_slice(&body);
    let ack = RotationAck::new(7, AckStatus::Adopted).encode();
    raw.extend_from_slice(
        &Header::new(
            FrameType::Control,
            0,
            KIND_KEY_ROTATION_ACK,
            ack.len() as u32,
        )
        .encode(),
    );
    raw.extend_from_slice(&ack);
    let server = &mut c.links[l][1];
    server.rx.extend_from_slice(&raw);
    server.conn.handle_input(t0, &mut server.rx);
    c.settle(t0, l, 1);
    c.route_controls(t0);
    let events = c.take_events(1);
    let refused: Vec<&RotationRefusal> = events
        .iter()
        .filter_map(|e| match e {
            NodeEvent::KeyRotationRefused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        refused,
        [&RotationRefusal::Cleartext, &RotationRefusal::Cleartext],
        "{events:?}"
    );
    let server_node = c.node(1);
    assert_eq!(server_node.rotation_epoch(), 0);
    assert_eq!(server_node.keys().staged(), None);
    assert_eq!(server_node.keys().accepted(t0).count(), 1);
    assert_eq!(current_key(server_node), KEY.as_bytes());
    // No acknowledgement, nothing at all, goes back; the connection stays.
    let mut out = Vec::new();
    c.links[l][1].conn.write_to(t0, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(c.links[l][1].closed, None);
}

#[test]
fn a_v1_connection_the_adapter_marks_as_tls_carries_rotations() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    let (mut c, l) = v1_pair(t0);
    let (a, b) = (c.links[l][0].id, c.links[l][1].id);
    c.node(0).mark_encrypted_transport(a);
    c.node(1).mark_encrypted_transport(b);
    c.node(0)
        .start_key_rotation(t0, unix_at(t0), key(OTHER_KEY), SECOND, SECOND)
        .unwrap();
    c.route_controls(t0);
    c.run(t0);
    assert_eq!(c.node(1).rotation_epoch(), 1);
    let events = c.take_events(0);
    assert!(
        events.iter().any(|e| matches!(
            e,
            NodeEvent::KeyRotationAcked {
                epoch: 1,
                status: AckStatus::Adopted,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn malformed_rotations_are_refused_and_change_nothing() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    let mut c = cluster(&[true, true], t0);
    let l = c.link(t0, 0, 1);
    c.take_events(1);
    let mut body = KeyRotation::new(1, unix_at(t0), 1000, key(OTHER_KEY))
        .encode()
        .to_vec();
    body.push(0);
    c.links[l][0]
        .conn
        .send_control(t0, KIND_KEY_ROTATION, &body)
        .unwrap();
    // An unknown control kind is ignored.
    c.links[l][0].conn.send_control(t0, 99, b"?").unwrap();
    c.run(t0);
    let events = c.take_events(1);
    assert!(
        matches!(
            events.as_slice(),
            [NodeEvent::KeyRotationRefused {
                reason: RotationRefusal::Malformed(_),
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(c.node(1).rotation_epoch(), 0);
    assert_eq!(c.links[l][1].closed, None);
    assert!(c.links[l][0].conn.send_control(t0, 0, b"").is_err());
    let _ = StreamId::new(1);
}

#[test]
fn a_rotation_cannot_reuse_a_key_or_overtake_one_not_yet_active() {
    let t0 = Instant::now();
    let _ = unix_at(t0);
    let mut c = cluster(&[true], t0);
    let node = c.node(0);
    assert!(node
        .start_key_rotation(t0, unix_at(t0), key(KEY), SECOND, SECOND)
        .is_err());
    node.start_key_rotation(t0, unix_at(t0), key(OTHER_KEY), SECOND, SECOND)
        .unwrap();
    let again = node.start_key_rotation(
        t0,
        unix_at(t0),
        key("0011223344556677889900aabbccddeeff"),
        SECOND,
        SECOND,
    );
    assert_eq!(
        again,
        Err(asoc_proto::rotation::RotationError::InProgress { epoch: 1 })
    );
}
