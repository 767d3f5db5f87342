//! The pieces for programs that own their `mio::Poll`: one [`Driver`] per
//! connection, fed readiness events and timer expiries.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::sync::PoisonError;
use std::task::Poll;
use std::time::Instant;

use asoc_async::drive::{Core, Received};
use asoc_async::DriverConfig;

pub use asoc_async::SharedAuthenticator;
use asoc_proto::connection::{
    CloseReason, Connection, ConnectionConfig, Event, SendError, StreamId,
};
use asoc_proto::handshake::{Authenticator, ClientOptions};
use bytes::{Bytes, BytesMut};
use mio::event::Source;
use mio::{Interest, Registry, Token};

/// Bytes [`Driver::on_readable`] reads per call before it yields (see
/// [`Driver::wants_read`]), unless changed with [`Driver::set_read_limit`].
pub const DEFAULT_READ_LIMIT: usize = 4 * 1024 * 1024;

/// Most bytes offered to one `read` call. The window is zero-filled before
/// each read (a plain `Read` takes initialised memory), so it stays
/// smaller than the largest read the drive core asks for.
const ZEROED_WINDOW: usize = 128 * 1024;

/// Access to the [`Authenticator`] that gives a connection its handshake
/// verdict. Implemented for the two ways of sharing one:
/// `Rc<RefCell<Authenticator>>` (single-threaded loops) and
/// [`SharedAuthenticator`] (`Arc<Mutex<Authenticator>>`).
pub trait AuthHandle {
    /// Runs `f` with the authenticator borrowed mutably.
    ///
    /// For `Rc<RefCell<_>>` this panics if the caller holds a borrow of the
    /// same `RefCell` across a driver call; a poisoned mutex is used as is.
    fn with_auth<R>(&self, f: impl FnOnce(&mut Authenticator) -> R) -> R;
}

impl AuthHandle for Rc<RefCell<Authenticator>> {
    fn with_auth<R>(&self, f: impl FnOnce(&mut Authenticator) -> R) -> R {
        f(&mut self.borrow_mut())
    }
}

impl AuthHandle for SharedAuthenticator {
    fn with_auth<R>(&self, f: impl FnOnce(&mut Authenticator) -> R) -> R {
        f(&mut self.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Whoever gives a [`Driver`]'s connection its handshake verdicts: any
/// [`AuthHandle`] (a standalone [`Authenticator`]), or an
/// `asoc_proto::node::Node` through a small type calling
/// [`Node::drive`](asoc_proto::node::Node::drive) for the connection's id.
pub trait Judge {
    /// Called after every input to `conn`; gives a pending HELLO or ACCEPT
    /// its verdict.
    fn judge(&mut self, now: Instant, conn: &mut Connection);
}

impl<A: AuthHandle> Judge for A {
    fn judge(&mut self, now: Instant, conn: &mut Connection) {
        if conn.poll_handshake().is_some() {
            self.with_auth(|a| a.drive(now, asoc_async::unix_ms(), conn));
        }
    }
}

/// One ASoc connection over a non-blocking mio source `S` (a
/// `mio::net::TcpStream`, a `mio::net::UnixStream`, anything that is a
/// [`Source`] and reads and writes).
///
/// The driver carries out what [`asoc_proto::connection::Connection`] asks
/// for and decides nothing itself. Its loop, in the owner's `mio::Poll`:
///
/// 1. [`register`](Self::register) the driver under a token (for both
///    directions, edge-triggered);
/// 2. on an event for that token call [`on_readable`](Self::on_readable)
///    and/or [`on_writable`](Self::on_writable); call `on_readable` again,
///    without waiting for an event, while [`wants_read`](Self::wants_read)
///    says so;
/// 3. take every [`poll_event`](Self::poll_event);
/// 4. wait in `Poll::poll` no longer than [`next_deadline`](Self::next_deadline)
///    and call [`on_timeout`](Self::on_timeout) once it passed.
///
/// Commands ([`open_stream`](Self::open_stream), [`send`](Self::send),
/// [`finish`](Self::finish), [`close`](Self::close)) may be given at any
/// time; output is written at once as far as the socket takes it. After the
/// [`Event::Closed`] event the driver has deregistered its source; drop the
/// driver (or take the source back with [`into_inner`](Self::into_inner)) to
/// close the transport.
///
/// A complete loop over a Unix socket pair:
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
/// use std::time::Instant;
/// use asoc_mio::Driver;
/// use asoc_proto::auth::{ApiKey, KeyRing};
/// use asoc_proto::connection::{ConnectionConfig, Event};
/// use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
/// use bytes::Bytes;
/// use mio::{Events, Poll, Token};
/// use uuid::Uuid;
///
/// let key = KeyRing::new(ApiKey::new("0123456789abcdef0123456789abcdef").unwrap());
/// let auth = |id: u8| {
///     let config = AuthenticatorConfig::new(Uuid::from_bytes([id; 16]), key.clone());
///     Rc::new(RefCell::new(Authenticator::new(config, asoc_mio::os_seed().unwrap())))
/// };
/// let (a, b) = mio::net::UnixStream::pair().unwrap();
/// let now = Instant::now();
/// let mut poll = Poll::new().unwrap();
/// let mut drivers = [
///     Driver::client(a, auth(1), ConnectionConfig::default(), now),
///     Driver::server(b, auth(2), ConnectionConfig::default(), now),
/// ];
/// for (i, d) in drivers.iter_mut().enumerate() {
///     d.register(poll.registry(), Token(i)).unwrap();
/// }
/// let mut events = Events::with_capacity(8);
/// let mut received = Vec::new();
/// let mut closed = 0;
/// while closed < 2 {
///     let deadline = drivers.iter().filter_map(|d| d.next_deadline()).min();
///     let busy = drivers.iter().any(|d| d.wants_read());
///     let timeout = if busy { Some(std::time::Duration::ZERO) } else {
///         deadline.map(|d| d.saturating_duration_since(Instant::now()))
///     };
///     poll.poll(&mut events, timeout).unwrap();
///     let now = Instant::now();
///     for ev in events.iter() {
///         let d = &mut drivers[ev.token().0];
///         if ev.is_readable() || ev.is_read_closed() || ev.is_error() { d.on_readable(now); }
///         if ev.is_writable() || ev.is_write_closed() || ev.is_error() { d.on_writable(now); }
///     }
///     for (i, d) in drivers.iter_mut().enumerate() {
///         if d.wants_read() { d.on_readable(now); }
///         if d.next_deadline().is_some_and(|t| t <= now) { d.on_timeout(now); }
///         while let Some(event) = d.poll_event() {
///             match event {
///                 // The client sends one tensor and closes gracefully
///                 // (what is queued is still written).
///                 Event::Established { .. } if i == 0 => {
///                     let s = d.open_stream().unwrap();
///                     d.send(s, Bytes::from_static(b"hello tensor")).unwrap();
///                     d.finish(s).unwrap();
///                     d.close();
///                 }
///                 Event::Data { payload, .. } => received.extend_from_slice(&payload),
///                 // The server closes once the tensor is complete.
///                 Event::StreamEnd { .. } => d.close(),
///                 Event::Closed { .. } => closed += 1,
///                 _ => {}
///             }
///         }
///     }
/// }
/// assert_eq!(received, b"hello tensor");
/// ```
#[derive(Debug)]
pub struct Driver<S, A = SharedAuthenticator> {
    io: S,
    conn: Connection,
    auth: A,
    registry: Option<Registry>,
    read_limit: usize,
    /// The last `on_readable` stopped at its read limit.
    more_to_read: bool,
    /// The drive loop asoc-async runs too: receive buffer and read sizing,
    /// vectored writes, flushing, and the linger of a graceful close, whose
    /// `Closed` is held back until the transport flushed its own output
    /// (TLS records), or until the send-stall timeout gives up on it.
    core: Core,
}

impl<S: Source + Read + Write, A: AuthHandle> Driver<S, A> {
    /// The client side over `io` (the side that opened the transport): its
    /// first frame is a fresh HELLO2 from `auth` (v2, any key-holding
    /// server).
    pub fn client(io: S, auth: A, config: ConnectionConfig, now: Instant) -> Self {
        Self::client_with(io, auth, config, ClientOptions::v2(), now)
    }

    /// [`client`](Self::client) with `options`: the version to speak and
    /// the node id a v2 server must prove.
    pub fn client_with(
        io: S,
        auth: A,
        config: ConnectionConfig,
        options: ClientOptions,
        now: Instant,
    ) -> Self {
        let conn = auth.with_auth(|a| a.client(now, asoc_async::unix_ms(), config, options));
        Self::from_connection(io, conn, auth)
    }

    /// The server side over a freshly accepted `io`: it expects a HELLO
    /// within the handshake timeout.
    pub fn server(io: S, auth: A, config: ConnectionConfig, now: Instant) -> Self {
        Self::from_connection(io, Connection::server(config, now), auth)
    }
}

impl<S: Source + Read + Write, A: Judge> Driver<S, A> {
    /// Drives a connection built elsewhere (for example handed out by an
    /// `asoc_proto::node::Node`), with `auth` giving its handshake verdicts
    /// (see [`Judge`]).
    pub fn from_connection(io: S, conn: Connection, auth: A) -> Self {
        Self {
            io,
            conn,
            auth,
            registry: None,
            read_limit: DEFAULT_READ_LIMIT,
            more_to_read: false,
            core: Core::new(DriverConfig::default().receive_buffer()),
        }
    }

    /// Registers the source with `registry` under `token`, for reading and
    /// writing at once (edge-triggered: an event only when readiness comes
    /// back). The driver keeps a clone of the registry to deregister once
    /// closed.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let own = registry.try_clone()?;
        registry.register(&mut self.io, token, Interest::READABLE | Interest::WRITABLE)?;
        self.registry = Some(own);
        Ok(())
    }

    /// Removes the source from its registry (the driver does this itself
    /// once it reported `Closed`).
    pub fn deregister(&mut self) -> io::Result<()> {
        self.registry
            .take()
            .map_or(Ok(()), |r| r.deregister(&mut self.io))
    }

    /// The source is readable: reads until it would block, hits EOF, or the
    /// read limit of this call is used up (then [`wants_read`](Self::wants_read)
    /// is true), feeding each read to the connection and giving a received
    /// HELLO or ACCEPT its verdict. Then writes what became pending (the
    /// server's ACCEPT, for one).
    pub fn on_readable(&mut self, now: Instant) {
        let mut left = self.read_limit;
        while left > 0 && !self.core.at_eof() && !self.conn.is_closed() {
            let io = &mut self.io;
            match self
                .core
                .read(&mut self.conn, now, |buf, max| read_once(io, buf, max))
            {
                Poll::Ready(Received::Input(n)) => {
                    left = left.saturating_sub(n);
                    self.auth.judge(now, &mut self.conn);
                }
                Poll::Ready(_) => {}
                Poll::Pending => break,
            }
        }
        self.more_to_read = left == 0;
        self.flush(now);
    }

    /// The source is writable: writes pending output (vectored, payloads not
    /// copied) until done or the socket would block, then flushes the
    /// transport ([`Write::flush`]).
    ///
    /// A transport that buffers output of its own (a
    /// [`TlsStream`](crate::TlsStream) holding TLS records) says so by
    /// returning `WouldBlock` from `flush`: the driver flushes again on the
    /// next writable event until a flush succeeds, and after a graceful
    /// [`close`](Self::close) holds back the `Closed` event until then
    /// (within the send-stall timeout). Plain sockets flush at once.
    pub fn on_writable(&mut self, now: Instant) {
        self.flush(now);
    }

    fn flush(&mut self, now: Instant) {
        let io = &mut self.io;
        self.core
            .write(&mut self.conn, now, |bufs| write_once(io, bufs));
        if !self.conn.is_closed() || self.core.linger_deadline().is_some() {
            // A plain `Write` gives no sign of output it holds itself.
            self.core.expect_flush();
            self.core.flush(&mut self.conn, now, || match io.flush() {
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    Poll::Pending
                }
                other => Poll::Ready(other),
            });
        }
    }

    /// The deadline of [`next_deadline`](Self::next_deadline) passed (calling
    /// early is harmless).
    pub fn on_timeout(&mut self, now: Instant) {
        self.core.on_timeout(&mut self.conn, now);
        self.flush(now);
    }

    getters! {
        /// When [`on_timeout`](Self::on_timeout) must be called next, if ever.
        fn next_deadline(&self) -> Option<Instant> = self.core.deadline(&self.conn);
        /// Whether [`on_readable`](Self::on_readable) stopped at its read limit
        /// with data possibly left in the socket. mio reports readiness once per
        /// edge, so call `on_readable` again without waiting for an event.
        fn wants_read(&self) -> bool =
            self.more_to_read && !self.core.at_eof() && !self.conn.is_closed();
    }

    /// Sets how many bytes one [`on_readable`](Self::on_readable) call reads
    /// at most (default [`DEFAULT_READ_LIMIT`]; at least one read is always
    /// made). A bound keeps a fast peer from starving the rest of the loop
    /// and bounds the events queued per call.
    pub fn set_read_limit(&mut self, bytes: usize) {
        self.read_limit = bytes.max(1);
    }

    /// The next event of the connection: `Established`, `Data`, `StreamEnd`,
    /// `StreamIncomplete`, `Closed`, ... (see [`Event`]). Drain until `None`
    /// after every call above. Once it returned `Closed`, the source is
    /// deregistered.
    ///
    /// After a graceful [`close`](Self::close), `Closed` comes once the
    /// transport flushed (see [`on_writable`](Self::on_writable)).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.core.linger_deadline().is_none() {
            match self.conn.poll_event()? {
                // Only a graceful close ends with `Local`: the transport's
                // own output still goes out, within the send-stall timeout.
                Event::Closed {
                    reason: CloseReason::Local,
                } => {
                    let now = Instant::now();
                    self.core.start_linger(&self.conn, now);
                    self.flush(now);
                }
                closed @ Event::Closed { .. } => {
                    let _ = self.deregister();
                    return Some(closed);
                }
                other => return Some(other),
            }
        }
        if self.core.unflushed() && self.core.lingering(Instant::now()) {
            return None;
        }
        self.core.end_linger();
        let _ = self.deregister();
        Some(Event::Closed {
            reason: CloseReason::Local,
        })
    }

    /// Opens an outgoing stream (once established) and returns its id.
    pub fn open_stream(&mut self) -> Result<StreamId, SendError> {
        self.conn.open_stream()
    }

    /// Queues `chunk` (not copied) as one DATA frame of `stream` and writes
    /// as much as the socket takes. [`SendError::WouldBlock`] is
    /// backpressure: retry after [`on_writable`](Self::on_writable) drained
    /// output (see [`can_send`](Self::can_send)). Any other refusal of a
    /// chunk poisons its stream: later `send` and [`finish`](Self::finish)
    /// on it fail with [`SendError::Poisoned`] and nothing more of it is
    /// written (see [`Connection::send`]).
    pub fn send(&mut self, stream: StreamId, chunk: Bytes) -> Result<(), SendError> {
        self.command(|conn, now| conn.send(now, stream, chunk))
    }

    /// Queues the END frame of `stream`; fails with
    /// [`SendError::Poisoned`], sending nothing, once a chunk of it was
    /// refused.
    pub fn finish(&mut self, stream: StreamId) -> Result<(), SendError> {
        self.command(|conn, now| conn.finish(now, stream))
    }

    /// Closes gracefully: what is queued is still written, then
    /// `Closed { reason: Local }`.
    pub fn close(&mut self) {
        let _ = self.command(|conn, now| {
            conn.close(now);
            Ok(())
        });
    }

    fn command<T>(
        &mut self,
        f: impl FnOnce(&mut Connection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let now = Instant::now();
        let done = f(&mut self.conn, now)?;
        self.flush(now);
        Ok(done)
    }

    getters! {
        /// Whether [`send`](Self::send) would accept a chunk now.
        fn can_send(&self) -> bool = self.conn.can_send();
        /// Whether the connection is closed.
        fn is_closed(&self) -> bool = self.conn.is_closed();
        /// The protocol state machine, for queries (role, session, stats, ...).
        fn connection(&self) -> &Connection = &self.conn;
        /// The authenticator handle (or other [`Judge`]).
        fn auth(&self) -> &A = &self.auth;
        /// The transport.
        fn get_ref(&self) -> &S = &self.io;
    }

    /// The transport, mutably (reading or writing it directly corrupts the
    /// connection).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Deregisters and gives the transport back.
    pub fn into_inner(mut self) -> S {
        let _ = self.deregister();
        self.io
    }
}

/// Reads once from `io` into `buf` (at most `max` bytes, zeroed first);
/// `Poll::Pending` where it would block.
fn read_once(io: &mut impl Read, buf: &mut BytesMut, max: usize) -> Poll<io::Result<usize>> {
    let room = asoc_async::read_room(buf, max, ZEROED_WINDOW);
    loop {
        match crate::rt::read_zeroed(io, buf, room) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if would_block(&e) => return Poll::Pending,
            other => return Poll::Ready(other),
        }
    }
}

/// Writes `bufs` to `io` once (vectored); `Poll::Pending` where it would
/// block.
fn write_once(io: &mut impl Write, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
    loop {
        match io.write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if would_block(&e) => return Poll::Pending,
            other => return Poll::Ready(other),
        }
    }
}

/// `NotConnected` is a connect still in progress.
fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
    )
}
