//! An in-memory driver for [`Node`] tests: one connection end per node,
//! bytes moved between them through memory, every input followed by
//! [`Node::drive`], every `Closed` event reported with [`Node::closed`].
//! Time is virtual: tests pick an epoch and add durations to it. Input is
//! delivered whole or, under a [`pieces`] guard, in smaller reads.
#![allow(dead_code)]

use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use asoc_proto::auth::{sign_hello, KeyRing};
use asoc_proto::connection::{CloseReason, Connection, Event, SessionInfo, StreamId};
use asoc_proto::dial::Dial;
use asoc_proto::handshake::ClientOptions;
use asoc_proto::node::{ConnId, Node, NodeConfig, NodeConfigBuilder, NodeEvent};
use asoc_proto::policy::Refusal;
use asoc_proto::v2::{Suite, WireVersion};
use bytes::BytesMut;
use uuid::Uuid;

// The keys and payloads are the connection harness's, which shares this
// test binary.
pub(crate) use crate::harness::{key, pattern, KEY};

pub(crate) const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210";

/// Node id `n` repeated over all 16 bytes: ids compare as their `n`.
pub(crate) fn node_id(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

pub(crate) fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

pub(crate) fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::new(ip(last), port)
}

/// A node config builder for id `n` holding key `k`, v1 enabled (so that
/// the v1 scenarios and raw v1 HELLOs keep their meaning; nodes still dial
/// with v2), everything else default.
pub(crate) fn config(n: u8, k: &str) -> NodeConfigBuilder {
    NodeConfig::builder(node_id(n), KeyRing::new(key(k))).allow_v1(true)
}

/// A node config builder like [`config`] with v1 disabled: the default.
pub(crate) fn config_v2_only(n: u8, k: &str) -> NodeConfigBuilder {
    NodeConfig::builder(node_id(n), KeyRing::new(key(k)))
}

/// The wall clock every node of a test reads at virtual instant `now`:
/// the same function of `now` for all, from a process-wide base instant.
pub(crate) fn unix_at(now: Instant) -> u64 {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| now);
    crate::harness::UNIX_START + now.saturating_duration_since(base).as_millis() as u64
}

/// `events` with every `PeerConnected` session replaced by one fixed
/// value, so that expected event lists can be written out; the sessions
/// themselves (random ids) are returned in order for their own checks.
pub(crate) fn blank_sessions(events: Vec<NodeEvent>) -> (Vec<NodeEvent>, Vec<SessionInfo>) {
    let mut sessions = Vec::new();
    let events = events
        .into_iter()
        .map(|e| match e {
            NodeEvent::PeerConnected {
                conn,
                peer_node,
                addr,
                direction,
                key,
                session,
            } => {
                sessions.push(session);
                NodeEvent::PeerConnected {
                    conn,
                    peer_node,
                    addr,
                    direction,
                    key,
                    session: BLANK_SESSION,
                }
            }
            other => other,
        })
        .collect();
    (events, sessions)
}

/// The placeholder [`blank_sessions`] writes.
pub(crate) const BLANK_SESSION: SessionInfo = SessionInfo::v2(Suite::AesGcm, [0; 8], [0; 32]);

/// A node built from `config` seeded with `[n; 32]`.
pub(crate) fn node_with(config: NodeConfigBuilder, seed: u8, t0: Instant) -> Node {
    Node::new(config.build().unwrap(), [seed; 32], t0)
}

/// Node `n` with key `k`, defaults otherwise, seed `[n; 32]`.
pub(crate) fn node(n: u8, k: &str, t0: Instant) -> Node {
    node_with(config(n, k), n, t0)
}

/// Every pending node event, oldest first.
pub(crate) fn drain(node: &mut Node) -> Vec<NodeEvent> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

/// A complete HELLO frame (50 bytes) signed by `k` for `node` and `challenge`.
pub(crate) fn hello_frame(k: &str, node: Uuid, challenge: u32) -> Vec<u8> {
    sign_hello(&key(k), node, challenge).encode_frame().to_vec()
}

thread_local! {
    static PIECE: Cell<usize> = const { Cell::new(usize::MAX) };
    static WIRE: Cell<WireVersion> = const { Cell::new(WireVersion::V2) };
}

/// Until the returned guard drops, [`Link::open`] on this thread dials
/// with `version` (v2 by default, as nodes do).
#[must_use]
pub(crate) fn speak(version: WireVersion) -> Speak {
    WIRE.with(|w| w.set(version));
    Speak(())
}

/// Restores v2 dialing when dropped.
pub(crate) struct Speak(());

impl Drop for Speak {
    fn drop(&mut self) {
        WIRE.with(|w| w.set(WireVersion::V2));
    }
}

/// Delivery granularities every scenario runs with: whole writes and one
/// byte at a time.
pub(crate) const CHUNKINGS: [usize; 2] = [usize::MAX, 1];

/// Until the returned guard drops, every [`End::input`] on this thread
/// delivers its bytes in reads of at most `n` bytes (1: byte by byte).
#[must_use]
pub(crate) fn pieces(n: usize) -> Pieces {
    PIECE.with(|p| p.set(n));
    Pieces(())
}

/// Restores whole-write delivery when dropped.
pub(crate) struct Pieces(());

impl Drop for Pieces {
    fn drop(&mut self) {
        PIECE.with(|p| p.set(usize::MAX));
    }
}

/// One end of a connection, attached to the node that owns it.
pub(crate) struct End {
    pub id: ConnId,
    pub conn: Connection,
    /// Every connection event, in order.
    pub events: Vec<Event>,
    /// Bytes received and not yet consumed.
    pub rx: BytesMut,
    /// Every byte this end wrote to its transport.
    pub written: Vec<u8>,
    /// Set when the `Closed` event was seen (and reported to the node).
    pub close_reason: Option<CloseReason>,
    eof_delivered: bool,
}

impl End {
    pub(crate) fn new(id: ConnId, conn: Connection) -> Self {
        Self {
            id,
            conn,
            events: Vec::new(),
            rx: BytesMut::new(),
            written: Vec::new(),
            close_reason: None,
            eof_delivered: false,
        }
    }

    /// Gives a pending handshake message its verdict, takes every event and
    /// reports a close to the node.
    pub(crate) fn settle(&mut self, node: &mut Node, now: Instant) {
        if self.close_reason.is_none() {
            node.drive(now, unix_at(now), self.id, &mut self.conn);
        }
        while let Some(e) = self.conn.poll_event() {
            if let Event::Closed { reason } = &e {
                node.closed(now, self.id, reason, self.conn.stats());
                self.close_reason = Some(reason.clone());
            }
            self.events.push(e);
        }
    }

    /// Bytes read from the transport, delivered in reads of at most
    /// [`pieces`] bytes.
    pub(crate) fn input(&mut self, node: &mut Node, now: Instant, bytes: &[u8]) {
        for piece in bytes.chunks(PIECE.with(Cell::get).max(1)) {
            self.rx.extend_from_slice(piece);
            self.conn.handle_input(now, &mut self.rx);
            self.settle(node, now);
        }
    }

    /// The transport reported end of file (once).
    pub(crate) fn eof(&mut self, node: &mut Node, now: Instant) {
        if !self.eof_delivered {
            self.eof_delivered = true;
            self.conn.handle_eof(now);
        }
        self.settle(node, now);
    }

    /// Fires the connection's timers at `now`.
    pub(crate) fn timeout(&mut self, node: &mut Node, now: Instant) {
        self.conn.handle_timeout(now);
        self.settle(node, now);
    }

    /// Closes locally.
    pub(crate) fn close(&mut self, node: &mut Node, now: Instant) {
        self.conn.close(now);
        self.settle(node, now);
    }

    /// Writes everything pending; returns what was written this time.
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        self.conn.write_to(now, &mut out).unwrap();
        self.written.extend_from_slice(&out);
        out
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.close_reason.is_some()
    }

    pub(crate) fn is_established(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    }

    /// Concatenated payloads received on `stream`.
    pub(crate) fn received(&self, stream: StreamId) -> Vec<u8> {
        crate::harness::received(&self.events, stream)
    }
}

/// A TCP connection between a client node and a server node.
pub(crate) struct Link {
    pub client: End,
    pub server: End,
}

impl Link {
    /// The client node opens a connection with `connect_to`; the server node
    /// `accept`s it from `client_addr`, and the pair runs until quiet. A
    /// refused accept closes the socket: the client reads EOF.
    pub(crate) fn open(
        client_node: &mut Node,
        server_node: &mut Node,
        now: Instant,
        client_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Result<Self, Refusal> {
        let (cid, c) = client_node
            .connect_to(
                now,
                unix_at(now),
                server_addr,
                ClientOptions::version(WIRE.with(Cell::get)),
            )
            .expect("client node refused its own connection");
        Self::attach(End::new(cid, c), client_node, server_node, now, client_addr)
    }

    /// Like [`open`](Self::open), for a dial the client node scheduled.
    pub(crate) fn dial(
        client_node: &mut Node,
        server_node: &mut Node,
        now: Instant,
        dial: &Dial,
        client_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Result<Self, Refusal> {
        let (cid, c) = client_node
            .connect(now, unix_at(now), dial, server_addr)
            .expect("client node refused its own dial");
        Self::attach(End::new(cid, c), client_node, server_node, now, client_addr)
    }

    fn attach(
        mut client: End,
        client_node: &mut Node,
        server_node: &mut Node,
        now: Instant,
        client_addr: SocketAddr,
    ) -> Result<Self, Refusal> {
        let (sid, s) = match server_node.accept(now, client_addr) {
            Ok(pair) => pair,
            Err(refusal) => {
                client.eof(client_node, now);
                return Err(refusal);
            }
        };
        let mut link = Self {
            client,
            server: End::new(sid, s),
        };
        link.pump(client_node, server_node, now);
        Ok(link)
    }

    /// Moves bytes both ways until nothing moves; a side that closed makes
    /// the other read EOF once it has read everything written before.
    pub(crate) fn pump(&mut self, client_node: &mut Node, server_node: &mut Node, now: Instant) {
        loop {
            self.client.settle(client_node, now);
            self.server.settle(server_node, now);
            let mut moved = false;
            let bytes = self.client.flush(now);
            if !bytes.is_empty() {
                self.server.input(server_node, now, &bytes);
                moved = true;
            }
            let bytes = self.server.flush(now);
            if !bytes.is_empty() {
                self.client.input(client_node, now, &bytes);
                moved = true;
            }
            if self.client.is_closed() && !self.server.is_closed() && !self.server.eof_delivered {
                self.server.eof(server_node, now);
                moved = true;
            }
            if self.server.is_closed() && !self.client.is_closed() && !self.client.eof_delivered {
                self.client.eof(client_node, now);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// The client closes; the server reads EOF.
    pub(crate) fn close_by_client(
        &mut self,
        client_node: &mut Node,
        server_node: &mut Node,
        now: Instant,
    ) {
        self.client.close(client_node, now);
        self.pump(client_node, server_node, now);
    }

    pub(crate) fn is_established(&self) -> bool {
        self.client.is_established() && self.server.is_established()
    }
}

/// A server end for a socket `node` accepted from `from`; panics if refused.
pub(crate) fn accept(node: &mut Node, now: Instant, from: SocketAddr) -> End {
    let (id, conn) = node
        .accept(now, from)
        .unwrap_or_else(|r| panic!("accept from {from} refused: {r}"));
    End::new(id, conn)
}
