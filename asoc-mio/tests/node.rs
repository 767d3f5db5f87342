//! The mio `Node` over loopback: the behaviour every adapter shows (large
//! verified transfer, concurrent streams, wrong key, discovery with unicast
//! targets, full mesh, graceful shutdown). All traffic stays on 127.0.0.1;
//! discovery uses unicast targets only.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use asoc_mio::{Error, Node, NodeBuilder, NodeEvent, PeerRef};
use asoc_proto::auth::{ApiKey, AuthFailure};
use asoc_proto::discovery::DiscoveryConfig;
use asoc_proto::node::Direction;
use bytes::Bytes;
use sha2::{Digest, Sha256};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COMMUNITY: &str = "mio-cluster";
const LIMIT: Duration = Duration::from_secs(60);

fn builder(key: &str) -> NodeBuilder {
    NodeBuilder::new(COMMUNITY, ApiKey::new(key).unwrap()).bind("127.0.0.1:0".parse().unwrap())
}

fn start(b: NodeBuilder) -> Node {
    b.start().unwrap()
}

/// Deterministic bytes for chunk `index` of stream `seed`.
fn chunk(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The established connection from `from` to `to`, whichever side dialed.
fn route(from: &Node, to: &Node) -> PeerRef {
    let (id, addr) = (to.node_id(), to.local_addr());
    from.connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(id) || p.addr == addr)
        .map(|p| PeerRef::Conn(p.id))
        .unwrap_or_else(|| panic!("no connection to {id}"))
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

#[test]
fn one_gib_in_1_mib_chunks_sha256_verified() {
    const TOTAL: u64 = 1 << 30;
    let (a, b) = pair();
    let receiver = {
        let b = b.clone();
        thread::spawn(move || {
            let mut incoming = b.accept_stream_timeout(LIMIT).unwrap();
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(c) = incoming.stream.chunk().unwrap() {
                n += c.len() as u64;
                h.update(&c);
            }
            (n, h.finalize())
        })
    };
    let guard = a.send_guard();
    let mut s = a.open_stream(route(&a, &b)).unwrap();
    let mut h = Sha256::new();
    for i in 0..TOTAL >> 20 {
        let c = chunk(TOTAL, i, 1 << 20);
        h.update(&c);
        s.send(Bytes::from(c)).unwrap();
    }
    s.finish().unwrap();
    drop(guard);
    let (n, digest) = receiver.join().unwrap();
    assert_eq!(n, TOTAL);
    assert_eq!(digest, h.finalize(), "SHA-256 of the received tensor");
    let done = event(&b, |e| matches!(e, NodeEvent::StreamComplete { .. }));
    assert!(
        matches!(done, NodeEvent::StreamComplete { bytes, frames: 1024, peer_node, .. } if bytes == TOTAL && peer_node == Some(a.node_id())),
        "{done:?}"
    );
    a.shutdown(Duration::from_secs(5));
    b.shutdown(Duration::from_secs(5));
}

#[test]
fn sixty_four_concurrent_streams_each_way() {
    const STREAMS: u64 = 64;
    const CHUNKS: u64 = 8;
    const CHUNK: usize = 256 << 10;
    let expected = |tag: u64| {
        let mut v = Vec::new();
        for i in 0..CHUNKS {
            let mut c = chunk(tag, i, CHUNK);
            if i == 0 {
                c[..8].copy_from_slice(&tag.to_le_bytes());
            }
            v.extend(c);
        }
        v
    };
    let (a, b) = pair();
    let mut senders = Vec::new();
    for (tag, from, to) in [(0u64, &a, &b), (1 << 32, &b, &a)] {
        for s in 0..STREAMS {
            let (from, to) = (from.clone(), route(from, to));
            let data = expected(tag + s);
            senders.push(thread::spawn(move || {
                let _guard = from.send_guard();
                let mut st = from.open_stream(to).unwrap();
                for piece in data.chunks(CHUNK) {
                    st.send(Bytes::copy_from_slice(piece)).unwrap();
                }
                st.finish().unwrap();
            }));
        }
    }
    let mut receivers = Vec::new();
    for node in [a.clone(), b.clone()] {
        receivers.push(thread::spawn(move || {
            // Streams interleave, so each is read by a thread of its own.
            let readers: Vec<_> = (0..STREAMS)
                .map(|_| {
                    let incoming = node.accept_stream_timeout(LIMIT).unwrap();
                    thread::spawn(move || incoming.stream.read_to_end().unwrap())
                })
                .collect();
            let mut seen = HashSet::new();
            for r in readers {
                let data = r.join().unwrap();
                let tag = u64::from_le_bytes(data[..8].try_into().unwrap());
                assert!(data == expected(tag), "stream {tag:#x} corrupted");
                seen.insert(tag);
            }
            seen.len()
        }));
    }
    for s in senders {
        s.join().unwrap();
    }
    for r in receivers {
        assert_eq!(r.join().unwrap(), STREAMS as usize);
    }
}

#[test]
fn wrong_key_no_connection_and_bad_mac_on_the_server() {
    let b = start(builder(KEY));
    let a = start(builder("another-key-0123456789abcdef").static_peer(b.local_addr().to_string()));
    let e = event(&b, |e| matches!(e, NodeEvent::AuthFailed { .. }));
    assert!(
        matches!(
            e,
            NodeEvent::AuthFailed {
                reason: AuthFailure::BadMac,
                conn: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(b.connected_peers().is_empty());
    assert!(a.connected_peers().is_empty());
    assert!(b.counters().auth.bad_mac >= 1);
    // The application's own connect fails the same way.
    let err = a.connect(b.local_addr()).unwrap_err();
    assert!(matches!(err, Error::Handshake(_)), "{err}");
}

#[test]
fn application_connect_and_unknown_peer() {
    let b = start(builder(KEY));
    let a = start(builder(KEY));
    assert!(matches!(
        a.send(PeerRef::Node(b.node_id()), Bytes::from_static(b"x")),
        Err(Error::UnknownPeer(_))
    ));
    let info = a.connect(b.local_addr()).unwrap();
    assert!(info.established);
    assert_eq!(info.direction, Direction::Outbound);
    assert_eq!(info.addr, b.local_addr());
    assert_eq!(b.wait_for_peers(1, LIMIT), 1);
    let payload = Bytes::from(chunk(5, 0, 100_000));
    a.send(PeerRef::Addr(b.local_addr()), payload.clone())
        .unwrap();
    let incoming = b.accept_stream_timeout(LIMIT).unwrap();
    assert_eq!(incoming.peer_node, Some(a.node_id()));
    assert!(incoming.stream.read_to_end().unwrap() == payload);
    // Back over the same connection, found by node id on b's side.
    b.send(PeerRef::Node(a.node_id()), payload.clone()).unwrap();
    assert!(
        a.accept_stream_timeout(LIMIT)
            .unwrap()
            .stream
            .read_to_end()
            .unwrap()
            == payload
    );
}

/// A free UDP port on 127.0.0.1.
fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn discovery_over_loopback_with_unicast_targets() {
    let (ua, ub) = (free_udp(), free_udp());
    let disc = |to: SocketAddr| {
        DiscoveryConfig::builder(COMMUNITY)
            .announce_interval(Duration::from_millis(200))
            .unicast_targets(vec![to])
            .build()
            .unwrap()
    };
    let a = start(builder(KEY).discovery(ua, disc(ub)));
    let b = start(builder(KEY).discovery(ub, disc(ua)));
    assert_eq!(a.discovery_addr(), Some(ua));
    let found = event(&a, |e| matches!(e, NodeEvent::PeerDiscovered { .. }));
    assert!(
        matches!(found, NodeEvent::PeerDiscovered { node, addr, .. } if node == b.node_id() && addr == b.local_addr()),
        "{found:?}"
    );
    assert_eq!(a.wait_for_peers(1, LIMIT), 1);
    assert_eq!(b.wait_for_peers(1, LIMIT), 1);
    assert_eq!(a.peers().len(), 1, "one connection per pair");
    let payload = Bytes::from(chunk(7, 0, 3 << 20));
    a.send(route(&a, &b), payload.clone()).unwrap();
    let got = b
        .accept_stream_timeout(LIMIT)
        .unwrap()
        .stream
        .read_to_end()
        .unwrap();
    assert!(got == payload);
}

#[test]
fn fifty_node_full_mesh() {
    const N: usize = 50;
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..N {
        let mut b = builder(KEY);
        for earlier in &nodes {
            b = b.static_peer(earlier.local_addr().to_string());
        }
        nodes.push(start(b));
    }
    for node in &nodes {
        assert_eq!(node.wait_for_peers(N - 1, LIMIT), N - 1);
    }
    let tensor = |i: usize, j: usize| {
        let mut data = (i as u64).to_le_bytes().to_vec();
        data.extend((j as u64).to_le_bytes());
        data.extend(chunk((i * N + j) as u64, 0, 32 << 10));
        data
    };
    let receivers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(j, node)| {
            let node = node.clone();
            thread::spawn(move || {
                let mut from = Vec::new();
                for _ in 0..N - 1 {
                    let incoming = node.accept_stream_timeout(LIMIT).unwrap();
                    let data = incoming.stream.read_to_end().unwrap();
                    let i = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
                    assert!(data == tensor(i, j), "{i}->{j} corrupted");
                    from.push(i);
                }
                from.sort_unstable();
                from
            })
        })
        .collect();
    let senders: Vec<_> = (0..N)
        .map(|i| {
            let all = nodes.clone();
            thread::spawn(move || {
                for j in (0..N).filter(|j| *j != i) {
                    let to = route(&all[i], &all[j]);
                    all[i].send(to, Bytes::from(tensor(i, j))).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    for (j, r) in receivers.into_iter().enumerate() {
        let from = r.join().unwrap();
        assert_eq!(
            from,
            (0..N).filter(|i| *i != j).collect::<Vec<_>>(),
            "node {j}"
        );
    }
    for node in &nodes {
        node.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn graceful_shutdown_finishes_the_send_in_flight() {
    let (a, b) = pair();
    let data = Bytes::from(chunk(3, 0, 32 << 20));
    let sender = {
        let (a, to, data) = (a.clone(), route(&a, &b), data.clone());
        thread::spawn(move || a.send(to, data))
    };
    // Shut down only once the stream is really in flight: the receiver has
    // seen it begin.
    let (begun_tx, begun) = mpsc::channel();
    let reader = {
        let b = b.clone();
        thread::spawn(move || {
            let incoming = b.accept_stream_timeout(LIMIT).unwrap();
            begun_tx.send(()).unwrap();
            incoming.stream.read_to_end()
        })
    };
    begun.recv_timeout(LIMIT).expect("the stream begins");
    a.shutdown(Duration::from_secs(20));
    assert!(
        sender.join().unwrap().is_ok(),
        "the send in flight finished"
    );
    assert!(reader.join().unwrap().unwrap() == data[..]);
    event(&b, |e| matches!(e, NodeEvent::PeerDisconnected { .. }));
    assert!(a.connected_peers().is_empty());
    assert!(
        std::net::TcpStream::connect(a.local_addr()).is_err(),
        "listener closed"
    );
    // After shutdown: no streams, events drain then end, sends fail.
    assert!(a.accept_stream().is_none());
    while a.next_event().is_some() {}
    assert!(a.send(PeerRef::Addr(b.local_addr()), Bytes::new()).is_err());
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
    a.send(route(&a, &b), payload.clone()).unwrap();
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
    a.send(to_b, Bytes::from(chunk(11, 0, TOTAL as usize)))
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
