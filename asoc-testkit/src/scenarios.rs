//! Behaviour every adapter must show, written once and run by each
//! adapter's tests on its own runtime (`scenarios!`, `floods!`). All traffic
//! stays on 127.0.0.1; discovery uses unicast targets only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use asoc_proto::auth::{ApiKey, AuthFailure};
use asoc_proto::discovery::DiscoveryConfig;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub mod admission;
pub mod attacks;
pub mod dials;
pub mod discovery_attacks;
pub mod hostile;
pub mod identity;
pub mod lifecycle;

use asoc_async::tls::{client_config, server_config, ServerTrust, TlsConfig};
use asoc_async::{Net, Node, NodeBuilder, NodeEvent, PeerRef};

/// The key every scenario node shares (unless a scenario says otherwise).
pub const KEY: &str = "0123456789abcdef0123456789abcdef";
/// The community of scenario nodes.
pub const COMMUNITY: &str = "scenario-cluster";

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A builder bound to 127.0.0.1:0 with `key`.
pub fn builder(key: &str) -> NodeBuilder {
    NodeBuilder::new(COMMUNITY, ApiKey::new(key).unwrap()).bind("127.0.0.1:0".parse().unwrap())
}

/// Starts a node with a fresh id and seed.
pub async fn start<N: Net>(net: &N, b: NodeBuilder) -> Node<N> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&(std::process::id() as u64).to_be_bytes());
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(&id);
    b.start(
        net.clone(),
        seed,
        uuid::Builder::from_random_bytes(id).into_uuid(),
    )
    .await
    .unwrap()
}

/// Runs `fut` as a task and returns a future of its output.
pub fn spawn<N: Net, T: Send + 'static>(
    net: &N,
    fut: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> {
    let (tx, rx) = async_channel::bounded(1);
    net.spawn(Box::pin(async move {
        let _ = tx.send(fut.await).await;
    }));
    async move { rx.recv().await.expect("task panicked") }
}

/// Fails the scenario if `fut` takes longer than `limit`.
pub async fn within<N: Net, T>(
    net: &N,
    limit: Duration,
    what: &str,
    fut: impl Future<Output = T>,
) -> T {
    match asoc_async::race(fut, net.sleep_until(Instant::now() + limit)).await {
        Some(v) => v,
        None => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Deterministic bytes for chunk `index` of stream `seed`.
pub fn chunk(seed: u64, index: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ index.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The SHA-256 of chunks `0..count` of stream `seed`, `len` bytes each:
/// what a receiver of them hashes.
pub fn chunks_digest(seed: u64, count: u64, len: usize) -> Vec<u8> {
    let mut h = Sha256::new();
    for i in 0..count {
        h.update(chunk(seed, i, len));
    }
    h.finalize().to_vec()
}

/// How many bytes `stream` carries to its end, and their SHA-256.
pub async fn hashed(stream: &mut asoc_async::RecvStream) -> (u64, Vec<u8>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = stream.chunk().await.unwrap() {
        n += c.len() as u64;
        h.update(&c);
    }
    (n, h.finalize().to_vec())
}

/// An authenticator for one side of a bare connection: node id
/// `[node; 16]`, `key`, and `[node; 32]` as its random seed, so that the two
/// sides differ and a run repeats exactly.
pub fn connection_auth(node: u8, key: &str) -> asoc_async::SharedAuthenticator {
    let config = asoc_proto::handshake::AuthenticatorConfig::new(
        uuid::Uuid::from_bytes([node; 16]),
        asoc_proto::auth::KeyRing::new(ApiKey::new(key).unwrap()),
    );
    std::sync::Arc::new(std::sync::Mutex::new(
        asoc_proto::handshake::Authenticator::new(config, [node; 32]),
    ))
}

/// A test tensor of `len` bytes (under 4 GiB): a multiplicative hash of
/// each byte's index, uneven enough that a lost or reordered piece changes
/// its SHA-256.
pub fn tensor(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// What sending a reader of 10 bytes (`short`) and one of 12 (`long`) with
/// a declared length of 11 must fail with.
pub fn assert_declared_len_errors(short: &asoc_async::Error, long: &asoc_async::Error) {
    assert!(
        short
            .to_string()
            .contains("ended after 10 of the declared 11 bytes"),
        "{short}"
    );
    assert!(
        long.to_string().contains("more than the declared 11"),
        "{long}"
    );
}

/// The established connection from `from` to `to`, whichever side dialed.
pub fn route<A: Net, B: Net>(from: &Node<A>, to: &Node<B>) -> PeerRef {
    let (id, addr) = (to.node_id(), to.local_addr());
    from.connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(id) || p.addr == addr)
        .map(|p| PeerRef::Conn(p.id))
        .unwrap_or_else(|| panic!("no connection to {id}"))
}

/// The next event matching `pred`.
pub async fn event<N: Net>(
    net: &N,
    node: &Node<N>,
    pred: impl Fn(&NodeEvent) -> bool,
) -> NodeEvent {
    within(
        net,
        Duration::from_secs(20),
        "waiting for an event",
        async {
            loop {
                let e = node.next_event().await.expect("event channel closed");
                if pred(&e) {
                    return e;
                }
            }
        },
    )
    .await
}

async fn pair<A: Net, B: Net>(
    a_net: &A,
    b_net: &B,
    a: NodeBuilder,
    b: NodeBuilder,
) -> (Node<A>, Node<B>) {
    let b = start(b_net, b).await;
    let a = start(a_net, a.static_peer(b.local_addr().to_string())).await;
    assert_eq!(
        a.wait_for_peers(1, Duration::from_secs(10)).await,
        1,
        "a connected"
    );
    assert_eq!(
        b.wait_for_peers(1, Duration::from_secs(10)).await,
        1,
        "b connected"
    );
    (a, b)
}

/// Streams `total` bytes in 1 MiB chunks from `a` to `b`, verified by SHA-256.
async fn stream_verified<A: Net, B: Net>(a: &Node<A>, b: &Node<B>, b_net: &B, total: u64) {
    let receiver = {
        let b = b.clone();
        spawn(b_net, async move {
            let mut incoming = b.accept_stream().await.unwrap();
            hashed(&mut incoming.stream).await
        })
    };
    let guard = a.send_guard();
    let mut s = a.open_stream(route(a, b)).await.unwrap();
    let mut h = Sha256::new();
    let mut sent = 0u64;
    let mut i = 0;
    while sent < total {
        let len = (total - sent).min(1 << 20) as usize;
        let c = chunk(total, i, len);
        h.update(&c);
        s.send(Bytes::from(c)).await.unwrap();
        sent += len as u64;
        i += 1;
    }
    s.finish().await.unwrap();
    drop(guard);
    let (n, digest) = receiver.await;
    assert_eq!(n, total);
    assert_eq!(
        digest,
        h.finalize().to_vec(),
        "SHA-256 of the received tensor"
    );
}

/// Two nodes on loopback: handshake, then `total` bytes in 1 MiB chunks,
/// SHA-256 verified at the receiver; the receiver reports it complete.
pub async fn large_transfer<N: Net>(net: N, total: u64) {
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    stream_verified(&a, &b, &net, total).await;
    let done = event(&net, &b, |e| matches!(e, NodeEvent::StreamComplete { .. })).await;
    assert!(
        matches!(done, NodeEvent::StreamComplete { bytes, peer_node, .. } if bytes == total && peer_node == Some(a.node_id()))
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

/// `streams` concurrent streams each way between two nodes, all verified.
pub async fn concurrent_streams<N: Net>(net: N, streams: u64) {
    const CHUNKS: u64 = 8;
    const CHUNK: usize = 256 << 10;
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    let expected = |tag: u64| {
        let mut v = Vec::new();
        for i in 0..CHUNKS {
            let mut c = chunk(tag, i, CHUNK);
            if i == 0 {
                c[..8].copy_from_slice(&tag.to_le_bytes());
            }
            v.extend(c);
        }
        v
    };
    let mut senders = Vec::new();
    for (tag, from, to) in [
        (0u64, a.clone(), b.clone()),
        (1 << 32, b.clone(), a.clone()),
    ] {
        for s in 0..streams {
            let (from, to) = (from.clone(), to.clone());
            let data = expected(tag + s);
            senders.push(spawn(&net, async move {
                let mut st = from.open_stream(route(&from, &to)).await.unwrap();
                for piece in data.chunks(CHUNK) {
                    st.send(Bytes::copy_from_slice(piece)).await.unwrap();
                }
                st.finish().await.unwrap();
            }));
        }
    }
    let mut receivers = Vec::new();
    for node in [a.clone(), b.clone()] {
        let net2 = net.clone();
        receivers.push(spawn(&net, async move {
            // Streams interleave, so each is read by a task of its own.
            let mut readers = Vec::new();
            for _ in 0..streams {
                let incoming = node.accept_stream().await.unwrap();
                readers.push(spawn(&net2, async move {
                    incoming.stream.read_to_end().await.unwrap()
                }));
            }
            let mut seen = HashMap::new();
            for r in readers {
                let data = r.await;
                let tag = u64::from_le_bytes(data[..8].try_into().unwrap());
                assert!(data == expected(tag), "stream {tag:#x} corrupted");
                seen.insert(tag, ());
            }
            seen.len()
        }));
    }
    for s in senders {
        within(&net, Duration::from_secs(60), "senders", s).await;
    }
    for r in receivers {
        assert_eq!(
            within(&net, Duration::from_secs(60), "receivers", r).await,
            streams as usize
        );
    }
}

/// A wrong key gets no connection and an authentication-failed event with
/// the reason on the server.
pub async fn wrong_key<N: Net>(net: N) {
    let b = start(&net, builder(KEY)).await;
    let a = start(
        &net,
        builder("another-key-0123456789abcdef").static_peer(b.local_addr().to_string()),
    )
    .await;
    let e = event(&net, &b, |e| matches!(e, NodeEvent::AuthFailed { .. })).await;
    assert!(
        matches!(
            e,
            NodeEvent::AuthFailed {
                reason: AuthFailure::BadMac,
                conn: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(b.connected_peers().is_empty());
    assert!(a.connected_peers().is_empty());
    assert!(b.counters().auth.bad_mac >= 1);
}

/// A free UDP port on 127.0.0.1.
fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Discovery over loopback with unicast targets: the nodes find each other,
/// connect once, and stream.
pub async fn discovery_unicast<N: Net>(net: N) {
    let (ua, ub) = (free_udp(), free_udp());
    let disc = |to: SocketAddr| {
        DiscoveryConfig::builder(COMMUNITY)
            .announce_interval(Duration::from_millis(200))
            .unicast_targets(vec![to])
            .build()
            .unwrap()
    };
    let a = start(&net, builder(KEY).discovery(ua, disc(ub))).await;
    let b = start(&net, builder(KEY).discovery(ub, disc(ua))).await;
    let found = event(&net, &a, |e| matches!(e, NodeEvent::PeerDiscovered { .. })).await;
    assert!(
        matches!(found, NodeEvent::PeerDiscovered { node, addr, .. } if node == b.node_id() && addr == b.local_addr())
    );
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    assert_eq!(b.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    assert_eq!(a.peers().len(), 1, "one connection per pair");
    let payload = Bytes::from(chunk(7, 0, 3 << 20));
    a.send_tensor(route(&a, &b), payload.clone()).await.unwrap();
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

/// `n` nodes with static peers forming a full mesh; every ordered pair
/// exchanges a verified tensor.
pub async fn full_mesh<N: Net>(net: N, n: usize) {
    let mut nodes: Vec<Node<N>> = Vec::new();
    for _ in 0..n {
        let mut b = builder(KEY);
        for earlier in &nodes {
            b = b.static_peer(earlier.local_addr().to_string());
        }
        nodes.push(start(&net, b).await);
    }
    for node in &nodes {
        assert_eq!(
            node.wait_for_peers(n - 1, Duration::from_secs(60)).await,
            n - 1
        );
    }
    let mut receivers = Vec::new();
    for (j, node) in nodes.iter().enumerate() {
        let node = node.clone();
        receivers.push(spawn(&net, async move {
            let mut from = Vec::new();
            for _ in 0..n - 1 {
                let data = node
                    .accept_stream()
                    .await
                    .unwrap()
                    .stream
                    .read_to_end()
                    .await
                    .unwrap();
                let i = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
                assert_eq!(
                    u64::from_le_bytes(data[8..16].try_into().unwrap()) as usize,
                    j
                );
                assert!(
                    data[16..] == chunk((i * n + j) as u64, 0, 32 << 10)[..],
                    "{i}->{j} corrupted"
                );
                from.push(i);
            }
            from.sort_unstable();
            from
        }));
    }
    let mut senders = Vec::new();
    for i in 0..n {
        for j in (0..n).filter(|j| *j != i) {
            let (from, to) = (nodes[i].clone(), nodes[j].clone());
            senders.push(spawn(&net, async move {
                let mut data = (i as u64).to_le_bytes().to_vec();
                data.extend((j as u64).to_le_bytes());
                data.extend(chunk((i * n + j) as u64, 0, 32 << 10));
                from.send_tensor(route(&from, &to), Bytes::from(data))
                    .await
                    .unwrap();
            }));
        }
    }
    for s in senders {
        within(&net, Duration::from_secs(60), "mesh senders", s).await;
    }
    for (j, r) in receivers.into_iter().enumerate() {
        let from = within(&net, Duration::from_secs(60), "mesh receivers", r).await;
        assert_eq!(
            from,
            (0..n).filter(|i| *i != j).collect::<Vec<_>>(),
            "node {j}"
        );
    }
}

/// Graceful shutdown: a send in flight finishes, then every connection
/// closes and the listener is gone.
pub async fn graceful_shutdown<N: Net>(net: N) {
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    let data = Bytes::from(chunk(3, 0, 32 << 20));
    let sender = {
        let (a, to) = (a.clone(), route(&a, &b));
        let data = data.clone();
        spawn(&net, async move { a.send_tensor(to, data).await })
    };
    // Shut down only once the stream is really in flight: the receiver has
    // seen it begin.
    let (begun_tx, begun) = async_channel::bounded(1);
    let reader = {
        let b = b.clone();
        spawn(&net, async move {
            let incoming = b.accept_stream().await.unwrap();
            let _ = begun_tx.send(()).await;
            incoming.stream.read_to_end().await
        })
    };
    within(
        &net,
        Duration::from_secs(20),
        "the stream begins",
        begun.recv(),
    )
    .await
    .unwrap();
    a.shutdown(Duration::from_secs(20)).await;
    assert!(sender.await.is_ok(), "the send in flight finished");
    assert!(reader.await.unwrap() == data[..]);
    event(&net, &b, |e| {
        matches!(e, NodeEvent::PeerDisconnected { .. })
    })
    .await;
    assert!(a.connected_peers().is_empty());
    assert!(
        std::net::TcpStream::connect(a.local_addr()).is_err(),
        "listener closed"
    );
}

/// Two nodes on different runtimes talk to each other both ways.
pub async fn cross<A: Net, B: Net>(a_net: A, b_net: B) {
    let (a, b) = pair(&a_net, &b_net, builder(KEY), builder(KEY)).await;
    stream_verified(&a, &b, &b_net, 40 << 20).await;
    stream_verified(&b, &a, &a_net, 40 << 20).await;
}

/// Certificates for TLS scenarios, written as PEM files.
pub struct TestPki {
    dir: PathBuf,
}

impl TestPki {
    /// A CA, a server and a client certificate signed by it (SAN localhost
    /// and 127.0.0.1), and a self-signed certificate, in a fresh directory.
    pub fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("asoc-pki-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        for (name, usage) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth),
            ("client", ExtendedKeyUsagePurpose::ClientAuth),
        ] {
            let mut p =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                    .unwrap();
            p.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        for name in ["self", "other"] {
            let ck = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])
            .unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), ck.cert.pem()).unwrap();
            std::fs::write(
                dir.join(format!("{name}.key")),
                ck.signing_key.serialize_pem(),
            )
            .unwrap();
        }
        Self { dir }
    }

    /// A file of the set: `ca.pem`, `server.pem`/`.key`, `client.pem`/`.key`,
    /// `self.pem`/`.key` (self-signed), `other.pem`/`.key` (another one).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// TLS with a pinned self-signed certificate: the stream arrives; a client
/// pinning another certificate never connects.
pub async fn tls_pinned<N: Net>(net: N) {
    let pki = TestPki::new();
    let server = TlsConfig {
        server: Some(server_config(&pki.path("self.pem"), &pki.path("self.key"), None).unwrap()),
        client: None,
    };
    let good = TlsConfig {
        server: None,
        client: Some(client_config(&ServerTrust::Pinned(pki.path("self.pem")), None).unwrap()),
    };
    let (a, b) = pair(
        &net,
        &net,
        builder(KEY).tls(good),
        builder(KEY).tls(server.clone()),
    )
    .await;
    stream_verified(&a, &b, &net, 8 << 20).await;
    let wrong = TlsConfig {
        server: None,
        client: Some(client_config(&ServerTrust::Pinned(pki.path("other.pem")), None).unwrap()),
    };
    let _c = never_connects(&net, &b, wrong, "a wrong pin never connects").await;
    assert_eq!(b.connected_peers().len(), 1);
}

/// A node with `tls` dialing `b`, which has not connected within half a
/// second (`why` says why it must not).
async fn never_connects<N: Net>(net: &N, b: &Node<N>, tls: TlsConfig, why: &str) -> Node<N> {
    let c = start(
        net,
        builder(KEY)
            .tls(tls)
            .static_peer(b.local_addr().to_string()),
    )
    .await;
    assert_eq!(
        c.wait_for_peers(1, Duration::from_millis(500)).await,
        0,
        "{why}"
    );
    c
}

/// Mutual TLS against a CA: a client with a certificate from the CA gets
/// in; one without a client certificate does not.
pub async fn tls_mutual<N: Net>(net: N) {
    let pki = TestPki::new();
    let server = TlsConfig {
        server: Some(
            server_config(
                &pki.path("server.pem"),
                &pki.path("server.key"),
                Some(&pki.path("ca.pem")),
            )
            .unwrap(),
        ),
        client: None,
    };
    let trust = ServerTrust::CaFile(pki.path("ca.pem"));
    let client = TlsConfig {
        server: None,
        client: Some(
            client_config(
                &trust,
                Some((&pki.path("client.pem"), &pki.path("client.key"))),
            )
            .unwrap(),
        ),
    };
    let (a, b) = pair(
        &net,
        &net,
        builder(KEY).tls(client),
        builder(KEY).tls(server),
    )
    .await;
    stream_verified(&a, &b, &net, 8 << 20).await;
    let anonymous = TlsConfig {
        server: None,
        client: Some(client_config(&trust, None).unwrap()),
    };
    let _c = never_connects(&net, &b, anonymous, "no client certificate, no connection").await;
}

/// Resident memory of this process in bytes (Linux), 0 where unknown.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// A server that completes the ASoc handshake on one connection and then
/// never reads again, on a plain thread with blocking std::net sockets.
/// Returns its address; it holds the connection until `release` is dropped.
pub fn stalled_reader(key: &str) -> (SocketAddr, async_channel::Sender<()>) {
    use asoc_proto::auth::KeyRing;
    use asoc_proto::connection::{Connection, ConnectionConfig};
    use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let key = ApiKey::new(key).unwrap();
    let (release, held) = async_channel::bounded::<()>(1);
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let config =
            AuthenticatorConfig::new(uuid::Uuid::from_bytes([0xee; 16]), KeyRing::new(key));
        let mut auth = Authenticator::new(config, [7; 32]);
        let mut conn = Connection::server(ConnectionConfig::default(), Instant::now());
        // Exactly the 86 HELLO2 bytes, then ACCEPT2 out and the 30 CONFIRM
        // bytes in: nothing after them is ever read.
        let mut hello = [0u8; 86];
        sock.read_exact(&mut hello)
            .expect("client closed during the handshake");
        conn.handle_read(Instant::now(), &hello);
        auth.drive(Instant::now(), asoc_async::unix_ms(), &mut conn);
        conn.write_to(Instant::now(), &mut sock).unwrap();
        let mut confirm = [0u8; 30];
        sock.read_exact(&mut confirm)
            .expect("client closed during the handshake");
        conn.handle_read(Instant::now(), &confirm);
        auth.drive(Instant::now(), asoc_async::unix_ms(), &mut conn);
        assert!(conn.is_established(), "stalled reader: handshake failed");
        let _ = held.recv_blocking();
        drop(sock);
    });
    (addr, release)
}

/// Backpressure end to end: sending `total` bytes in fresh 1 MiB chunks to
/// a reader that stopped reading keeps this process's memory within 64 MiB
/// of its baseline, and the send-stall timeout (`stall`) then closes the
/// connection. Returns the peak growth in bytes (printed too).
pub async fn stalled_reader_backpressure<N: Net>(net: N, total: u64, stall: Duration) -> u64 {
    use asoc_proto::connection::{CloseReason, ConnectionConfig};
    let (addr, release) = stalled_reader(KEY);
    let driver = asoc_async::DriverConfig::builder()
        .connection(
            ConnectionConfig::builder()
                .send_stall_timeout(stall)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let a = start(&net, builder(KEY).driver(driver)).await;
    let peer = a.connect(addr.to_string()).await.unwrap();
    let baseline = rss_bytes();
    let mut peak = baseline;
    let mut s = a.open_stream(PeerRef::Conn(peer.id)).await.unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut i = 0;
    let err = loop {
        if sent >= total {
            panic!("{total} bytes went into a reader that reads nothing");
        }
        let c = Bytes::from(chunk(i, 0, 1 << 20));
        i += 1;
        match s.send(c).await {
            Ok(()) => sent += 1 << 20,
            Err(e) => break e,
        }
        peak = peak.max(rss_bytes());
    };
    let waited = started.elapsed();
    let growth = peak.saturating_sub(baseline);
    println!(
        "stalled reader: accepted {} MiB of a {} MiB tensor before blocking; peak RSS growth {:.1} MiB; closed after {:.1} s: {err}",
        sent >> 20,
        total >> 20,
        growth as f64 / (1 << 20) as f64,
        waited.as_secs_f64()
    );
    assert!(growth < 64 << 20, "memory grew {growth} bytes");
    let reason = event(&net, &a, |e| {
        matches!(e, NodeEvent::PeerDisconnected { .. })
    })
    .await;
    assert!(
        matches!(
            reason,
            NodeEvent::PeerDisconnected {
                reason: CloseReason::SendStall,
                ..
            }
        ),
        "{reason:?}"
    );
    assert!(waited >= stall, "closed only after the stall timeout");
    assert!(
        matches!(err, asoc_async::Error::Closed(CloseReason::SendStall)),
        "{err}"
    );
    drop(release);
    growth
}

/// A raw client on blocking std sockets that completes the handshake with
/// `node` and then does whatever the scenario wants with the socket.
pub fn raw_client(
    addr: SocketAddr,
    key: &str,
    seed: u8,
) -> (std::net::TcpStream, asoc_proto::connection::Connection) {
    use asoc_proto::auth::KeyRing;
    use asoc_proto::connection::ConnectionConfig;
    use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    let config = AuthenticatorConfig::new(
        uuid::Uuid::from_bytes([seed; 16]),
        KeyRing::new(ApiKey::new(key).unwrap()),
    );
    let mut auth = Authenticator::new(config, [seed; 32]);
    let now = Instant::now();
    let mut conn = auth.client(
        now,
        asoc_async::unix_ms(),
        ConnectionConfig::default(),
        asoc_proto::handshake::ClientOptions::v2(),
    );
    conn.write_to(now, &mut sock).unwrap();
    // ACCEPT2: its 14-byte header and the 72-byte Noise message.
    let mut accept = [0u8; 86];
    sock.read_exact(&mut accept).unwrap();
    conn.handle_read(now, &accept);
    auth.drive(now, asoc_async::unix_ms(), &mut conn);
    assert!(conn.is_established(), "raw client: handshake failed");
    // CONFIRM.
    conn.write_to(now, &mut sock).unwrap();
    (sock, conn)
}

/// A sender that dies mid-stream (socket dropped after part of a stream):
/// the receiver reports the stream incomplete, never complete, and the
/// stream's reader fails.
pub async fn sender_killed_mid_stream<N: Net>(net: N) {
    use std::io::Write;
    let b = start(&net, builder(KEY)).await;
    let (mut sock, mut conn) = raw_client(b.local_addr(), KEY, 41);
    let now = Instant::now();
    let s = conn.open_stream().unwrap();
    for i in 0..4 {
        conn.send(now, s, Bytes::from(chunk(i, 0, 64 << 10)))
            .unwrap();
    }
    conn.write_to(now, &mut sock).unwrap();
    // Half a frame more, then the process "dies".
    sock.write_all(
        &asoc_proto::wire::Header::new(asoc_proto::wire::FrameType::Data, s.get(), 4, 1000)
            .encode(),
    )
    .unwrap();
    sock.write_all(&[0u8; 10]).unwrap();
    drop(sock);
    let incoming = within(
        &net,
        Duration::from_secs(10),
        "stream arrives",
        b.accept_stream(),
    )
    .await
    .unwrap();
    let result = incoming.stream.read_to_end().await;
    assert!(
        matches!(result, Err(asoc_async::StreamError::Incomplete { bytes, .. }) if bytes == 4 * (64 << 10)),
        "{result:?}"
    );
    let e = event(&net, &b, |e| {
        matches!(
            e,
            NodeEvent::StreamIncomplete { .. } | NodeEvent::StreamComplete { .. }
        )
    })
    .await;
    assert!(
        matches!(e, NodeEvent::StreamIncomplete { bytes, .. } if bytes == 4 * (64 << 10)),
        "{e:?}"
    );
}

/// Abrupt endings: a reset in the middle of a frame, a half-closed socket
/// and a peer that closes right after ACCEPT. No panic, and the node reports
/// each as a disconnect while still serving a legitimate peer afterwards.
pub async fn abrupt_endings<N: Net>(net: N) {
    use std::io::Write;
    let b = start(&net, builder(KEY)).await;
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
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let got = within(
        &net,
        Duration::from_secs(10),
        "stream from the half-closed peer",
        b.accept_stream(),
    )
    .await
    .unwrap();
    assert_eq!(got.stream.read_to_end().await.unwrap(), b"complete");
    // Reset in the middle of a frame (SO_LINGER 0 makes close send RST).
    let (mut sock, mut conn) = raw_client(b.local_addr(), KEY, 53);
    let s = conn.open_stream().unwrap();
    conn.send(now, s, Bytes::from(vec![9u8; 100_000])).unwrap();
    let mut all = Vec::new();
    conn.write_to(now, &mut all).unwrap();
    sock.write_all(&all[..50_000]).unwrap();
    set_linger_zero(&sock);
    drop(sock);
    let mut disconnects = 0;
    while disconnects < 3 {
        if let NodeEvent::PeerDisconnected { .. } = event(&net, &b, |e| {
            matches!(e, NodeEvent::PeerDisconnected { .. })
        })
        .await
        {
            disconnects += 1;
        }
    }
    // Still serving.
    let a = start(&net, builder(KEY).static_peer(b.local_addr().to_string())).await;
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    stream_verified(&a, &b, &net, 4 << 20).await;
}

/// With linger 0, closing sends RST instead of FIN.
pub fn set_linger_zero(sock: &std::net::TcpStream) {
    socket2::SockRef::from(sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// The default driver, with handshakes cut off after `deadline`.
fn handshake_deadline(deadline: Duration) -> asoc_async::DriverConfig {
    asoc_async::DriverConfig::builder()
        .connection(
            asoc_proto::connection::ConnectionConfig::builder()
                .handshake_timeout(deadline)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

/// A complete HELLO2 frame (86 bytes) under `key` from node `[node; 16]`,
/// timestamped now, as a raw attacker or a stalling client sends it.
pub fn hello2_frame(key: &str, node: u8) -> Vec<u8> {
    use asoc_proto::auth::KeyRing;
    use asoc_proto::connection::ConnectionConfig;
    use asoc_proto::handshake::{Authenticator, AuthenticatorConfig, ClientOptions};
    let config = AuthenticatorConfig::new(
        uuid::Uuid::from_bytes([node; 16]),
        KeyRing::new(ApiKey::new(key).unwrap()),
    );
    let now = Instant::now();
    let mut conn = Authenticator::new(config, [node; 32]).client(
        now,
        asoc_async::unix_ms(),
        ConnectionConfig::default(),
        ClientOptions::v2(),
    );
    let mut frame = Vec::new();
    conn.write_to(now, &mut frame).unwrap();
    frame
}

/// Slowloris: `hanging` clients each send their HELLO one byte per second;
/// meanwhile a legitimate peer connects and streams; every hanging client
/// is closed at the handshake deadline.
pub async fn slowloris<N: Net>(net: N, hanging: usize) {
    use std::io::{Read, Write};
    let deadline = Duration::from_secs(3);
    let driver = handshake_deadline(deadline);
    let b = start(&net, builder(KEY).driver(driver)).await;
    let addr = b.local_addr();
    let started = Instant::now();
    let clients: Vec<std::thread::JoinHandle<Duration>> = (0..hanging)
        .map(|i| {
            std::thread::spawn(move || {
                // Each from an address of its own: one address gets only 8
                // pre-authentication places (the admission scenarios test
                // that share), and this scenario is about the deadline.
                let from = std::net::IpAddr::from([127, 0, 1, (i % 250) as u8 + 2]);
                let mut sock = connect_from(from, addr).unwrap();
                let opened = Instant::now();
                let hello = hello2_frame(KEY, i as u8);
                for byte in hello.iter().take(20) {
                    if sock.write_all(&[*byte]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1000));
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
    // While they hang, a legitimate peer gets in and streams.
    net.sleep_until(Instant::now() + Duration::from_millis(300))
        .await;
    let a = start(&net, builder(KEY).static_peer(addr.to_string())).await;
    assert_eq!(
        a.wait_for_peers(1, Duration::from_secs(10)).await,
        1,
        "legitimate peer got in"
    );
    stream_verified(&a, &b, &net, 8 << 20).await;
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
    assert!(b.counters().policy.auth_failures.timeout >= hanging as u64);
}

/// A static peer that restarts: the node reconnects following the backoff
/// schedule (first retry 1–5 s after the drop). Returns the time to
/// reconnect.
pub async fn static_peer_restart<N: Net>(net: N) -> Duration {
    let b = start(&net, builder(KEY)).await;
    let port_addr = b.local_addr();
    let a = start(&net, builder(KEY).static_peer(port_addr.to_string())).await;
    assert_eq!(a.wait_for_peers(1, Duration::from_secs(10)).await, 1);
    b.shutdown(Duration::from_secs(5)).await;
    let dropped = Instant::now();
    event(&net, &a, |e| {
        matches!(e, NodeEvent::PeerDisconnected { .. })
    })
    .await;
    let b2 = start(&net, builder(KEY).bind(port_addr)).await;
    assert_eq!(
        a.wait_for_peers(1, Duration::from_secs(70)).await,
        1,
        "reconnected"
    );
    let took = dropped.elapsed();
    println!("static peer restart: reconnected after {:.2} s (schedule: first retry 1-5 s, then doubling)", took.as_secs_f64());
    assert!(
        took >= Duration::from_millis(900),
        "reconnected before the 1 s minimum: {took:?}"
    );
    assert!(
        took <= Duration::from_secs(16),
        "slower than 1-5 s plus two doublings: {took:?}"
    );
    stream_verified(&a, &b2, &net, 1 << 20).await;
    took
}

/// A chunk the protocol refuses (here: larger than the maximum payload)
/// poisons its stream: no later chunk of it is sent (the receiver never
/// gets bytes after a hole), `send` fails once the refusal is known,
/// `finish` fails and no END is sent, so the receiver never sees a
/// shortened tensor as complete and reports it incomplete at close.
pub async fn refused_chunk_never_completes<N: Net>(net: N) {
    use asoc_proto::connection::{ConnectionConfig, SendError};
    let small = asoc_async::DriverConfig::builder()
        .connection(
            ConnectionConfig::builder()
                .max_payload(1 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (a, b) = pair(&net, &net, builder(KEY).driver(small), builder(KEY)).await;
    let mut s = a.open_stream(route(&a, &b)).await.unwrap();
    s.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
    s.send(Bytes::from(vec![2u8; 2 << 20])).await.unwrap();
    // Queued before or after the task saw the refusal: either way never sent.
    match s.send(Bytes::from(vec![3u8; 1000])).await {
        Ok(()) | Err(asoc_async::Error::Send(SendError::Poisoned { .. })) => {}
        Err(e) => panic!("send after a refused chunk: {e}"),
    }
    let mut again = a.open_stream(route(&a, &b)).await.unwrap();
    again.send(Bytes::from_static(b"after")).await.unwrap();
    again.finish().await.unwrap();
    // Commands run in order, so the refusal is known by now; the other
    // stream was unaffected.
    match s.send(Bytes::from(vec![4u8; 1000])).await {
        Err(asoc_async::Error::Send(SendError::Poisoned { stream, refused }))
            if stream == s.id() && matches!(*refused, SendError::PayloadTooLarge { .. }) => {}
        other => panic!("send on a poisoned stream: {other:?}"),
    }
    let err = s.finish().await.unwrap_err();
    assert!(
        matches!(&err, asoc_async::Error::Send(SendError::Poisoned { refused, .. })
            if matches!(**refused, SendError::PayloadTooLarge { .. })),
        "{err}"
    );
    let incoming = within(
        &net,
        Duration::from_secs(10),
        "stream arrives",
        b.accept_stream(),
    )
    .await
    .unwrap();
    a.shutdown(Duration::from_secs(5)).await;
    let got = incoming.stream.read_to_end().await;
    assert!(
        matches!(
            got,
            Err(asoc_async::StreamError::Incomplete { bytes: 1000, .. })
        ),
        "{got:?}"
    );
}

/// A TCP connection from source address `from` (any 127.0.0.x) to `to`.
pub fn connect_from(
    from: std::net::IpAddr,
    to: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// What a flood of bad handshakes did.
#[derive(Clone, Copy, Debug)]
pub struct FloodReport {
    /// Attempts made.
    pub attempts: usize,
    /// Attempts the node answered by closing without a byte.
    pub closed_silently: usize,
    /// Throttles the node imposed.
    pub throttles: u64,
    /// Legitimate throughput without the flood, bytes per second.
    pub unloaded: f64,
    /// Legitimate throughput during the flood, bytes per second.
    pub loaded: f64,
    /// Peak growth of this process's memory during the flood.
    pub rss_growth: u64,
}

/// `attempts` handshakes with a wrong key from 127.0.0.9 while a legitimate
/// peer (from 127.0.0.1) streams `bytes`: the flooder is throttled after 5
/// failures (one handshake per 5 s verified after that), never gets a byte
/// back, the transfer completes intact, and memory stays bounded.
/// Throughput is measured, not asserted.
pub async fn wrong_key_flood<N: Net>(net: N, attempts: usize, bytes: u64) -> FloodReport {
    use std::io::{Read, Write};
    let (a, b) = pair(&net, &net, builder(KEY), builder(KEY)).await;
    let t = Instant::now();
    stream_verified(&a, &b, &net, bytes).await;
    let unloaded = bytes as f64 / t.elapsed().as_secs_f64();
    let target = b.local_addr();
    let baseline = rss_bytes();
    let flood_started = Instant::now();
    let flood = std::thread::spawn(move || {
        let bad = hello2_frame("wrong-key-0123456789abcdef", 0x66);
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let bad = bad.clone();
                std::thread::spawn(move || {
                    let mut silent = 0;
                    for _ in (w..attempts).step_by(4) {
                        let Ok(mut s) = connect_from([127, 0, 0, 9].into(), target) else {
                            continue;
                        };
                        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                        let _ = s.write_all(&bad);
                        let mut got = Vec::new();
                        if matches!(s.read_to_end(&mut got), Ok(0)) || (got.is_empty()) {
                            silent += 1;
                        }
                    }
                    silent
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    let t = Instant::now();
    stream_verified(&a, &b, &net, bytes).await;
    let loaded = bytes as f64 / t.elapsed().as_secs_f64();
    let mut peak = rss_bytes();
    let closed_silently = loop {
        if flood.is_finished() {
            break flood.join().unwrap();
        }
        peak = peak.max(rss_bytes());
        net.sleep_until(Instant::now() + Duration::from_millis(50))
            .await;
    };
    let flood_time = flood_started.elapsed();
    let counters = b.counters();
    let report = FloodReport {
        attempts,
        closed_silently,
        throttles: counters.policy.throttles,
        unloaded,
        loaded,
        rss_growth: peak.saturating_sub(baseline),
    };
    println!(
        "wrong-key flood: {attempts} attempts, {closed_silently} closed without a byte, {} throttles, {} bad MACs checked; legitimate {:.0} MiB/s unloaded, {:.0} MiB/s during the flood ({:.2}x); RSS growth {:.1} MiB",
        report.throttles,
        counters.auth.bad_mac,
        unloaded / 1048576.0,
        loaded / 1048576.0,
        loaded / unloaded,
        report.rss_growth as f64 / 1048576.0
    );
    assert_eq!(
        closed_silently, attempts,
        "every flood connection was closed without a reply"
    );
    // 5 failures throttle the address; handshakes already running when the
    // throttle fell (one per flood worker) are still judged, and then one
    // per 5 s of the flood.
    let throttled_rate = flood_time.as_secs() / 5 + 1;
    assert!(
        (5..=9 + throttled_rate).contains(&counters.auth.bad_mac),
        "{} MACs checked in {flood_time:?}",
        counters.auth.bad_mac
    );
    assert!(report.throttles >= 1);
    assert!(
        counters.policy.refused.throttled >= (attempts as u64).saturating_sub(10 + throttled_rate)
    );
    assert!(
        report.rss_growth < 256 << 20,
        "memory grew {} bytes",
        report.rss_growth
    );
    assert_eq!(
        b.connected_peers().len(),
        1,
        "the legitimate peer is still connected"
    );
    report
}

/// `count` connections that never send a byte: the pre-handshake cap holds
/// (the rest are refused at once), every admitted one is closed at the
/// handshake deadline, and a legitimate peer still gets in.
pub async fn silent_connections<N: Net>(net: N, count: usize) {
    use std::io::Read;
    let deadline = Duration::from_secs(2);
    let driver = handshake_deadline(deadline);
    let b = start(&net, builder(KEY).driver(driver)).await;
    let target = b.local_addr();
    let mut socks = Vec::with_capacity(count);
    for i in 0..count {
        // Spread over source addresses so that the per-IP attempt rate
        // (100 per hour) is not what refuses them.
        let from = std::net::IpAddr::from([127, 0, (i / 250 % 250) as u8 + 1, (i % 250) as u8 + 2]);
        if let Ok(s) = connect_from(from, target) {
            socks.push(s);
        }
    }
    // A legitimate peer gets in while they hang (once their slots free up
    // at the deadline at the latest).
    let a = start(&net, builder(KEY).static_peer(target.to_string())).await;
    assert_eq!(
        a.wait_for_peers(1, Duration::from_secs(20)).await,
        1,
        "legitimate peer got in"
    );
    stream_verified(&a, &b, &net, 4 << 20).await;
    let handshaking = b.counters().policy.refused.too_many_handshakes;
    // Every silent socket is closed by the node: at once when over the cap,
    // at the deadline otherwise.
    let started = Instant::now();
    let mut closed = 0;
    for mut s in socks {
        // Generous: under load the node may take a while to even accept
        // (the listen backlog holds them); only a close by the node counts.
        let _ = s.set_read_timeout(Some(deadline + Duration::from_secs(60)));
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            other => panic!("silent connection not closed by the node: {other:?}"),
        }
    }
    println!(
        "silent connections: {count} opened, {handshaking} refused over the pre-handshake cap, {closed} closed by the node within {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(closed, count, "every silent connection was closed");
    let c = b.counters().policy;
    // Each was either refused over the cap of 64 at once, or admitted and
    // closed at the handshake deadline (the exact cap is tested in
    // asoc-proto's policy tests).
    assert!(
        c.refused.too_many_handshakes + c.auth_failures.timeout >= count as u64,
        "refused {} + timed out {} < {count}",
        c.refused.too_many_handshakes,
        c.auth_failures.timeout
    );
    assert!(handshaking >= 1, "the cap refused some");
}

/// `connections` concurrent authenticated connections into one node, each
/// streaming `per_connection` bytes in 1 MiB chunks: every SHA-256 matches,
/// nothing lost. Returns the peak memory growth.
pub async fn many_senders<N: Net>(net: N, connections: usize, per_connection: u64) -> u64 {
    use asoc_proto::connection::ConnectionConfig;
    // Per-connection buffers sized for many connections: at most a few MiB
    // in flight per connection on each side.
    let tight = asoc_async::DriverConfig::builder()
        .connection(
            ConnectionConfig::builder()
                .send_high_water(1 << 20)
                .build()
                .unwrap(),
        )
        .receive_buffer(2 << 20)
        .command_queue(2)
        .build()
        .unwrap();
    let b = start(
        &net,
        builder(KEY).driver(tight).policy(
            asoc_proto::policy::PolicyConfig::builder()
                .max_connections(4096)
                .max_handshaking(1024)
                // Every sender dials from 127.0.0.1 at once.
                .max_handshaking_per_ip(1024)
                .max_attempts_per_window(100_000)
                .build()
                .unwrap(),
        ),
    )
    .await;
    let target = b.local_addr();
    let baseline = rss_bytes();
    let receiver = {
        let (b, net2) = (b.clone(), net.clone());
        spawn(&net, async move {
            let mut readers = Vec::new();
            for _ in 0..connections {
                let incoming = b.accept_stream().await.unwrap();
                readers.push(spawn(&net2, async move {
                    let mut h = Sha256::new();
                    let mut first = None;
                    let mut stream = incoming.stream;
                    while let Some(c) = stream.chunk().await.unwrap() {
                        if first.is_none() {
                            first = Some(u64::from_le_bytes(c[..8].try_into().unwrap()));
                        }
                        h.update(&c);
                    }
                    (first.unwrap(), h.finalize())
                }));
            }
            let mut out = Vec::new();
            for r in readers {
                out.push(r.await);
            }
            out
        })
    };
    let mut senders = Vec::new();
    for i in 0..connections as u64 {
        let net2 = net.clone();
        senders.push(spawn(&net, async move {
            let a = start(&net2, builder(KEY).driver(tight)).await;
            let peer = a.connect(target.to_string()).await.unwrap();
            let mut s = a.open_stream(PeerRef::Conn(peer.id)).await.unwrap();
            let mut h = Sha256::new();
            let mut sent = 0;
            let mut k = 0;
            while sent < per_connection {
                let len = (per_connection - sent).min(1 << 20) as usize;
                let mut c = chunk(i, k, len);
                if k == 0 {
                    c[..8].copy_from_slice(&i.to_le_bytes());
                }
                h.update(&c);
                s.send(Bytes::from(c)).await.unwrap();
                sent += len as u64;
                k += 1;
            }
            s.finish().await.unwrap();
            let digest = h.finalize();
            (i, digest, a)
        }));
    }
    let mut expected = HashMap::new();
    let mut keep = Vec::new();
    for s in senders {
        let (i, d, a) = within(&net, Duration::from_secs(300), "senders", s).await;
        expected.insert(i, d);
        keep.push(a);
    }
    let got = within(&net, Duration::from_secs(300), "receiver", receiver).await;
    let growth = rss_bytes().saturating_sub(baseline);
    assert_eq!(got.len(), connections, "no stream lost");
    for (i, digest) in got {
        assert_eq!(
            expected.get(&i),
            Some(&digest),
            "stream of sender {i} corrupted"
        );
    }
    println!(
        "many senders: {connections} connections x {} MiB = {} MiB, all SHA-256 verified; RSS growth {:.0} MiB",
        per_connection >> 20,
        (per_connection * connections as u64) >> 20,
        growth as f64 / 1048576.0
    );
    growth
}

/// What the discovery flood needs from the node under attack, whatever its
/// adapter (the mio `Node` wraps an async one behind a blocking API).
pub trait FloodTarget: Send + Sync {
    /// Its node id.
    fn node_id(&self) -> uuid::Uuid;
    /// Its bound UDP discovery address.
    fn discovery_addr(&self) -> SocketAddr;
    /// Its counters.
    fn counters(&self) -> asoc_proto::node::NodeCounters;
    /// An event if one is waiting.
    fn try_event(&self) -> Option<NodeEvent>;
    /// Its established connections.
    fn connected(&self) -> usize;
}

impl<N: Net> FloodTarget for Node<N> {
    fn node_id(&self) -> uuid::Uuid {
        Node::node_id(self)
    }
    fn discovery_addr(&self) -> SocketAddr {
        Node::discovery_addr(self).expect("discovery is on")
    }
    fn counters(&self) -> asoc_proto::node::NodeCounters {
        Node::counters(self)
    }
    fn try_event(&self) -> Option<NodeEvent> {
        Node::try_event(self)
    }
    fn connected(&self) -> usize {
        self.connected_peers().len()
    }
}

/// The sockets of a discovery flood, bound before its nodes start: the
/// victim's and the legitimate peer's UDP addresses, and the eavesdropper's
/// socket, to which both nodes also announce (unicast, never broadcast).
pub struct DiscoveryFloodSetup {
    /// The eavesdropper: it captures the victim's own announcements (to
    /// reflect them) and the legitimate peer's (to replay them).
    pub capture: std::net::UdpSocket,
    /// The victim's discovery address.
    pub victim: SocketAddr,
    /// The legitimate peer's discovery address.
    pub peer: SocketAddr,
}

impl DiscoveryFloodSetup {
    /// Binds the eavesdropper and picks free discovery ports on 127.0.0.1.
    pub fn new() -> Self {
        let capture = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        Self {
            capture,
            victim: free_udp(),
            peer: free_udp(),
        }
    }

    /// The eavesdropper's address.
    pub fn capture_addr(&self) -> SocketAddr {
        self.capture.local_addr().unwrap()
    }

    /// The victim's discovery config: it announces only to the eavesdropper.
    pub fn victim_config(&self) -> DiscoveryConfig {
        flood_discovery(vec![self.capture_addr()])
    }

    /// The legitimate peer's: to the eavesdropper, which relays each
    /// announcement to the victim from 127.0.0.1 before it keeps it for
    /// replay. (A round's copies are the same bytes for every destination,
    /// but the victim must get them to know the peer; relaying them is how
    /// it does, and what is kept for replay is then a replay there.)
    pub fn peer_config(&self) -> DiscoveryConfig {
        flood_discovery(vec![self.capture_addr()])
    }

    /// A newcomer's, announcing to the victim after the flood.
    pub fn newcomer_config(&self) -> DiscoveryConfig {
        flood_discovery(vec![self.victim])
    }
}

impl Default for DiscoveryFloodSetup {
    fn default() -> Self {
        Self::new()
    }
}

/// Announcing every 1.5 s: under the 1 per second a node is honoured
/// (WIRE.md §6) with room for timer jitter, so every legitimate
/// announcement is accepted. The flood is made of v1 announcements, so v1
/// is enabled.
fn flood_discovery(targets: Vec<SocketAddr>) -> DiscoveryConfig {
    DiscoveryConfig::builder(COMMUNITY)
        .allow_v1(true)
        .announce_interval(Duration::from_millis(1500))
        .unicast_targets(targets)
        .build()
        .unwrap()
}

/// What a discovery flood did.
#[derive(Clone, Debug)]
pub struct DiscoveryFloodReport {
    /// Hostile datagrams sent.
    pub sent: u64,
    /// Of those, the ones the kernel dropped before the node read them
    /// (receive buffer full): `sent` minus what the node counted.
    pub lost: u64,
    /// Time the flood took.
    pub elapsed: Duration,
    /// Drops the node counted during the flood, by reason, beside what the
    /// attacker predicted from WIRE.md §7: (reason, counted, predicted).
    pub by_reason: Vec<(&'static str, u64, u64)>,
    /// Legitimate announcements the victim accepted during the flood.
    pub legit_accepted: u64,
    /// Peak growth of this process's resident memory during the flood.
    pub rss_growth: u64,
}

/// The hostile drop reasons and their counters.
fn hostile_counts(c: &asoc_proto::discovery::DiscoveryCounters) -> [(&'static str, u64); 7] {
    [
        ("wrong_length", c.wrong_length),
        ("other_community", c.other_community),
        ("bad_mac", c.bad_mac),
        ("own_node", c.own_node),
        ("stale", c.stale),
        ("future_dated", c.future_dated),
        ("replayed", c.replayed),
    ]
}

fn reason_index(r: asoc_proto::discovery::DropReason) -> usize {
    use asoc_proto::discovery::DropReason as R;
    match r {
        R::WrongLength => 0,
        R::OtherCommunity => 1,
        R::BadMac => 2,
        R::OwnNode => 3,
        R::Stale => 4,
        R::FutureDated => 5,
        R::Replayed => 6,
        other => panic!("the attacker never predicts {other}"),
    }
}

/// Unix seconds, as v1 announcements carry them.
fn unix_now() -> u64 {
    asoc_async::unix_ms() / 1000
}

/// An event that means the flood made the victim learn, move, forget or
/// dial a peer.
fn is_peer_event(e: &NodeEvent) -> bool {
    matches!(
        e,
        NodeEvent::PeerDiscovered { .. }
            | NodeEvent::PeerAddressChanged { .. }
            | NodeEvent::PeerExpired { .. }
            | NodeEvent::PeerConnected { .. }
            | NodeEvent::DialGaveUp { .. }
    )
}

/// Datagrams sent before the attacker waits for the victim to count them:
/// 16 datagrams of at most 1472 bytes stay well inside a default 208 KiB
/// receive buffer, so the kernel has no reason to drop any.
const FLOOD_BURST: u64 = 16;

/// The flood itself, on the calling thread with std sockets: `datagrams`
/// hostile discovery datagrams from 127.0.0.2–127.0.0.9 into `victim`,
/// which announces to `setup`'s eavesdropper, while the legitimate peer
/// `legit` keeps announcing to it through the eavesdropper's relay.
///
/// Checks: no peer event (discovered, moved, expired, connected, dial given
/// up) during the flood; the victim's drop counters, by reason, equal what
/// the attacker predicted from WIRE.md §7 (up to datagrams the kernel
/// dropped, which must be under 1%); every datagram it received is counted
/// as dropped or (the legitimate peer's) accepted; nothing reaches the
/// tables' limits (the flood cannot fill the replay cache: only
/// correctly signed, fresh announcements enter it, WIRE.md §5); the
/// legitimate peer stays known and connected; resident memory grows by
/// less than 64 MiB.
pub fn discovery_flood_run(
    victim: &dyn FloodTarget,
    legit: uuid::Uuid,
    setup: &DiscoveryFloodSetup,
    datagrams: u64,
) -> DiscoveryFloodReport {
    use asoc_proto::auth::community_hash;
    use hostile::{Attacker, Capture, Rng};

    let target = victim.discovery_addr();
    let me = victim.node_id();
    setup.capture.set_nonblocking(true).unwrap();
    let mut captures: Vec<(Instant, Capture)> = Vec::new();
    let mut own_echo = None;
    let mut discovered = false;
    let relay = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = vec![0u8; 2048];
    let mut drain_captures = |captures: &mut Vec<(Instant, Capture)>,
                              own_echo: &mut Option<[u8; 50]>| {
        while let Ok((n, _)) = setup.capture.recv_from(&mut buf) {
            let Some(c) = Capture::of(&buf[..n]) else {
                continue;
            };
            if c.node() == me {
                *own_echo = Some(c.bytes);
            } else if c.node() == legit {
                relay.send_to(&c.bytes, target).unwrap();
                captures.push((Instant::now(), c));
            }
        }
        // Only announcements well inside the ±60 s window: their replays
        // are replays, never stale, whatever the clocks' rounding.
        let unix = unix_now();
        captures.retain(|(_, c)| c.timestamp + 50 >= unix);
    };
    // Only replay what the victim has certainly read already: relayed to
    // it a second ago.
    let usable = |captures: &[(Instant, Capture)]| -> Vec<Capture> {
        let now = Instant::now();
        captures
            .iter()
            .filter(|(seen, _)| now.duration_since(*seen) >= Duration::from_secs(1))
            .map(|(_, c)| *c)
            .collect()
    };

    // Warm-up: the victim discovers the legitimate peer and connects to it;
    // the eavesdropper has something to replay and to reflect.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        while let Some(e) = victim.try_event() {
            if let NodeEvent::PeerDiscovered { node, .. } = e {
                assert_eq!(node, legit, "only the legitimate peer is discovered");
                discovered = true;
            }
        }
        drain_captures(&mut captures, &mut own_echo);
        if discovered
            && own_echo.is_some()
            && !usable(&captures).is_empty()
            && victim.connected() == 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "warm-up: discovered {discovered}, echo {}, captures {}, connected {}",
            own_echo.is_some(),
            captures.len(),
            victim.connected()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let own_echo = own_echo.unwrap();
    // Let the connection's own events settle before the flood is watched.
    std::thread::sleep(Duration::from_millis(200));
    while victim.try_event().is_some() {}

    let mut attacker = Attacker {
        rng: Rng(0xd15c_0f10_0d00),
        ours: community_hash(COMMUNITY),
        theirs: community_hash("some-other-cluster"),
        victim: me,
        real_key: ApiKey::new(KEY).unwrap(),
        attacker_key: ApiKey::new("fedcba9876543210fedcba9876543210").unwrap(),
        skew: 5,
    };
    let flooders: Vec<std::net::UdpSocket> = (2..=9)
        .map(|i| std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, i], 0))).unwrap())
        .collect();
    let counted = |victim: &dyn FloodTarget| {
        let c = victim.counters().discovery.expect("discovery counters");
        let hostile: u64 = hostile_counts(&c).iter().map(|(_, n)| n).sum();
        (c, hostile)
    };
    let (before, hostile_before) = counted(victim);
    let baseline = rss_bytes();
    let mut peak = baseline;
    let mut predicted = [0u64; 7];
    let mut sent = 0u64;
    let mut lost = 0u64;
    let mut peer_events = Vec::new();
    let mut dgram = Vec::with_capacity(2048);
    let mut pick = Rng(0x5eed);
    let mut replayable = usable(&captures);
    let started = Instant::now();
    let mut bursts = 0u64;
    while sent < datagrams {
        if bursts.is_multiple_of(256) {
            drain_captures(&mut captures, &mut Some(own_echo));
            let fresh = usable(&captures);
            if !fresh.is_empty() {
                replayable = fresh;
            }
            peak = peak.max(rss_bytes());
        }
        bursts += 1;
        let unix = unix_now();
        let burst = FLOOD_BURST.min(datagrams - sent);
        for _ in 0..burst {
            let reason = attacker.datagram(&mut dgram, unix, &replayable, &own_echo);
            predicted[reason_index(reason)] += 1;
            let from = &flooders[pick.below(flooders.len() as u64) as usize];
            from.send_to(&dgram, target).unwrap();
        }
        sent += burst;
        // Wait for the victim to count them; what it never counts, the
        // kernel dropped.
        let wait_until = Instant::now() + Duration::from_millis(500);
        loop {
            let got = counted(victim).1 - hostile_before;
            if got + lost >= sent {
                break;
            }
            if Instant::now() >= wait_until {
                lost = sent - got;
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        while let Some(e) = victim.try_event() {
            if is_peer_event(&e) {
                peer_events.push(e);
            }
        }
    }
    // Late arrivals, if any, are not lost.
    std::thread::sleep(Duration::from_millis(200));
    let elapsed = started.elapsed();
    peak = peak.max(rss_bytes());
    while let Some(e) = victim.try_event() {
        if is_peer_event(&e) {
            peer_events.push(e);
        }
    }
    let (after, hostile_after) = counted(victim);
    let arrived = hostile_after - hostile_before;
    let lost = sent - arrived;
    let by_reason: Vec<(&'static str, u64, u64)> = hostile_counts(&after)
        .iter()
        .zip(hostile_counts(&before))
        .zip(predicted)
        .map(|(((name, a), (_, b)), p)| (*name, a - b, p))
        .collect();
    let report = DiscoveryFloodReport {
        sent,
        lost,
        elapsed,
        by_reason: by_reason.clone(),
        legit_accepted: after.accepted - before.accepted,
        rss_growth: peak.saturating_sub(baseline),
    };
    println!(
        "discovery flood: {sent} datagrams in {:.2} s ({:.0} per s), {lost} dropped by the kernel; counted by reason (counted/predicted): {}; legitimate announcements accepted meanwhile: {}; RSS growth {:.1} MiB",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        by_reason
            .iter()
            .map(|(n, got, want)| format!("{n} {got}/{want}"))
            .collect::<Vec<_>>()
            .join(", "),
        report.legit_accepted,
        report.rss_growth as f64 / 1048576.0
    );
    assert!(peer_events.is_empty(), "the flood caused {peer_events:?}");
    assert_eq!(predicted.iter().sum::<u64>(), sent);
    assert!(lost <= sent / 100, "the kernel dropped {lost} of {sent}");
    for (name, got, want) in &by_reason {
        // A lost datagram is missing from its reason's count; nothing is
        // ever counted under another reason than predicted.
        assert!(
            *got <= *want && *got + lost >= *want,
            "{name}: counted {got}, predicted {want}, {lost} lost"
        );
        assert!(*want > 0, "the flood produced no {name}");
    }
    // Every datagram the victim read is accounted for: dropped by reason
    // or accepted (the legitimate peer's).
    assert_eq!(
        after.received - before.received,
        (after.dropped_total() - before.dropped_total()) + (after.accepted - before.accepted),
        "{before:?} -> {after:?}"
    );
    for (name, b, a) in [
        (
            "replay_cache_full",
            before.replay_cache_full,
            after.replay_cache_full,
        ),
        (
            "source_table_full",
            before.source_table_full,
            after.source_table_full,
        ),
        (
            "peer_table_full",
            before.peer_table_full,
            after.peer_table_full,
        ),
        (
            "source_rate_limited",
            before.source_rate_limited,
            after.source_rate_limited,
        ),
        ("expired", before.expired, after.expired),
        ("events_lost", before.events_lost, after.events_lost),
    ] {
        assert_eq!(a, b, "{name} moved during the flood");
    }
    if elapsed > Duration::from_secs(4) {
        assert!(
            report.legit_accepted >= 1,
            "the legitimate peer's announcements were accepted during the flood"
        );
    }
    assert_eq!(
        victim.connected(),
        1,
        "the legitimate peer is still connected"
    );
    assert!(
        report.rss_growth < 64 << 20,
        "memory grew {} bytes",
        report.rss_growth
    );
    report
}

/// The discovery flood on an async adapter: a victim and a legitimate peer
/// announcing to each other (unicast, 127.0.0.1), `datagrams` hostile
/// datagrams (see [`discovery_flood_run`]), then a newcomer announcing to
/// the victim is still discovered and connected.
pub async fn discovery_flood<N: Net>(net: N, datagrams: u64) -> DiscoveryFloodReport {
    let setup = DiscoveryFloodSetup::new();
    // The flood is of v1 announcements, so these nodes speak v1 too: a
    // peer heard only through v1 is dialed with v1 (WIRE-v2.md §6).
    let a = start(
        &net,
        builder(KEY)
            .allow_v1(true)
            .discovery(setup.victim, setup.victim_config()),
    )
    .await;
    let b = start(
        &net,
        builder(KEY)
            .allow_v1(true)
            .discovery(setup.peer, setup.peer_config()),
    )
    .await;
    let (tx, rx) = async_channel::bounded(1);
    {
        let (a, legit) = (a.clone(), b.node_id());
        std::thread::spawn(move || {
            let report = discovery_flood_run(&a, legit, &setup, datagrams);
            let _ = tx.send_blocking((report, setup));
        });
    }
    let (report, setup) = within(
        &net,
        Duration::from_secs(3600),
        "the discovery flood",
        rx.recv(),
    )
    .await
    .expect("the flood thread panicked");
    let c = start(
        &net,
        builder(KEY)
            .allow_v1(true)
            .discovery(free_udp(), setup.newcomer_config()),
    )
    .await;
    let found = event(&net, &a, |e| matches!(e, NodeEvent::PeerDiscovered { .. })).await;
    assert!(
        matches!(found, NodeEvent::PeerDiscovered { node, .. } if node == c.node_id()),
        "{found:?}"
    );
    assert_eq!(a.wait_for_peers(2, Duration::from_secs(20)).await, 2);
    report
}
