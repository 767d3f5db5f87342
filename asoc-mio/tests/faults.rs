//! Issue 7's faults on the mio `Node` (the async adapters run the same
//! scenarios from `asoc_async::scenarios`): a sender killed mid-stream, a
//! reset mid-frame, a half-closed socket, a close right after ACCEPT,
//! slowloris clients, and a static peer that restarts. The stalled reader
//! is in `tests/backpressure.rs`, the refused chunk in `tests/tcp.rs`.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use asoc_async::scenarios::{chunk, raw_client, set_linger_zero};
use asoc_mio::{MioConfig, NodeEvent, StreamError};
use asoc_proto::auth::{sign_hello, ApiKey};
use asoc_proto::connection::ConnectionConfig;
use asoc_proto::node::NodeEvent as ProtoEvent;
use asoc_proto::wire::{FrameType, Header};
use bytes::Bytes;
use common::{builder, event, stream_verified, KEY, LIMIT};

#[test]
fn sender_killed_mid_stream_is_incomplete_never_complete() {
    let b = builder(KEY).start().unwrap();
    let (mut sock, mut conn) = raw_client(b.local_addr(), KEY, 41);
    let now = Instant::now();
    let s = conn.open_stream().unwrap();
    for i in 0..4 {
        conn.send(now, s, Bytes::from(chunk(i, 0, 64 << 10)))
            .unwrap();
    }
    conn.write_to(now, &mut sock).unwrap();
    // Half a frame more, then the process "dies".
    sock.write_all(&Header::new(FrameType::Data, s.get(), 4, 1000).encode())
        .unwrap();
    sock.write_all(&[0u8; 10]).unwrap();
    drop(sock);
    let incoming = b.accept_stream_timeout(LIMIT).expect("stream arrives");
    let result = incoming.stream.read_to_end();
    assert!(
        matches!(result, Err(StreamError::Incomplete { bytes, .. }) if bytes == 4 * (64 << 10)),
        "{result:?}"
    );
    let e = event(&b, |e| {
        matches!(
            e,
            NodeEvent::StreamIncomplete { .. } | NodeEvent::StreamComplete { .. }
        )
    });
    assert!(
        matches!(e, NodeEvent::StreamIncomplete { bytes, .. } if bytes == 4 * (64 << 10)),
        "{e:?}"
    );
}

#[test]
fn resets_half_closes_and_close_after_accept_are_disconnects() {
    let b = builder(KEY).start().unwrap();
    // Closes right after ACCEPT.
    let (sock, _conn) = raw_client(b.local_addr(), KEY, 51);
    drop(sock);
    // Half-closed: the write side shut after a complete stream.
    let (mut sock, mut conn) = raw_client(b.local_addr(), KEY, 52);
    let now = Instant::now();
    let s = conn.open_stream().unwrap();
    conn.send(now, s, Bytes::from_static(b"complete")).unwrap();
    conn.finish(now, s).unwrap();
    conn.write_to(now, &mut sock).unwrap();
    sock.shutdown(Shutdown::Write).unwrap();
    let got = b
        .accept_stream_timeout(LIMIT)
        .expect("stream from the half-closed peer");
    assert_eq!(got.stream.read_to_end().unwrap(), b"complete");
    // Reset in the middle of a frame (SO_LINGER 0 makes close send RST).
    let (mut sock, mut conn) = raw_client(b.local_addr(), KEY, 53);
    let s = conn.open_stream().unwrap();
    conn.send(now, s, Bytes::from(vec![9u8; 100_000])).unwrap();
    let mut all = Vec::new();
    conn.write_to(now, &mut all).unwrap();
    sock.write_all(&all[..50_000]).unwrap();
    set_linger_zero(&sock);
    drop(sock);
    for _ in 0..3 {
        event(&b, |e| {
            matches!(e, NodeEvent::Node(ProtoEvent::PeerDisconnected { .. }))
        });
    }
    assert!(b.connected_peers().is_empty());
    // Still serving.
    let a = builder(KEY)
        .static_peer(b.local_addr().to_string())
        .start()
        .unwrap();
    assert_eq!(a.wait_for_peers(1, LIMIT), 1);
    stream_verified(&a, &b, 4 << 20);
}

#[test]
fn sixty_slowloris_clients_are_closed_at_the_deadline_while_a_peer_streams() {
    const HANGING: usize = 60;
    let deadline = Duration::from_secs(3);
    let config = MioConfig {
        connection: ConnectionConfig::builder()
            .handshake_timeout(deadline)
            .build()
            .unwrap(),
        ..MioConfig::default()
    };
    let b = builder(KEY).connection(config).start().unwrap();
    let addr = b.local_addr();
    let started = Instant::now();
    let clients: Vec<thread::JoinHandle<Duration>> = (0..HANGING)
        .map(|i| {
            thread::spawn(move || {
                let mut sock = std::net::TcpStream::connect(addr).unwrap();
                let opened = Instant::now();
                let hello = sign_hello(
                    &ApiKey::new(KEY).unwrap(),
                    uuid::Uuid::from_bytes([i as u8; 16]),
                    i as u32,
                )
                .encode_frame();
                // One byte per second; a read of 0 means the node closed.
                for byte in hello.iter().take(20) {
                    if sock.write_all(&[*byte]).is_err() {
                        break;
                    }
                    thread::sleep(Duration::from_secs(1));
                    let _ = sock.set_read_timeout(Some(Duration::from_millis(1)));
                    let mut probe = [0u8; 1];
                    if let Ok(0) = sock.read(&mut probe) {
                        return opened.elapsed();
                    }
                }
                opened.elapsed()
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let a = builder(KEY).static_peer(addr.to_string()).start().unwrap();
    assert_eq!(a.wait_for_peers(1, LIMIT), 1, "legitimate peer got in");
    stream_verified(&a, &b, 8 << 20);
    assert!(
        started.elapsed() < deadline,
        "the legitimate transfer happened while the clients hung"
    );
    for c in clients {
        let closed_after = c.join().unwrap();
        assert!(
            closed_after >= deadline - Duration::from_millis(100),
            "closed too early: {closed_after:?}"
        );
        assert!(
            closed_after < deadline + Duration::from_secs(3),
            "not closed at the deadline: {closed_after:?}"
        );
    }
    assert!(b.counters().policy.auth_failures.timeout >= HANGING as u64);
}

#[test]
fn a_restarted_static_peer_is_reconnected_on_the_backoff_schedule() {
    let b = builder(KEY).start().unwrap();
    let port_addr = b.local_addr();
    let a = builder(KEY)
        .static_peer(port_addr.to_string())
        .start()
        .unwrap();
    assert_eq!(a.wait_for_peers(1, LIMIT), 1);
    b.shutdown(Duration::from_secs(5));
    drop(b);
    let dropped = Instant::now();
    event(&a, |e| {
        matches!(e, NodeEvent::Node(ProtoEvent::PeerDisconnected { .. }))
    });
    let b2 = builder(KEY).bind(port_addr).start().unwrap();
    assert_eq!(
        a.wait_for_peers(1, Duration::from_secs(70)),
        1,
        "reconnected"
    );
    let took = dropped.elapsed();
    println!(
        "mio static peer restart: reconnected after {:.2} s (schedule: first retry 1-5 s, then doubling)",
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(900),
        "reconnected before the 1 s minimum: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(16),
        "slower than 1-5 s plus two doublings: {took:?}"
    );
    stream_verified(&a, &b2, 1 << 20);
}
