//! TLS (RFC-0002 §9.2) on the mio adapter, on 127.0.0.1: a pinned
//! self-signed certificate, mutual TLS against a CA, TLS off, one
//! `MioConnection` inside TLS, and mio and tokio nodes talking over TLS.
//! Every tensor is SHA-256-verified at the receiver.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use asoc_mio::tls::{client_config, server_config, ServerTrust, TlsConfig};
use asoc_mio::{MioConfig, MioConnection, Node, NodeBuilder, PeerRef};
use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::CloseReason;
use asoc_proto::handshake::AuthenticatorConfig;
use asoc_testkit::scenarios::{chunk, chunks_digest, TestPki};

use crate::common::{hashed, route, Holding};
use bytes::Bytes;
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const COMMUNITY: &str = "mio-tls";
const LIMIT: Duration = Duration::from_secs(60);
const CHUNK: usize = 1 << 20;

fn key() -> ApiKey {
    ApiKey::new(KEY).unwrap()
}

fn builder() -> NodeBuilder {
    NodeBuilder::new(COMMUNITY, key()).bind("127.0.0.1:0".parse().unwrap())
}

fn expected_digest(seed: u64, total: u64) -> Vec<u8> {
    chunks_digest(seed, total / CHUNK as u64, CHUNK)
}

/// `total` bytes from `from` to `to` in 1 MiB chunks; the receiver's byte
/// count and SHA-256 match.
fn stream_verified(from: &Node, to: &Node, seed: u64, total: u64) {
    let mut s = from.open_stream(route(from, to)).unwrap();
    let sender = thread::spawn(move || {
        for i in 0..total / CHUNK as u64 {
            s.send(Bytes::from(chunk(seed, i, CHUNK))).unwrap();
        }
        s.finish().unwrap();
    });
    let mut incoming = to.accept_stream_timeout(LIMIT).expect("a stream arrives");
    let received = hashed(&mut incoming.stream);
    sender.join().unwrap();
    assert_eq!(received, (total, expected_digest(seed, total)));
}

/// A connection authenticator for node id `[id; 16]` with the test key,
/// seeded from the OS as the adapter seeds it.
fn auth(id: u8) -> asoc_mio::SharedAuthenticator {
    asoc_mio::shared_authenticator(AuthenticatorConfig::new(
        Uuid::from_bytes([id; 16]),
        KeyRing::new(key()),
    ))
    .unwrap()
}

/// One stream of `total` bytes on `conn`, chunks of stream `seed`.
fn send_chunks(conn: &MioConnection, seed: u64, total: u64) {
    let s = conn.open_stream().unwrap();
    for i in 0..total / CHUNK as u64 {
        conn.send(s, Bytes::from(chunk(seed, i, CHUNK))).unwrap();
    }
    conn.finish(s).unwrap();
}

/// `b` with `b_tls`, then `a` with `a_tls` dialing it; both connected.
fn pair(a_tls: TlsConfig, b_tls: TlsConfig) -> (Node, Node) {
    let b = builder().tls(b_tls).start().unwrap();
    let a = dialing(&b, a_tls);
    assert_eq!(a.wait_for_peers(1, LIMIT), 1, "a connected");
    assert_eq!(b.wait_for_peers(1, LIMIT), 1, "b connected");
    (a, b)
}

/// A node with `tls` that dials `b`.
fn dialing(b: &Node, tls: TlsConfig) -> Node {
    builder()
        .tls(tls)
        .static_peer(b.local_addr().to_string())
        .start()
        .unwrap()
}

fn server_only(cert: &str, key: &str, client_ca: Option<&str>, pki: &TestPki) -> TlsConfig {
    let ca = client_ca.map(|ca| pki.path(ca));
    TlsConfig {
        server: Some(server_config(&pki.path(cert), &pki.path(key), ca.as_deref()).unwrap()),
        client: None,
    }
}

fn client_only(trust: &ServerTrust, identity: Option<(&str, &str)>, pki: &TestPki) -> TlsConfig {
    let identity = identity.map(|(c, k)| (pki.path(c), pki.path(k)));
    let identity = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    TlsConfig {
        server: None,
        client: Some(client_config(trust, identity).unwrap()),
    }
}

#[test]
fn pinned_self_signed_certificate_carries_verified_streams_and_a_wrong_pin_never_connects() {
    let pki = TestPki::new();
    let server = server_only("self.pem", "self.key", None, &pki);
    let good = client_only(&ServerTrust::Pinned(pki.path("self.pem")), None, &pki);
    let (a, b) = pair(good, server);
    stream_verified(&a, &b, 1, 32 << 20);
    stream_verified(&b, &a, 2, 32 << 20);

    let wrong = client_only(&ServerTrust::Pinned(pki.path("other.pem")), None, &pki);
    let c = dialing(&b, wrong);
    assert_eq!(
        c.wait_for_peers(1, Duration::from_secs(2)),
        0,
        "a wrong pin never connects"
    );
    assert_eq!(b.connected_peers().len(), 1, "only the good client is in");
    for n in [a, b, c] {
        n.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn mutual_tls_admits_a_ca_signed_client_and_refuses_one_without_a_certificate() {
    let pki = TestPki::new();
    let server = server_only("server.pem", "server.key", Some("ca.pem"), &pki);
    let trust = ServerTrust::CaFile(pki.path("ca.pem"));
    let client = client_only(&trust, Some(("client.pem", "client.key")), &pki);
    let (a, b) = pair(client, server);
    stream_verified(&a, &b, 3, 16 << 20);
    stream_verified(&b, &a, 4, 16 << 20);

    let anonymous = client_only(&trust, None, &pki);
    let c = dialing(&b, anonymous);
    assert_eq!(
        c.wait_for_peers(1, Duration::from_secs(2)),
        0,
        "no client certificate, no connection"
    );
    assert_eq!(
        b.connected_peers().len(),
        1,
        "only the CA-signed client is in"
    );
    for n in [a, b, c] {
        n.shutdown(Duration::from_secs(5));
    }
}

#[test]
fn a_client_trusting_another_ca_never_connects() {
    let pki = TestPki::new();
    // The server shows a self-signed certificate; the client trusts the CA.
    let server = server_only("self.pem", "self.key", None, &pki);
    let client = client_only(&ServerTrust::CaFile(pki.path("ca.pem")), None, &pki);
    let b = builder().tls(server).start().unwrap();
    let a = dialing(&b, client);
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(2)), 0);
    assert_eq!(b.connected_peers().len(), 0);
    a.shutdown(Duration::from_secs(5));
    b.shutdown(Duration::from_secs(5));
}

#[test]
fn tls_off_still_carries_verified_streams() {
    let (a, b) = pair(TlsConfig::default(), TlsConfig::default());
    stream_verified(&a, &b, 5, 16 << 20);
    stream_verified(&b, &a, 6, 16 << 20);
    a.shutdown(Duration::from_secs(5));
    b.shutdown(Duration::from_secs(5));
}

#[test]
fn a_plain_client_is_not_let_into_a_tls_node() {
    let pki = TestPki::new();
    let b = builder()
        .tls(server_only("self.pem", "self.key", None, &pki))
        .start()
        .unwrap();
    let a = dialing(&b, TlsConfig::default());
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(2)), 0);
    assert_eq!(b.connected_peers().len(), 0);
    a.shutdown(Duration::from_secs(5));
    b.shutdown(Duration::from_secs(5));
}

#[test]
fn one_mio_connection_inside_tls_delivers_everything_before_a_graceful_close() {
    const TOTAL: u64 = 64 << 20;
    let pki = TestPki::new();
    let (server_auth, client_auth) = (auth(2), auth(1));
    let server_tls = server_config(&pki.path("server.pem"), &pki.path("server.key"), None).unwrap();
    let client_tls = client_config(&ServerTrust::CaFile(pki.path("ca.pem")), None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let conn =
            MioConnection::accept_tls(&listener, server_tls, &server_auth, MioConfig::default())
                .unwrap();
        assert_eq!(conn.session().peer_node, Some(Uuid::from_bytes([1; 16])));
        let mut stream = conn.accept_stream().unwrap();
        // Slowly at first, so the sender's TLS records back up.
        thread::sleep(Duration::from_millis(300));
        (hashed(&mut stream), conn.closed())
    });
    // The CA-signed certificate names localhost and 127.0.0.1.
    let target = format!("localhost:{port}");
    let conn = MioConnection::connect_tls(
        &target,
        Arc::clone(&client_tls),
        &client_auth,
        MioConfig::default(),
    )
    .unwrap();
    send_chunks(&conn, 7, TOTAL);
    // Graceful: the records still inside rustls go out before the close.
    conn.close();
    assert_eq!(conn.closed(), CloseReason::Local);
    let (received, reason) = server.join().unwrap();
    assert_eq!(received, (TOTAL, expected_digest(7, TOTAL)));
    assert_eq!(reason, CloseReason::PeerClosed, "close_notify, then EOF");
}

#[test]
fn mio_and_tokio_nodes_talk_over_tls_both_ways() {
    let pki = TestPki::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let async_builder =
        || asoc_async::NodeBuilder::new(COMMUNITY, key()).bind("127.0.0.1:0".parse().unwrap());
    let trust = ServerTrust::CaFile(pki.path("ca.pem"));
    let both = TlsConfig {
        server: server_only("server.pem", "server.key", Some("ca.pem"), &pki).server,
        client: client_only(&trust, Some(("client.pem", "client.key")), &pki).client,
    };

    // tokio dials mio (mutual TLS), and mio dials tokio.
    let mio = builder().tls(both.clone()).start().unwrap();
    let tokio_node = rt
        .block_on(asoc_tokio::start(
            async_builder()
                .tls(both.clone())
                .static_peer(mio.local_addr().to_string()),
        ))
        .unwrap();
    assert_eq!(mio.wait_for_peers(1, LIMIT), 1);
    assert_eq!(rt.block_on(tokio_node.wait_for_peers(1, LIMIT)), 1);
    let mio2 = builder()
        .tls(both)
        .static_peer(tokio_node.local_addr().to_string())
        .start()
        .unwrap();
    assert_eq!(mio2.wait_for_peers(1, LIMIT), 1);
    assert_eq!(rt.block_on(tokio_node.wait_for_peers(2, LIMIT)), 2);

    const TOTAL: u64 = 16 << 20;
    for (seed, m) in [(8u64, &mio), (9, &mio2)] {
        // mio -> tokio
        let peer = m.connected_peers()[0].id;
        let receiver = {
            let t = tokio_node.clone();
            rt.spawn(async move {
                let mut incoming = t.accept_stream().await.unwrap();
                asoc_testkit::scenarios::hashed(&mut incoming.stream).await
            })
        };
        let mut s = m.open_stream(PeerRef::Conn(peer)).unwrap();
        for i in 0..TOTAL / CHUNK as u64 {
            s.send(Bytes::from(chunk(seed, i, CHUNK))).unwrap();
        }
        s.finish().unwrap();
        assert_eq!(
            rt.block_on(receiver).unwrap(),
            (TOTAL, expected_digest(seed, TOTAL))
        );

        // tokio -> mio
        let on_tokio = tokio_node
            .connected_peers()
            .into_iter()
            .find(|p| p.peer_node == Some(m.node_id()) || p.addr == m.local_addr())
            .expect("tokio's connection")
            .id;
        let sender = {
            let t = tokio_node.clone();
            rt.spawn(async move {
                let mut s = t.open_stream(PeerRef::Conn(on_tokio)).await.unwrap();
                for i in 0..TOTAL / CHUNK as u64 {
                    s.send(Bytes::from(chunk(seed + 100, i, CHUNK)))
                        .await
                        .unwrap();
                }
                s.finish().await.unwrap();
            })
        };
        let mut incoming = m.accept_stream_timeout(LIMIT).unwrap();
        let received = hashed(&mut incoming.stream);
        rt.block_on(sender).unwrap();
        assert_eq!(received, (TOTAL, expected_digest(seed + 100, TOTAL)));
    }
    mio.shutdown(Duration::from_secs(5));
    mio2.shutdown(Duration::from_secs(5));
    rt.block_on(tokio_node.shutdown(Duration::from_secs(5)));
}

#[test]
fn output_a_transport_still_holds_is_flushed_before_a_graceful_close_ends() {
    const TOTAL: u64 = 16 << 20;
    let (server_auth, client_auth) = (auth(2), auth(1));
    let (a, b) = mio::net::UnixStream::pair().unwrap();
    // The server's loop stops reading above 1 MiB not taken, so the
    // client's transport is left holding most of the tensor.
    let small = MioConfig::builder()
        .receive_buffer(1 << 20)
        .build()
        .unwrap();
    let server = thread::spawn(move || {
        let conn = MioConnection::server(b, &server_auth, small).unwrap();
        let mut stream = conn.accept_stream().unwrap();
        thread::sleep(Duration::from_millis(500));
        (hashed(&mut stream), conn.closed())
    });
    let conn = MioConnection::client(Holding::new(a), &client_auth, MioConfig::default()).unwrap();
    send_chunks(&conn, 10, TOTAL);
    conn.close();
    assert_eq!(conn.closed(), CloseReason::Local);
    let (received, reason) = server.join().unwrap();
    assert_eq!(received, (TOTAL, expected_digest(10, TOTAL)));
    assert_eq!(reason, CloseReason::PeerClosed);
}
