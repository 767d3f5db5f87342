//! tokio-specific node API: readers and writers. The behaviour shared by
//! every adapter is in `scenarios.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use asoc_proto::auth::ApiKey;
use asoc_tokio::{Node, NodeBuilder, NodeEvent, PeerRef};

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
async fn start_refuses_zero_settings_before_binding() {
    use asoc_proto::connection::ConfigError;
    // The address is taken: a check after binding would report the bind.
    let taken = std::net::TcpListener::bind(loopback()).unwrap();
    let addr = taken.local_addr().unwrap();
    for (b, field) in [
        (builder(KEY).bind(addr).chunk_size(0), "chunk_size"),
        (builder(KEY).bind(addr).max_events(0), "max_events"),
    ] {
        match asoc_tokio::start(b).await {
            Err(asoc_tokio::Error::Config(e)) => {
                assert_eq!(e, ConfigError::ZeroLimit { field });
            }
            other => panic!("{field}: expected a config error, got {other:?}"),
        }
    }
}
