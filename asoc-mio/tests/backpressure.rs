//! Backpressure end to end on the mio node: alone in its test binary so
//! that the memory it measures is its own.

use std::time::{Duration, Instant};

use asoc_async::scenarios::{rss_bytes, stalled_reader};
use asoc_mio::{Error, MioConfig, NodeBuilder, NodeEvent, PeerRef};
use asoc_proto::auth::ApiKey;
use asoc_proto::connection::{CloseReason, ConnectionConfig};
use bytes::Bytes;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const TOTAL: u64 = 4 << 30;
const CHUNK: usize = 1 << 20;
const STALL: Duration = Duration::from_secs(2);

/// A fresh 1 MiB chunk (every byte touched, so it is really resident).
fn fresh_chunk(i: u64) -> Bytes {
    let mut v = vec![0u8; CHUNK];
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for b in &mut v {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Bytes::from(v)
}

#[test]
fn four_gib_to_a_stalled_reader_keeps_memory_bounded_and_the_stall_timeout_closes() {
    let (addr, release) = stalled_reader(KEY);
    let config = MioConfig {
        connection: ConnectionConfig::builder()
            .send_stall_timeout(STALL)
            .build()
            .unwrap(),
        ..MioConfig::default()
    };
    let node = NodeBuilder::new("backpressure", ApiKey::new(KEY).unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .connection(config)
        .start()
        .unwrap();
    let peer = node.connect(addr).unwrap();
    let mut s = node.open_stream(PeerRef::Conn(peer.id)).unwrap();

    let baseline = rss_bytes();
    assert!(baseline > 0, "resident memory is measurable here");
    let mut peak = baseline;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut i = 0;
    let err = loop {
        assert!(
            sent < TOTAL,
            "{TOTAL} bytes went into a reader that reads nothing"
        );
        match s.send(fresh_chunk(i)) {
            Ok(()) => sent += CHUNK as u64,
            Err(e) => break e,
        }
        i += 1;
        peak = peak.max(rss_bytes());
    };
    let waited = started.elapsed();
    let growth = peak.saturating_sub(baseline);
    println!(
        "mio stalled reader: accepted {} MiB of a {} MiB tensor before blocking; \
         peak RSS growth {:.1} MiB (baseline {:.1} MiB); closed after {:.1} s: {err}",
        sent >> 20,
        TOTAL >> 20,
        growth as f64 / f64::from(1 << 20),
        baseline as f64 / f64::from(1 << 20),
        waited.as_secs_f64()
    );
    assert!(growth < 64 << 20, "memory grew {growth} bytes");
    assert!(
        matches!(err, Error::Closed(CloseReason::SendStall)),
        "the send ends with the stall: {err}"
    );
    assert!(waited >= STALL, "closed only after the stall timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let disconnected = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.next_event_timeout(left).expect("a disconnect event") {
            NodeEvent::PeerDisconnected { reason, .. } => break reason,
            _ => continue,
        }
    };
    assert_eq!(disconnected, CloseReason::SendStall);
    assert!(node.connected_peers().is_empty());
    drop(release);
    node.shutdown(Duration::from_secs(5));
}
