//! The drive loop of DESIGN.md §3, once for every runtime: one task per
//! connection waits on the transport, the application's commands and the
//! protocol's timer, feeds what happens into `asoc_proto::Connection`, and
//! carries out what it asks for. It decides nothing itself.

use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use asoc_proto::auth::{KeyId, SessionToken};
use asoc_proto::connection::{CloseReason, Connection, Event, Role, SendError};
use asoc_proto::wire::HEADER_LEN;
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use uuid::Uuid;

use crate::error::StreamError;
use crate::runtime::{BoxFuture, Runtime, Transport};
use crate::rxpool::RxPool;
use crate::stream::{Item, RecvBudget, RecvStream};

/// Commands from the application to a connection's task.
#[derive(Debug)]
pub(crate) enum Cmd {
    Open(async_channel::Sender<Result<u32, SendError>>),
    Data {
        stream: u32,
        chunk: Bytes,
    },
    Finish {
        stream: u32,
        reply: async_channel::Sender<Result<(), SendError>>,
    },
    Close,
}

/// Whoever gives handshake verdicts and hears how the connection ended:
/// a standalone authenticator or a node.
pub(crate) trait Judge: Send + Unpin + 'static {
    /// After every input.
    fn drive(&mut self, now: Instant, conn: &mut Connection);
    /// Once, when the connection closed.
    fn closed(&mut self, now: Instant, conn: &Connection, reason: &CloseReason);
    /// Every protocol event, before the driver acts on it.
    fn observe(&mut self, event: &Event) {
        let _ = event;
    }
}

/// What the handshake established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// This side's role.
    pub role: Role,
    /// The client's node id (known to servers only in v1).
    pub peer_node: Option<Uuid>,
    /// The session token both sides hold.
    pub token: SessionToken,
    /// The key that verified the handshake.
    pub key: KeyId,
}

/// State shared between a connection's task and its handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) established: std::sync::atomic::AtomicBool,
    pub(crate) closed: Mutex<Option<CloseReason>>,
    pub(crate) on_change: event_listener::Event,
    /// What the protocol answered the task's last refused command on a
    /// stream: the answer every later command on it gets (the protocol
    /// decides; see `asoc_proto::connection::Connection::send`), kept for
    /// the stream's handles, whose chunks reach the task only later.
    refusals: Mutex<HashMap<u32, SendError>>,
    /// Whether `refusals` has any entry, so that the check every `send`
    /// makes is one load, not a lock, while no chunk was ever refused.
    any_refused: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.closed.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// The protocol's refusal of stream `id`'s commands, if it refused one.
    pub(crate) fn refusal(&self, id: u32) -> Option<SendError> {
        if !self.any_refused.load(Ordering::Acquire) {
            return None;
        }
        self.refusals.lock().ok()?.get(&id).cloned()
    }

    /// Keeps the protocol's answer to a refused command on stream `id`.
    fn report(&self, id: u32, answer: SendError) {
        if let Ok(mut refusals) = self.refusals.lock() {
            refusals.insert(id, answer);
            self.any_refused.store(true, Ordering::Release);
        }
    }
}

/// Smallest read window: what an idle connection holds.
const MIN_READ: usize = 4 * 1024;
/// Read size while the driver holds no read window: a small allocation
/// (glibc serves it from its small bins without consolidating them), kept
/// while waiting.
const FIRST_READ: usize = 256;
/// Remaining frame bytes from which a read stops at the frame's end.
const LARGE_FRAME: usize = 64 * 1024;
/// Largest read window the driver grows to while reads keep filling it.
const MAX_READ: usize = 1024 * 1024;
/// Smallest buffer the pool allocates: one read of the largest window, or
/// a frame of that size with its header and the header of the next.
const SLAB: usize = MAX_READ + 4 * HEADER_LEN;
/// Poll-loop rounds before yielding to other tasks.
const ROUNDS: usize = 32;
/// Payload bytes delivered to receive streams and not yet taken from which
/// a driver that just delivered yields at once, so the consumers run and
/// drop them before the next read.
const YIELD_BEHIND: usize = 2 * 1024 * 1024;

pub(crate) struct Driver<T: Transport, R: Runtime, J: Judge> {
    pub(crate) conn: Connection,
    pub(crate) io: T,
    pub(crate) rt: R,
    pub(crate) judge: J,
    pub(crate) rx: BytesMut,
    pub(crate) cmds: Pin<Box<async_channel::Receiver<Cmd>>>,
    /// Close-at-once orders of the node (a peer expired): apart from the
    /// commands, which may wait behind a full send queue or the handshake.
    /// `None` for a connection without a node.
    pub(crate) abort: Option<Pin<Box<async_channel::Receiver<CloseReason>>>>,
    pub(crate) deliver: Box<dyn FnMut(RecvStream) + Send>,
    /// The handshake's outcome for a caller that waits for it: `Some(None)`
    /// until the handshake ends, then `Some(Some(_))` until taken; `None`
    /// when nobody waits (a node hears through its judge).
    pub(crate) outcome: Option<Option<Result<Session, CloseReason>>>,
    pub(crate) budget: Arc<RecvBudget>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) streams: HashMap<u32, async_channel::Sender<Item>>,
    pub(crate) held: Option<Cmd>,
    pub(crate) sleep: Option<(Instant, BoxFuture<()>)>,
    pub(crate) eof: bool,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) shutdown_done: bool,
    pub(crate) read_window: usize,
    pub(crate) large_frames: bool,
    /// Receive buffers kept for reuse while the connection is busy.
    pub(crate) pool: RxPool,
    /// Bytes were written that the transport may still hold (a TLS layer
    /// buffers records); flushing is retried until it completes, even when
    /// nothing new is written, or the last records of a stream would sit
    /// in the buffer until the peer's idle timer gives up.
    pub(crate) unflushed: bool,
    /// Payload bytes delivered since the task last yielded.
    pub(crate) delivered: usize,
}

impl<T: Transport, R: Runtime, J: Judge> Driver<T, R, J> {
    /// Whether a caller waits for the handshake's outcome and it has not
    /// come yet.
    pub(crate) fn awaits_outcome(&self) -> bool {
        matches!(self.outcome, Some(None))
    }

    fn apply(&mut self, now: Instant, cmd: Cmd) {
        match cmd {
            Cmd::Open(reply) => {
                let _ = reply.try_send(self.conn.open_stream());
            }
            Cmd::Data { stream, chunk } => {
                // The handle's `send` returned before this ran, so the
                // refusal goes to the stream's handles for their next
                // command: the answer the protocol gives every later
                // command on the stream (a refused chunk poisons it).
                if let Err(e) = self.conn.send(now, stream, chunk) {
                    let answer = self.conn.poisoned(stream).unwrap_or(e);
                    self.shared.report(stream, answer);
                }
            }
            Cmd::Finish { stream, reply } => {
                let _ = reply.try_send(self.conn.finish(now, stream));
            }
            Cmd::Close => self.conn.close(now),
        }
    }

    /// Takes commands while the protocol can accept them.
    fn poll_commands(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progressed = false;
        loop {
            if self.conn.is_handshaking() || self.closed.is_some() {
                return progressed;
            }
            let cmd = match self.held.take() {
                Some(cmd) => cmd,
                None => match self.cmds.as_mut().poll_next(cx) {
                    Poll::Ready(Some(cmd)) => cmd,
                    Poll::Ready(None) | Poll::Pending => return progressed,
                },
            };
            if matches!(cmd, Cmd::Data { .. }) && !self.conn.can_send() {
                // Wait for the transport to drain; writes make progress below.
                self.held = Some(cmd);
                return progressed;
            }
            self.apply(now, cmd);
            progressed = true;
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let mut progressed = false;
        while self.conn.pending_output() > 0 {
            let mut slots = [IoSlice::new(&[]); 64];
            let n = self.conn.transmit_slices(&mut slots);
            let filled = slots.get(..n).unwrap_or(&[]);
            match self.io.poll_write_vectored(cx, filled) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    self.conn.handle_transport_error(now);
                    return true;
                }
                Poll::Ready(Ok(written)) => {
                    self.conn.handle_written(now, written);
                    progressed = true;
                }
                Poll::Pending => break,
            }
        }
        self.unflushed |= progressed;
        if self.unflushed {
            match self.io.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => {
                    self.unflushed = false;
                    self.conn.handle_transport_error(now);
                    return true;
                }
                Poll::Pending => {}
            }
        }
        progressed
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if self.eof || self.closed.is_some() {
            return false;
        }
        if self.budget.is_full() {
            self.budget.driver.register(cx.waker());
            // Re-check: the consumer may have drained in between.
            if self.budget.is_full() {
                return false;
            }
        }
        // The window grows while reads fill it and shrinks back when they do
        // not, so a busy connection reads in large batches and an idle one
        // holds a few KiB.
        let frame_rest = self.conn.bytes_needed(&self.rx);
        // Inside a large frame, read exactly to its end and the header of
        // the next: the buffer then splits cleanly, and moving to the next
        // buffer carries 14 bytes along, not the tail of this frame. The
        // frame's whole size decides, so its last few KiB are not read
        // with a full window either. Small frames are read in batches of
        // the window.
        let large = frame_rest > 0 && self.rx.len() + frame_rest >= LARGE_FRAME;
        let max = if large {
            frame_rest + HEADER_LEN
        } else if self.large_frames && self.rx.is_empty() {
            // Large frames have been arriving: read the next header alone,
            // then its payload exactly.
            HEADER_LEN
        } else if self.rx.is_empty()
            && self.rx.capacity() <= FIRST_READ
            && self.read_window == MIN_READ
        {
            // Holding no window (quiet, or a handshake): read into a few
            // hundred bytes first. A busy connection (its window grown)
            // never does. Most such reads find nothing, or one
            // small frame, and a 4 KiB allocation for each cost more than
            // the set-up's handshake: glibc consolidates its free lists
            // before every allocation of 1 KiB or more. A burst that fills
            // this read goes on with the full window.
            FIRST_READ
        } else {
            self.read_window
        };
        self.pool
            .make_room(&mut self.rx, max, SLAB, self.budget.limit, now);
        let room = max;
        let probe = !large && max == FIRST_READ;
        let result = self.io.poll_read_into(cx, &mut self.rx, max);
        // A small first read says nothing about the window the traffic
        // needs.
        if let (Poll::Ready(Ok(n)), false) = (&result, probe) {
            if large {
                self.large_frames = true;
            } else if max == self.read_window {
                self.large_frames = false;
            }
            self.read_window = if *n >= room {
                (self.read_window * 2).min(MAX_READ)
            } else {
                (self.read_window / 2).max(MIN_READ)
            };
        }
        match result {
            Poll::Ready(Ok(0)) => {
                self.eof = true;
                self.conn.handle_eof(Instant::now());
                true
            }
            Poll::Ready(Ok(_)) => {
                let now = Instant::now();
                self.conn.handle_input(now, &mut self.rx);
                self.judge.drive(now, &mut self.conn);
                if self.rx.is_empty()
                    && self.rx.capacity() > 4 * MIN_READ
                    && self.read_window == MIN_READ
                {
                    // Gone quiet: give the large buffers back.
                    self.rx = BytesMut::new();
                    self.pool.release();
                }
                true
            }
            Poll::Ready(Err(_)) => {
                self.conn.handle_transport_error(Instant::now());
                true
            }
            Poll::Pending => {
                if self.rx.is_empty()
                    && self.rx.capacity() > FIRST_READ
                    && self.read_window == MIN_READ
                    && !self.large_frames
                {
                    // Quiet and nothing half-read: hold no read window while
                    // waiting (issue 6, target 7: an idle connection's 4 KiB
                    // window was half its memory). The next read takes a
                    // small buffer first; one of that size is kept.
                    self.rx = BytesMut::new();
                }
                false
            }
        }
    }

    fn dispatch(&mut self, event: Event) {
        self.judge.observe(&event);
        match event {
            Event::Established {
                peer_node,
                session,
                key,
            } => {
                self.shared.established.store(true, Ordering::Release);
                self.shared.on_change.notify(usize::MAX);
                if let Some(slot @ None) = self.outcome.as_mut() {
                    *slot = Some(Ok(Session {
                        role: self.conn.role(),
                        peer_node,
                        token: session,
                        key,
                    }));
                }
            }
            Event::Data {
                stream, payload, ..
            } => {
                let len = payload.len();
                let tx = self.stream_tx(stream);
                if tx.try_send(Item::Data(payload)).is_ok() {
                    self.budget.buffered.fetch_add(len, Ordering::AcqRel);
                    self.delivered += len;
                }
            }
            Event::StreamEnd { stream, .. } => {
                let tx = self.stream_tx(stream);
                let _ = tx.try_send(Item::End);
                self.streams.remove(&stream);
            }
            Event::StreamIncomplete {
                stream,
                bytes,
                reason,
                ..
            } => {
                if let Some(tx) = self.streams.remove(&stream) {
                    let _ = tx.try_send(Item::Cut(StreamError::Incomplete { bytes, reason }));
                }
            }
            Event::Closed { reason } => {
                // Streams cut by this close already got their Incomplete
                // events; any left are cut now.
                for (_, tx) in self.streams.drain() {
                    let _ = tx.try_send(Item::Cut(StreamError::Incomplete {
                        bytes: 0,
                        reason: reason.clone(),
                    }));
                }
                if let Some(slot @ None) = self.outcome.as_mut() {
                    *slot = Some(Err(reason.clone()));
                }
                self.closed = Some(reason);
            }
            _ => {}
        }
    }

    fn stream_tx(&mut self, stream: u32) -> async_channel::Sender<Item> {
        if let Some(tx) = self.streams.get(&stream) {
            return tx.clone();
        }
        let (tx, rx) = async_channel::unbounded();
        (self.deliver)(RecvStream {
            id: stream,
            items: Box::pin(rx),
            budget: self.budget.clone(),
            bytes: 0,
            frames: 0,
            done: false,
        });
        self.streams.insert(stream, tx.clone());
        tx
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let protocol = self.conn.poll_timeout();
        let Some(deadline) = [protocol, self.pool.deadline()].into_iter().flatten().min() else {
            self.sleep = None;
            return false;
        };
        // The protocol's deadlines move with every frame (idle and stall
        // clocks restart on progress). A timer that fires early is harmless
        // (it is re-armed below), so it is only replaced when the deadline
        // comes earlier, not re-created for every frame.
        if self.sleep.as_ref().is_none_or(|(at, _)| *at > deadline) {
            self.sleep = Some((deadline, self.rt.sleep_until(deadline)));
        }
        let Some((_, sleep)) = self.sleep.as_mut() else {
            return false;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.sleep = None;
                let now = Instant::now();
                if protocol.is_some_and(|at| at <= now) {
                    self.conn.handle_timeout(now);
                }
                self.pool.expire(now, &mut self.rx);
                true
            }
            Poll::Pending => false,
        }
    }
}

impl<T: Transport, R: Runtime, J: Judge> Future for Driver<T, R, J> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        for _ in 0..ROUNDS {
            let now = Instant::now();
            let mut progressed = false;
            if let Some(Poll::Ready(Some(reason))) =
                this.abort.as_mut().map(|a| a.as_mut().poll_next(cx))
            {
                this.conn.abort(now, reason);
                progressed = true;
            }
            progressed |= this.poll_commands(cx, now);
            progressed |= this.poll_write(cx, now);
            progressed |= this.poll_read(cx, now);
            while let Some(event) = this.conn.poll_event() {
                this.dispatch(event);
                progressed = true;
            }
            if let Some(reason) = this.closed.clone() {
                return this.poll_finish(cx, &reason);
            }
            progressed |= this.poll_timer(cx);
            if !progressed {
                this.delivered = 0;
                return Poll::Pending;
            }
            if this.delivered > 0 && this.budget.buffered.load(Ordering::Acquire) >= YIELD_BEHIND {
                // The consumers are behind (they wait for this worker, as
                // with many busy connections on few cores): let them run
                // now. A payload keeps its receive buffer from reuse until
                // dropped, so reading on would move every frame into memory
                // of its own (up to the receive budget, 16 MiB per
                // connection), cold in the cache, where consumers that keep
                // up let the driver cycle through two or three buffers.
                break;
            }
        }
        this.delivered = 0;
        // Plenty of work left: let other tasks run, then continue.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<T: Transport, R: Runtime, J: Judge> Driver<T, R, J> {
    /// After `Closed`: tell the judge, shut the transport's write side (a
    /// graceful close has written everything; a failed handshake wrote
    /// nothing), and wake everyone waiting on the connection.
    fn poll_finish(&mut self, cx: &mut Context<'_>, reason: &CloseReason) -> Poll<()> {
        if !self.shutdown_done {
            if self.io.poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
            self.shutdown_done = true;
            self.judge.closed(Instant::now(), &self.conn, reason);
            if let Ok(mut slot) = self.shared.closed.lock() {
                *slot = Some(reason.clone());
            }
            self.cmds.close();
            // Commands queued before the close would otherwise stay in the
            // channel (its senders keep it alive) with their reply senders,
            // and `open_stream` or `finish` would wait on them for ever.
            // Dropping them answers every waiter with the close reason.
            self.held = None;
            while self.cmds.try_recv().is_ok() {}
            self.shared.on_change.notify(usize::MAX);
        }
        Poll::Ready(())
    }
}
