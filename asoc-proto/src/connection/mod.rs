//! One TCP connection, client or server role: the handshake, timers,
//! streams in both directions and backpressure (RFC-0001 §8, WIRE.md §3–§4).
//!
//! # Call order
//!
//! A connection is a passive state machine. The adapter drives it:
//!
//! 1. **Inputs**: [`handle_input`](Connection::handle_input) (or
//!    [`handle_read`](Connection::handle_read)) with bytes read from the
//!    transport, [`handle_eof`](Connection::handle_eof) when the peer closed,
//!    [`handle_timeout`](Connection::handle_timeout) when the deadline from
//!    [`poll_timeout`](Connection::poll_timeout) passed, and
//!    [`handle_written`](Connection::handle_written) after writing.
//! 2. **Handshake verdicts**: after input, a received HELLO or ACCEPT waits
//!    in [`poll_handshake`](Connection::poll_handshake) for a verdict from
//!    whoever holds the keys ([`crate::handshake::Authenticator`] or
//!    [`crate::node::Node`]), given back with
//!    [`accept_hello`](Connection::accept_hello),
//!    [`confirm_accept`](Connection::confirm_accept) or
//!    [`reject_handshake`](Connection::reject_handshake). The connection
//!    itself never holds a key.
//! 3. **Outputs**, drained after every input until empty: write
//!    [`transmit_slices`](Connection::transmit_slices) to the transport
//!    (vectored, nothing copied) and report the count with
//!    [`handle_written`](Connection::handle_written) (or let
//!    [`write_to`](Connection::write_to) do both); take every
//!    [`poll_event`](Connection::poll_event); re-arm the timer from
//!    [`poll_timeout`](Connection::poll_timeout).
//! 4. **Commands** from the application at any time:
//!    [`open_stream`](Connection::open_stream), [`send`](Connection::send),
//!    [`finish`](Connection::finish), [`close`](Connection::close). Misuse is
//!    a synchronous error; protocol failures are events.
//!
//! After [`Event::Closed`] the adapter closes the transport. On every
//! authentication failure nothing at all is written (RFC-0001 §9.1).

mod config;
mod event;
mod sealing;
mod send_queue;
mod stream_id;
mod streams;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use uuid::Uuid;

pub use config::{ConfigError, ConnectionConfig, ConnectionConfigBuilder};
pub use event::{
    CloseReason, Event, HandshakeStateError, ProtocolError, Role, SendError, SessionInfo,
};
pub use stream_id::StreamId;

use self::sealing::V2;
use self::send_queue::SendQueue;
use self::streams::{Incoming, OutgoingStreams};
use crate::auth::{AuthFailure, KeyId, SessionToken};
use crate::time::after;
use crate::v2::noise::{Initiator, Message, Session, MESSAGE_LEN};
use crate::v2::seal::{SealError, TAG_LEN};
use crate::v2::{Suite, WireVersion};
use crate::wire::{
    Accept, Frame, FrameDecoder, FrameError, FrameType, Header, Hello, ACCEPT_HEADER, HEADER_LEN,
    HELLO_HEADER,
};

/// The header of HELLO2 (`accept = false`) or ACCEPT2 for `suite`.
#[must_use]
pub fn v2_handshake_header(suite: Suite, accept: bool) -> Header {
    Header {
        version: WireVersion::V2.byte(),
        frame_type: if accept {
            FrameType::Accept
        } else {
            FrameType::Hello
        },
        stream_id: 0,
        seq: suite.seq(),
        length: MESSAGE_LEN as u32,
    }
}

/// A handshake message that arrived and awaits a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeMessage {
    /// The client's HELLO (server side).
    Hello(Hello),
    /// The server's ACCEPT (client side).
    Accept(Accept),
    /// A v2 client's HELLO2, Noise message 1 (server side).
    Hello2 {
        /// The suite its header named.
        suite: Suite,
        /// The 72-byte Noise message.
        message: Message,
    },
    /// A v2 server's ACCEPT2, Noise message 2 (client side); the
    /// connection itself holds the handshake state that reads it.
    Accept2 {
        /// The suite its header named.
        suite: Suite,
        /// The 72-byte Noise message.
        message: Message,
    },
    /// v2 server: CONFIRM decrypted; the connection becomes established
    /// once the verdict is recorded.
    Confirmed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Server: waiting for the HELLO frame.
    AwaitingHello,
    /// Client: HELLO queued or sent, waiting for the ACCEPT frame.
    AwaitingAccept,
    /// v2 server: ACCEPT2 queued, waiting for the client's CONFIRM.
    AwaitingConfirm,
    /// A handshake message is out for a verdict.
    Verifying(HandshakeMessage),
    Established,
    /// Closing: queued output is still written, then `Closed`.
    Draining(CloseReason),
    Closed,
}

/// Counters of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Bytes consumed from the transport (whole frames, headers included).
    pub bytes_in: u64,
    /// Bytes reported written to the transport.
    pub bytes_out: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Payload bytes of DATA frames received.
    pub payload_in: u64,
    /// Payload bytes of DATA frames queued.
    pub payload_out: u64,
}

/// One ASoc connection. See the [module docs](self) for the call order.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: ConnectionConfig,
    state: State,
    decoder: FrameDecoder,
    /// Input held back while a verdict is pending, or given by slice.
    stash: BytesMut,
    queue: SendQueue,
    /// Start of the current no-progress period of pending output.
    last_write_progress: Instant,
    handshake_deadline: Instant,
    /// Server side, until the first byte arrives.
    first_byte_deadline: Option<Instant>,
    incoming: HashMap<StreamId, Incoming>,
    outgoing: OutgoingStreams,
    events: VecDeque<Event>,
    peer_node: Option<Uuid>,
    session: Option<SessionInfo>,
    /// The version the handshake runs; a server learns it from the first byte.
    version: WireVersion,
    /// v2's handshake and frame keys.
    v2: Option<Box<V2>>,
    stats: ConnectionStats,
}

impl Connection {
    /// A client connection that sends `hello` (built and recorded by the
    /// caller's [`Authenticator`](crate::handshake::Authenticator)) as its
    /// first frame and expects ACCEPT within the handshake timeout.
    #[must_use]
    pub fn client(config: ConnectionConfig, now: Instant, hello: &Hello) -> Self {
        let mut conn = Self::new(Role::Client, config, now, ACCEPT_HEADER, 1);
        conn.queue
            .push(HELLO_HEADER, Bytes::copy_from_slice(&hello.encode()));
        conn.stats.frames_out += 1;
        conn.state = State::AwaitingAccept;
        conn
    }

    /// A v2 client connection that sends HELLO2 carrying `hello` (Noise
    /// message 1 written by `initiator` under key `key`) and expects an
    /// ACCEPT2 of the same suite; when `expected_peer` is set the server
    /// must prove that node id. Built by
    /// [`Authenticator::client`](crate::handshake::Authenticator::client).
    #[must_use]
    pub fn client_v2(
        config: ConnectionConfig,
        now: Instant,
        hello: &Message,
        initiator: Initiator,
        key: KeyId,
        expected_peer: Option<Uuid>,
    ) -> Self {
        let suite = initiator.suite();
        let mut conn = Self::new(
            Role::Client,
            config,
            now,
            v2_handshake_header(suite, true),
            1,
        );
        conn.version = WireVersion::V2;
        conn.queue.push(
            v2_handshake_header(suite, false),
            Bytes::copy_from_slice(hello),
        );
        conn.stats.frames_out += 1;
        conn.state = State::AwaitingAccept;
        conn.v2 = Some(Box::new(V2::client(initiator, key, expected_peer)));
        conn
    }

    /// A server connection for a freshly accepted transport; it expects a
    /// HELLO2 of an accepted suite, or a v1 HELLO (which the verdict
    /// refuses unless v1 is enabled), within the handshake timeout.
    #[must_use]
    pub fn server(config: ConnectionConfig, now: Instant) -> Self {
        let mut conn = Self::new(Role::Server, config, now, HELLO_HEADER, 2);
        let mut first = [HELLO_HEADER; 3];
        let mut n = 1;
        for (slot, suite) in first.iter_mut().skip(1).zip(config.accept_suites.iter()) {
            *slot = v2_handshake_header(suite, false);
            n += 1;
        }
        conn.decoder
            .expect_first_of(first.get(..n).unwrap_or_default());
        conn.first_byte_deadline = Some(after(now, config.first_byte_timeout()));
        conn
    }

    fn new(
        role: Role,
        config: ConnectionConfig,
        now: Instant,
        first: Header,
        first_id: u32,
    ) -> Self {
        let mut decoder = FrameDecoder::new(config.max_payload);
        decoder.expect_first(first);
        Self {
            role,
            config,
            state: State::AwaitingHello,
            decoder,
            stash: BytesMut::new(),
            queue: SendQueue::default(),
            last_write_progress: now,
            handshake_deadline: after(now, config.handshake_timeout),
            first_byte_deadline: None,
            incoming: HashMap::new(),
            outgoing: OutgoingStreams::new(first_id),
            events: VecDeque::new(),
            peer_node: None,
            session: None,
            version: WireVersion::V1,
            v2: None,
            stats: ConnectionStats::default(),
        }
    }

    // ----- queries -------------------------------------------------------

    /// This side's role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Whether the handshake completed and the connection is not closing.
    #[must_use]
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the handshake is still in progress.
    #[must_use]
    pub fn is_handshaking(&self) -> bool {
        matches!(
            self.state,
            State::AwaitingHello
                | State::AwaitingAccept
                | State::AwaitingConfirm
                | State::Verifying(_)
        )
    }

    /// Whether the connection is closed (the `Closed` event may still be
    /// waiting in [`poll_event`](Self::poll_event)).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The peer's node id once proven: the client's on a server; the
    /// server's on a v2 client (v1 carries none).
    #[must_use]
    pub fn peer_node(&self) -> Option<Uuid> {
        self.peer_node
    }

    /// The session's version, suite, id and channel binding, once
    /// established.
    #[must_use]
    pub fn session(&self) -> Option<SessionInfo> {
        self.session
    }

    /// The protocol this connection runs: fixed for a client, learned from
    /// the first byte by a server (v1 until then).
    #[must_use]
    pub fn version(&self) -> WireVersion {
        self.version
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Whether [`send`](Self::send) would accept a chunk now.
    #[must_use]
    pub fn can_send(&self) -> bool {
        self.state == State::Established && self.queue.pending() < self.config.send_high_water
    }

    /// Bytes queued and not yet written.
    #[must_use]
    pub fn pending_output(&self) -> usize {
        self.queue.pending()
    }

    /// Input bytes held inside the connection: a partial frame given through
    /// [`handle_read`](Self::handle_read), or bytes that arrived behind a
    /// handshake message awaiting its verdict.
    #[must_use]
    pub fn buffered_input(&self) -> usize {
        self.stash.len()
    }

    /// How many more bytes the frame at the front of `buf` (the adapter's
    /// receive buffer) needs before it can be decoded; adapters use it to
    /// reserve room for a large payload in one go.
    #[must_use]
    pub fn bytes_needed(&self, buf: &[u8]) -> usize {
        self.decoder.bytes_needed(buf)
    }

    // ----- inputs --------------------------------------------------------

    /// Feeds bytes read from the transport. Whole frames are taken off the
    /// front of `buf` without copying their payloads; an incomplete frame is
    /// left in `buf` for the next call. Protocol failures become events.
    pub fn handle_input(&mut self, now: Instant, buf: &mut BytesMut) {
        if !buf.is_empty() {
            self.first_byte_deadline = None;
        }
        if !self.stash.is_empty() {
            // Earlier input is held back; keep the byte order.
            self.stash.extend_from_slice(buf);
            buf.clear();
            let mut stash = std::mem::take(&mut self.stash);
            self.process(now, &mut stash);
            self.keep_unprocessed(stash);
        } else {
            self.process(now, buf);
            if matches!(self.state, State::Verifying(_)) && !buf.is_empty() {
                // Bytes behind a handshake message wait for the verdict, which
                // comes outside this call; hold them here so that they are
                // processed once it arrives (a one-time copy of one read).
                self.stash.extend_from_slice(buf);
                buf.clear();
            }
        }
    }

    /// Feeds bytes read from the transport given as a slice. They are copied
    /// into an internal buffer; [`handle_input`](Self::handle_input) avoids
    /// that copy.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) {
        if !data.is_empty() {
            self.first_byte_deadline = None;
        }
        let mut stash = std::mem::take(&mut self.stash);
        stash.extend_from_slice(data);
        self.process(now, &mut stash);
        self.keep_unprocessed(stash);
    }

    fn keep_unprocessed(&mut self, rest: BytesMut) {
        // After a close nothing more is read; drop what is left.
        if self.accepts_input() {
            self.stash = rest;
        }
    }

    // Until the first byte arrives, the shorter first-byte deadline.
    fn current_handshake_deadline(&self) -> Instant {
        self.first_byte_deadline
            .map_or(self.handshake_deadline, |f| f.min(self.handshake_deadline))
    }

    /// The peer closed its sending side (a read returned 0 bytes).
    pub fn handle_eof(&mut self, now: Instant) {
        let _ = now;
        if !self.is_closing() {
            self.close_now(CloseReason::PeerClosed);
        }
    }

    /// The transport failed; the connection closes at once.
    pub fn handle_transport_error(&mut self, now: Instant) {
        let _ = now;
        if self.state != State::Closed {
            self.close_now(CloseReason::Transport);
        }
    }

    /// Call when the deadline from [`poll_timeout`](Self::poll_timeout) has
    /// passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Closed {
            return;
        }
        if self.is_handshaking() && now >= self.current_handshake_deadline() {
            self.close_now(CloseReason::HandshakeTimeout);
            return;
        }
        if let Some(deadline) = self.stall_deadline() {
            if now >= deadline {
                self.close_now(CloseReason::SendStall);
                return;
            }
        }
        if self.state == State::Established {
            let idle = self.config.receive_idle_timeout;
            let expired = self
                .incoming
                .iter()
                .filter(|(_, s)| now >= after(s.last_activity, idle))
                .map(|(id, _)| *id)
                .min();
            if let Some(stream) = expired {
                self.close_now(CloseReason::ReceiveIdle { stream });
            }
        }
    }

    /// Reports `n` bytes of [`transmit_slices`](Self::transmit_slices)
    /// written to the transport.
    pub fn handle_written(&mut self, now: Instant, n: usize) {
        let retired = self.queue.advance(n);
        if retired > 0 {
            self.last_write_progress = now;
            self.stats.bytes_out += retired as u64;
        }
        self.finish_draining();
    }

    // ----- handshake verdicts ---------------------------------------------

    /// The handshake message waiting for a verdict, if any. It stays
    /// pending until a verdict is given.
    #[must_use]
    pub fn poll_handshake(&self) -> Option<HandshakeMessage> {
        match self.state {
            State::Verifying(msg) => Some(msg),
            _ => None,
        }
    }

    /// Server: the HELLO verified under `key`; send ACCEPT carrying `session`
    /// and become established.
    pub fn accept_hello(
        &mut self,
        now: Instant,
        key: KeyId,
        session: SessionToken,
    ) -> Result<(), HandshakeStateError> {
        let hello = match self.state {
            State::Verifying(HandshakeMessage::Hello(hello)) => hello,
            State::Verifying(_) => return Err(HandshakeStateError::WrongRole { role: self.role }),
            _ => return Err(HandshakeStateError::NothingToVerify),
        };
        // Unsealed (v1) frames always queue.
        let _ = self.enqueue(
            now,
            ACCEPT_HEADER,
            Bytes::copy_from_slice(&session.to_accept().encode()),
        );
        self.establish(now, Some(hello.node_id), SessionInfo::v1(session), key);
        Ok(())
    }

    /// v2 server: HELLO2 decrypted under `key` and passed every check.
    /// Queues ACCEPT2 (`accept`, Noise message 2), installs the split keys
    /// and waits for CONFIRM; nothing else is sent and no peer is reported
    /// until it decrypts.
    pub(crate) fn accept_hello2(
        &mut self,
        now: Instant,
        key: KeyId,
        peer: Uuid,
        accept: &Message,
        session: &Session,
        session_id: [u8; 8],
    ) -> Result<(), HandshakeStateError> {
        let suite = match self.state {
            State::Verifying(HandshakeMessage::Hello2 { suite, .. }) => suite,
            State::Verifying(_) => return Err(HandshakeStateError::WrongRole { role: self.role }),
            _ => return Err(HandshakeStateError::NothingToVerify),
        };
        // ACCEPT2 goes out before the keys exist, so it is never sealed
        // and always queues.
        let _ = self.enqueue(
            now,
            v2_handshake_header(suite, true),
            Bytes::copy_from_slice(accept),
        );
        let mut v2 = V2::server(suite, key, peer);
        v2.split(session, session_id, false);
        self.v2 = Some(Box::new(v2));
        self.decoder.speak(WireVersion::V2.byte(), TAG_LEN as u32);
        self.state = State::AwaitingConfirm;
        self.resume(now);
        Ok(())
    }

    /// v2 server: CONFIRM decrypted; become established. Returns the key,
    /// the client's node id and the session.
    pub(crate) fn establish_confirmed(
        &mut self,
        now: Instant,
    ) -> Result<(KeyId, Uuid, SessionInfo), HandshakeStateError> {
        if self.state != State::Verifying(HandshakeMessage::Confirmed) {
            return Err(HandshakeStateError::NothingToVerify);
        }
        let v2 = self
            .v2
            .as_deref()
            .ok_or(HandshakeStateError::NothingToVerify)?;
        let (Some(peer), Some(info)) = (v2.peer, v2.info) else {
            return Err(HandshakeStateError::NothingToVerify);
        };
        let key = v2.key;
        self.establish(now, Some(peer), info, key);
        Ok((key, peer, info))
    }

    /// v2 client: reads the pending ACCEPT2 with the handshake state kept
    /// since HELLO2, checks the server's node id against the expected one,
    /// sends CONFIRM and becomes established. On `Err` the caller rejects
    /// the handshake with that failure.
    pub(crate) fn complete_accept2(
        &mut self,
        now: Instant,
    ) -> Result<(KeyId, Uuid, SessionInfo), AuthFailure> {
        let State::Verifying(HandshakeMessage::Accept2 { message, .. }) = self.state else {
            return Err(AuthFailure::Malformed);
        };
        let v2 = self.v2.as_deref_mut().ok_or(AuthFailure::Malformed)?;
        let initiator = v2.initiator.take().ok_or(AuthFailure::Malformed)?;
        let (accepted, session) = initiator
            .finish(&message)
            .map_err(|_| AuthFailure::BadMac)?;
        if let Some(expected) = v2.expected_peer.filter(|want| *want != accepted.node_id) {
            return Err(AuthFailure::UnexpectedPeer {
                expected,
                proven: accepted.node_id,
            });
        }
        v2.peer = Some(accepted.node_id);
        v2.split(&session, accepted.session_id, true);
        let (key, info) = (v2.key, v2.info);
        let info = info.ok_or(AuthFailure::Malformed)?;
        self.decoder.speak(WireVersion::V2.byte(), TAG_LEN as u32);
        // CONFIRM: the first sealed frame, nonce 0.
        self.enqueue(now, Header::new(FrameType::Control, 0, 0, 0), Bytes::new())
            .map_err(|_| AuthFailure::Malformed)?;
        self.establish(now, Some(accepted.node_id), info, key);
        Ok((key, accepted.node_id, info))
    }

    /// The node id the server must prove, for a v2 client.
    #[must_use]
    pub fn expected_peer(&self) -> Option<Uuid> {
        self.v2.as_deref().and_then(|v| v.expected_peer)
    }

    /// Client: the ACCEPT verified under `key`; become established.
    pub fn confirm_accept(&mut self, now: Instant, key: KeyId) -> Result<(), HandshakeStateError> {
        let accept = match self.state {
            State::Verifying(HandshakeMessage::Accept(accept)) => accept,
            State::Verifying(_) => return Err(HandshakeStateError::WrongRole { role: self.role }),
            _ => return Err(HandshakeStateError::NothingToVerify),
        };
        self.establish(
            now,
            None,
            SessionInfo::v1(SessionToken::from_accept(&accept)),
            key,
        );
        Ok(())
    }

    /// The handshake message was refused: close at once without sending
    /// anything. Also usable before a message arrived (for example when the
    /// node refuses the peer's address).
    pub fn reject_handshake(&mut self, now: Instant, failure: AuthFailure) {
        let _ = now;
        if self.is_handshaking() {
            self.queue.clear();
            self.close_now(CloseReason::AuthFailed(failure));
        }
    }

    fn establish(&mut self, now: Instant, peer: Option<Uuid>, session: SessionInfo, key: KeyId) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Established;
        self.peer_node = peer;
        self.session = Some(session);
        self.events.push_back(Event::Established {
            peer_node: peer,
            session,
            key,
        });
        self.resume(now);
    }

    /// Input that arrived behind a handshake message waited for its verdict.
    fn resume(&mut self, now: Instant) {
        if !self.stash.is_empty() {
            let mut stash = std::mem::take(&mut self.stash);
            self.process(now, &mut stash);
            self.keep_unprocessed(stash);
        }
    }

    // ----- commands ---------------------------------------------------------

    /// Opens an outgoing stream and returns its id (client odd, server even).
    pub fn open_stream(&mut self) -> Result<StreamId, SendError> {
        self.check_sendable()?;
        if self.outgoing.len() >= self.config.max_outgoing_streams {
            return Err(SendError::TooManyStreams {
                max: self.config.max_outgoing_streams,
            });
        }
        Ok(self.outgoing.open())
    }

    /// Queues one DATA frame carrying `chunk` (not copied).
    ///
    /// [`SendError::WouldBlock`] is backpressure: the chunk was not taken,
    /// retry once output drained. Any other refusal of a chunk of an open
    /// stream ([`SendError::PayloadTooLarge`], [`SendError::StreamTooLong`])
    /// poisons the stream: the chunk is lost, so nothing more of the stream
    /// is written (the peer would get bytes after a hole) and it is never
    /// finished (the peer would take a shortened tensor for a complete one).
    /// Later `send` and [`finish`](Self::finish) calls on it fail with
    /// [`SendError::Poisoned`]; the peer sees the stream incomplete when
    /// the connection closes, this side an [`Event::SendAborted`].
    pub fn send(&mut self, now: Instant, stream: StreamId, chunk: Bytes) -> Result<(), SendError> {
        self.check_sendable()?;
        let max = self.send_limit();
        let high_water = self.config.send_high_water;
        let blocked = self.queue.pending() >= high_water;
        let out = self
            .outgoing
            .get_mut(stream)
            .ok_or(SendError::UnknownStream { stream })?;
        if let Some(refused) = &out.refused {
            return Err(SendError::Poisoned {
                stream,
                refused: refused.clone(),
            });
        }
        let Some(len) = u32::try_from(chunk.len()).ok().filter(|l| *l <= max) else {
            return Err(poison(
                out,
                SendError::PayloadTooLarge {
                    len: chunk.len(),
                    max,
                },
            ));
        };
        if blocked {
            return Err(SendError::WouldBlock { high_water });
        }
        let seq = out.next_seq;
        // END's seq counts the DATA frames, so at most u32::MAX of them.
        if seq == u32::MAX {
            return Err(poison(out, SendError::StreamTooLong { stream }));
        }
        out.next_seq = seq + 1;
        self.stats.payload_out += u64::from(len);
        self.enqueue(
            now,
            Header::new(FrameType::Data, stream.get(), seq, len),
            chunk,
        )
    }

    /// Queues the END frame of `stream`; the id is free again afterwards.
    /// END is accepted even above the high-water mark, being 14 bytes.
    /// A poisoned stream (see [`send`](Self::send)) is not finished: this
    /// fails with [`SendError::Poisoned`] and the stream stays open until
    /// the connection closes.
    pub fn finish(&mut self, now: Instant, stream: StreamId) -> Result<(), SendError> {
        self.check_sendable()?;
        if let Some(e) = self.poisoned(stream) {
            return Err(e);
        }
        let out = self
            .outgoing
            .remove(stream)
            .ok_or(SendError::UnknownStream { stream })?;
        self.enqueue(
            now,
            Header::new(FrameType::End, stream.get(), out.next_seq, 0),
            Bytes::new(),
        )
    }

    /// Queues a CONTROL frame on stream 0 carrying control message `kind`
    /// (its seq, never 0: seq 0 is v2's CONFIRM) with `body`. On v2 the body
    /// is sealed straight from `body`, so no unsealed copy of it stays in
    /// the send queue. Whether a message may travel over this connection
    /// (key material never goes over v1 in the clear) is the caller's
    /// decision. Accepted even above the high-water mark: control messages
    /// are small and rare.
    pub fn send_control(&mut self, now: Instant, kind: u32, body: &[u8]) -> Result<(), SendError> {
        self.check_sendable()?;
        let max = self.send_limit();
        let Some(len) = u32::try_from(body.len()).ok().filter(|l| *l <= max) else {
            return Err(SendError::PayloadTooLarge {
                len: body.len(),
                max,
            });
        };
        if kind == 0 {
            return Err(SendError::ControlKindZero);
        }
        let header = Header::new(FrameType::Control, 0, kind, len);
        if self.queue.is_empty() {
            self.last_write_progress = now;
        }
        match self.v2.as_deref_mut().and_then(|v| v.sealer.as_mut()) {
            Some(sealer) => {
                let sealed = Header {
                    version: WireVersion::V2.byte(),
                    length: len.saturating_add(TAG_LEN as u32),
                    ..header
                };
                let spare = self.queue.take_spare();
                match sealer.seal_in(&sealed.encode(), body, spare) {
                    Ok(sealed_body) => self.queue.push_owned(sealed, sealed_body.freeze()),
                    Err(_) => {
                        self.close_now(CloseReason::Protocol(ProtocolError::NonceExhausted));
                        return Err(SendError::Closed);
                    }
                }
            }
            None => self.queue.push(header, Bytes::copy_from_slice(body)),
        }
        self.stats.frames_out += 1;
        Ok(())
    }

    /// The error every later [`send`](Self::send) and
    /// [`finish`](Self::finish) on `stream` fails with, if a chunk of it
    /// was refused ([`SendError::Poisoned`]); `None` for a healthy or
    /// unknown stream. Adapters that queue chunks ahead of the connection
    /// hand it to the stream's owner.
    #[must_use]
    pub fn poisoned(&self, stream: StreamId) -> Option<SendError> {
        let refused = self.outgoing.get(stream)?.refused.clone()?;
        Some(SendError::Poisoned { stream, refused })
    }

    /// Closes gracefully: nothing new is accepted, what is queued is still
    /// written (within the send-stall timeout), then `Closed { Local }`.
    /// Streams not finished are reported as [`Event::SendAborted`].
    pub fn close(&mut self, now: Instant) {
        let _ = now;
        if self.is_closing() {
            return;
        }
        if self.is_handshaking() {
            self.queue.clear();
            self.close_now(CloseReason::Local);
            return;
        }
        self.abort_streams(&CloseReason::Local);
        self.state = State::Draining(CloseReason::Local);
        self.finish_draining();
    }

    /// Closes at once without writing anything more: queued output is
    /// dropped, open streams are cut with `reason` (incoming ones reported
    /// [`Event::StreamIncomplete`], outgoing ones [`Event::SendAborted`]),
    /// then `Closed { reason }`. For a peer believed gone, such as one a
    /// [`Node`](crate::node::Node) ordered closed with
    /// [`CloseReason::PeerExpired`], where draining would only wait for the
    /// send-stall timeout. Nothing happens if already closed.
    pub fn abort(&mut self, now: Instant, reason: CloseReason) {
        let _ = now;
        self.close_now(reason);
    }

    // ----- outputs ------------------------------------------------------------

    /// Fills `out` with slices of the bytes to write next, in order, and
    /// returns how many were filled. Write them (vectored) and report the
    /// count with [`handle_written`](Self::handle_written).
    #[must_use]
    pub fn transmit_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        if self.state == State::Closed {
            return 0;
        }
        self.queue.fill(out)
    }

    /// Writes pending output to `w` with vectored writes until it is all
    /// written or `w` would block, and reports progress. Returns the bytes
    /// written. A `WouldBlock` from `w` ends the call with `Ok`; other
    /// errors are returned (the adapter then calls
    /// [`handle_transport_error`](Self::handle_transport_error)).
    pub fn write_to<W: io::Write + ?Sized>(
        &mut self,
        now: Instant,
        w: &mut W,
    ) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let mut slots = [IoSlice::new(&[]); 64];
            let n = self.transmit_slices(&mut slots);
            let Some(filled) = slots.get(..n).filter(|s| !s.is_empty()) else {
                return Ok(total);
            };
            match w.write_vectored(filled) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    total += written;
                    self.handle_written(now, written);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next event, if any. Drain until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let handshake = self
            .is_handshaking()
            .then(|| self.current_handshake_deadline());
        let idle = if self.state == State::Established {
            self.incoming
                .values()
                .map(|s| after(s.last_activity, self.config.receive_idle_timeout))
                .min()
        } else {
            None
        };
        [handshake, self.stall_deadline(), idle]
            .into_iter()
            .flatten()
            .min()
    }

    // ----- internals ----------------------------------------------------------

    fn stall_deadline(&self) -> Option<Instant> {
        (!self.queue.is_empty())
            .then(|| after(self.last_write_progress, self.config.send_stall_timeout))
    }

    fn is_closing(&self) -> bool {
        matches!(self.state, State::Draining(_) | State::Closed)
    }

    fn accepts_input(&self) -> bool {
        !self.is_closing()
    }

    fn check_sendable(&self) -> Result<(), SendError> {
        match self.state {
            State::Established => Ok(()),
            State::Draining(_) | State::Closed => Err(SendError::Closed),
            _ => Err(SendError::NotEstablished),
        }
    }

    /// The largest chunk `send` takes: the configured maximum, and on v2
    /// small enough that its length with the tag fits the header.
    fn send_limit(&self) -> u32 {
        match self.version {
            WireVersion::V1 => self.config.max_payload,
            WireVersion::V2 => self.config.max_payload.min(u32::MAX - TAG_LEN as u32),
        }
    }

    /// Queues a frame; once v2 keys are installed it is sealed (one copy of
    /// the payload, encrypted in place). Fails only when the v2 frame
    /// counter is exhausted, which closes the connection.
    fn enqueue(&mut self, now: Instant, header: Header, payload: Bytes) -> Result<(), SendError> {
        if self.queue.is_empty() {
            // The stall clock measures time without progress while output is
            // pending, so it starts when output appears.
            self.last_write_progress = now;
        }
        match self.v2.as_deref_mut().and_then(|v| v.sealer.as_mut()) {
            Some(sealer) => {
                let sealed = Header {
                    version: WireVersion::V2.byte(),
                    length: header.length.saturating_add(TAG_LEN as u32),
                    ..header
                };
                let spare = self.queue.take_spare();
                match sealer.seal_in(&sealed.encode(), &payload, spare) {
                    Ok(body) => self.queue.push_owned(sealed, body.freeze()),
                    Err(_) => {
                        self.close_now(CloseReason::Protocol(ProtocolError::NonceExhausted));
                        return Err(SendError::Closed);
                    }
                }
            }
            None => self.queue.push(header, payload),
        }
        self.stats.frames_out += 1;
        Ok(())
    }

    /// Takes whole frames off `buf` while the state allows reading.
    fn process(&mut self, now: Instant, buf: &mut BytesMut) {
        loop {
            if !self.accepts_input() {
                buf.clear();
                return;
            }
            if matches!(self.state, State::Verifying(_)) {
                // Nothing is interpreted until the verdict.
                return;
            }
            if self.v2.as_deref().is_some_and(|v| v.opener.is_some()) {
                if !self.process_sealed(now, buf) {
                    return;
                }
                continue;
            }
            match self.decoder.peek_header(buf) {
                Ok(None) => return,
                Ok(Some(header)) => {
                    if let Err(e) = self.check_header(now, &header) {
                        self.close_now(CloseReason::Protocol(e));
                        continue;
                    }
                }
                Err(e) => {
                    self.frame_error(e);
                    continue;
                }
            }
            match self.decoder.decode(buf) {
                Ok(Some(frame)) => self.on_frame(now, frame),
                Ok(None) => return,
                Err(e) => self.frame_error(e),
            }
        }
    }

    /// Takes one sealed frame off `buf`, verifies its tag before looking at
    /// any field but the length, decrypts it in place and applies the
    /// receiver rules to its plaintext. Returns false when more input is
    /// needed.
    fn process_sealed(&mut self, now: Instant, buf: &mut BytesMut) -> bool {
        let (header, mut body) = match self.decoder.decode_mut(buf) {
            Ok(Some(frame)) => frame,
            Ok(None) => return false,
            Err(e) => {
                self.frame_error(e);
                return true;
            }
        };
        let wire_len = HEADER_LEN + body.len();
        let opened = self
            .v2
            .as_deref_mut()
            .and_then(|v| v.opener.as_mut())
            .map(|o| o.open(&header.encode(), &mut body));
        match opened {
            Some(Ok(())) => {}
            Some(Err(SealError::NonceExhausted)) => {
                self.close_now(CloseReason::Protocol(ProtocolError::NonceExhausted));
                return true;
            }
            _ => {
                self.close_now(if self.is_handshaking() {
                    CloseReason::AuthFailed(AuthFailure::BadFrameMac)
                } else {
                    CloseReason::BadFrameMac
                });
                return true;
            }
        }
        self.stats.frames_in += 1;
        self.stats.bytes_in += wire_len as u64;
        let plain = Header {
            length: u32::try_from(body.len()).unwrap_or(u32::MAX),
            ..header
        };
        if self.state == State::AwaitingConfirm {
            let is_confirm = plain.frame_type == FrameType::Control
                && plain.stream_id == 0
                && plain.seq == 0
                && body.is_empty();
            if is_confirm {
                self.state = State::Verifying(HandshakeMessage::Confirmed);
            } else {
                self.close_now(CloseReason::AuthFailed(AuthFailure::Malformed));
            }
            return true;
        }
        if let Err(e) = self.check_header(now, &plain) {
            self.close_now(CloseReason::Protocol(e));
            return true;
        }
        self.on_stream_frame(now, plain, body.freeze());
        true
    }

    fn frame_error(&mut self, e: FrameError) {
        let reason = if self.is_handshaking() {
            CloseReason::MalformedHandshake(e)
        } else {
            CloseReason::Protocol(ProtocolError::Frame(e))
        };
        self.close_now(reason);
    }

    /// The receiver rules that can be judged from the header alone, applied
    /// before any payload byte is buffered.
    fn check_header(&self, now: Instant, h: &Header) -> Result<(), ProtocolError> {
        let _ = now;
        if self.state != State::Established {
            // The decoder already pinned the exact first header.
            return Ok(());
        }
        let id = StreamId::new(h.stream_id);
        match h.frame_type {
            FrameType::Data => {
                if h.stream_id == 0 {
                    return Err(ProtocolError::DataOnStreamZero);
                }
                let expected = match self.incoming.get(&id) {
                    Some(s) => s.next_seq,
                    None => {
                        if self.incoming.len() >= self.config.max_incoming_streams {
                            return Err(ProtocolError::TooManyStreams {
                                max: self.config.max_incoming_streams,
                            });
                        }
                        0
                    }
                };
                if h.seq != expected {
                    return Err(ProtocolError::SequenceGap {
                        stream: id,
                        frame_type: FrameType::Data,
                        expected,
                        got: h.seq,
                    });
                }
                if expected == u32::MAX {
                    return Err(ProtocolError::StreamTooLong { stream: id });
                }
                Ok(())
            }
            FrameType::End => {
                if h.stream_id == 0 {
                    return Err(ProtocolError::EndOnStreamZero);
                }
                if h.length != 0 {
                    return Err(ProtocolError::EndWithPayload {
                        stream: id,
                        length: h.length,
                    });
                }
                let expected = self.incoming.get(&id).map_or(0, |s| s.next_seq);
                if h.seq != expected {
                    return Err(ProtocolError::SequenceGap {
                        stream: id,
                        frame_type: FrameType::End,
                        expected,
                        got: h.seq,
                    });
                }
                Ok(())
            }
            FrameType::Hello | FrameType::Accept => Err(ProtocolError::UnexpectedHandshake {
                frame_type: h.frame_type,
            }),
            FrameType::Control | FrameType::Unknown(_) => Ok(()),
        }
    }

    fn on_frame(&mut self, now: Instant, frame: Frame) {
        let Frame { header, payload } = frame;
        self.stats.frames_in += 1;
        self.stats.bytes_in += (HEADER_LEN + payload.len()) as u64;
        match self.state {
            State::AwaitingHello | State::AwaitingAccept => {
                // The decoder admitted only an exact HELLO/HELLO2 (server) or
                // ACCEPT/ACCEPT2 (client) header, so the payload's length is
                // the message's.
                match handshake_message(&header, &payload) {
                    Some(msg) => {
                        if header.version == WireVersion::V2.byte() {
                            self.version = WireVersion::V2;
                        }
                        self.state = State::Verifying(msg);
                    }
                    None => self.close_now(CloseReason::AuthFailed(AuthFailure::Malformed)),
                }
            }
            State::Established => self.on_stream_frame(now, header, payload),
            State::AwaitingConfirm | State::Verifying(_) | State::Draining(_) | State::Closed => {}
        }
    }

    fn on_stream_frame(&mut self, now: Instant, header: Header, payload: Bytes) {
        let stream = StreamId::new(header.stream_id);
        match header.frame_type {
            FrameType::Data => {
                let len = payload.len() as u64;
                let entry = self.incoming.entry(stream).or_insert(Incoming {
                    next_seq: 0,
                    bytes: 0,
                    last_activity: now,
                });
                entry.next_seq = header.seq.saturating_add(1);
                entry.bytes += len;
                entry.last_activity = now;
                self.stats.payload_in += len;
                self.events.push_back(Event::Data {
                    stream,
                    seq: header.seq,
                    payload,
                });
            }
            FrameType::End => {
                let bytes = self.incoming.remove(&stream).map_or(0, |s| s.bytes);
                self.events.push_back(Event::StreamEnd {
                    stream,
                    frames: header.seq,
                    bytes,
                });
            }
            FrameType::Control if header.stream_id == 0 && header.seq != 0 => {
                self.events.push_back(Event::Control {
                    kind: header.seq,
                    payload,
                });
            }
            FrameType::Control | FrameType::Unknown(_) => {
                self.events.push_back(Event::FrameSkipped {
                    frame_type: header.frame_type,
                    stream,
                    length: header.length,
                });
            }
            FrameType::Hello | FrameType::Accept => {}
        }
    }

    fn abort_streams(&mut self, reason: &CloseReason) {
        let mut cut: Vec<(StreamId, Incoming)> = self.incoming.drain().collect();
        cut.sort_unstable_by_key(|(id, _)| *id);
        for (stream, s) in cut {
            self.events.push_back(Event::StreamIncomplete {
                stream,
                frames: s.next_seq,
                bytes: s.bytes,
                reason: reason.clone(),
            });
        }
        for stream in self.outgoing.drain_ids() {
            self.events.push_back(Event::SendAborted { stream });
        }
    }

    /// Closes without writing anything more.
    fn close_now(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.abort_streams(&reason);
        self.queue.clear();
        self.stash = BytesMut::new();
        self.state = State::Closed;
        self.events.push_back(Event::Closed { reason });
    }

    fn finish_draining(&mut self) {
        if let State::Draining(reason) = &self.state {
            if self.queue.is_empty() {
                let reason = reason.clone();
                self.state = State::Closed;
                self.events.push_back(Event::Closed { reason });
            }
        }
    }
}

/// The handshake message a first frame carries, by its header.
fn handshake_message(header: &Header, payload: &[u8]) -> Option<HandshakeMessage> {
    match (header.version, header.frame_type) {
        (1, FrameType::Hello) => Hello::decode(payload).map(HandshakeMessage::Hello),
        (1, FrameType::Accept) => Accept::decode(payload).map(HandshakeMessage::Accept),
        (2, frame_type) => {
            let suite = Suite::from_seq(header.seq)?;
            let message: Message = payload.try_into().ok()?;
            match frame_type {
                FrameType::Hello => Some(HandshakeMessage::Hello2 { suite, message }),
                FrameType::Accept => Some(HandshakeMessage::Accept2 { suite, message }),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Marks `out` poisoned by the refusal `why` and returns it.
fn poison(out: &mut streams::Outgoing, why: SendError) -> SendError {
    out.refused = Some(Box::new(why.clone()));
    why
}
