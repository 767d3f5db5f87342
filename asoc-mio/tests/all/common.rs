//! Helpers the test modules share.

use asoc_mio::{Node, PeerRef, RecvStream};
use sha2::{Digest, Sha256};

/// The established connection from `from` to `to`, whichever side dialed.
pub(crate) fn route(from: &Node, to: &Node) -> PeerRef {
    let (id, addr) = (to.node_id(), to.local_addr());
    from.connected_peers()
        .into_iter()
        .find(|p| p.peer_node == Some(id) || p.addr == addr)
        .map(|p| PeerRef::Conn(p.id))
        .unwrap_or_else(|| panic!("no connection to {id}"))
}

/// How many bytes `stream` carries to its end, and their SHA-256.
pub(crate) fn hashed(stream: &mut RecvStream) -> (u64, Vec<u8>) {
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(c) = stream.chunk().unwrap() {
        n += c.len() as u64;
        h.update(&c);
    }
    (n, h.finalize().to_vec())
}

/// A transport that buffers output of its own, like TLS: `write` takes
/// everything into a buffer that only `flush` pushes to the socket
/// (`WouldBlock` while some is left).
pub(crate) struct Holding {
    io: mio::net::UnixStream,
    held: Vec<u8>,
}

impl Holding {
    /// `io`, holding nothing yet.
    pub(crate) fn new(io: mio::net::UnixStream) -> Self {
        Self {
            io,
            held: Vec::new(),
        }
    }
}

impl std::io::Read for Holding {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.io.read(buf)
    }
}

impl std::io::Write for Holding {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.held.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        while !self.held.is_empty() {
            let n = self.io.write(&self.held)?;
            self.held.drain(..n);
        }
        Ok(())
    }
}

impl mio::event::Source for Holding {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        self.io.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        self.io.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        self.io.deregister(registry)
    }
}
