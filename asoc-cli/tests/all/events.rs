//! Every security decision of `asoc listen` reaches `--json`: failed dials,
//! identity conflicts, discovery counters on SIGUSR1, and each
//! `peer_disconnected` after the `stream_incomplete` lines of its
//! connection.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::Duration;

use asoc_proto::auth::{sign_hello, ApiKey};
use common::*;

/// A loopback address nothing listens on: a port bound and released.
fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_failed_dial_is_reported_with_its_error() {
    let key = keygen();
    let target = closed_port();
    let mut listener = Listener::start(&key, "tokio", &["--peer", &target]);
    let failed = listener.wait_for("dial_failed", |v| {
        v["event"] == "dial_failed" && v["target"] == target.as_str()
    });
    assert!(
        !failed["error"].as_str().unwrap().is_empty(),
        "the error is named: {failed}"
    );
    assert_eq!(listener.stop("INT").code(), Some(0));
}

#[test]
fn sigusr1_prints_the_discovery_counters() {
    for runtime in ["smol", "mio"] {
        let key = keygen();
        let udp = free_udp();
        let mut listener = Listener::start(
            &key,
            runtime,
            &[
                "--discovery",
                "--community",
                "lab",
                "--discovery-bind",
                &udp,
                "--announce-to",
                &free_udp(),
            ],
        );
        let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
        junk.send_to(b"not an announcement", &udp).unwrap();
        // The junk may still be on its way: ask until it is counted.
        let mut counted = None;
        for _ in 0..50 {
            signal(&listener.child, "USR1");
            let v = listener.next("discovery_counters");
            if v["counters"]["wrong_length"].as_u64() >= Some(1) {
                counted = Some(v);
                break;
            }
        }
        let v = counted.expect("the junk datagram was counted");
        assert_eq!(v["counters"]["accepted"], 0, "{v}");
        assert!(v["counters"]["dropped"].as_u64() >= Some(1), "{v}");
        assert_eq!(listener.stop("INT").code(), Some(0));
    }
}

/// Connects from `from` (a 127.x address) with a v1 HELLO signed by `key`
/// claiming `node`, and reads the ACCEPT.
fn claim(from: &str, to: &str, key: &str, node: uuid::Uuid, challenge: u32) -> TcpStream {
    let to: SocketAddr = to.parse().unwrap();
    let from: std::net::IpAddr = from.parse().unwrap();
    let mut sock = asoc_testkit::scenarios::connect_from(from, to).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let key = ApiKey::new(key).unwrap();
    sock.write_all(&sign_hello(&key, node, challenge).encode_frame())
        .unwrap();
    let mut accept = [0u8; 14];
    sock.read_exact(&mut accept).expect("the listener accepts");
    assert_eq!(accept[..2], [1, 5], "a v1 ACCEPT");
    sock
}

#[test]
fn two_addresses_claiming_one_node_id_are_an_identity_conflict() {
    let key = keygen();
    let mut listener = Listener::start(&key, "async-std", &["--allow-v1"]);
    let node = uuid::Uuid::from_bytes([0x5a; 16]);
    let _first = claim("127.0.0.7", &listener.addr, &key, node, 7);
    listener.wait_for("peer_connected", |v| {
        v["event"] == "peer_connected" && v["addr"].as_str().unwrap().starts_with("127.0.0.7:")
    });
    let _second = claim("127.0.0.8", &listener.addr, &key, node, 8);
    let conflict = listener.event("identity_conflict");
    assert_eq!(conflict["peer"], node.to_string());
    assert!(
        conflict["addr"].as_str().unwrap().starts_with("127.0.0.8:"),
        "{conflict}"
    );
    assert!(
        conflict["other_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.7:"),
        "{conflict}"
    );
    assert_eq!(listener.stop("INT").code(), Some(0));
}

fn cut_then_disconnected(runtime: &str) {
    let key = keygen();
    // Writing to a file makes the stream handler slower to report than the
    // node's own events, which is when the order used to break.
    let out_dir = temp_dir(&format!("order-{runtime}"));
    let mut listener = Listener::start(&key, runtime, &["--out", out_dir.to_str().unwrap()]);
    let mut send = send(&key, runtime, &listener.addr)
        .args(["--chunk-size", "64KiB", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    stdin.write_all(&pattern(512 * 1024, 5)).unwrap();
    stdin.flush().unwrap();
    listener.event("peer_connected");
    // Cut the sender off once its first bytes have arrived.
    let mut arrived = false;
    for _ in 0..200 {
        if !files(&out_dir).is_empty() {
            arrived = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(arrived, "the stream started");
    send.kill().unwrap();
    send.wait().unwrap();
    listener.event("peer_disconnected");
    listener.event("stream_incomplete");
    let order: Vec<String> = listener
        .seen_all()
        .iter()
        .map(|v| v["event"].as_str().unwrap_or_default().to_string())
        .filter(|e| e == "stream_incomplete" || e == "peer_disconnected")
        .collect();
    assert_eq!(
        order,
        ["stream_incomplete", "peer_disconnected"],
        "{runtime}: the cut stream first, then its connection's end"
    );
    drop(stdin);
    assert_eq!(listener.stop("INT").code(), Some(0));
}

#[test]
fn peer_disconnected_follows_the_stream_incomplete_of_its_connection_on_every_runtime() {
    for runtime in RUNTIMES {
        cut_then_disconnected(runtime);
    }
}

/// A node's signed v2 announcements, made by the library itself: the
/// test plays a peer whose address it chooses.
struct Announcer {
    discovery: asoc_proto::discovery::Discovery,
    keys: asoc_proto::auth::KeyRing,
    /// The announcer's own clock, moved one interval per announcement so
    /// that a round is always due, whatever the real time.
    now: std::time::Instant,
}

impl Announcer {
    fn new(key: &str, community: &str, node: uuid::Uuid, tcp_port: u16) -> Self {
        let config = asoc_proto::discovery::DiscoveryConfig::builder(community.to_string())
            .build()
            .unwrap();
        let now = std::time::Instant::now();
        Self {
            discovery: asoc_proto::discovery::Discovery::new(config, node, tcp_port, [7; 32], now),
            keys: asoc_proto::auth::KeyRing::new(ApiKey::new(key).unwrap()),
            now,
        }
    }

    /// The next round's announcement, stamped with the real wall clock.
    fn next(&mut self) -> Vec<u8> {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.now += Duration::from_secs(10);
        let sent = self
            .discovery
            .poll_transmit(self.now, unix_ms, &self.keys)
            .expect("a round is due");
        // The same bytes go to every destination; the rest of the round is
        // drained so the next call starts a new one.
        while self
            .discovery
            .poll_transmit(self.now, unix_ms, &self.keys)
            .is_some()
        {}
        sent.datagram.as_ref().to_vec()
    }
}

/// A known peer's address is sticky: a copy from another address while the
/// peer still announces moves nothing; once the old address has been
/// silent for two intervals the peer moves, and `peer_moved` says so.
#[test]
fn a_peer_moves_only_after_its_address_went_silent_and_peer_moved_says_so() {
    let key = keygen();
    let udp = free_udp();
    let nowhere = free_udp();
    let mut l = Listener::start(
        &key,
        "tokio",
        &[
            "--discovery",
            "--community",
            "moves",
            "--discovery-bind",
            &udp,
            "--announce-to",
            &nowhere,
        ],
    );
    let node = uuid::Uuid::from_bytes([0xee; 16]);
    let mut peer = Announcer::new(&key, "moves", node, 9);
    let home = UdpSocket::bind("127.0.0.2:0").unwrap();
    let other = UdpSocket::bind("127.0.0.3:0").unwrap();
    home.send_to(&peer.next(), &udp).unwrap();
    let found = l.event("peer_discovered");
    assert_eq!(found["addr"], "127.0.0.2:9", "{found}");
    // The attacker relays (or the peer fakes) a copy from elsewhere while
    // home still announces: sticky.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(500));
        home.send_to(&peer.next(), &udp).unwrap();
        other.send_to(&peer.next(), &udp).unwrap();
    }
    signal(&l.child, "USR1");
    let c = l.event("discovery_counters")["counters"].clone();
    assert!(c["address_sticky"].as_u64().unwrap_or(0) >= 3, "{c}");
    assert!(
        l.seen("peer_moved").is_empty(),
        "moved while home announced"
    );
    // Home falls silent for more than two 3 s intervals; then the peer
    // announces from its new address and moves.
    std::thread::sleep(Duration::from_millis(7_500));
    other.send_to(&peer.next(), &udp).unwrap();
    let moved = l.event("peer_moved");
    assert_eq!(moved["peer"], node.to_string(), "{moved}");
    assert_eq!(moved["old"], "127.0.0.2:9", "{moved}");
    assert_eq!(moved["new"], "127.0.0.3:9", "{moved}");
}
