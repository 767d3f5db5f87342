//! The ready-made loop over real loopback TCP.

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use asoc_mio::StreamId;
use asoc_mio::{Error, MioConfig, MioConnection, StreamError};
use asoc_proto::auth::AuthFailure;
use asoc_proto::connection::{CloseReason, ConnectionConfig, SendError};
use asoc_proto::handshake::ClientOptions;
use asoc_proto::v2::WireVersion;
use asoc_testkit::scenarios::connection_auth as auth;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";

fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A client and a server connected over loopback with `config`.
fn pair(config: MioConfig) -> (MioConnection, MioConnection) {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        MioConnection::accept(&listener, &auth(2, KEY), config).unwrap()
    });
    let client = MioConnection::connect(addr, &auth(1, KEY), config).unwrap();
    (client, server.join().unwrap())
}

/// Deterministic bytes that differ per `salt`.
fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[test]
fn handshake_and_a_verified_256_mib_stream_over_loopback() {
    let (client, server) = pair(MioConfig::default());
    assert_eq!(server.session().peer_node, Some(Uuid::from_bytes([1; 16])));
    // v2: ACCEPT2 proves the server's node id to the client.
    assert_eq!(client.session().peer_node, Some(Uuid::from_bytes([2; 16])));
    assert_eq!(client.session().info, server.session().info);
    assert_eq!(client.session().info.version, WireVersion::V2);

    let receiver = std::thread::spawn(move || {
        let mut stream = server.accept_stream().unwrap();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.chunk().unwrap() {
            hasher.update(&chunk);
        }
        let result = (stream.bytes(), stream.frames(), hasher.finalize());
        assert_eq!(server.closed(), CloseReason::PeerClosed);
        result
    });
    let data = pattern(256 << 20, 0);
    let expected = Sha256::digest(&data);
    client.send_tensor(Bytes::from(data), 1 << 20).unwrap();
    client.close();
    assert_eq!(client.closed(), CloseReason::Local);
    let (bytes, frames, digest) = receiver.join().unwrap();
    assert_eq!(bytes, 256 << 20);
    assert_eq!(frames, 256);
    assert_eq!(digest, expected);
}

/// Sends 64 streams from 64 threads on one side while verifying the 64 the
/// other side sends, each in its own thread; returns digests sent and
/// received by stream id.
fn exchange(
    conn: Arc<MioConnection>,
    salt: u32,
) -> (HashMap<StreamId, Vec<u8>>, HashMap<StreamId, Vec<u8>>) {
    std::thread::scope(|s| {
        let receiving = s.spawn(|| {
            let mut readers = Vec::new();
            for _ in 0..64 {
                let mut stream = conn.accept_stream().unwrap();
                readers.push(std::thread::spawn(move || {
                    let mut hasher = Sha256::new();
                    while let Some(chunk) = stream.chunk().unwrap() {
                        hasher.update(&chunk);
                    }
                    (stream.id(), hasher.finalize().to_vec())
                }));
            }
            readers
                .into_iter()
                .map(|r| r.join().unwrap())
                .collect::<HashMap<_, _>>()
        });
        let senders: Vec<_> = (0..64u32)
            .map(|i| {
                let conn = &conn;
                s.spawn(move || {
                    // Sizes from 0 (a lone END) to about 2 MiB, in 64 KiB frames.
                    let data = pattern((i as usize * 33_331) % (2 << 20), salt + i);
                    let digest = Sha256::digest(&data).to_vec();
                    let id = conn.send_tensor(Bytes::from(data), 64 << 10).unwrap();
                    (id, digest)
                })
            })
            .collect();
        let sent = senders.into_iter().map(|h| h.join().unwrap()).collect();
        (sent, receiving.join().unwrap())
    })
}

#[test]
fn sixty_four_concurrent_streams_in_both_directions_all_verified() {
    let (client, server) = pair(MioConfig::default());
    let (client, server) = (Arc::new(client), Arc::new(server));
    let c = client.clone();
    let client_side = std::thread::spawn(move || exchange(c, 1000));
    let (server_sent, server_received) = exchange(server.clone(), 2000);
    let (client_sent, client_received) = client_side.join().unwrap();
    assert_eq!(client_sent.len(), 64);
    assert_eq!(server_sent.len(), 64);
    assert!(client_sent.keys().all(|id| id.get() % 2 == 1));
    assert!(server_sent.keys().all(|id| id.get() % 2 == 0));
    assert_eq!(server_received, client_sent);
    assert_eq!(client_received, server_sent);
    client.close();
    assert_eq!(client.closed(), CloseReason::Local);
    assert_eq!(server.closed(), CloseReason::PeerClosed);
}

#[test]
fn a_small_receive_buffer_pauses_reading_and_loses_nothing() {
    // 64 KiB of unread data stops the reader; 32 MiB must still arrive whole.
    let config = MioConfig::builder()
        .receive_buffer(64 << 10)
        .build()
        .unwrap();
    let (client, server) = pair(config);
    let data = pattern(32 << 20, 7);
    let expected = Sha256::digest(&data);
    let sender = std::thread::spawn(move || {
        client.send_tensor(Bytes::from(data), 16 << 10).unwrap();
        client
    });
    let mut stream = server.accept_stream().unwrap();
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.chunk().unwrap() {
        hasher.update(&chunk);
    }
    assert_eq!(hasher.finalize(), expected);
    let client = sender.join().unwrap();
    client.close();
    assert_eq!(server.closed(), CloseReason::PeerClosed);
}

#[test]
fn wrong_key_no_connection_and_the_server_closes_with_bad_mac() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        MioConnection::accept(&listener, &auth(2, KEY), MioConfig::default())
    });
    let client = MioConnection::connect(
        addr,
        &auth(1, "a-completely-different-key"),
        MioConfig::default(),
    );
    match server.join().unwrap() {
        Err(Error::Handshake(CloseReason::AuthFailed(AuthFailure::BadMac))) => {}
        other => panic!("server: {other:?}"),
    }
    match client {
        Err(Error::Handshake(CloseReason::PeerClosed)) => {}
        other => panic!("client: {other:?}"),
    }
}

#[test]
fn wrong_key_the_server_writes_not_a_single_byte() {
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        MioConnection::accept(&listener, &auth(2, KEY), MioConfig::default())
    });
    // A raw client: a HELLO under the wrong key, then read until EOF.
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut hello = auth(1, "a-completely-different-key")
        .lock()
        .unwrap()
        .client(
            Instant::now(),
            asoc_async::unix_ms(),
            ConnectionConfig::default(),
            ClientOptions::v2(),
        );
    hello.write_to(Instant::now(), &mut sock).unwrap();
    assert_eq!(hello.pending_output(), 0);
    let mut received = Vec::new();
    sock.read_to_end(&mut received).unwrap();
    assert!(received.is_empty(), "server wrote {received:?}");
    assert!(matches!(
        server.join().unwrap(),
        Err(Error::Handshake(CloseReason::AuthFailed(
            AuthFailure::BadMac
        )))
    ));
}

#[test]
fn a_refused_chunk_is_reported_and_its_stream_never_completes() {
    let config = MioConfig::builder()
        .connection(
            ConnectionConfig::builder()
                .max_payload(1 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (client, server) = pair(config);
    let s = client.open_stream().unwrap();
    client.send(s, Bytes::from(vec![1u8; 1024])).unwrap();
    // Refused by asoc-proto; the handle learns it on the next call.
    client.send(s, Bytes::from(vec![2u8; 2 << 20])).unwrap();
    let poisoned = |r: Result<(), Error>| match r {
        Err(Error::Send(SendError::Poisoned { stream, refused })) => {
            stream == s && matches!(*refused, SendError::PayloadTooLarge { .. })
        }
        _ => false,
    };
    let finished = client.finish(s);
    assert!(poisoned(finished), "finish after a refused chunk");
    assert!(poisoned(client.send(s, Bytes::from_static(b"x"))));
    // Other streams are unaffected.
    let ok = client.send_tensor(Bytes::from_static(b"fine"), 2).unwrap();
    let mut cut = server.accept_stream().unwrap();
    let fine = server.accept_stream().unwrap();
    assert_eq!((cut.id(), fine.id()), (s, ok));
    assert_eq!(fine.read_to_end().unwrap(), b"fine");
    assert_eq!(cut.chunk().unwrap().unwrap().len(), 1024);
    client.close();
    match cut.chunk() {
        Err(StreamError::Incomplete { reason, .. }) => {
            assert_eq!(reason, CloseReason::PeerClosed)
        }
        other => panic!("cut stream: {other:?}"),
    }
}

#[test]
fn dropping_the_handle_closes_gracefully() {
    let (client, server) = pair(MioConfig::default());
    let id = client
        .send_tensor(Bytes::from_static(b"last words"), 4)
        .unwrap();
    drop(client);
    let stream = server.accept_stream().unwrap();
    assert_eq!(stream.id(), id);
    assert_eq!(stream.read_to_end().unwrap(), b"last words");
    assert_eq!(server.closed(), CloseReason::PeerClosed);
    assert!(server.accept_stream().is_none());
    assert!(matches!(
        server.open_stream(),
        Err(Error::Closed(CloseReason::PeerClosed))
    ));
}

#[test]
fn a_silent_client_is_dropped_at_the_protocol_handshake_deadline() {
    let config = MioConfig::builder()
        .connection(
            ConnectionConfig::builder()
                .handshake_timeout(std::time::Duration::from_millis(200))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let listener = listener();
    let addr = listener.local_addr().unwrap();
    let server =
        std::thread::spawn(move || MioConnection::accept(&listener, &auth(2, KEY), config));
    let mut sock = TcpStream::connect(addr).unwrap();
    let mut received = Vec::new();
    sock.read_to_end(&mut received).unwrap();
    assert!(received.is_empty());
    assert!(matches!(
        server.join().unwrap(),
        Err(Error::Handshake(CloseReason::HandshakeTimeout))
    ));
}

/// Waits (bounded, not timed) until a thread named `name` exists or not.
#[cfg(target_os = "linux")]
fn thread_named(name: &str, exists: bool) -> bool {
    for _ in 0..1000 {
        let found = std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
            let comm = std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap_or_default();
            comm.trim_end() == name
        });
        if found == exists {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

#[cfg(target_os = "linux")]
#[test]
fn the_loop_thread_ends_once_every_handle_and_task_is_gone() {
    use asoc_async::Runtime;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    const NAME: &str = "mio-loop-end";
    let rt = asoc_mio::Mio::new(NAME, Duration::from_secs(1)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (sleeper, flag) = (rt.clone(), done.clone());
    rt.spawn(Box::pin(async move {
        while !flag.load(Ordering::SeqCst) {
            let tick = Instant::now() + Duration::from_millis(10);
            sleeper.sleep_until(tick).await;
        }
    }));
    // Every handle outside the task is gone: the task keeps the loop.
    drop(rt);
    assert!(thread_named(NAME, true), "the loop thread never ran");
    done.store(true, Ordering::SeqCst);
    assert!(
        thread_named(NAME, false),
        "the loop thread is still running"
    );
}
