//! The drive loop of DESIGN.md §3, once for every runtime: one task per
//! connection waits on the transport, the application's commands and the
//! protocol's timer, feeds what happens into `asoc_proto::Connection`, and
//! carries out what it asks for. It decides nothing itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use asoc_proto::auth::KeyId;
use asoc_proto::connection::{
    CloseReason, Connection, Event, Role, SendError, SessionInfo, StreamId,
};
use bytes::Bytes;
use futures_core::Stream;
use uuid::Uuid;

use crate::drive::{Core, Received};
use crate::error::StreamError;
use crate::runtime::{BoxFuture, Runtime, Transport};
use crate::stream::{Item, RecvBudget, RecvStream};

/// Commands from the application to a connection's task.
#[derive(Debug)]
/// What a node orders a connection's task to do, apart from the commands
/// (which may wait behind a full send queue or the handshake).
pub(crate) enum Order {
    /// Close at once with this reason.
    Abort(CloseReason),
    /// Queue this control message (the node decided where it may go).
    Control(asoc_proto::rotation::ControlTransmit),
}

pub(crate) enum Cmd {
    Open(async_channel::Sender<Result<StreamId, SendError>>),
    Data {
        stream: StreamId,
        chunk: Bytes,
    },
    Finish {
        stream: StreamId,
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
    /// Whenever a poll of the connection's task ends: its counters may
    /// have changed since the last input (bytes written count too).
    fn settled(&mut self, conn: &Connection) {
        let _ = conn;
    }
}

/// What the handshake established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Session {
    /// This side's role.
    pub role: Role,
    /// The peer's node id: the client's on a server; on a v2 client the
    /// server's, proven by ACCEPT2 (v1 tells clients none).
    pub peer_node: Option<Uuid>,
    /// The version, suite, session id and channel binding both sides hold.
    pub info: SessionInfo,
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
    refusals: Mutex<HashMap<StreamId, SendError>>,
    /// Whether `refusals` has any entry, so that the check every `send`
    /// makes is one load, not a lock, while no chunk was ever refused.
    any_refused: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.closed.lock().map(|g| g.clone()).unwrap_or(None)
    }

    /// The protocol's refusal of stream `id`'s commands, if it refused one.
    pub(crate) fn refusal(&self, id: StreamId) -> Option<SendError> {
        if !self.any_refused.load(Ordering::Acquire) {
            return None;
        }
        self.refusals.lock().ok()?.get(&id).cloned()
    }

    /// Keeps the protocol's answer to a refused command on stream `id`.
    fn report(&self, id: StreamId, answer: SendError) {
        if let Ok(mut refusals) = self.refusals.lock() {
            refusals.insert(id, answer);
            self.any_refused.store(true, Ordering::Release);
        }
    }
}

/// Poll-loop rounds before yielding to other tasks.
const ROUNDS: usize = 32;
/// Queued output above which the driver writes before it takes the next
/// chunk from the application.
const WRITE_BATCH: usize = 1 << 20;
/// Payload bytes delivered to receive streams and not yet taken from which
/// a driver that just delivered yields at once, so the consumers run and
/// drop them before the next read.
const YIELD_BEHIND: usize = 2 * 1024 * 1024;

pub(crate) struct Driver<T: Transport, R: Runtime, J: Judge> {
    pub(crate) conn: Connection,
    pub(crate) io: T,
    pub(crate) rt: R,
    pub(crate) judge: J,
    pub(crate) cmds: Pin<Box<async_channel::Receiver<Cmd>>>,
    /// Close-at-once orders of the node (a peer expired): apart from the
    /// commands, which may wait behind a full send queue or the handshake.
    /// `None` for a connection without a node.
    pub(crate) abort: Option<Pin<Box<async_channel::Receiver<Order>>>>,
    pub(crate) deliver: Box<dyn FnMut(RecvStream) + Send>,
    /// The handshake's outcome for a caller that waits for it: `Some(None)`
    /// until the handshake ends, then `Some(Some(_))` until taken; `None`
    /// when nobody waits (a node hears through its judge).
    pub(crate) outcome: Option<Option<Result<Session, CloseReason>>>,
    pub(crate) budget: Arc<RecvBudget>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) streams: HashMap<StreamId, async_channel::Sender<Item>>,
    pub(crate) held: Option<Cmd>,
    pub(crate) sleep: Option<(Instant, BoxFuture<()>)>,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) shutdown_done: bool,
    /// Receive buffer and read sizing, writes, flushing, linger, timer.
    pub(crate) core: Core,
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
            let data = matches!(cmd, Cmd::Data { .. });
            self.apply(now, cmd);
            progressed = true;
            if data && self.conn.pending_output() >= WRITE_BATCH {
                // Write what is queued before taking more: sealing a v2
                // frame costs time, and sealing up to the high-water mark
                // first would leave the socket idle meanwhile.
                return progressed;
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let io = &mut self.io;
        let wrote = self
            .core
            .write(&mut self.conn, now, |bufs| io.poll_write_vectored(cx, bufs));
        let failed = self.core.flush(&mut self.conn, now, || io.poll_flush(cx));
        wrote || failed
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        if self.core.at_eof() || self.closed.is_some() {
            return false;
        }
        if self.budget.is_full() {
            self.budget.driver.register(cx.waker());
            // Re-check: the consumer may have drained in between.
            if self.budget.is_full() {
                return false;
            }
        }
        let io = &mut self.io;
        match self.core.read(&mut self.conn, now, |buf, max| {
            io.poll_read_into(cx, buf, max)
        }) {
            Poll::Ready(Received::Input(_)) => {
                self.judge.drive(now, &mut self.conn);
                true
            }
            Poll::Ready(_) => true,
            Poll::Pending => false,
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
                        info: session,
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

    fn stream_tx(&mut self, stream: StreamId) -> async_channel::Sender<Item> {
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
        let Some(deadline) = self.core.deadline(&self.conn) else {
            self.sleep = None;
            return false;
        };
        if !self.poll_sleep(cx, deadline) {
            return false;
        }
        self.core.on_timeout(&mut self.conn, Instant::now());
        true
    }

    /// Waits for `deadline`; whether it passed.
    fn poll_sleep(&mut self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        // The protocol's deadlines move with every frame (idle and stall
        // clocks restart on progress). A timer that fires early is harmless
        // (it is re-armed), so it is only replaced when the deadline comes
        // earlier, not re-created for every frame.
        if self.sleep.as_ref().is_none_or(|(at, _)| *at > deadline) {
            self.sleep = Some((deadline, self.rt.sleep_until(deadline)));
        }
        let Some((_, sleep)) = self.sleep.as_mut() else {
            return false;
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.sleep = None;
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
            while let Some(Poll::Ready(Some(order))) =
                this.abort.as_mut().map(|a| a.as_mut().poll_next(cx))
            {
                match order {
                    Order::Abort(reason) => this.conn.abort(now, reason),
                    Order::Control(t) => {
                        // Refused only once the connection is closing.
                        let _ = this.conn.send_control(now, t.kind, &t.body);
                    }
                }
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
                this.judge.settled(&this.conn);
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
        this.judge.settled(&this.conn);
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
            self.core.start_linger(&self.conn, Instant::now());
            // A transport holding output the peer does not take (TLS
            // records to a stalled reader) is given up on at the linger's
            // end. The timer may be one armed earlier, for an earlier
            // deadline: the linger is checked again whenever it fires.
            while self.io.poll_shutdown(cx).is_pending() {
                let Some(until) = self
                    .core
                    .linger_deadline()
                    .filter(|_| self.core.lingering(Instant::now()))
                else {
                    break;
                };
                if !self.poll_sleep(cx, until) {
                    return Poll::Pending;
                }
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
