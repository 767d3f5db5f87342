//! A virtual-clock, in-memory pair harness: a client and a server connection
//! passing bytes through memory, time jumping to the next deadline. Input can
//! be delivered in pieces of any size, down to one byte at a time.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{Connection, ConnectionConfig, Event, StreamId};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig, ClientOptions, HandshakeOutcome};
use asoc_proto::v2::WireVersion;
use bytes::BytesMut;
use uuid::Uuid;

pub(crate) mod v2peer;

pub(crate) const KEY: &str = "0123456789abcdef0123456789abcdef";

pub(crate) fn key(s: &str) -> ApiKey {
    ApiKey::new(s).unwrap()
}

/// The wall clock of every harness at its virtual clock's start (unix ms).
pub(crate) const UNIX_START: u64 = 1_767_000_000_000;

/// An authenticator that accepts v1 as well as v2, so that one harness
/// serves both versions' scenarios.
pub(crate) fn authenticator(node: u8, key: ApiKey, seed: u8) -> Authenticator {
    Authenticator::new(
        AuthenticatorConfig::builder(Uuid::from_bytes([node; 16]), KeyRing::new(key))
            .allow_v1(true)
            .build()
            .unwrap(),
        [seed; 32],
    )
}

/// Versions every scenario that applies to both runs with.
pub(crate) const VERSIONS: [WireVersion; 2] = [WireVersion::V1, WireVersion::V2];

/// One side: its connection, the authenticator that judges its handshake,
/// everything it reported, and the bytes it wrote that the other side has
/// not read yet.
pub(crate) struct Side {
    pub conn: Connection,
    pub auth: Authenticator,
    pub events: Vec<Event>,
    pub outcomes: Vec<HandshakeOutcome>,
    pub in_flight: Vec<u8>,
    pub read_buf: BytesMut,
    /// Bytes this side's transport accepts per write call; `Some(0)` models
    /// a peer that stopped reading.
    pub write_capacity: Option<usize>,
    pub eof_delivered: bool,
    /// Every byte this side ever wrote, for determinism checks.
    pub wire_log: Vec<u8>,
    /// The virtual clock's start, which the wall clock follows from
    /// [`UNIX_START`].
    pub start: Instant,
}

impl Side {
    fn new(conn: Connection, auth: Authenticator) -> Self {
        Self {
            conn,
            auth,
            events: Vec::new(),
            outcomes: Vec::new(),
            in_flight: Vec::new(),
            read_buf: BytesMut::new(),
            write_capacity: None,
            eof_delivered: false,
            wire_log: Vec::new(),
            start: Instant::now(),
        }
    }

    /// The wall clock at virtual instant `now`.
    pub(crate) fn unix_ms(&self, now: Instant) -> u64 {
        UNIX_START + now.saturating_duration_since(self.start).as_millis() as u64
    }

    fn flush(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        loop {
            let mut slots = [std::io::IoSlice::new(&[]); 64];
            let n = self.conn.transmit_slices(&mut slots);
            if n == 0 {
                break;
            }
            let mut budget = self.write_capacity.unwrap_or(usize::MAX);
            let mut written = 0;
            for s in &slots[..n] {
                let take = s.len().min(budget);
                self.in_flight.extend_from_slice(&s[..take]);
                self.wire_log.extend_from_slice(&s[..take]);
                written += take;
                budget -= take;
                if budget == 0 {
                    break;
                }
            }
            if written == 0 {
                break;
            }
            self.conn.handle_written(now, written);
            if let Some(c) = self.write_capacity.as_mut() {
                *c -= written;
            }
            progressed = true;
        }
        progressed
    }

    fn drain_events(&mut self, now: Instant) -> bool {
        let mut any = false;
        let unix_ms = self.unix_ms(now);
        if let Some(outcome) = self.auth.drive(now, unix_ms, &mut self.conn) {
            self.outcomes.push(outcome);
            any = true;
        }
        while let Some(e) = self.conn.poll_event() {
            self.events.push(e);
            any = true;
        }
        any
    }

    pub(crate) fn is_established(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    }

    pub(crate) fn closed_reason(&self) -> Option<&asoc_proto::connection::CloseReason> {
        self.events.iter().find_map(|e| match e {
            Event::Closed { reason } => Some(reason),
            _ => None,
        })
    }

    /// Concatenated payloads received on `stream`.
    pub(crate) fn received(&self, stream: StreamId) -> Vec<u8> {
        received(&self.events, stream)
    }
}

pub(crate) struct Pair {
    pub now: Instant,
    pub client: Side,
    pub server: Side,
    /// Largest piece of input delivered per read; 1 delivers byte by byte.
    pub chunk: usize,
}

impl Pair {
    pub(crate) fn new(
        config: ConnectionConfig,
        client_key: ApiKey,
        server_key: ApiKey,
        chunk: usize,
    ) -> Self {
        Self::at(config, client_key, server_key, chunk, Instant::now(), 11)
    }

    /// A pair whose clock starts at `now`, with the client's randomness
    /// (its HELLO challenge) seeded from `client_seed`: pairs with distinct
    /// seeds send distinct HELLOs to a shared server authenticator.
    pub(crate) fn at(
        config: ConnectionConfig,
        client_key: ApiKey,
        server_key: ApiKey,
        chunk: usize,
        now: Instant,
        client_seed: u8,
    ) -> Self {
        Self::at_version(
            WireVersion::V1,
            config,
            client_key,
            server_key,
            chunk,
            now,
            client_seed,
        )
    }

    /// A pair whose client speaks `version` (the server accepts both).
    pub(crate) fn version(
        version: WireVersion,
        config: ConnectionConfig,
        client_key: ApiKey,
        server_key: ApiKey,
        chunk: usize,
    ) -> Self {
        Self::at_version(
            version,
            config,
            client_key,
            server_key,
            chunk,
            Instant::now(),
            11,
        )
    }

    /// [`at`](Self::at) with the client speaking `version`.
    pub(crate) fn at_version(
        version: WireVersion,
        config: ConnectionConfig,
        client_key: ApiKey,
        server_key: ApiKey,
        chunk: usize,
        now: Instant,
        client_seed: u8,
    ) -> Self {
        let mut client_auth = authenticator(1, client_key, client_seed);
        let server_auth = authenticator(2, server_key, 22);
        let client = client_auth.client(now, UNIX_START, config, ClientOptions::version(version));
        let server = Connection::server(config, now);
        let mut client = Side::new(client, client_auth);
        let mut server = Side::new(server, server_auth);
        client.start = now;
        server.start = now;
        Self {
            now,
            client,
            server,
            chunk,
        }
    }

    pub(crate) fn with_defaults(chunk: usize) -> Self {
        Self::new(ConnectionConfig::default(), key(KEY), key(KEY), chunk)
    }

    /// Default settings with the client speaking `version`.
    pub(crate) fn defaults(version: WireVersion, chunk: usize) -> Self {
        Self::version(
            version,
            ConnectionConfig::default(),
            key(KEY),
            key(KEY),
            chunk,
        )
    }

    /// A v2 server whose client is a hand-driven [`v2peer::RawClient`]
    /// claiming node 1 (the pair's own client is muted): the server is
    /// established once the raw client's CONFIRM arrived.
    pub(crate) fn with_raw_client(
        config: ConnectionConfig,
        chunk: usize,
    ) -> (Self, v2peer::RawClient) {
        let mut p = Self::version(WireVersion::V2, config, key(KEY), key(KEY), chunk);
        p.client.write_capacity = Some(0);
        p.drive();
        let mut raw = v2peer::RawClient::new(
            &key(KEY),
            config.suite(),
            Uuid::from_bytes([1; 16]),
            UNIX_START,
            0x4100,
        );
        p.inject_to_server(&raw.hello);
        let accept = p.server.wire_log.clone();
        let (_, confirm) = raw.finish(&accept).expect("the server's ACCEPT2 verifies");
        p.inject_to_server(&confirm);
        assert!(p.server.is_established(), "{:?}", p.server.events);
        (p, raw)
    }

    /// Delivers bytes in flight from `from` to `to`, `chunk` bytes per read.
    fn deliver(now: Instant, chunk: usize, from: &mut Side, to: &mut Side) -> bool {
        if from.in_flight.is_empty() {
            return false;
        }
        let data = std::mem::take(&mut from.in_flight);
        for piece in data.chunks(chunk.max(1)) {
            to.read_buf.extend_from_slice(piece);
            to.conn.handle_input(now, &mut to.read_buf);
            to.drain_events(now);
        }
        true
    }

    /// Runs until nothing moves at the current instant.
    pub(crate) fn drive(&mut self) {
        loop {
            let mut progressed = false;
            progressed |= self.client.drain_events(self.now);
            progressed |= self.server.drain_events(self.now);
            progressed |= self.client.flush(self.now);
            progressed |= self.server.flush(self.now);
            progressed |= Self::deliver(self.now, self.chunk, &mut self.client, &mut self.server);
            progressed |= Self::deliver(self.now, self.chunk, &mut self.server, &mut self.client);
            if !progressed {
                break;
            }
        }
    }

    /// Sends raw bytes to the server as if the client had written them.
    pub(crate) fn inject_to_server(&mut self, bytes: &[u8]) {
        self.client.in_flight.extend_from_slice(bytes);
        Self::deliver(self.now, self.chunk, &mut self.client, &mut self.server);
        self.drive();
    }

    /// Sends raw bytes to the client as if the server had written them.
    pub(crate) fn inject_to_client(&mut self, bytes: &[u8]) {
        self.server.in_flight.extend_from_slice(bytes);
        Self::deliver(self.now, self.chunk, &mut self.server, &mut self.client);
        self.drive();
    }

    /// Tells `to` that the other side closed (EOF), once.
    pub(crate) fn deliver_eof_to_client(&mut self) {
        self.client.conn.handle_eof(self.now);
        self.drive();
    }

    /// Tells the server that the client closed (EOF).
    pub(crate) fn deliver_eof_to_server(&mut self) {
        self.server.conn.handle_eof(self.now);
        self.drive();
    }

    /// The earliest deadline of either side.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        [
            self.client.conn.poll_timeout(),
            self.server.conn.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Jumps the clock to the next deadline (if any, and not beyond
    /// `limit`), fires timers and drives. Returns whether a timer fired.
    pub(crate) fn advance_to_next_timeout(&mut self, limit: Instant) -> bool {
        let Some(t) = self.next_timeout() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        self.client.conn.handle_timeout(self.now);
        self.server.conn.handle_timeout(self.now);
        self.drive();
        true
    }

    /// Moves the clock forward by `d`, firing every deadline on the way.
    pub(crate) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.advance_to_next_timeout(end) {}
        self.now = end;
        self.client.conn.handle_timeout(self.now);
        self.server.conn.handle_timeout(self.now);
        self.drive();
    }

    pub(crate) fn handshake(&mut self) {
        self.drive();
        assert!(
            self.client.is_established(),
            "client: {:?}",
            self.client.events
        );
        assert!(
            self.server.is_established(),
            "server: {:?}",
            self.server.events
        );
    }
}

/// Concatenated payloads of the `Data` events on `stream` among `events`.
pub(crate) fn received(events: &[Event], stream: StreamId) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        if let Event::Data {
            stream: s, payload, ..
        } = e
        {
            if *s == stream {
                out.extend_from_slice(payload);
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes for test payloads.
pub(crate) fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Delivery granularities every scenario runs with: whole writes and one
/// byte at a time.
pub(crate) const CHUNKINGS: [usize; 2] = [usize::MAX, 1];
