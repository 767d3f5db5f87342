//! A small executor and reactor over one `mio::Poll` on a thread of its
//! own: [`Mio`] implements asoc-async's `Runtime` and `Net`, and [`MioIo`]
//! its `Transport` over any mio source, so the node and connection of
//! asoc-async, the same code that runs on tokio and smol, run on a mio loop.
//!
//! Tasks are woken through a ready queue (and the poll's `Waker` when the
//! loop sleeps); sources are registered for both directions once, edge
//! triggered, and an operation waits only after seeing `WouldBlock`;
//! timers are an ordered map whose first deadline bounds the poll.

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use asoc_async::{BoxFuture, BoxFutureRef, Net, Runtime, Transport};
use async_task::Runnable;
use atomic_waker::AtomicWaker;
use bytes::BytesMut;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Token};

const WAKER: Token = Token(0);
/// At most this much spare capacity is offered per read (and zeroed first
/// for sources other than TCP streams, which read into initialised memory).
const READ_WINDOW: usize = 256 * 1024;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tasks ready to run, and the means to wake the loop for them.
struct Queue {
    ready: Mutex<VecDeque<Runnable>>,
    waker: mio::Waker,
    /// The loop is in (or about to enter) `poll`: wakes must reach it. The
    /// loop sets it before its last look at the queue, and the queue's lock
    /// orders that look against a push, so no wake is lost.
    parked: AtomicBool,
}

impl Queue {
    fn nudge(&self) {
        if self.parked.load(Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// The wakers of one registered source.
#[derive(Default)]
struct IoState {
    read: AtomicWaker,
    write: AtomicWaker,
}

struct Reactor {
    registry: mio::Registry,
    queue: Arc<Queue>,
    sources: Mutex<HashMap<usize, Arc<IoState>>>,
    next_token: AtomicUsize,
    timers: Mutex<BTreeMap<(Instant, u64), Waker>>,
    next_timer: AtomicU64,
    /// Held by every spawned future: the loop ends when only this is left.
    tasks: Arc<()>,
    linger: Duration,
}

/// A mio loop on a thread of its own, running asoc-async's tasks: the
/// runtime of [`Node`](crate::Node) and [`MioConnection`](crate::MioConnection),
/// usable directly with `asoc_async` (it implements `Runtime` and `Net`).
/// The thread ends once no task is left and every handle is dropped.
#[derive(Clone)]
pub struct Mio {
    reactor: Arc<Reactor>,
    /// Dropped after `reactor` (fields drop in order): the loop, nudged,
    /// already sees this handle gone. Nudging from `Mio`'s own `drop`
    /// would come before, and a loop checking in between would sleep on.
    _nudge: Nudge,
}

/// Nudges the loop when dropped: the last handle may be going.
#[derive(Clone)]
struct Nudge(Arc<Queue>);

impl Drop for Nudge {
    fn drop(&mut self) {
        self.0.nudge();
    }
}

impl fmt::Debug for Mio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mio").finish_non_exhaustive()
    }
}

impl Mio {
    /// Starts a loop on a thread named `name`. `linger` bounds how long a
    /// closed connection waits for its transport's own buffered output (TLS
    /// records) before the transport is dropped.
    pub fn new(name: &str, linger: Duration) -> io::Result<Self> {
        let poll = mio::Poll::new()?;
        let reactor = Arc::new(Reactor {
            registry: poll.registry().try_clone()?,
            queue: Arc::new(Queue {
                ready: Mutex::new(VecDeque::new()),
                waker: mio::Waker::new(poll.registry(), WAKER)?,
                parked: AtomicBool::new(false),
            }),
            sources: Mutex::new(HashMap::new()),
            next_token: AtomicUsize::new(1),
            timers: Mutex::new(BTreeMap::new()),
            next_timer: AtomicU64::new(0),
            tasks: Arc::new(()),
            linger,
        });
        let looped = reactor.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(poll, looped))?;
        let _nudge = Nudge(reactor.queue.clone());
        Ok(Self { reactor, _nudge })
    }

    /// `fut`'s output, or `None` once `timeout` passed.
    pub(crate) async fn within<T>(
        &self,
        timeout: Duration,
        fut: impl Future<Output = Option<T>>,
    ) -> Option<T> {
        let sleep = Sleep::new(self, Instant::now() + timeout);
        futures_lite::future::or(fut, async {
            sleep.await;
            None
        })
        .await
    }
}

fn run(mut poll: mio::Poll, reactor: Arc<Reactor>) {
    let queue = reactor.queue.clone();
    let mut events = Events::with_capacity(256);
    loop {
        let batch = std::mem::take(&mut *lock(&queue.ready));
        for task in batch {
            task.run();
        }
        if Arc::strong_count(&reactor.tasks) == 1 && Arc::strong_count(&reactor) == 1 {
            return;
        }
        queue.parked.store(true, Ordering::SeqCst);
        let timeout = if lock(&queue.ready).is_empty() {
            let first = lock(&reactor.timers).keys().next().map(|k| k.0);
            first.map(|d| d.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        // An error is only ever EINTR: like a spurious wake-up.
        let _ = poll.poll(&mut events, timeout);
        queue.parked.store(false, Ordering::SeqCst);
        for ev in events.iter().filter(|ev| ev.token() != WAKER) {
            let Some(state) = lock(&reactor.sources).get(&ev.token().0).cloned() else {
                continue;
            };
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                state.read.wake();
            }
            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                state.write.wake();
            }
        }
        let now = Instant::now();
        let due = {
            let mut timers = lock(&reactor.timers);
            let later = timers.split_off(&(now, u64::MAX));
            std::mem::replace(&mut *timers, later)
        };
        due.into_values().for_each(Waker::wake);
    }
}

impl Runtime for Mio {
    fn spawn(&self, task: BoxFuture<()>) {
        let (live, queue) = (self.reactor.tasks.clone(), self.reactor.queue.clone());
        let future = async move {
            let _live = live;
            task.await;
        };
        let (runnable, task) = async_task::spawn(future, move |runnable| {
            lock(&queue.ready).push_back(runnable);
            queue.nudge();
        });
        task.detach();
        runnable.schedule();
    }

    fn sleep_until(&self, deadline: Instant) -> BoxFuture<()> {
        Box::pin(Sleep::new(self, deadline))
    }
}

/// A timer of the loop: its key (deadline, then a unique number) in the
/// timer map while a task waits on it.
pub(crate) struct Sleep {
    rt: Mio,
    key: (Instant, u64),
}

impl Sleep {
    fn new(rt: &Mio, deadline: Instant) -> Self {
        let id = rt.reactor.next_timer.fetch_add(1, Ordering::Relaxed);
        let (rt, key) = (rt.clone(), (deadline, id));
        Self { rt, key }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let reactor = &self.rt.reactor;
        let mut timers = lock(&reactor.timers);
        if Instant::now() >= self.key.0 {
            timers.remove(&self.key);
            return Poll::Ready(());
        }
        if !timers
            .get(&self.key)
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            timers.insert(self.key, cx.waker().clone());
        }
        drop(timers);
        // A sleeping loop must recompute its timeout.
        reactor.queue.nudge();
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        lock(&self.rt.reactor.timers).remove(&self.key);
    }
}

/// Runs `op`; on `WouldBlock` registers the task and tries once more, so a
/// readiness edge between the two is never missed.
fn poll_ready<T>(
    waker: &AtomicWaker,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    let mut registered = false;
    loop {
        match op() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if registered {
                    return Poll::Pending;
                }
                waker.register(cx.waker());
                registered = true;
            }
            result => return Poll::Ready(result),
        }
    }
}

/// Reads once into the first `window` bytes of `buf`'s spare capacity,
/// zeroed first: `Read` takes initialised memory.
pub(crate) fn read_zeroed(
    io: &mut impl Read,
    buf: &mut BytesMut,
    window: usize,
) -> io::Result<usize> {
    match asoc_async::read_zeroed(buf, window, |spare| Poll::Ready(io.read(spare))) {
        Poll::Ready(result) => result,
        // The read above is synchronous and never pending.
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl<S> MioIo<S> {
    /// Runs `op` on the source until it stops would-blocking, waiting for
    /// read readiness (`read`) or write readiness in between.
    async fn ready<T>(&self, read: bool, mut op: impl FnMut(&S) -> io::Result<T>) -> io::Result<T> {
        let state = &self.reg.state;
        let waker = if read { &state.read } else { &state.write };
        poll_fn(|cx| poll_ready(waker, cx, || op(&self.io))).await
    }
}

/// The registration of one source; dropping it forgets the source's
/// wakers (closing the source removes it from the poll).
struct Reg {
    rt: Mio,
    token: usize,
    state: Arc<IoState>,
}

impl Drop for Reg {
    fn drop(&mut self) {
        lock(&self.rt.reactor.sources).remove(&self.token);
    }
}

/// A mio source registered with a [`Mio`] loop, for both directions at
/// once; for byte streams, an asoc-async `Transport`.
pub struct MioIo<S> {
    io: S,
    reg: Reg,
    linger: Option<Sleep>,
}

// Nothing is pinned through a `MioIo`: the source moves freely.
impl<S> Unpin for MioIo<S> {}

impl<S: Source> MioIo<S> {
    /// Registers `io` with `rt`'s poll.
    pub fn new(rt: &Mio, mut io: S) -> io::Result<Self> {
        let reactor = &rt.reactor;
        let token = reactor.next_token.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(IoState::default());
        // In the map first: an event may come as soon as it is registered.
        lock(&reactor.sources).insert(token, state.clone());
        let reg = Reg {
            rt: rt.clone(),
            token,
            state,
        };
        let both = Interest::READABLE | Interest::WRITABLE;
        reactor.registry.register(&mut io, Token(token), both)?;
        Ok(Self {
            io,
            reg,
            linger: None,
        })
    }
}

impl<S: Source + Read + Write + Send + 'static> Transport for MioIo<S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let window = asoc_async::read_room(buf, max, READ_WINDOW);
        let (io, waker) = (&mut self.io, &self.reg.state.read);
        match (io as &mut dyn Any).downcast_mut::<TcpStream>() {
            Some(tcp) => poll_ready(waker, cx, || asoc_async::recv_spare(tcp, buf, window)),
            None => poll_ready(waker, cx, || read_zeroed(io, buf, window)),
        }
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = &mut self.io;
        poll_ready(&self.reg.state.write, cx, || io.write_vectored(bufs))
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let io = &mut self.io;
        poll_ready(&self.reg.state.write, cx, || io.flush())
    }

    /// Flushes what the transport still holds (TLS records) within the
    /// loop's linger time; dropping the transport closes it.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.poll_flush(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        let rt = &self.reg.rt;
        let timer = self
            .linger
            .get_or_insert_with(|| Sleep::new(rt, Instant::now() + rt.reactor.linger));
        Pin::new(timer).poll(cx).map(Ok)
    }
}

impl MioIo<TcpStream> {
    /// Connects to `addr` without blocking the loop.
    async fn connect(rt: &Mio, addr: SocketAddr) -> io::Result<Self> {
        let this = Self::new(rt, TcpStream::connect(addr)?)?;
        this.ready(false, |io| {
            if let Some(e) = io.take_error()? {
                return Err(e);
            }
            match io.peer_addr() {
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    Err(io::ErrorKind::WouldBlock.into())
                }
                other => other.map(drop),
            }
        })
        .await?;
        this.io.set_nodelay(true)?;
        Ok(this)
    }
}

impl Net for Mio {
    type Stream = MioIo<TcpStream>;
    type Listener = MioIo<TcpListener>;
    type Udp = MioIo<UdpSocket>;

    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<io::Result<Self::Listener>> {
        let bound = TcpListener::bind(addr).and_then(|l| MioIo::new(self, l));
        Box::pin(async move { bound })
    }

    fn tcp_local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.io.local_addr()
    }

    fn accept(
        listener: &Self::Listener,
    ) -> BoxFutureRef<'_, io::Result<(Self::Stream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, from) = listener.ready(true, TcpListener::accept).await?;
            stream.set_nodelay(true)?;
            Ok((MioIo::new(&listener.reg.rt, stream)?, from))
        })
    }

    fn connect(&self, target: String) -> BoxFuture<io::Result<(Self::Stream, SocketAddr)>> {
        let rt = self.clone();
        Box::pin(async move {
            let addrs = match target.parse::<SocketAddr>() {
                Ok(addr) => vec![addr],
                // A resolver may take seconds: never on the loop.
                Err(_) => {
                    ::blocking::unblock(move || target.to_socket_addrs().map(Iterator::collect))
                        .await?
                }
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
            for addr in addrs {
                match MioIo::connect(&rt, addr).await {
                    Ok(stream) => return Ok((stream, addr)),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<io::Result<Self::Udp>> {
        let bound = UdpSocket::bind(addr).and_then(|udp| {
            udp.set_broadcast(true)?;
            MioIo::new(self, udp)
        });
        Box::pin(async move { bound })
    }

    fn udp_local_addr(udp: &Self::Udp) -> io::Result<SocketAddr> {
        udp.io.local_addr()
    }

    fn recv_from<'a>(
        udp: &'a Self::Udp,
        buf: &'a mut [u8],
    ) -> BoxFutureRef<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(udp.ready(true, |io| io.recv_from(buf)))
    }

    fn send_to<'a>(
        udp: &'a Self::Udp,
        data: &'a [u8],
        to: SocketAddr,
    ) -> BoxFutureRef<'a, io::Result<usize>> {
        Box::pin(udp.ready(false, move |io| io.send_to(data, to)))
    }
}
