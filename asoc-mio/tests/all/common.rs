//! Helpers the blocking-node tests share.

use asoc_mio::{Node, PeerRef, RecvStream};
use sha2::{Digest, Sha256};

/// The established connection from `from` to `to`, whichever side dialed.
pub fn route(from: &Node, to: &Node) -> PeerRef {
    let (id, addr) = (to.node_id(), to.local_addr());
    from.connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(id) || p.addr == addr)
        .map(|p| PeerRef::Conn(p.id))
        .unwrap_or_else(|| panic!("no connection to {id}"))
}

/// How many bytes `stream` carries to its end, and their SHA-256.
pub fn hashed(stream: &mut RecvStream) -> (u64, Vec<u8>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = stream.chunk().unwrap() {
        n += c.len() as u64;
        h.update(&c);
    }
    (n, h.finalize().to_vec())
}
