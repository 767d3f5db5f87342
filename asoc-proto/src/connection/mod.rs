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
mod send_queue;
mod stream_id;
mod streams;

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use uuid::Uuid;

pub use config::{ConfigError, ConnectionConfig, ConnectionConfigBuilder};
pub use event::{CloseReason, Event, HandshakeStateError, ProtocolError, Role, SendError};
pub use stream_id::StreamId;

use self::send_queue::SendQueue;
use self::streams::{Incoming, OutgoingStreams};
use crate::auth::{AuthFailure, KeyId, SessionToken};
use crate::time::after;
use crate::wire::{
    Accept, Frame, FrameDecoder, FrameError, FrameType, Header, Hello, ACCEPT_HEADER, HELLO_HEADER,
};

/// A handshake message that arrived and awaits a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeMessage {
    /// The client's HELLO (server side).
    Hello(Hello),
    /// The server's ACCEPT (client side).
    Accept(Accept),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Server: waiting for the HELLO frame.
    AwaitingHello,
    /// Client: HELLO queued or sent, waiting for the ACCEPT frame.
    AwaitingAccept,
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
    incoming: HashMap<StreamId, Incoming>,
    outgoing: OutgoingStreams,
    events: VecDeque<Event>,
    peer_node: Option<Uuid>,
    session: Option<SessionToken>,
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

    /// A server connection for a freshly accepted transport; it expects a
    /// HELLO within the handshake timeout.
    #[must_use]
    pub fn server(config: ConnectionConfig, now: Instant) -> Self {
        Self::new(Role::Server, config, now, HELLO_HEADER, 2)
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
            incoming: HashMap::new(),
            outgoing: OutgoingStreams::new(first_id),
            events: VecDeque::new(),
            peer_node: None,
            session: None,
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
            State::AwaitingHello | State::AwaitingAccept | State::Verifying(_)
        )
    }

    /// Whether the connection is closed (the `Closed` event may still be
    /// waiting in [`poll_event`](Self::poll_event)).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The client's node id once known (server side only in v1).
    #[must_use]
    pub fn peer_node(&self) -> Option<Uuid> {
        self.peer_node
    }

    /// The session token, once established.
    #[must_use]
    pub fn session(&self) -> Option<SessionToken> {
        self.session
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
        if self.is_handshaking() && now >= self.handshake_deadline {
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
        self.enqueue(
            now,
            ACCEPT_HEADER,
            Bytes::copy_from_slice(&session.to_accept().encode()),
        );
        self.establish(now, Some(hello.node_id), session, key);
        Ok(())
    }

    /// Client: the ACCEPT verified under `key`; become established.
    pub fn confirm_accept(&mut self, now: Instant, key: KeyId) -> Result<(), HandshakeStateError> {
        let accept = match self.state {
            State::Verifying(HandshakeMessage::Accept(accept)) => accept,
            State::Verifying(_) => return Err(HandshakeStateError::WrongRole { role: self.role }),
            _ => return Err(HandshakeStateError::NothingToVerify),
        };
        self.establish(now, None, SessionToken::from_accept(&accept), key);
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

    fn establish(&mut self, now: Instant, peer: Option<Uuid>, session: SessionToken, key: KeyId) {
        self.state = State::Established;
        self.peer_node = peer;
        self.session = Some(session);
        self.events.push_back(Event::Established {
            peer_node: peer,
            session,
            key,
        });
        // Input that arrived behind the handshake message waited for this.
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
        let max = self.config.max_payload;
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
        );
        Ok(())
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
        );
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
        let handshake = self.is_handshaking().then_some(self.handshake_deadline);
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

    fn enqueue(&mut self, now: Instant, header: Header, payload: Bytes) {
        if self.queue.is_empty() {
            // The stall clock measures time without progress while output is
            // pending, so it starts when output appears.
            self.last_write_progress = now;
        }
        self.queue.push(header, payload);
        self.stats.frames_out += 1;
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
        self.stats.bytes_in += (crate::wire::HEADER_LEN + payload.len()) as u64;
        match self.state {
            State::AwaitingHello => {
                // The decoder admitted only the exact HELLO header, so the
                // payload is 36 bytes.
                match Hello::decode(&payload) {
                    Some(hello) => self.state = State::Verifying(HandshakeMessage::Hello(hello)),
                    None => self.close_now(CloseReason::AuthFailed(AuthFailure::Malformed)),
                }
            }
            State::AwaitingAccept => match Accept::decode(&payload) {
                Some(accept) => self.state = State::Verifying(HandshakeMessage::Accept(accept)),
                None => self.close_now(CloseReason::AuthFailed(AuthFailure::Malformed)),
            },
            State::Established => self.on_stream_frame(now, header, payload),
            State::Verifying(_) | State::Draining(_) | State::Closed => {}
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

/// Marks `out` poisoned by the refusal `why` and returns it.
fn poison(out: &mut streams::Outgoing, why: SendError) -> SendError {
    out.refused = Some(Box::new(why.clone()));
    why
}
