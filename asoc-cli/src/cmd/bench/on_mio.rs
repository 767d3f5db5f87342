//! The benches on mio, in the adapter's thread model: a mio loop per side
//! owns the sockets, and the application works from threads of its own.
//!
//! - Throughput: the baseline is, per connection, a writer loop writing
//!   `chunk`-byte writes and a reader loop discarding; ASoc is, per
//!   connection, a pair of asoc-mio [`Node`]s (each its own loop thread)
//!   with one sending and one receiving thread per stream.
//! - Set-ups: one server loop and one client loop thread, for both sides;
//!   ASoc drives each connection with asoc-mio's public [`Driver`], the
//!   baseline does a request/reply round trip on plain mio sockets.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use asoc_mio::{Driver, Node, NodeBuilder, PeerRef, SharedAuthenticator};
use asoc_proto::auth::ApiKey;
use asoc_proto::connection::{CloseReason, ConnectionConfig, Event};
use asoc_testkit::bench::{bench_authenticator, Workload, KEY, SETUP_REPLY, SETUP_REQUEST};
use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

/// A measurement that cannot finish within this is reported as failed
/// rather than hanging the command.
const STUCK: Duration = Duration::from_secs(120);

const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

type Res<T> = Result<T, String>;

fn io_err(what: &str) -> impl Fn(io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn join<T>(h: JoinHandle<Res<T>>) -> Res<T> {
    h.join()
        .unwrap_or_else(|_| Err("a bench thread panicked".into()))
}

/// `poll` with the watchdog: fails once `start` is [`STUCK`] ago.
fn poll(p: &mut Poll, events: &mut Events, timeout: Option<Duration>, start: Instant) -> Res<()> {
    if start.elapsed() > STUCK {
        return Err(format!("no progress within {STUCK:?}"));
    }
    let t = timeout.map_or(Duration::from_secs(1), |t| t.min(Duration::from_secs(1)));
    match p.poll(events, Some(t)) {
        Err(e) if e.kind() != ErrorKind::Interrupted => Err(format!("poll: {e}")),
        _ => Ok(()),
    }
}

/// A connected, non-blocking stream to `addr` with Nagle off, as asoc-mio
/// sets up its own.
fn connect(addr: SocketAddr) -> Res<TcpStream> {
    let s = StdStream::connect(addr).map_err(io_err("connect"))?;
    s.set_nodelay(true).map_err(io_err("nodelay"))?;
    s.set_nonblocking(true).map_err(io_err("nonblocking"))?;
    Ok(TcpStream::from_std(s))
}

// ----- throughput -----------------------------------------------------------

/// Writes `bytes` in `chunk`-byte writes on its own loop.
fn raw_writer(mut io: TcpStream, bytes: u64, chunk: usize) -> Res<()> {
    let mut p = Poll::new().map_err(io_err("poll"))?;
    p.registry()
        .register(&mut io, Token(0), Interest::WRITABLE)
        .map_err(io_err("register"))?;
    let mut events = Events::with_capacity(4);
    let payload = vec![0x5au8; chunk];
    let (start, mut left, mut off) = (Instant::now(), bytes, 0usize);
    while left > 0 {
        let n = left.min(chunk as u64) as usize;
        match io.write(&payload[off..n]) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(w) if off + w == n => {
                left -= n as u64;
                off = 0;
            }
            Ok(w) => off += w,
            Err(e) if e.kind() == ErrorKind::WouldBlock => poll(&mut p, &mut events, None, start)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    io.shutdown(Shutdown::Write).map_err(io_err("shutdown"))
}

/// Reads and discards until EOF on its own loop; returns the byte count.
fn raw_reader(mut io: TcpStream) -> Res<u64> {
    let mut p = Poll::new().map_err(io_err("poll"))?;
    p.registry()
        .register(&mut io, Token(0), Interest::READABLE)
        .map_err(io_err("register"))?;
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 1 << 20];
    let (start, mut total) = (Instant::now(), 0u64);
    loop {
        match io.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::WouldBlock => poll(&mut p, &mut events, None, start)?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Raw TCP on mio: `connections` connections, each writing `bytes` in
/// `chunk` writes to a reader that discards. Returns bytes per second.
pub(super) fn raw_tcp(w: Workload) -> Res<f64> {
    let listener = StdListener::bind(SocketAddr::from(LOOPBACK)).map_err(io_err("bind"))?;
    let addr = listener.local_addr().map_err(io_err("bind"))?;
    let start = Instant::now();
    let (mut readers, mut writers) = (Vec::new(), Vec::new());
    for _ in 0..w.connections {
        let io = connect(addr)?;
        let (peer, _) = listener.accept().map_err(io_err("accept"))?;
        peer.set_nonblocking(true).map_err(io_err("nonblocking"))?;
        let peer = TcpStream::from_std(peer);
        readers.push(std::thread::spawn(move || raw_reader(peer)));
        writers.push(std::thread::spawn(move || raw_writer(io, w.bytes, w.chunk)));
    }
    for h in writers {
        join(h)?;
    }
    let mut total = 0;
    for h in readers {
        total += join(h)?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn node(i: usize, side: u8, seed: u8, chunk: usize) -> Res<Node> {
    let key = ApiKey::new(KEY).map_err(|e| e.to_string())?;
    let mut id = [seed; 16];
    id[0] = i as u8;
    id[1] = side;
    NodeBuilder::new("bench", key)
        .bind(SocketAddr::from(LOOPBACK))
        .node_id(uuid::Uuid::from_bytes(id))
        .seed([seed ^ side; 32])
        .chunk_size(chunk)
        .start()
        .map_err(|e| format!("node: {e}"))
}

/// ASoc on asoc-mio: `connections` pairs of nodes, each sending `bytes`
/// over `streams` concurrent streams in `chunk`-byte frames to a receiver
/// that discards. Returns bytes per second.
pub(super) fn asoc(w: Workload, seed: u8) -> Res<f64> {
    let mut pairs = Vec::new();
    for i in 0..w.connections {
        let rx = node(i, 1, seed, w.chunk)?;
        let tx = node(i, 2, seed, w.chunk)?;
        let peer = tx
            .connect(rx.local_addr())
            .map_err(|e| format!("connect: {e}"))?;
        pairs.push((tx, rx, peer.id));
    }
    let streams = w.streams.max(1);
    let per_stream = w.bytes / streams as u64;
    let payload = Bytes::from(vec![0x5au8; w.chunk]);
    let start = Instant::now();
    let (mut senders, mut receivers) = (Vec::new(), Vec::new());
    for (tx, rx, conn) in &pairs {
        for _ in 0..streams {
            let (tx, payload, conn) = (tx.clone(), payload.clone(), *conn);
            senders.push(std::thread::spawn(move || -> Res<()> {
                let failed = |e: asoc_mio::Error| format!("send: {e}");
                let mut s = tx.open_stream(PeerRef::Conn(conn)).map_err(failed)?;
                let mut left = per_stream;
                while left > 0 {
                    let n = left.min(payload.len() as u64) as usize;
                    s.send(payload.slice(..n)).map_err(failed)?;
                    left -= n as u64;
                }
                s.finish().map_err(failed)
            }));
            let rx = rx.clone();
            receivers.push(std::thread::spawn(move || -> Res<u64> {
                let mut incoming = rx.accept_stream_timeout(STUCK).ok_or("no stream arrived")?;
                let mut n = 0u64;
                while let Some(c) = incoming
                    .stream
                    .chunk()
                    .map_err(|e| format!("receive: {e}"))?
                {
                    n += c.len() as u64;
                }
                Ok(n)
            }));
        }
    }
    for h in senders {
        join(h)?;
    }
    let mut total = 0;
    for h in receivers {
        total += join(h)?;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for (tx, rx, _) in pairs {
        tx.shutdown(Duration::from_secs(1));
        rx.shutdown(Duration::from_secs(1));
    }
    Ok(rate)
}

// ----- connection set-ups ---------------------------------------------------

const LISTENER: Token = Token(usize::MAX);

/// One side of a set-up loop: what it does with its connections.
trait Side {
    /// A connection's state.
    type Conn;
    /// Starts serving a freshly accepted `io` (server) or dialing over a
    /// freshly connected one (client), registered under `token`.
    fn start(&mut self, io: TcpStream, p: &Poll, token: Token) -> Res<Self::Conn>;
    /// Handles readiness (or nothing, after a wake-up); `Ok(true)` once
    /// the connection is done and may be dropped.
    fn step(&mut self, conn: &mut Self::Conn, ev: Option<&mio::event::Event>) -> Res<bool>;
    /// The earliest timer of `conn`.
    fn deadline(&self, _conn: &Self::Conn) -> Option<Instant> {
        None
    }
}

/// A set-up loop: the server accepts exactly `count` connections (client
/// `None`), the client keeps `in_flight` of `count` connections to `addr`
/// open at a time. Returns when all are done.
fn run_loop<S: Side>(
    mut side: S,
    count: usize,
    mut listener: Option<TcpListener>,
    client: Option<(SocketAddr, usize)>,
) -> Res<()> {
    let mut p = Poll::new().map_err(io_err("poll"))?;
    if let Some(l) = listener.as_mut() {
        p.registry()
            .register(l, LISTENER, Interest::READABLE)
            .map_err(io_err("register"))?;
    }
    let mut events = Events::with_capacity(64);
    let mut conns: HashMap<usize, S::Conn> = HashMap::new();
    let (start, mut opened, mut done, mut next) = (Instant::now(), 0usize, 0usize, 0usize);
    while done < count {
        if let Some((addr, in_flight)) = client {
            while opened < count && conns.len() < in_flight {
                let token = Token(next);
                let conn = side.start(connect(addr)?, &p, token)?;
                conns.insert(next, conn);
                (next, opened) = (next + 1, opened + 1);
            }
        }
        let deadline = conns.values().filter_map(|c| side.deadline(c)).min();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        poll(&mut p, &mut events, timeout, start)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                let Some(l) = listener.as_ref() else { continue };
                while opened < count {
                    match l.accept() {
                        Ok((io, _)) => {
                            io.set_nodelay(true).map_err(io_err("nodelay"))?;
                            let token = Token(next);
                            let conn = side.start(io, &p, token)?;
                            conns.insert(next, conn);
                            (next, opened) = (next + 1, opened + 1);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(format!("accept: {e}")),
                    }
                }
                continue;
            }
            let t = ev.token().0;
            if let Some(c) = conns.get_mut(&t) {
                if side.step(c, Some(ev))? {
                    conns.remove(&t);
                    done += 1;
                }
            }
        }
        // Timers and reads left over from a read limit.
        let mut finished = Vec::new();
        for (t, c) in &mut conns {
            if side.step(c, None)? {
                finished.push(*t);
            }
        }
        for t in finished {
            conns.remove(&t);
            done += 1;
        }
    }
    Ok(())
}

/// Raw set-up, server side: read the request, answer, wait for the close.
struct RawServer;
/// Raw set-up, client side: send the request, read the reply, close.
struct RawClient;

/// A raw connection and how many bytes it read.
struct RawConn {
    io: TcpStream,
    got: usize,
}

fn read_some(c: &mut RawConn) -> Res<bool> {
    let mut buf = [0u8; 256];
    loop {
        match c.io.read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => c.got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Writes all of `data` to a socket whose send buffer is empty; a 50-byte
/// write there either goes through whole or something is wrong.
fn write_small(io: &mut TcpStream, data: &[u8]) -> Res<()> {
    match io.write(data) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(n) => Err(format!("short write of {n} bytes")),
        Err(e) => Err(format!("write: {e}")),
    }
}

impl Side for RawServer {
    type Conn = (RawConn, bool);

    fn start(&mut self, mut io: TcpStream, p: &Poll, token: Token) -> Res<Self::Conn> {
        p.registry()
            .register(&mut io, token, Interest::READABLE)
            .map_err(io_err("register"))?;
        Ok((RawConn { io, got: 0 }, false))
    }

    fn step(&mut self, (c, replied): &mut Self::Conn, ev: Option<&mio::event::Event>) -> Res<bool> {
        if ev.is_none() {
            return Ok(false);
        }
        let eof = read_some(c)?;
        if !*replied && c.got >= SETUP_REQUEST {
            write_small(&mut c.io, &[0x5a; SETUP_REPLY])?;
            *replied = true;
        }
        Ok(eof)
    }
}

impl Side for RawClient {
    type Conn = RawConn;

    fn start(&mut self, mut io: TcpStream, p: &Poll, token: Token) -> Res<RawConn> {
        write_small(&mut io, &[0xa5; SETUP_REQUEST])?;
        p.registry()
            .register(&mut io, token, Interest::READABLE)
            .map_err(io_err("register"))?;
        Ok(RawConn { io, got: 0 })
    }

    fn step(&mut self, c: &mut RawConn, ev: Option<&mio::event::Event>) -> Res<bool> {
        if ev.is_none() {
            return Ok(false);
        }
        if read_some(c)? && c.got < SETUP_REPLY {
            return Err("the server closed before replying".into());
        }
        // Dropping the stream closes it.
        Ok(c.got >= SETUP_REPLY)
    }
}

/// ASoc set-up over asoc-mio's [`Driver`]: the client closes once the
/// handshake is established; either side is done at `Closed`.
struct AsocSide {
    auth: SharedAuthenticator,
    client: bool,
}

impl Side for AsocSide {
    type Conn = Driver<TcpStream>;

    fn start(&mut self, io: TcpStream, p: &Poll, token: Token) -> Res<Self::Conn> {
        let (now, config) = (Instant::now(), ConnectionConfig::default());
        let mut d = if self.client {
            Driver::client(io, self.auth.clone(), config, now)
        } else {
            Driver::server(io, self.auth.clone(), config, now)
        };
        d.register(p.registry(), token)
            .map_err(io_err("register"))?;
        Ok(d)
    }

    fn step(&mut self, d: &mut Self::Conn, ev: Option<&mio::event::Event>) -> Res<bool> {
        let now = Instant::now();
        match ev {
            Some(ev) => {
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    d.on_readable(now);
                }
                if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                    d.on_writable(now);
                }
            }
            None => {
                if d.wants_read() {
                    d.on_readable(now);
                }
                if d.next_deadline().is_some_and(|t| t <= now) {
                    d.on_timeout(now);
                }
            }
        }
        while let Some(event) = d.poll_event() {
            match event {
                Event::Established { .. } if self.client => d.close(),
                Event::Closed { reason } => {
                    // The client closes (Local); the server sees it close.
                    let expected = if self.client {
                        CloseReason::Local
                    } else {
                        CloseReason::PeerClosed
                    };
                    if reason != expected {
                        return Err(format!("connection closed: {reason:?}"));
                    }
                    return Ok(true);
                }
                _ => {}
            }
        }
        Ok(false)
    }

    fn deadline(&self, d: &Self::Conn) -> Option<Instant> {
        // A driver with a read left over must be served at once.
        if d.wants_read() {
            Some(Instant::now())
        } else {
            d.next_deadline()
        }
    }
}

/// Runs a server loop and a client loop on threads of their own; returns
/// set-ups per second, timed at the client.
fn setups<S, C>(server: S, client: C, count: usize, in_flight: usize) -> Res<f64>
where
    S: Side + Send + 'static,
    C: Side + Send + 'static,
{
    let listener = StdListener::bind(SocketAddr::from(LOOPBACK)).map_err(io_err("bind"))?;
    let addr = listener.local_addr().map_err(io_err("bind"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("nonblocking"))?;
    let listener = TcpListener::from_std(listener);
    let srv = std::thread::spawn(move || run_loop(server, count, Some(listener), None));
    let start = Instant::now();
    let cli = run_loop(client, count, None, Some((addr, in_flight.max(1))));
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let srv = join(srv);
    cli?;
    srv?;
    Ok(rate)
}

/// Raw set-ups on mio: `count` connections, `in_flight` at a time, each a
/// connect, a request, a reply and a close. Returns set-ups per second.
pub(super) fn raw_setup(count: usize, in_flight: usize) -> Res<f64> {
    setups(RawServer, RawClient, count, in_flight)
}

/// Authenticated ASoc set-ups on asoc-mio's driver: `count` connections,
/// `in_flight` at a time, each a connect, HELLO, verified ACCEPT and a
/// graceful close. Returns set-ups per second.
pub(super) fn asoc_setup(count: usize, in_flight: usize, seed: u8) -> Res<f64> {
    let auth = |node| bench_authenticator(node, seed).map_err(|e| e.to_string());
    let server = AsocSide {
        auth: auth(2)?,
        client: false,
    };
    let client = AsocSide {
        auth: auth(1)?,
        client: true,
    };
    setups(server, client, count, in_flight)
}
