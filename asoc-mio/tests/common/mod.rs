//! Helpers of the mio fault and flood tests: nodes on 127.0.0.1 and
//! SHA-256-verified transfers between them.
#![allow(dead_code)]

use std::thread;
use std::time::{Duration, Instant};

use asoc_async::scenarios::chunk;
use asoc_mio::{Node, NodeBuilder, NodeEvent, PeerRef};
use asoc_proto::auth::ApiKey;
use bytes::Bytes;
use sha2::{Digest, Sha256};

pub const KEY: &str = "0123456789abcdef0123456789abcdef";
pub const LIMIT: Duration = Duration::from_secs(60);

pub fn builder(key: &str) -> NodeBuilder {
    NodeBuilder::new("mio-faults", ApiKey::new(key).unwrap()).bind("127.0.0.1:0".parse().unwrap())
}

/// The established connection from `from` to `to`, whichever side dialed.
pub fn route(from: &Node, to: &Node) -> PeerRef {
    let (id, addr) = (to.node_id(), to.local_addr());
    from.connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(id) || p.addr == addr)
        .map(|p| PeerRef::Conn(p.id))
        .unwrap_or_else(|| panic!("no connection to {id}"))
}

/// The next event matching `pred` (panics after 20 s without one).
pub fn event(node: &Node, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = node
            .next_event_timeout(left)
            .expect("no matching event in time");
        if pred(&e) {
            return e;
        }
    }
}

/// `b`, then `a` with `b` as its static peer; both connected.
pub fn pair(a: NodeBuilder, b: NodeBuilder) -> (Node, Node) {
    let b = b.start().unwrap();
    let a = a.static_peer(b.local_addr().to_string()).start().unwrap();
    assert_eq!(a.wait_for_peers(1, LIMIT), 1, "a connected");
    assert_eq!(b.wait_for_peers(1, LIMIT), 1, "b connected");
    (a, b)
}

/// Streams `total` bytes in 1 MiB chunks from `a` to `b`, verified by
/// SHA-256 on both ends.
pub fn stream_verified(a: &Node, b: &Node, total: u64) {
    let seed = total ^ 0x5eed;
    let receiver = {
        let b = b.clone();
        thread::spawn(move || {
            let mut incoming = b.accept_stream_timeout(LIMIT).expect("stream arrives");
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(c) = incoming.stream.chunk().unwrap() {
                n += c.len() as u64;
                h.update(&c);
            }
            (n, h.finalize())
        })
    };
    let guard = a.send_guard();
    let mut s = a.open_stream(route(a, b)).unwrap();
    let mut h = Sha256::new();
    let (mut sent, mut i) = (0u64, 0u64);
    while sent < total {
        let len = (total - sent).min(1 << 20) as usize;
        let c = chunk(seed, i, len);
        h.update(&c);
        s.send(Bytes::from(c)).unwrap();
        sent += len as u64;
        i += 1;
    }
    s.finish().unwrap();
    drop(guard);
    let (n, digest) = receiver.join().unwrap();
    assert_eq!(n, total, "every byte arrived");
    assert_eq!(digest, h.finalize(), "SHA-256 of the received tensor");
}
