//! The blocking mio `Node` over loopback: what it adds to asoc-async's node
//! (the application's own connect, peers by address and name, the state
//! after shutdown). All traffic stays on 127.0.0.1.

use std::thread;
use std::time::{Duration, Instant};

use asoc_mio::{Error, Node, NodeBuilder, NodeEvent, PeerRef};
use asoc_proto::auth::ApiKey;
use asoc_proto::node::Direction;
use asoc_testkit::scenarios::chunk;
use bytes::Bytes;

use crate::common::route;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COMMUNITY: &str = "mio-cluster";
const LIMIT: Duration = Duration::from_secs(60);

fn builder(key: &str) -> NodeBuilder {
    NodeBuilder::new(COMMUNITY, ApiKey::new(key).unwrap()).bind("127.0.0.1:0".parse().unwrap())
}

fn start(b: NodeBuilder) -> Node {
    b.start().unwrap()
}

/// The next event matching `pred` (panics after 20 s without one).
fn event(node: &Node, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = node
            .next_event_timeout(left)
            .expect("no matching event in time");
        if pred(&e) {
            return e;
        }
    }
}

/// `b`, then `a` with `b` as its static peer; both connected.
fn pair() -> (Node, Node) {
    let b = start(builder(KEY));
    let a = start(builder(KEY).static_peer(b.local_addr().to_string()));
    assert_eq!(a.wait_for_peers(1, LIMIT), 1, "a connected");
    assert_eq!(b.wait_for_peers(1, LIMIT), 1, "b connected");
    (a, b)
}

// The shared scenarios (`scenarios.rs`) run the wrong key, the graceful
// shutdown and the rest on `Mio` through asoc-async's node; these check
// what the blocking node adds on top.

#[test]
fn wrong_key_the_applications_own_connect_fails_with_a_handshake_error() {
    let b = start(builder(KEY));
    let a = start(builder("another-key-0123456789abcdef"));
    let err = a.connect(b.local_addr()).unwrap_err();
    assert!(matches!(err, Error::Handshake(_)), "{err}");
    assert!(a.connected_peers().is_empty());
    assert!(b.connected_peers().is_empty());
}

#[test]
fn application_connect_and_unknown_peer() {
    let b = start(builder(KEY));
    let a = start(builder(KEY));
    assert!(matches!(
        a.send_tensor(PeerRef::Node(b.node_id()), Bytes::from_static(b"x")),
        Err(Error::UnknownPeer(_))
    ));
    let info = a.connect(b.local_addr()).unwrap();
    assert!(info.established);
    assert_eq!(info.direction, Direction::Outbound);
    assert_eq!(info.addr, b.local_addr());
    assert_eq!(b.wait_for_peers(1, LIMIT), 1);
    let payload = Bytes::from(chunk(5, 0, 100_000));
    a.send_tensor(PeerRef::Addr(b.local_addr()), payload.clone())
        .unwrap();
    let incoming = b.accept_stream_timeout(LIMIT).unwrap();
    assert_eq!(incoming.peer_node, Some(a.node_id()));
    assert!(incoming.stream.read_to_end().unwrap() == payload);
    // Back over the same connection, found by node id on b's side.
    b.send_tensor(PeerRef::Node(a.node_id()), payload.clone())
        .unwrap();
    assert!(
        a.accept_stream_timeout(LIMIT)
            .unwrap()
            .stream
            .read_to_end()
            .unwrap()
            == payload
    );
}

#[test]
fn after_a_graceful_shutdown_no_streams_events_end_and_sends_fail() {
    let (a, b) = pair();
    a.shutdown(Duration::from_secs(20));
    event(&b, |e| matches!(e, NodeEvent::PeerDisconnected { .. }));
    assert!(a.connected_peers().is_empty());
    assert!(a.accept_stream().is_none());
    while a.next_event().is_some() {}
    assert!(a
        .send_tensor(PeerRef::Addr(b.local_addr()), Bytes::new())
        .is_err());
}

#[test]
fn a_static_peer_given_as_a_name_is_resolved_off_the_loop() {
    // "127.1" is not a Rust `SocketAddr`, so the node resolves it like a
    // host name (getaddrinfo reads it as 127.0.0.1 without any lookup).
    let b = start(builder(KEY));
    let a = start(builder(KEY).static_peer(format!("127.1:{}", b.local_addr().port())));
    assert_eq!(a.wait_for_peers(1, LIMIT), 1);
    assert_eq!(a.connected_peers()[0].addr, b.local_addr());
    let payload = Bytes::from(chunk(11, 0, 1 << 20));
    a.send_tensor(route(&a, &b), payload.clone()).unwrap();
    let got = b
        .accept_stream_timeout(LIMIT)
        .unwrap()
        .stream
        .read_to_end()
        .unwrap();
    assert!(got == payload);
}

/// Waits until `done` holds, checking again every 10 ms for at most 20 s.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dropping_the_last_handle_shuts_the_node_down() {
    let (a, b) = pair();
    let addr = a.local_addr();
    let other = a.clone();
    drop(a);
    // A handle is left: the node runs on.
    assert_eq!(other.connected_peers().len(), 1);
    drop(other);
    let closed = event(&b, |e| matches!(e, NodeEvent::PeerDisconnected { .. }));
    assert!(
        matches!(
            closed,
            NodeEvent::PeerDisconnected {
                reason: asoc_proto::connection::CloseReason::PeerClosed,
                ..
            }
        ),
        "closed cleanly: {closed:?}"
    );
    until("the dropped node's port refuses connections", || {
        std::net::TcpStream::connect(addr).is_err()
    });
}

#[test]
fn stats_stay_current_while_an_established_connection_streams() {
    const TOTAL: u64 = 8 << 20;
    let (a, b) = pair();
    let (to_b, to_a) = (route(&a, &b), route(&b, &a));
    let stats = |node: &Node, peer: PeerRef| {
        let PeerRef::Conn(id) = peer else {
            unreachable!("route names connections")
        };
        node.peers().into_iter().find(|p| p.id == id).unwrap().stats
    };
    let (sent0, got0) = (stats(&a, to_b), stats(&b, to_a));
    let reader = {
        let b = b.clone();
        thread::spawn(move || {
            let incoming = b.accept_stream_timeout(LIMIT).unwrap();
            incoming.stream.read_to_end().unwrap().len() as u64
        })
    };
    a.send_tensor(to_b, Bytes::from(chunk(11, 0, TOTAL as usize)))
        .unwrap();
    assert_eq!(reader.join().unwrap(), TOTAL);
    until("the sender's counters show the stream", || {
        let s = stats(&a, to_b);
        s.payload_out - sent0.payload_out >= TOTAL && s.bytes_out - sent0.bytes_out >= TOTAL
    });
    until("the receiver's counters show the stream", || {
        let s = stats(&b, to_a);
        s.payload_in - got0.payload_in >= TOTAL && s.bytes_in - got0.bytes_in >= TOTAL
    });
}

#[test]
fn shutdown_waits_for_a_stream_still_being_written() {
    const CHUNKS: u64 = 8;
    let (a, b) = pair();
    let mut stream = a.open_stream(route(&a, &b)).unwrap();
    stream.send(Bytes::from(chunk(5, 0, 1 << 20))).unwrap();
    let reader = {
        let b = b.clone();
        thread::spawn(move || {
            let incoming = b.accept_stream_timeout(LIMIT).unwrap();
            incoming.stream.read_to_end()
        })
    };
    let stopping = {
        let a = a.clone();
        thread::spawn(move || a.shutdown(Duration::from_secs(20)))
    };
    let addr = a.local_addr();
    until("the listener closes", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    for i in 1..CHUNKS {
        stream.send(Bytes::from(chunk(5, i, 1 << 20))).unwrap();
    }
    stream.finish().unwrap();
    stopping.join().unwrap();
    let expected: Vec<u8> = (0..CHUNKS).flat_map(|i| chunk(5, i, 1 << 20)).collect();
    assert!(
        reader.join().unwrap().unwrap() == expected,
        "the stream arrived whole"
    );
}
