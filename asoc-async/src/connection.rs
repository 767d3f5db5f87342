//! One authenticated connection over any transport, without a node.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use asoc_proto::connection::{
    CloseReason, ConfigError, Connection as ProtoConnection, ConnectionConfig, StreamId,
};
use asoc_proto::handshake::{Authenticator, ClientOptions};
use asoc_proto::v2::WireVersion;
use uuid::Uuid;

use crate::clock::unix_ms;
use bytes::Bytes;

use crate::drive::Core;
use crate::driver::{Cmd, Driver, Judge, Order, Session, Shared};
use crate::error::Error;
use crate::runtime::{Runtime, Transport};
use crate::stream::{RecvBudget, RecvStream, SendStream};

/// Settings of a connection's task, built by [`DriverConfig::builder`];
/// [`Default`] gives the defaults.
#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    connection: ConnectionConfig,
    client: ClientOptions,
    receive_buffer: usize,
    command_queue: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            connection: ConnectionConfig::default(),
            client: ClientOptions::v2(),
            receive_buffer: 16 * 1024 * 1024,
            command_queue: 8,
        }
    }
}

impl DriverConfig {
    /// A builder starting from the defaults; its
    /// [`build`](DriverConfigBuilder::build) checks the settings.
    pub fn builder() -> DriverConfigBuilder {
        DriverConfigBuilder(Self::default())
    }

    /// Protocol limits and timers.
    #[must_use]
    pub fn connection(&self) -> ConnectionConfig {
        self.connection
    }

    /// How [`Connection::connect`] dials: the version (v2 by default) and
    /// the node id the server must prove.
    #[must_use]
    pub fn client(&self) -> ClientOptions {
        self.client
    }

    /// Received bytes not yet taken by the application above which reading
    /// pauses.
    #[must_use]
    pub fn receive_buffer(&self) -> usize {
        self.receive_buffer
    }

    /// Commands (chunks) queued toward the task before `send` waits.
    #[must_use]
    pub fn command_queue(&self) -> usize {
        self.command_queue
    }
}

/// Builds a [`DriverConfig`]; every setter takes any value and
/// [`build`](Self::build) refuses the ones that cannot work.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct DriverConfigBuilder(DriverConfig);

impl DriverConfigBuilder {
    /// Protocol limits and timers (default [`ConnectionConfig::default`]).
    pub fn connection(mut self, config: ConnectionConfig) -> Self {
        self.0.connection = config;
        self
    }

    /// The version [`Connection::connect`] speaks (default v2; v1 only for
    /// peers that speak nothing else).
    pub fn wire(mut self, version: WireVersion) -> Self {
        self.0.client.version = version;
        self
    }

    /// The node id a v2 server must prove to [`Connection::connect`];
    /// another id closes the connection with `unexpected_peer`.
    pub fn expect_peer(mut self, node: Option<Uuid>) -> Self {
        self.0.client.expected_peer = node;
        self
    }

    /// Received bytes not yet taken by the application above which reading
    /// pauses (default 16 MiB; at least 1).
    pub fn receive_buffer(mut self, bytes: usize) -> Self {
        self.0.receive_buffer = bytes;
        self
    }

    /// Commands (chunks) queued toward the task before `send` waits
    /// (default 8; at least 1).
    pub fn command_queue(mut self, n: usize) -> Self {
        self.0.command_queue = n;
        self
    }

    /// The settings, or why they are refused: with no room for received
    /// bytes the task would never read, and with no room for a command no
    /// chunk could ever be queued.
    pub fn build(self) -> Result<DriverConfig, ConfigError> {
        for (field, value) in [
            ("receive_buffer", self.0.receive_buffer),
            ("command_queue", self.0.command_queue),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        Ok(self.0)
    }
}

/// An authenticator shared by every connection it judges, so that replays
/// are caught across connections.
pub type SharedAuthenticator = Arc<Mutex<Authenticator>>;

struct Standalone(SharedAuthenticator);

impl Judge for Standalone {
    fn drive(&mut self, now: Instant, conn: &mut ProtoConnection) {
        if conn.poll_handshake().is_some() {
            if let Ok(mut auth) = self.0.lock() {
                auth.drive(now, unix_ms(), conn);
            }
        }
    }

    fn closed(&mut self, _now: Instant, _conn: &ProtoConnection, _reason: &CloseReason) {}
}

/// A handle to an established connection; clones share it.
#[derive(Clone, Debug)]
pub struct Connection {
    session: Session,
    cmds: async_channel::Sender<Cmd>,
    incoming: async_channel::Receiver<RecvStream>,
    shared: Arc<Shared>,
}

/// Starts a connection's task for a node: new incoming streams go to
/// `deliver`. `register` sees the command channel, the shared state and
/// the sender of close-at-once orders before the task starts, so that a
/// handle to the connection exists before any of its streams is delivered.
/// The node learns the handshake's outcome through its judge.
pub(crate) fn spawn<T, R, J>(
    rt: &R,
    io: T,
    conn: ProtoConnection,
    judge: J,
    config: DriverConfig,
    deliver: Box<dyn FnMut(RecvStream) + Send>,
    register: impl FnOnce(&async_channel::Sender<Cmd>, &Arc<Shared>, async_channel::Sender<Order>),
) where
    T: Transport,
    R: Runtime,
    J: Judge,
{
    // Unbounded, but the node sends at most one abort per connection and a
    // control message per rotation step.
    let (abort_tx, abort_rx) = async_channel::unbounded();
    let (driver, cmds, shared) =
        prepare(rt, io, conn, judge, config, deliver, Some(abort_rx), false);
    register(&cmds, &shared, abort_tx);
    rt.spawn(Box::pin(driver));
}

/// A connection's driver, not yet running, with its command channel and
/// shared state. Only what the caller uses is created: every channel costs
/// allocations (its own and, on its first notification, each of its
/// events'), several per connection set-up. `outcome` says whether the
/// driver keeps the handshake's outcome for [`start`].
#[allow(clippy::too_many_arguments)]
fn prepare<T, R, J>(
    rt: &R,
    io: T,
    conn: ProtoConnection,
    judge: J,
    config: DriverConfig,
    deliver: Box<dyn FnMut(RecvStream) + Send>,
    abort: Option<async_channel::Receiver<Order>>,
    outcome: bool,
) -> (Driver<T, R, J>, async_channel::Sender<Cmd>, Arc<Shared>)
where
    T: Transport,
    R: Runtime,
    J: Judge,
{
    let (cmd_tx, cmd_rx) = async_channel::bounded(config.command_queue);
    let shared = Arc::new(Shared::default());
    let driver = Driver {
        conn,
        io,
        rt: rt.clone(),
        judge,
        cmds: Box::pin(cmd_rx),
        abort: abort.map(Box::pin),
        deliver,
        outcome: outcome.then_some(None),
        budget: RecvBudget::new(config.receive_buffer),
        shared: shared.clone(),
        streams: Default::default(),
        held: None,
        sleep: None,
        closed: None,
        shutdown_done: false,
        core: Core::new(config.receive_buffer),
        delivered: 0,
    };
    (driver, cmd_tx, shared)
}

/// The waker a handshake run in the caller's task registers: it wakes the
/// caller until the connection moves to its own task, then nothing. Without
/// it the wakers left behind in the command channel and the timer woke the
/// caller's task once more (the first command, e.g. `close`, did), and
/// tokio answers such a wake-up of a running task by waking another worker
/// thread: a futex round trip per set-up for nothing.
#[derive(Default)]
struct Handoff(Mutex<Option<Waker>>);

impl Handoff {
    fn set(&self, waker: Option<&Waker>) {
        if let Ok(mut slot) = self.0.lock() {
            match (slot.as_mut(), waker) {
                (Some(held), Some(w)) if held.will_wake(w) => {}
                _ => *slot = waker.cloned(),
            }
        }
    }
}

impl Wake for Handoff {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let waker = self.0.lock().ok().and_then(|slot| slot.clone());
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Runs the handshake in the caller's task, then moves the connection to a
/// task of its own. A handshake is a few small frames, and running it here
/// saves the caller two task switches (command in, outcome out) per
/// set-up; dropping the caller's future before the outcome drops the
/// half-open connection with it.
async fn start<T, R, J>(
    rt: &R,
    io: T,
    conn: ProtoConnection,
    judge: J,
    config: DriverConfig,
) -> Result<Connection, Error>
where
    T: Transport,
    R: Runtime,
    J: Judge,
{
    let (in_tx, in_rx) = async_channel::unbounded();
    let deliver = Box::new(move |s: RecvStream| {
        let _ = in_tx.try_send(s);
    });
    let (driver, cmds, shared) = prepare(rt, io, conn, judge, config, deliver, None, true);
    let mut driver = Box::pin(driver);
    let handoff = Arc::new(Handoff::default());
    let waker = Waker::from(handoff.clone());
    let finished = std::future::poll_fn(|cx| {
        handoff.set(Some(cx.waker()));
        match driver.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(()) => Poll::Ready(true),
            Poll::Pending if !driver.awaits_outcome() => Poll::Ready(false),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    // The driver's wakers registered so far (channels, socket, timer) now
    // wake nothing; its task registers its own when first polled.
    handoff.set(None);
    let outcome = driver.outcome.take().flatten();
    if !finished {
        rt.spawn(driver);
    }
    match outcome {
        Some(Ok(session)) => Ok(Connection {
            session,
            cmds,
            incoming: in_rx,
            shared,
        }),
        Some(Err(reason)) => Err(Error::Handshake(reason)),
        None => Err(Error::Gone),
    }
}

impl Connection {
    /// Opens the client side over `io`: sends HELLO2 (HELLO with
    /// [`DriverConfigBuilder::wire`] v1), waits for a verified ACCEPT2
    /// (ACCEPT) and, on v2, sends CONFIRM.
    pub async fn connect<T: Transport, R: Runtime>(
        rt: &R,
        io: T,
        auth: &SharedAuthenticator,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let conn = {
            let mut a = auth.lock().map_err(|_| Error::Gone)?;
            a.client(
                Instant::now(),
                unix_ms(),
                config.connection(),
                config.client(),
            )
        };
        start(rt, io, conn, Standalone(auth.clone()), config).await
    }

    /// Takes the server side of `io`: waits for a verified HELLO2 (or a v1
    /// HELLO, if the authenticator allows v1), answers ACCEPT2 (ACCEPT),
    /// and on v2 waits for the client's CONFIRM.
    pub async fn accept<T: Transport, R: Runtime>(
        rt: &R,
        io: T,
        auth: &SharedAuthenticator,
        config: DriverConfig,
    ) -> Result<Self, Error> {
        let conn = ProtoConnection::server(config.connection(), Instant::now());
        start(rt, io, conn, Standalone(auth.clone()), config).await
    }

    /// What the handshake established.
    #[must_use]
    pub fn session(&self) -> Session {
        self.session
    }

    /// Opens an outgoing stream.
    pub async fn open_stream(&self) -> Result<SendStream, Error> {
        let (tx, rx) = async_channel::bounded(1);
        self.cmds
            .send(Cmd::Open(tx))
            .await
            .map_err(|_| self.gone())?;
        let id = rx.recv().await.map_err(|_| self.gone())??;
        Ok(SendStream {
            id,
            cmds: self.cmds.clone(),
            shared: self.shared.clone(),
            in_flight: None,
        })
    }

    /// A handle to outgoing stream `id`, opened earlier through any handle
    /// of this connection (for APIs that name streams by id).
    #[must_use]
    pub fn stream(&self, id: StreamId) -> SendStream {
        SendStream {
            id,
            cmds: self.cmds.clone(),
            shared: self.shared.clone(),
            in_flight: None,
        }
    }

    /// Sends `data` as one stream of `chunk_size`-byte frames and finishes
    /// it; returns the stream id.
    pub async fn send_tensor(&self, data: Bytes, chunk_size: usize) -> Result<StreamId, Error> {
        let mut s = self.open_stream().await?;
        let id = s.id();
        s.send_chunked(data, chunk_size).await?;
        s.finish().await?;
        Ok(id)
    }

    /// The next incoming stream, `None` once the connection closed.
    pub async fn accept_stream(&self) -> Option<RecvStream> {
        self.incoming.recv().await.ok()
    }

    /// Closes gracefully: what is queued is still written.
    pub async fn close(&self) {
        let _ = self.cmds.send(Cmd::Close).await;
    }

    /// Waits until the connection closed and says why.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let listener = self.shared.on_change.listen();
            if let Some(reason) = self.shared.reason() {
                return reason;
            }
            listener.await;
        }
    }

    /// Why the connection closed, if it has.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.shared.reason()
    }

    fn gone(&self) -> Error {
        match self.shared.reason() {
            Some(reason) => Error::Closed(reason),
            None => Error::Gone,
        }
    }
}
