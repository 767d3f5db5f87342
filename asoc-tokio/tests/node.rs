//! Nodes on real loopback sockets under tokio.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use asoc_proto::auth::{ApiKey, AuthFailure};
use asoc_proto::discovery::DiscoveryConfig;
use asoc_proto::node::NodeEvent as ProtoEvent;
use asoc_tokio::{Node, NodeBuilder, NodeEvent, PeerRef};
use bytes::Bytes;
use sha2::{Digest, Sha256};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COMMUNITY: &str = "test-cluster";

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn builder(key: &str) -> NodeBuilder {
    NodeBuilder::new(COMMUNITY, ApiKey::new(key).unwrap()).bind(loopback())
}

/// Deterministic bytes for chunk `index` of stream `seed`.
fn chunk(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut out = Vec::with_capacity(len);
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
    let to_id = to.node_id();
    let to_addr = to.local_addr();
    for p in from.connected_peers() {
        if p.peer_node == Some(to_id) || p.addr == to_addr {
            return PeerRef::Conn(p.id);
        }
    }
    panic!("no connection from {} to {}", from.node_id(), to_id)
}

async fn wait_for_event(node: &Node, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let e = node.next_event().await.expect("event channel closed");
            if pred(&e) {
                return e;
            }
        }
    })
    .await
    .expect("timed out waiting for an event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_move_one_gib_in_1_mib_chunks_verified_by_sha256() {
    let b = asoc_tokio::start(builder(KEY)).await.unwrap();
    let a = asoc_tokio::start(builder(KEY).static_peer(b.local_addr().to_string()))
        .await
        .unwrap();
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    assert_eq!(b.wait_for_peers(1, Duration::from_secs(10)).await, 1);

    let receiver = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut incoming = b.accept_stream().await.unwrap();
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(c) = incoming.stream.chunk().await.unwrap() {
                n += c.len() as u64;
                h.update(&c);
            }
            (
                n,
                incoming.stream.frames(),
                h.finalize(),
                incoming.peer_node,
            )
        })
    };
    let guard = a.send_guard();
    let mut s = a.open_stream(route(&a, &b)).await.unwrap();
    let mut h = Sha256::new();
    for i in 0..1024 {
        let c = chunk(1, i, 1 << 20);
        h.update(&c);
        s.send(Bytes::from(c)).await.unwrap();
    }
    s.finish().await.unwrap();
    drop(guard);
    let (n, frames, digest, peer) = receiver.await.unwrap();
    assert_eq!(n, 1 << 30);
    assert_eq!(frames, 1024);
    assert_eq!(digest, h.finalize());
    assert_eq!(
        peer,
        Some(a.node_id()),
        "b accepted a's connection and knows its node id"
    );
    let complete = wait_for_event(&b, |e| matches!(e, NodeEvent::StreamComplete { .. })).await;
    assert!(
        matches!(complete, NodeEvent::StreamComplete { bytes, frames: 1024, .. } if bytes == 1 << 30)
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_streams_in_both_directions_all_verified() {
    let b = asoc_tokio::start(builder(KEY)).await.unwrap();
    let a = asoc_tokio::start(builder(KEY).static_peer(b.local_addr().to_string()))
        .await
        .unwrap();
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    assert_eq!(b.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    const STREAMS: u64 = 64;
    const CHUNKS: u64 = 8;
    const CHUNK: usize = 256 << 10;

    let mut tasks = Vec::new();
    for (tag, from, to) in [(0u64, a.clone(), b.clone()), (1000, b.clone(), a.clone())] {
        for s in 0..STREAMS {
            let (from, to) = (from.clone(), to.clone());
            tasks.push(tokio::spawn(async move {
                let mut st = from.open_stream(route(&from, &to)).await.unwrap();
                // The first chunk starts with the stream's tag so the receiver
                // knows which pattern to expect.
                for i in 0..CHUNKS {
                    let mut c = chunk(tag + s, i, CHUNK);
                    if i == 0 {
                        c[..8].copy_from_slice(&(tag + s).to_le_bytes());
                    }
                    st.send(Bytes::from(c)).await.unwrap();
                }
                st.finish().await.unwrap();
            }));
        }
    }
    let mut receivers = Vec::new();
    for node in [a.clone(), b.clone()] {
        receivers.push(tokio::spawn(async move {
            // Streams interleave on the wire, so each is read by its own task:
            // reading them one after another would leave the others' data
            // waiting in the bounded receive buffer.
            let mut readers = Vec::new();
            for _ in 0..STREAMS {
                let incoming = node.accept_stream().await.unwrap();
                readers.push(tokio::spawn(async move {
                    let data = incoming.stream.read_to_end().await.unwrap();
                    let tag = u64::from_le_bytes(data[..8].try_into().unwrap());
                    let mut expected = Vec::new();
                    for i in 0..CHUNKS {
                        let mut c = chunk(tag, i, CHUNK);
                        if i == 0 {
                            c[..8].copy_from_slice(&tag.to_le_bytes());
                        }
                        expected.extend(c);
                    }
                    assert!(data == expected, "stream with tag {tag} corrupted");
                    (tag, data.len())
                }));
            }
            let mut seen = HashMap::new();
            for r in readers {
                let (tag, len) = r.await.unwrap();
                seen.insert(tag, len);
            }
            seen
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let from_a = receivers.remove(1).await.unwrap();
    let from_b = receivers.remove(0).await.unwrap();
    assert_eq!(from_a.len(), STREAMS as usize);
    assert_eq!(from_b.len(), STREAMS as usize);
    assert!(from_a.keys().all(|t| *t < 1000));
    assert!(from_b.keys().all(|t| *t >= 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_gets_no_connection_and_an_auth_failed_event_with_the_reason() {
    let b = asoc_tokio::start(builder(KEY)).await.unwrap();
    let a = asoc_tokio::start(
        builder("some-other-key-0123456789").static_peer(b.local_addr().to_string()),
    )
    .await
    .unwrap();
    let e = wait_for_event(&b, |e| {
        matches!(e, NodeEvent::Node(ProtoEvent::AuthFailed { .. }))
    })
    .await;
    match e {
        NodeEvent::Node(ProtoEvent::AuthFailed { reason, conn, .. }) => {
            assert_eq!(reason, AuthFailure::BadMac);
            assert!(conn.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(b.connected_peers().is_empty());
    assert!(a.connected_peers().is_empty());
    assert_eq!(b.counters().auth.bad_mac, 1);
}

/// A free UDP port on 127.0.0.1 (bound and released; loopback only).
fn free_udp_addr() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_with_unicast_targets_finds_and_connects_nodes() {
    let (ua, ub) = (free_udp_addr(), free_udp_addr());
    let disc = |target: SocketAddr| {
        DiscoveryConfig::builder(COMMUNITY)
            .announce_interval(Duration::from_millis(200))
            .unicast_targets(vec![target])
            .build()
            .unwrap()
    };
    let a = asoc_tokio::start(builder(KEY).discovery(ua, disc(ub)))
        .await
        .unwrap();
    let b = asoc_tokio::start(builder(KEY).discovery(ub, disc(ua)))
        .await
        .unwrap();
    assert_eq!(a.discovery_addr(), Some(ua));
    let found = wait_for_event(&a, |e| {
        matches!(e, NodeEvent::Node(ProtoEvent::PeerDiscovered { .. }))
    })
    .await;
    assert!(
        matches!(found, NodeEvent::Node(ProtoEvent::PeerDiscovered { node, addr, .. })
        if node == b.node_id() && addr == b.local_addr())
    );
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    assert_eq!(b.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    // Exactly one connection per pair: the smaller node id dials.
    assert_eq!(a.peers().len(), 1);
    let payload = Bytes::from(chunk(7, 0, 3 << 20));
    a.send(route(&a, &b), payload.clone()).await.unwrap();
    let got = b
        .accept_stream()
        .await
        .unwrap()
        .stream
        .read_to_end()
        .await
        .unwrap();
    assert!(got == payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_in_a_full_mesh_exchange_verified_tensors_between_every_ordered_pair() {
    const N: usize = 50;
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..N {
        let mut b = builder(KEY);
        for earlier in &nodes {
            b = b.static_peer(earlier.local_addr().to_string());
        }
        nodes.push(asoc_tokio::start(b).await.unwrap());
    }
    for n in &nodes {
        assert_eq!(
            n.wait_for_peers(N - 1, Duration::from_secs(30)).await,
            N - 1
        );
    }
    let mut receivers = Vec::new();
    for (j, node) in nodes.iter().enumerate() {
        let node = node.clone();
        receivers.push(tokio::spawn(async move {
            let mut from = Vec::new();
            for _ in 0..N - 1 {
                let data = node
                    .accept_stream()
                    .await
                    .unwrap()
                    .stream
                    .read_to_end()
                    .await
                    .unwrap();
                let i = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
                let to = u64::from_le_bytes(data[8..16].try_into().unwrap()) as usize;
                assert_eq!(to, j);
                assert!(
                    data[16..] == chunk((i * N + j) as u64, 0, 64 << 10)[..],
                    "{i}->{j} corrupted"
                );
                from.push(i);
            }
            from.sort_unstable();
            from
        }));
    }
    let mut senders = Vec::new();
    for i in 0..N {
        for j in 0..N {
            if i == j {
                continue;
            }
            let (from, to) = (nodes[i].clone(), nodes[j].clone());
            senders.push(tokio::spawn(async move {
                let mut data = Vec::new();
                data.extend((i as u64).to_le_bytes());
                data.extend((j as u64).to_le_bytes());
                data.extend(chunk((i * N + j) as u64, 0, 64 << 10));
                from.send(route(&from, &to), Bytes::from(data))
                    .await
                    .unwrap();
            }));
        }
    }
    for s in senders {
        s.await.unwrap();
    }
    for (j, r) in receivers.into_iter().enumerate() {
        let from = r.await.unwrap();
        let expected: Vec<usize> = (0..N).filter(|i| *i != j).collect();
        assert_eq!(from, expected, "node {j}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_known_and_unknown_length_and_a_stream_reader() {
    use tokio::io::AsyncReadExt;
    let b = asoc_tokio::start(builder(KEY).chunk_size(100_000))
        .await
        .unwrap();
    let a = asoc_tokio::start(
        builder(KEY)
            .chunk_size(100_000)
            .static_peer(b.local_addr().to_string()),
    )
    .await
    .unwrap();
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    let data = chunk(9, 0, 1_234_567);
    let to_b = route(&a, &b);
    asoc_tokio::send_reader(&a, to_b, &data[..], Some(data.len() as u64))
        .await
        .unwrap();
    asoc_tokio::send_reader(&a, to_b, &data[..], None)
        .await
        .unwrap();
    for _ in 0..2 {
        let incoming = b.accept_stream().await.unwrap();
        let mut reader = asoc_tokio::StreamReader::new(incoming.stream);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert!(got == data);
    }
    let complete = wait_for_event(&b, |e| matches!(e, NodeEvent::StreamComplete { .. })).await;
    assert!(matches!(
        complete,
        NodeEvent::StreamComplete {
            frames: 13,
            bytes: 1_234_567,
            ..
        }
    ));
    // A reader shorter than declared is an error and the stream is not finished.
    let err = asoc_tokio::send_reader(&a, to_b, &data[..10], Some(11))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("ended after 10 of the declared 11 bytes"),
        "{err}"
    );
    let err = asoc_tokio::send_reader(&a, to_b, &data[..12], Some(11))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("more than the declared 11"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_sends_in_flight_then_closes_every_connection() {
    let b = asoc_tokio::start(builder(KEY)).await.unwrap();
    let a = asoc_tokio::start(builder(KEY).static_peer(b.local_addr().to_string()))
        .await
        .unwrap();
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    let data = Bytes::from(chunk(3, 0, 64 << 20));
    let sender = {
        let (a, to_b) = (a.clone(), route(&a, &b));
        let data = data.clone();
        tokio::spawn(async move { a.send(to_b, data).await })
    };
    let reader = {
        let b = b.clone();
        tokio::spawn(async move { b.accept_stream().await.unwrap().stream.read_to_end().await })
    };
    // Give the send a moment to be in flight, then shut down.
    tokio::time::sleep(Duration::from_millis(5)).await;
    a.shutdown(Duration::from_secs(20)).await;
    assert!(sender.await.unwrap().is_ok(), "the send in flight finished");
    assert!(reader.await.unwrap().unwrap() == data[..]);
    let e = wait_for_event(&b, |e| {
        matches!(e, NodeEvent::Node(ProtoEvent::PeerDisconnected { .. }))
    })
    .await;
    assert!(matches!(
        e,
        NodeEvent::Node(ProtoEvent::PeerDisconnected { .. })
    ));
    assert!(a.connected_peers().is_empty());
    // After shutdown the node no longer accepts.
    assert!(
        tokio::net::TcpStream::connect(a.local_addr())
            .await
            .is_err()
            || a.peers().is_empty()
    );
}
