//! TLS as a layer over any transport: `asoc_async::tls` over an in-memory
//! tokio pipe (no socket at all), carrying one verified tensor and ending
//! with `close_notify`, and refusing a server whose certificate is not the
//! pinned one.

use std::time::Duration;

use asoc_async::tls::{self, client_config, server_config, server_name, ServerTrust};
use asoc_proto::connection::CloseReason;
use asoc_testkit::scenarios::{connection_auth as auth, hashed, tensor, TestPki};
use asoc_tokio::{Connection, DriverConfig, Tokio, TokioIo};
use bytes::Bytes;
use sha2::{Digest, Sha256};

const KEY: &str = "0123456789abcdef0123456789abcdef";
const LINGER: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tensor_crosses_tls_over_an_in_memory_pipe_and_the_close_is_clean() {
    let pki = TestPki::new();
    let server_tls = server_config(&pki.path("self.pem"), &pki.path("self.key"), None).unwrap();
    let client_tls = client_config(&ServerTrust::Pinned(pki.path("self.pem")), None).unwrap();
    // A small pipe, so that records back up and writes wait for room.
    let (a, b) = tokio::io::duplex(16 * 1024);
    let rt = Tokio::current();
    let server = {
        let rt = rt.clone();
        tokio::spawn(async move {
            let io = tls::accept(&rt, TokioIo(b), server_tls, LINGER)
                .await
                .unwrap();
            let conn = Connection::accept(&rt, io, &auth(2, KEY), DriverConfig::default())
                .await
                .unwrap();
            let mut stream = conn.accept_stream().await.unwrap();
            let (n, digest) = hashed(&mut stream).await;
            ((n, digest), conn.closed().await)
        })
    };
    let name = server_name("localhost:9000").unwrap();
    let io = tls::connect(&rt, TokioIo(a), client_tls, name, LINGER)
        .await
        .unwrap();
    assert!(!io.session().is_handshaking());
    let conn = Connection::connect(&rt, io, &auth(1, KEY), DriverConfig::default())
        .await
        .unwrap();
    let data = tensor(8 << 20);
    let expected = Sha256::digest(&data).to_vec();
    conn.send_tensor(Bytes::from(data), 1 << 20).await.unwrap();
    conn.close().await;
    assert_eq!(conn.closed().await, CloseReason::Local);
    let (received, reason) = server.await.unwrap();
    assert_eq!(received, (8 << 20, expected));
    assert_eq!(reason, CloseReason::PeerClosed, "close_notify, then EOF");
}

#[tokio::test]
async fn a_client_pinning_another_certificate_fails_the_handshake() {
    let pki = TestPki::new();
    let server_tls = server_config(&pki.path("self.pem"), &pki.path("self.key"), None).unwrap();
    let client_tls = client_config(&ServerTrust::Pinned(pki.path("other.pem")), None).unwrap();
    let (a, b) = tokio::io::duplex(16 * 1024);
    let rt = Tokio::current();
    let server = {
        let rt = rt.clone();
        tokio::spawn(async move { tls::accept(&rt, TokioIo(b), server_tls, LINGER).await })
    };
    let name = server_name("localhost:9000").unwrap();
    let client = tls::connect(&rt, TokioIo(a), client_tls, name, LINGER).await;
    assert_eq!(
        client.map(drop).unwrap_err().kind(),
        std::io::ErrorKind::InvalidData,
        "the pin refuses the certificate"
    );
    assert!(server.await.unwrap().is_err(), "the server hears the alert");
}
