//! tokio-specific node API: readers and writers. The behaviour shared by
//! every adapter is in `scenarios.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use asoc_proto::auth::ApiKey;
use asoc_testkit::scenarios::{chunk, route};
use asoc_tokio::{Node, NodeBuilder, NodeEvent};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COMMUNITY: &str = "test-cluster";

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn builder(key: &str) -> NodeBuilder {
    NodeBuilder::new(COMMUNITY, ApiKey::new(key).unwrap()).bind(loopback())
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
    let short = asoc_tokio::send_reader(&a, to_b, &data[..10], Some(11)).await;
    let long = asoc_tokio::send_reader(&a, to_b, &data[..12], Some(11)).await;
    asoc_testkit::scenarios::assert_declared_len_errors(&short.unwrap_err(), &long.unwrap_err());
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
