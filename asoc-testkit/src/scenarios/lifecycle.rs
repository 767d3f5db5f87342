//! A node's life around its transfers: counters that stay current while an
//! established connection streams, a shutdown that waits for a stream
//! still being written, and the end of a node whose last handle is dropped.

use super::*;

/// The counters a node reports for connection `peer`.
fn stats_of<N: Net>(node: &Node<N>, peer: PeerRef) -> asoc_proto::connection::ConnectionStats {
    let id = node.resolve(peer).unwrap();
    node.peers()
        .into_iter()
        .find(|p| p.id == id)
        .map(|p| p.stats)
        .unwrap()
}

/// Waits until `done` holds, checking again every 10 ms for at most 20 s.
async fn until<N: Net>(net: &N, what: &str, mut done: impl FnMut() -> bool) {
    within(net, Duration::from_secs(20), what, async {
        while !done() {
            net.sleep_until(Instant::now() + Duration::from_millis(10))
                .await;
        }
    })
    .await;
}

/// Streaming on an established connection moves both nodes' counters for
/// it and the node-wide totals, not only the handshake's bytes.
pub async fn stats_stay_current<N: Net>(net: N) {
    const TOTAL: u64 = 8 << 20;
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    let (to_b, to_a) = (route(&a, &b), route(&b, &a));
    let (sent0, got0) = (stats_of(&a, to_b), stats_of(&b, to_a));
    let (total_out0, total_in0) = (a.counters().bytes_out, b.counters().bytes_in);
    let reader = {
        let b = b.clone();
        spawn(&net, async move {
            let incoming = b.accept_stream().await.unwrap();
            incoming.stream.read_to_end().await.unwrap().len() as u64
        })
    };
    a.send_tensor(to_b, Bytes::from(chunk(11, 0, TOTAL as usize)))
        .await
        .unwrap();
    assert_eq!(reader.await, TOTAL);
    // Each side's task updates the counters after it moved the bytes, which
    // may be after the reader saw them.
    until(&net, "the sender's counters show the stream", || {
        let s = stats_of(&a, to_b);
        s.payload_out - sent0.payload_out >= TOTAL && s.bytes_out - sent0.bytes_out >= TOTAL
    })
    .await;
    until(&net, "the receiver's counters show the stream", || {
        let s = stats_of(&b, to_a);
        s.payload_in - got0.payload_in >= TOTAL && s.bytes_in - got0.bytes_in >= TOTAL
    })
    .await;
    let (sent, got) = (stats_of(&a, to_b), stats_of(&b, to_a));
    // 1 MiB chunks: at least 8 DATA frames and the END.
    assert!(sent.frames_out - sent0.frames_out >= 9, "{sent:?}");
    assert!(got.frames_in - got0.frames_in >= 9, "{got:?}");
    assert!(a.counters().bytes_out - total_out0 >= TOTAL);
    assert!(b.counters().bytes_in - total_in0 >= TOTAL);
}

/// A shutdown started while a stream from `open_stream` is still being
/// written waits for it (no guard held): every chunk sent after the
/// shutdown began arrives, and the stream completes.
pub async fn shutdown_waits_for_open_streams<N: Net>(net: N) {
    const CHUNKS: u64 = 8;
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    let mut stream = a.open_stream(route(&a, &b)).await.unwrap();
    stream
        .send(Bytes::from(chunk(5, 0, 1 << 20)))
        .await
        .unwrap();
    let reader = {
        let b = b.clone();
        spawn(&net, async move {
            let incoming = b.accept_stream().await.unwrap();
            incoming.stream.read_to_end().await
        })
    };
    let stopping = {
        let a = a.clone();
        spawn(
            &net,
            async move { a.shutdown(Duration::from_secs(20)).await },
        )
    };
    // The shutdown has begun once the listener is closed.
    let addr = a.local_addr();
    until(&net, "the listener closes", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    for i in 1..CHUNKS {
        stream
            .send(Bytes::from(chunk(5, i, 1 << 20)))
            .await
            .unwrap();
    }
    stream.finish().await.unwrap();
    stopping.await;
    let expected: Vec<u8> = (0..CHUNKS).flat_map(|i| chunk(5, i, 1 << 20)).collect();
    assert!(
        reader.await.unwrap() == expected,
        "the stream arrived whole"
    );
    assert!(a.connected_peers().is_empty());
}

/// Dropping every handle of a node shuts it down: its peer sees the
/// connection closed and its port refuses connections.
pub async fn dropping_the_last_handle_shuts_down<N: Net>(net: N) {
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    let addr = a.local_addr();
    let other = a.clone();
    drop(a);
    // A handle is left: the node runs on.
    assert_eq!(other.connected_peers().len(), 1);
    drop(other);
    let closed = event(&net, &b, |e| {
        matches!(e, NodeEvent::PeerDisconnected { .. })
    })
    .await;
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
    until(&net, "the dropped node's port refuses connections", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
}
