//! The ready-made loop: a [`Driver`] in a `mio::Poll` on its own thread,
//! behind a blocking, thread-safe handle.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use asoc_proto::auth::{KeyId, SessionToken};
use asoc_proto::connection::{CloseReason, ConnectionConfig, Event, Role, SendError};
use bytes::Bytes;
use mio::event::Source;
use mio::{Events, Poll, Token, Waker};
use uuid::Uuid;

use crate::driver::{Driver, Judge, SharedAuthenticator, DEFAULT_READ_LIMIT};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);

/// Settings of a [`MioConnection`]'s loop.
#[derive(Clone, Copy, Debug)]
pub struct MioConfig {
    /// Protocol limits and timers.
    pub connection: ConnectionConfig,
    /// Received bytes not yet taken by the application above which the loop
    /// stops reading from the socket (default 32 MiB); it resumes as the
    /// application takes chunks. A slow consumer thus pushes back on the
    /// sender through TCP instead of growing memory.
    pub receive_buffer: usize,
    /// Bytes read per readiness before the loop looks at commands and
    /// timers again (default [`DEFAULT_READ_LIMIT`]).
    pub read_limit: usize,
}

impl Default for MioConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            receive_buffer: 32 * 1024 * 1024,
            read_limit: DEFAULT_READ_LIMIT,
        }
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

/// Why an operation of a [`MioConnection`] or a [`Node`](crate::Node) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The handshake did not complete; the reason is asoc-proto's.
    #[error("handshake failed: {0}")]
    Handshake(CloseReason),
    /// The connection closed.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The protocol refused a command (for `send`, reported by the next
    /// `send` or `finish` on that stream, which is then never finished).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The node's admission policy refused the connection.
    #[error("refused by policy: {0}")]
    Refused(asoc_proto::policy::Refusal),
    /// No established connection matches the peer.
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// Connecting, accepting or setting up the poll loop failed.
    #[error("transport error: {0}")]
    Io(#[from] io::Error),
    /// A TLS session could not be set up (server name, configuration).
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The loop's thread ended without saying why.
    #[error("connection is gone")]
    Gone,
}

/// Why an incoming stream did not complete.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The connection closed before the stream's END; the data received so
    /// far MUST NOT be used as a complete tensor.
    #[error("stream incomplete after {bytes} bytes: {reason}")]
    Incomplete {
        /// Bytes received before the cut.
        bytes: u64,
        /// Why the connection closed.
        reason: CloseReason,
    },
}

/// Commands from handles to the loop.
#[derive(Debug)]
pub(crate) enum Cmd {
    Open(mpsc::SyncSender<Result<u32, SendError>>),
    Data { stream: u32, chunk: Bytes },
    Finish(u32, mpsc::SyncSender<Result<(), SendError>>),
    Close,
}

/// What the loop delivers to a receive stream.
#[derive(Debug)]
enum Item {
    Data(Bytes),
    End,
    Cut(StreamError),
}

/// Send accounting and the close reason, shared by the loop and handles.
#[derive(Debug, Default)]
struct State {
    /// Chunk bytes handed to the loop and not yet taken by it.
    queued: usize,
    /// The connection's pending output as of the loop's last look.
    pending: usize,
    high_water: usize,
    /// Streams whose chunk the protocol refused.
    failed: HashMap<u32, SendError>,
    closed: Option<CloseReason>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits while the connection's send queue is above its high-water
    /// mark, then counts `len` bytes as handed to the loop. Fails once a
    /// chunk of `stream` was refused or the connection closed.
    pub(crate) fn reserve(&self, stream: u32, len: usize) -> Result<(), Error> {
        let mut st = self.lock();
        loop {
            if let Some(e) = st.failed.get(&stream) {
                return Err(Error::Send(e.clone()));
            }
            if let Some(reason) = &st.closed {
                return Err(Error::Closed(reason.clone()));
            }
            if st.queued + st.pending < st.high_water {
                break;
            }
            st = self.wait(st);
        }
        st.queued += len;
        Ok(())
    }

    /// Why the connection closed, if it has.
    pub(crate) fn reason(&self) -> Option<CloseReason> {
        self.lock().closed.clone()
    }
}

/// Received bytes delivered to streams and not yet taken.
#[derive(Debug)]
struct Budget {
    buffered: AtomicUsize,
    limit: usize,
    waker: Arc<Waker>,
}

impl Budget {
    fn is_full(&self) -> bool {
        self.buffered.load(Ordering::Acquire) >= self.limit
    }

    fn consumed(&self, n: usize) {
        let before = self.buffered.fetch_sub(n, Ordering::AcqRel);
        if before >= self.limit && before - n < self.limit {
            let _ = self.waker.wake();
        }
    }
}

/// An authenticated ASoc connection driven by a mio loop on its own thread.
/// All methods block the calling thread as needed; the handle is `Send` and
/// `Sync`, so several threads may send on different streams at once.
///
/// Dropping the handle closes the connection gracefully (queued output is
/// still written); receive streams already taken keep working until then.
#[derive(Debug)]
pub struct MioConnection {
    session: Session,
    cmds: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
    incoming: Mutex<mpsc::Receiver<RecvStream>>,
}

impl MioConnection {
    /// Connects over TCP to `addr` and runs the client handshake; returns
    /// once the server's ACCEPT verified.
    pub fn connect<A: ToSocketAddrs>(
        addr: A,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Self::client(mio::net::TcpStream::from_std(stream), auth, config)
    }

    /// Accepts one TCP connection from a blocking `listener` and runs the
    /// server handshake; returns once the client's HELLO verified.
    pub fn accept(
        listener: &TcpListener,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Self::server(mio::net::TcpStream::from_std(stream), auth, config)
    }

    /// Connects over TCP to `target` (`host:port`) inside TLS with `tls`
    /// (see [`tls::client_config`](crate::tls::client_config); the server is
    /// verified for `host`), then runs the client handshake; returns once
    /// the server's ACCEPT verified. A failed TLS handshake ends as
    /// [`Error::Handshake`] with a transport failure.
    pub fn connect_tls(
        target: &str,
        tls: Arc<rustls::ClientConfig>,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let name = crate::tls::server_name(target)?;
        let stream = std::net::TcpStream::connect(target)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let io = mio::net::TcpStream::from_std(stream);
        let io = crate::TlsStream::client(io, tls, name).map_err(crate::tls::TlsError::from)?;
        Self::client(io, auth, config)
    }

    /// Accepts one TCP connection from a blocking `listener`, runs TLS
    /// with `tls` (see [`tls::server_config`](crate::tls::server_config))
    /// and then the server handshake; returns once the client's HELLO
    /// verified.
    pub fn accept_tls(
        listener: &TcpListener,
        tls: Arc<rustls::ServerConfig>,
        auth: &SharedAuthenticator,
        config: MioConfig,
    ) -> Result<Self, Error> {
        let (stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let io = mio::net::TcpStream::from_std(stream);
        let io = crate::TlsStream::server(io, tls).map_err(crate::tls::TlsError::from)?;
        Self::server(io, auth, config)
    }

    /// The client side over any connected, non-blocking mio source (a
    /// [`TlsStream`](crate::TlsStream) for TLS over any source).
    pub fn client<S>(io: S, auth: &SharedAuthenticator, config: MioConfig) -> Result<Self, Error>
    where
        S: Source + Read + Write + Send + 'static,
    {
        let driver = Driver::client(io, auth.clone(), config.connection, Instant::now());
        Self::start(driver, config)
    }

    /// The server side over any connected, non-blocking mio source (a
    /// [`TlsStream`](crate::TlsStream) for TLS over any source).
    pub fn server<S>(io: S, auth: &SharedAuthenticator, config: MioConfig) -> Result<Self, Error>
    where
        S: Source + Read + Write + Send + 'static,
    {
        let driver = Driver::server(io, auth.clone(), config.connection, Instant::now());
        Self::start(driver, config)
    }

    fn start<S>(driver: Driver<S>, config: MioConfig) -> Result<Self, Error>
    where
        S: Source + Read + Write + Send + 'static,
    {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut link = Link::new(driver, &config, waker.clone());
        link.driver.register(poll.registry(), SOCKET)?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (in_tx, in_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let shared = link.shared.clone();
        let worker = Worker {
            link,
            poll,
            cmds: cmd_rx,
            incoming: in_tx,
            ready: Some(ready_tx),
            orphaned: false,
        };
        std::thread::Builder::new()
            .name("asoc-mio".into())
            .spawn(move || worker.run())?;
        match ready_rx.recv() {
            Ok(Ok(session)) => Ok(Self {
                session,
                cmds: cmd_tx,
                waker,
                shared,
                incoming: Mutex::new(in_rx),
            }),
            Ok(Err(reason)) => Err(Error::Handshake(reason)),
            Err(_) => Err(Error::Gone),
        }
    }

    /// What the handshake established.
    #[must_use]
    pub fn session(&self) -> Session {
        self.session
    }

    /// Opens an outgoing stream and returns its id.
    pub fn open_stream(&self) -> Result<u32, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.command(Cmd::Open(tx))?;
        let id = rx.recv().map_err(|_| self.gone())??;
        Ok(id)
    }

    /// Queues `chunk` (not copied) as one DATA frame of `stream`. Blocks
    /// while the connection's send queue is above its high-water mark, so a
    /// fast producer waits for the socket instead of buffering a tensor
    /// whole.
    pub fn send(&self, stream: u32, chunk: Bytes) -> Result<(), Error> {
        self.shared.reserve(stream, chunk.len())?;
        self.command(Cmd::Data { stream, chunk })
    }

    /// Queues the END frame of `stream` behind its chunks: the stream is
    /// complete. Fails if one of its chunks was refused.
    pub fn finish(&self, stream: u32) -> Result<(), Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.command(Cmd::Finish(stream, tx))?;
        rx.recv().map_err(|_| self.gone())??;
        Ok(())
    }

    /// Sends `data` as one stream of frames of at most `chunk_size` bytes
    /// (sharing its memory) and finishes it; returns the stream id.
    pub fn send_tensor(&self, data: Bytes, chunk_size: usize) -> Result<u32, Error> {
        let stream = self.open_stream()?;
        let chunk_size = chunk_size.max(1);
        let mut off = 0;
        while off < data.len() {
            let end = data.len().min(off + chunk_size);
            self.send(stream, data.slice(off..end))?;
            off = end;
        }
        self.finish(stream)?;
        Ok(stream)
    }

    /// The next incoming stream, in the order they started; `None` once
    /// the connection closed and every stream was handed out.
    pub fn recv_stream(&self) -> Option<RecvStream> {
        let incoming = self.incoming.lock().unwrap_or_else(PoisonError::into_inner);
        incoming.recv().ok()
    }

    /// Like [`recv_stream`](Self::recv_stream), giving up after `timeout`.
    pub fn recv_stream_timeout(&self, timeout: Duration) -> Option<RecvStream> {
        let incoming = self.incoming.lock().unwrap_or_else(PoisonError::into_inner);
        incoming.recv_timeout(timeout).ok()
    }

    /// Closes gracefully: what is queued is still written, then the
    /// connection closes with [`CloseReason::Local`]. Returns at once; see
    /// [`closed`](Self::closed).
    pub fn close(&self) {
        let _ = self.command(Cmd::Close);
    }

    /// Waits until the connection closed and says why.
    pub fn closed(&self) -> CloseReason {
        let mut st = self.shared.lock();
        loop {
            if let Some(reason) = &st.closed {
                return reason.clone();
            }
            st = self.shared.wait(st);
        }
    }

    /// Why the connection closed, if it has.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason()
    }

    fn command(&self, cmd: Cmd) -> Result<(), Error> {
        self.cmds.send(cmd).map_err(|_| self.gone())?;
        self.waker.wake().map_err(Error::Io)
    }

    fn gone(&self) -> Error {
        match self.close_reason() {
            Some(reason) => Error::Closed(reason),
            None => Error::Gone,
        }
    }
}

impl Drop for MioConnection {
    fn drop(&mut self) {
        // The loop closes gracefully once it sees every handle gone; make
        // sure it looks.
        let _ = self.cmds.send(Cmd::Close);
        let _ = self.waker.wake();
    }
}

/// An incoming stream: its chunks in order, then its end, or an error if
/// the connection closed first.
#[derive(Debug)]
pub struct RecvStream {
    id: u32,
    items: mpsc::Receiver<Item>,
    budget: Arc<Budget>,
    bytes: u64,
    frames: u32,
    done: bool,
}

impl RecvStream {
    /// The stream id (chosen by the sender).
    #[must_use]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Payload bytes received so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// DATA frames received so far.
    #[must_use]
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// The next chunk, waiting for it; `Ok(None)` once the stream ended with
    /// its END; `Err` if the connection closed before.
    pub fn chunk(&mut self) -> Result<Option<Bytes>, StreamError> {
        if self.done {
            return Ok(None);
        }
        // The loop always sends End or Cut before dropping a stream; losing
        // the channel means its thread died, which is a cut.
        let item = self
            .items
            .recv()
            .unwrap_or(Item::Cut(StreamError::Incomplete {
                bytes: self.bytes,
                reason: CloseReason::Transport,
            }));
        self.take(item)
    }

    /// A chunk if one is already there, without waiting.
    pub fn try_chunk(&mut self) -> Option<Result<Option<Bytes>, StreamError>> {
        if self.done {
            return Some(Ok(None));
        }
        let item = self.items.try_recv().ok()?;
        Some(self.take(item))
    }

    fn take(&mut self, item: Item) -> Result<Option<Bytes>, StreamError> {
        match item {
            Item::Data(chunk) => {
                self.budget.consumed(chunk.len());
                self.bytes += chunk.len() as u64;
                self.frames += 1;
                Ok(Some(chunk))
            }
            Item::End => {
                self.done = true;
                Ok(None)
            }
            Item::Cut(e) => {
                self.done = true;
                Err(e)
            }
        }
    }

    /// Collects the whole stream into one buffer.
    pub fn read_to_end(mut self) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.chunk()? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // Release the budget held by chunks nobody will read.
        while let Ok(item) = self.items.try_recv() {
            if let Item::Data(chunk) = item {
                self.budget.consumed(chunk.len());
            }
        }
    }
}

/// One connection inside a loop: its driver, the handles' commands waiting
/// for it, its receive streams and its send accounting. Shared by
/// [`MioConnection`]'s loop and the node's.
#[derive(Debug)]
pub(crate) struct Link<S, A> {
    pub(crate) driver: Driver<S, A>,
    pub(crate) shared: Arc<Shared>,
    budget: Arc<Budget>,
    streams: HashMap<u32, mpsc::Sender<Item>>,
    /// Commands waiting for the handshake to end or the send queue to drain.
    backlog: VecDeque<Cmd>,
    /// The socket was reported readable and has not yet said WouldBlock.
    readable: bool,
    /// The pending output last published to the handles.
    published: usize,
}

impl<S: Source + Read + Write, A: Judge> Link<S, A> {
    pub(crate) fn new(mut driver: Driver<S, A>, config: &MioConfig, waker: Arc<Waker>) -> Self {
        driver.set_read_limit(config.read_limit);
        let shared = Arc::new(Shared::default());
        shared.lock().high_water = config.connection.send_high_water();
        Self {
            driver,
            shared,
            budget: Arc::new(Budget {
                buffered: AtomicUsize::new(0),
                limit: config.receive_buffer.max(1),
                waker,
            }),
            streams: HashMap::new(),
            backlog: VecDeque::new(),
            readable: false,
            published: 0,
        }
    }

    /// Queues a handle's command; [`step`](Self::step) applies it.
    pub(crate) fn push(&mut self, cmd: Cmd) {
        self.backlog.push_back(cmd);
    }

    /// Closes gracefully behind the commands already queued (at once while
    /// still in the handshake).
    pub(crate) fn close(&mut self) {
        if self.driver.connection().is_handshaking() {
            self.driver.close();
        } else {
            self.push(Cmd::Close);
        }
    }

    /// Whether there is reading to do without waiting for readiness.
    pub(crate) fn busy(&self) -> bool {
        self.readable && !self.budget.is_full()
    }

    /// Applies commands while the protocol takes them, then reads what the
    /// socket holds if the receive budget allows.
    pub(crate) fn step(&mut self, now: Instant) {
        self.apply();
        if self.busy() {
            self.driver.on_readable(now);
            self.readable = self.driver.wants_read();
        }
    }

    /// A readiness event for this connection's token.
    pub(crate) fn on_ready(&mut self, now: Instant, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            self.driver.on_writable(now);
        }
    }

    /// Fires the connection's timer if it is due.
    pub(crate) fn on_deadline(&mut self, now: Instant) {
        if self.driver.next_deadline().is_some_and(|d| now >= d) {
            self.driver.on_timeout(now);
        }
    }

    fn apply(&mut self) {
        while !self.driver.is_closed() && !self.driver.connection().is_handshaking() {
            let Some(cmd) = self.backlog.pop_front() else {
                return;
            };
            match cmd {
                Cmd::Data { stream, chunk } => {
                    if !self.driver.can_send() {
                        self.backlog.push_front(Cmd::Data { stream, chunk });
                        return;
                    }
                    let len = chunk.len();
                    let result = self.driver.send(stream, chunk);
                    let mut st = self.shared.lock();
                    st.queued -= len;
                    if let Err(e) = result {
                        st.failed.insert(stream, e);
                    }
                    // Waiting senders hear of it in `publish`.
                    self.published = usize::MAX;
                }
                Cmd::Open(reply) => {
                    let result = self.driver.open_stream();
                    if let Ok(id) = result {
                        // An id is reused only after its END.
                        self.shared.lock().failed.remove(&id);
                    }
                    let _ = reply.send(result);
                }
                Cmd::Finish(stream, reply) => {
                    let failed = self.shared.lock().failed.get(&stream).cloned();
                    // A stream missing a chunk is never finished: the peer
                    // sees it incomplete when the connection closes.
                    let result = match failed {
                        Some(e) => Err(e),
                        None => self.driver.finish(stream),
                    };
                    let _ = reply.send(result);
                }
                Cmd::Close => self.driver.close(),
            }
        }
    }

    /// Tells waiting senders how much output is still pending (and that
    /// chunks were taken, which `published == usize::MAX` marks).
    pub(crate) fn publish(&mut self) {
        let pending = self.driver.connection().pending_output();
        if pending != self.published {
            self.published = pending;
            self.shared.lock().pending = pending;
            self.shared.changed.notify_all();
        }
    }

    /// The connection's next event, after routing its payload to the
    /// receive stream (a new stream goes to `deliver` first).
    pub(crate) fn next_event(&mut self, deliver: &mut dyn FnMut(RecvStream)) -> Option<Event> {
        let event = self.driver.poll_event()?;
        match &event {
            Event::Data {
                stream, payload, ..
            } => {
                let len = payload.len();
                if self
                    .stream_tx(*stream, deliver)
                    .send(Item::Data(payload.clone()))
                    .is_ok()
                {
                    self.budget.buffered.fetch_add(len, Ordering::AcqRel);
                }
            }
            Event::StreamEnd { stream, .. } => {
                let _ = self.stream_tx(*stream, deliver).send(Item::End);
                self.streams.remove(stream);
            }
            Event::StreamIncomplete {
                stream,
                bytes,
                reason,
                ..
            } => {
                if let Some(tx) = self.streams.remove(stream) {
                    let _ = tx.send(Item::Cut(StreamError::Incomplete {
                        bytes: *bytes,
                        reason: reason.clone(),
                    }));
                }
            }
            _ => {}
        }
        Some(event)
    }

    fn stream_tx(
        &mut self,
        stream: u32,
        deliver: &mut dyn FnMut(RecvStream),
    ) -> &mpsc::Sender<Item> {
        self.streams.entry(stream).or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            deliver(RecvStream {
                id: stream,
                items: rx,
                budget: self.budget.clone(),
                bytes: 0,
                frames: 0,
                done: false,
            });
            tx
        })
    }

    /// After `Closed`: cut what is left and wake everyone waiting.
    pub(crate) fn finish(&mut self, reason: &CloseReason) {
        for (_, tx) in self.streams.drain() {
            let _ = tx.send(Item::Cut(StreamError::Incomplete {
                bytes: 0,
                reason: reason.clone(),
            }));
        }
        self.shared.lock().closed = Some(reason.clone());
        self.shared.changed.notify_all();
    }
}

/// The loop's thread: one link, one poll, the handles' commands.
struct Worker<S> {
    link: Link<S, SharedAuthenticator>,
    poll: Poll,
    cmds: mpsc::Receiver<Cmd>,
    incoming: mpsc::Sender<RecvStream>,
    ready: Option<mpsc::SyncSender<Result<Session, CloseReason>>>,
    /// Every handle is gone (a close was queued).
    orphaned: bool,
}

impl<S: Source + Read + Write> Worker<S> {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            loop {
                match self.cmds.try_recv() {
                    Ok(cmd) => self.link.push(cmd),
                    Err(mpsc::TryRecvError::Empty) => break,
                    // Every handle is gone: close gracefully.
                    Err(mpsc::TryRecvError::Disconnected) => {
                        if !std::mem::replace(&mut self.orphaned, true) {
                            self.link.push(Cmd::Close);
                        }
                        break;
                    }
                }
            }
            self.link.step(now);
            let incoming = &self.incoming;
            while let Some(event) = self.link.next_event(&mut |s| {
                let _ = incoming.send(s);
            }) {
                match event {
                    Event::Established {
                        peer_node,
                        session,
                        key,
                    } => {
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Ok(Session {
                                role: self.link.driver.connection().role(),
                                peer_node,
                                token: session,
                                key,
                            }));
                        }
                    }
                    Event::Closed { reason } => {
                        self.link.finish(&reason);
                        if let Some(ready) = self.ready.take() {
                            let _ = ready.send(Err(reason));
                        }
                        return;
                    }
                    _ => {}
                }
            }
            self.link.publish();
            let timeout = if self.link.busy() {
                Some(Duration::ZERO)
            } else {
                let now = Instant::now();
                self.link
                    .driver
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.link.finish(&CloseReason::Transport);
                    if let Some(ready) = self.ready.take() {
                        let _ = ready.send(Err(CloseReason::Transport));
                    }
                    return;
                }
            }
            let now = Instant::now();
            for ev in events.iter().filter(|ev| ev.token() == SOCKET) {
                self.link.on_ready(now, ev);
            }
            self.link.on_deadline(now);
        }
    }
}
