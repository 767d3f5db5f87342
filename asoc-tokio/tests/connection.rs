//! One connection over real loopback TCP.

use std::sync::{Arc, Mutex};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::CloseReason;
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_tokio::{DriverConfig, Error, SharedAuthenticator};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

fn auth(node: u8, key: &str) -> SharedAuthenticator {
    let config = AuthenticatorConfig::new(
        Uuid::from_bytes([node; 16]),
        KeyRing::new(ApiKey::new(key).unwrap()),
    );
    Arc::new(Mutex::new(Authenticator::new(config, [node; 32])))
}

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_a_verified_256_mib_stream_over_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_auth = auth(2, KEY);
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let conn = asoc_tokio::accept(sock, &server_auth, DriverConfig::default())
            .await
            .unwrap();
        assert_eq!(conn.session().peer_node, Some(Uuid::from_bytes([1; 16])));
        let mut stream = conn.accept_stream().await.unwrap();
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = stream.chunk().await.unwrap() {
            n += chunk.len() as u64;
            hasher.update(&chunk);
        }
        (n, stream.frames(), hasher.finalize())
    });
    let sock = TcpStream::connect(addr).await.unwrap();
    let conn = asoc_tokio::connect(sock, &auth(1, KEY), DriverConfig::default())
        .await
        .unwrap();
    let data: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let expected = Sha256::digest(&data);
    conn.send_tensor(Bytes::from(data), 1 << 20).await.unwrap();
    let (n, frames, digest) = server.await.unwrap();
    assert_eq!(n, 256 << 20);
    assert_eq!(frames, 256);
    assert_eq!(digest, expected);
    conn.close().await;
    assert_eq!(conn.closed().await, CloseReason::Local);
}

#[tokio::test]
async fn wrong_key_is_refused_and_the_server_sends_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        asoc_tokio::accept(sock, &auth(2, KEY), DriverConfig::default()).await
    });
    let sock = TcpStream::connect(addr).await.unwrap();
    let client = asoc_tokio::connect(
        sock,
        &auth(1, "a-completely-different-key"),
        DriverConfig::default(),
    )
    .await;
    match server.await.unwrap() {
        Err(Error::Handshake(CloseReason::AuthFailed(f))) => assert_eq!(f.as_str(), "bad_mac"),
        other => panic!("server: {other:?}"),
    }
    match client {
        Err(Error::Handshake(CloseReason::PeerClosed)) => {}
        other => panic!("client: {other:?}"),
    }
}
