//! Raw bytes over blocking `std::net` sockets: frame builders that can
//! write any malformed byte, a frame reader that judges nothing, and the
//! observations cases are made of (a frame, a close, silence).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asoc_proto::auth::{community_hash, ct_eq, truncated_mac};
use uuid::Uuid;

use crate::case::Finding;
use crate::target::Ctx;

/// Frame types (WIRE.md §2).
pub mod ty {
    /// DATA.
    pub const DATA: u8 = 1;
    /// END.
    pub const END: u8 = 2;
    /// CONTROL (reserved).
    pub const CONTROL: u8 = 3;
    /// HELLO.
    pub const HELLO: u8 = 4;
    /// ACCEPT.
    pub const ACCEPT: u8 = 5;
}

/// Largest payload the reader buffers; a larger length is reported as is.
const READ_CAP: u32 = 64 * 1024 * 1024;

/// A 14-byte header with any bytes in it.
#[must_use]
pub fn header(version: u8, ty: u8, stream: u32, seq: u32, len: u32) -> [u8; 14] {
    let mut h = [0u8; 14];
    h[0] = version;
    h[1] = ty;
    h[2..6].copy_from_slice(&stream.to_be_bytes());
    h[6..10].copy_from_slice(&seq.to_be_bytes());
    h[10..14].copy_from_slice(&len.to_be_bytes());
    h
}

/// A version-1 frame with its true length.
#[must_use]
pub fn frame(ty: u8, stream: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut v = header(1, ty, stream, seq, len).to_vec();
    v.extend_from_slice(payload);
    v
}

/// A whole stream: DATA frames with seq 0.. then END with seq = count.
#[must_use]
pub fn stream_frames(stream: u32, chunks: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        v.extend(frame(ty::DATA, stream, i as u32, c));
    }
    v.extend(frame(ty::END, stream, chunks.len() as u32, &[]));
    v
}

/// Random bytes from the OS.
#[must_use]
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // A failing OS RNG is a broken host; the cases still run, with bytes
    // that are merely unlikely to repeat.
    if getrandom::getrandom(&mut b).is_err() {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ i as u8;
        }
    }
    b
}

/// A random 32-bit challenge.
#[must_use]
pub fn challenge() -> u32 {
    u32::from_be_bytes(random())
}

/// A random node id larger than any v4 id, so that a peer that leaves
/// dialing to the smaller id dials us at once. Its first seven bytes are
/// 0xff: a v4 id may start with 0xff bytes too, but its seventh byte holds
/// the version (0x4_), so it always compares lower. (A first byte of 0xff
/// alone lost to one implementation id in 256 half the time, and the
/// discovery cases then waited for a dial that was rightly deferred.)
#[must_use]
pub fn high_uuid() -> Uuid {
    let mut b = random::<16>();
    b[..7].fill(0xff);
    Uuid::from_bytes(b)
}

/// A random v4 node id.
#[must_use]
pub fn uuid_v4() -> Uuid {
    uuid::Builder::from_random_bytes(random()).into_uuid()
}

/// `MAC(key, node || challenge_be32, 16)`.
#[must_use]
pub fn hello_mac(key: &[u8], node: &Uuid, challenge: u32) -> [u8; 16] {
    truncated_mac::<16>(key, &[node.as_bytes(), &challenge.to_be_bytes()])
}

/// A HELLO payload with an explicit MAC.
#[must_use]
pub fn hello_payload_with(node: &Uuid, mac: &[u8; 16], challenge: u32) -> [u8; 36] {
    let mut p = [0u8; 36];
    p[..16].copy_from_slice(node.as_bytes());
    p[16..32].copy_from_slice(mac);
    p[32..].copy_from_slice(&challenge.to_be_bytes());
    p
}

/// A valid HELLO frame for `node` and `challenge` under `key`.
#[must_use]
pub fn hello_frame(key: &[u8], node: &Uuid, challenge: u32) -> Vec<u8> {
    frame(
        ty::HELLO,
        0,
        0,
        &hello_payload_with(node, &hello_mac(key, node, challenge), challenge),
    )
}

/// A valid ACCEPT frame: a random token and its 8-byte MAC.
#[must_use]
pub fn accept_frame(key: &[u8]) -> Vec<u8> {
    let token = random::<8>();
    let mac = truncated_mac::<8>(key, &[&token]);
    let mut p = token.to_vec();
    p.extend_from_slice(&mac);
    frame(ty::ACCEPT, 0, 0, &p)
}

/// Whether an ACCEPT payload is `token(8) | MAC(key, token, 8)`.
#[must_use]
pub fn accept_verifies(key: &[u8], payload: &[u8]) -> bool {
    payload.len() == 16 && ct_eq(&truncated_mac::<8>(key, &[&payload[..8]]), &payload[8..])
}

/// Current unix time in seconds.
#[must_use]
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The fields of a discovery datagram, signed on [`encode`](Self::encode).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Datagram {
    /// Community hash.
    pub hash: [u8; 8],
    /// Node id.
    pub node: Uuid,
    /// Announced TCP port.
    pub port: u16,
    /// Unix seconds.
    pub timestamp: u32,
    /// Challenge.
    pub challenge: u32,
}

impl Datagram {
    /// A fresh valid announcement of `port` for the target's community.
    #[must_use]
    pub fn new(community: &str, port: u16) -> Self {
        Self {
            hash: community_hash(community),
            node: high_uuid(),
            port,
            timestamp: unix_now(),
            challenge: challenge(),
        }
    }

    /// The 34 signed bytes.
    #[must_use]
    pub fn signed(&self) -> [u8; 34] {
        let mut b = [0u8; 34];
        b[..8].copy_from_slice(&self.hash);
        b[8..24].copy_from_slice(self.node.as_bytes());
        b[24..26].copy_from_slice(&self.port.to_be_bytes());
        b[26..30].copy_from_slice(&self.timestamp.to_be_bytes());
        b[30..34].copy_from_slice(&self.challenge.to_be_bytes());
        b
    }

    /// The 50-byte datagram signed with `key`.
    #[must_use]
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let signed = self.signed();
        let mut v = signed.to_vec();
        v.extend_from_slice(&truncated_mac::<16>(key, &[&signed]));
        v
    }
}

/// A frame as read, judged by nobody.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RawFrame {
    /// Version byte.
    pub version: u8,
    /// Type byte.
    pub ty: u8,
    /// Stream id.
    pub stream: u32,
    /// Sequence number.
    pub seq: u32,
    /// Length field.
    pub len: u32,
    /// Payload (empty when `len` exceeds what the reader buffers).
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// `type 5 stream 0 seq 0 len 16` style description.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "frame version {} type {} stream {} seq {} length {}",
            self.version, self.ty, self.stream, self.seq, self.len
        )
    }
}

/// What the suite saw on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observed {
    /// A whole frame.
    Frame(RawFrame),
    /// The peer closed (FIN or reset); `partial` bytes of an unfinished
    /// frame had arrived.
    Closed {
        /// Bytes of an unfinished frame before the close.
        partial: usize,
    },
    /// Nothing complete within the time given.
    Silent {
        /// Bytes of an unfinished frame so far.
        partial: usize,
    },
}

/// One raw TCP connection.
#[derive(Debug)]
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    pending: VecDeque<RawFrame>,
    /// Bytes received in total.
    pub received: usize,
    closed: bool,
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    if ip.is_loopback() {
        ip
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

impl Conn {
    /// Wraps an accepted or connected stream.
    #[must_use]
    pub fn new(s: TcpStream) -> Self {
        let _ = s.set_nodelay(true);
        Self {
            s,
            buf: Vec::new(),
            pending: VecDeque::new(),
            received: 0,
            closed: false,
        }
    }

    /// Connects to `to` from `src` (port chosen by the system).
    pub fn connect_from(
        to: SocketAddr,
        src: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<Self> {
        let s = match src {
            None => TcpStream::connect_timeout(&to, timeout)?,
            Some(ip) => bound_connect(SocketAddr::new(ip, 0), to, timeout)?,
        };
        Ok(Self::new(s))
    }

    /// Connects to the serving implementation from a fresh source address.
    pub fn connect(ctx: &mut Ctx<'_>) -> Result<Self, Finding> {
        let to = ctx.endpoint()?.tcp;
        let src = ctx.source_for(to);
        Self::connect_from(to, src, ctx.cfg.timeout)
            .map_err(|e| Finding::error(format!("connect to {to}: {e}")))
    }

    /// Connects from `src` explicitly.
    pub fn connect_src(ctx: &mut Ctx<'_>, src: IpAddr) -> Result<Self, Finding> {
        let to = ctx.endpoint()?.tcp;
        Self::connect_from(to, Some(src), ctx.cfg.timeout)
            .map_err(|e| Finding::error(format!("connect to {to} from {src}: {e}")))
    }

    /// Writes all of `bytes`; a peer that already closed is not an error
    /// here (the next read reports the close).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Finding> {
        match self.s.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) if is_close(&e) => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(Finding::error(format!("write: {e}"))),
        }
    }

    /// Writes one byte at a time with a flush between (TCP segments as small
    /// as the stack allows).
    pub fn send_slowly(&mut self, bytes: &[u8], gap: Duration) -> Result<(), Finding> {
        for b in bytes {
            self.send(std::slice::from_ref(b))?;
            std::thread::sleep(gap);
        }
        Ok(())
    }

    fn fill(&mut self, deadline: Instant) -> io::Result<Option<usize>> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        self.s
            .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 64 * 1024];
        match self.s.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.received += n;
                Ok(Some(n))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(usize::MAX)),
            Err(e) => Err(e),
        }
    }

    /// The next frame, a close, or silence within `within`.
    pub fn next(&mut self, within: Duration) -> Result<Observed, Finding> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(Observed::Frame(f));
        }
        let deadline = Instant::now() + within;
        loop {
            if self.buf.len() >= 14 {
                let h: [u8; 14] = self.buf[..14].try_into().unwrap_or([0; 14]);
                let len = u32::from_be_bytes([h[10], h[11], h[12], h[13]]);
                let total = if len > READ_CAP {
                    14
                } else {
                    14 + len as usize
                };
                if self.buf.len() >= total {
                    let payload = self.buf[14..total].to_vec();
                    self.buf.drain(..total);
                    return Ok(Observed::Frame(RawFrame {
                        version: h[0],
                        ty: h[1],
                        stream: u32::from_be_bytes([h[2], h[3], h[4], h[5]]),
                        seq: u32::from_be_bytes([h[6], h[7], h[8], h[9]]),
                        len,
                        payload,
                    }));
                }
            }
            if self.closed {
                return Ok(Observed::Closed {
                    partial: self.buf.len(),
                });
            }
            match self.fill(deadline) {
                Ok(Some(0)) => self.closed = true,
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Ok(Observed::Silent {
                        partial: self.buf.len(),
                    })
                }
                Err(e) if is_close(&e) => self.closed = true,
                Err(e) => return Err(Finding::error(format!("read: {e}"))),
            }
        }
    }

    /// Requires the peer to close within `within` without sending a byte
    /// (RFC-0001 §9.1: no error frame, no hint of why).
    pub fn expect_silent_close(&mut self, within: Duration) -> Result<String, Finding> {
        let start = Instant::now();
        let before = self.received;
        match self.next(within)? {
            Observed::Closed { .. } if self.received == before => {
                Ok(format!("closed silently after {:?}", start.elapsed()))
            }
            Observed::Closed { .. } => Err(Finding::fail(
                "close without sending a byte",
                format!("closed after sending {} bytes", self.received - before),
            )),
            Observed::Frame(f) => Err(Finding::fail(
                "close without sending a byte",
                format!("received {}", f.describe()),
            )),
            Observed::Silent { partial: 0 } => Err(Finding::fail(
                "connection closed at once",
                format!("still open after {within:?}"),
            )),
            Observed::Silent { partial } => Err(Finding::fail(
                "close without sending a byte",
                format!("received {partial} bytes and no close within {within:?}"),
            )),
        }
    }

    /// Requires the peer to close within `within`; frames it sends before
    /// closing are allowed (used after the handshake).
    pub fn expect_close(&mut self, within: Duration) -> Result<String, Finding> {
        let deadline = Instant::now() + within;
        loop {
            match self.next(deadline.saturating_duration_since(Instant::now()))? {
                Observed::Closed { .. } => return Ok("connection closed".into()),
                Observed::Frame(_) => continue,
                Observed::Silent { .. } => {
                    return Err(Finding::fail(
                        "connection closed (protocol error)",
                        format!("still open after {within:?}"),
                    ))
                }
            }
        }
    }

    /// Requires the connection to stay open for `for_`; frames that arrive
    /// meanwhile are kept for [`next`](Self::next).
    pub fn expect_open(&mut self, for_: Duration) -> Result<(), Finding> {
        let deadline = Instant::now() + for_;
        let mut kept = Vec::new();
        let result = loop {
            match self.next(deadline.saturating_duration_since(Instant::now()))? {
                Observed::Frame(f) => kept.push(f),
                Observed::Silent { .. } => break Ok(()),
                Observed::Closed { .. } => {
                    break Err(Finding::fail(
                        "connection stays open",
                        "the implementation closed the connection",
                    ))
                }
            }
        };
        for f in kept.into_iter().rev() {
            self.pending.push_front(f);
        }
        result
    }

    /// Whether the peer has been seen closing.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// A second handle on the socket, so that another thread can write
    /// while this one reads, or does not.
    pub fn writer(&self) -> Result<TcpStream, Finding> {
        self.s
            .try_clone()
            .map_err(|e| Finding::error(format!("clone socket: {e}")))
    }

    /// Caps the socket's receive buffer (which also stops the kernel from
    /// growing it), so that a peer's sending stalls soon after the suite
    /// stops reading.
    pub fn limit_receive_buffer(&self, bytes: usize) {
        let _ = socket2::SockRef::from(&self.s).set_recv_buffer_size(bytes);
    }

    /// Shuts both directions down, which also wakes a writer blocked on a
    /// full socket.
    pub fn shutdown(&self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
    }

    /// Runs the client side of the handshake with a fresh node id and
    /// challenge; returns the ACCEPT payload.
    pub fn handshake(&mut self, ctx: &Ctx<'_>) -> Result<Vec<u8>, Finding> {
        let node = uuid_v4();
        self.handshake_as(ctx, &node, challenge())
    }

    /// The client side of the handshake for `node` and `challenge`.
    pub fn handshake_as(
        &mut self,
        ctx: &Ctx<'_>,
        node: &Uuid,
        challenge: u32,
    ) -> Result<Vec<u8>, Finding> {
        self.send(&hello_frame(&ctx.cfg.key, node, challenge))?;
        self.expect_accept(ctx)
    }

    /// Requires a verifying ACCEPT as the next frame.
    pub fn expect_accept(&mut self, ctx: &Ctx<'_>) -> Result<Vec<u8>, Finding> {
        let expected =
            "an ACCEPT frame (01 05, stream 0, seq 0, length 16) whose token MAC verifies";
        match self.next(ctx.cfg.timeout)? {
            Observed::Frame(f) => {
                if f.version == 1
                    && f.ty == ty::ACCEPT
                    && f.stream == 0
                    && f.seq == 0
                    && f.len == 16
                {
                    if accept_verifies(&ctx.cfg.key, &f.payload) {
                        Ok(f.payload)
                    } else {
                        Err(Finding::fail(
                            expected,
                            "ACCEPT whose token MAC does not verify",
                        ))
                    }
                } else {
                    Err(Finding::fail(expected, f.describe()))
                }
            }
            Observed::Closed { .. } => Err(Finding::fail(expected, "connection closed")),
            Observed::Silent { .. } => Err(Finding::fail(
                expected,
                format!("nothing within {:?}", ctx.cfg.timeout),
            )),
        }
    }
}

fn is_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// `connect` from a bound source address: on Linux every address of
/// 127/8 is local, so binding the client socket to 127.a.b.c first makes
/// the implementation see that source.
fn bound_connect(src: SocketAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.bind(&src.into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// A listening socket of the suite (the implementation dials it).
#[derive(Debug)]
pub struct Listener {
    l: TcpListener,
}

impl Listener {
    /// Listens on `ip`:0.
    pub fn bind(ip: IpAddr) -> Result<Self, Finding> {
        Self::bind_addr(SocketAddr::new(ip, 0))
    }

    /// Listens on `addr`.
    pub fn bind_addr(addr: SocketAddr) -> Result<Self, Finding> {
        let l = TcpListener::bind(addr)
            .map_err(|e| Finding::error(format!("listen on {addr}: {e}")))?;
        l.set_nonblocking(true)
            .map_err(|e| Finding::error(format!("listener: {e}")))?;
        Ok(Self { l })
    }

    /// Listens where an implementation at `peer` can reach the suite.
    pub fn bind_for(peer: SocketAddr) -> Result<Self, Finding> {
        Self::bind(unspecified_like(if peer.ip().is_loopback() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            peer.ip()
        }))
    }

    /// The bound address.
    pub fn addr(&self) -> Result<SocketAddr, Finding> {
        self.l.local_addr().map_err(Finding::error)
    }

    /// The next connection within `within`, if any.
    pub fn accept_within(&self, within: Duration) -> Result<Option<Conn>, Finding> {
        let deadline = Instant::now() + within;
        loop {
            match self.l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).map_err(Finding::error)?;
                    return Ok(Some(Conn::new(s)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(Finding::error(format!("accept: {e}"))),
            }
        }
    }

    /// The implementation's connection, or a finding saying why not.
    pub fn accept(&self, ctx: &mut Ctx<'_>, what: &str) -> Result<Conn, Finding> {
        let deadline = Instant::now() + ctx.cfg.timeout + ctx.cfg.timeout;
        loop {
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            if let Some(c) = self.accept_within(slice)? {
                return Ok(c);
            }
            if let Some(f) = ctx.imp.gave_up() {
                return Err(f);
            }
            if Instant::now() >= deadline {
                return Err(ctx.imp.explain_silence().unwrap_or_else(|| {
                    Finding::fail(what.to_string(), "no connection to the suite")
                }));
            }
        }
    }
}

/// Reads the implementation's HELLO as the first frame and checks it.
pub fn read_hello(conn: &mut Conn, ctx: &mut Ctx<'_>) -> Result<(Uuid, u32), Finding> {
    let expected = "a HELLO frame (01 04, stream 0, seq 0, length 36) whose MAC verifies";
    match conn.next(ctx.cfg.timeout)? {
        Observed::Frame(f) => {
            if !(f.version == 1 && f.ty == ty::HELLO && f.stream == 0 && f.seq == 0 && f.len == 36)
            {
                return Err(Finding::fail(expected, f.describe()));
            }
            let node = Uuid::from_bytes(f.payload[..16].try_into().unwrap_or([0; 16]));
            let ch = u32::from_be_bytes(f.payload[32..36].try_into().unwrap_or([0; 4]));
            if !ct_eq(&hello_mac(&ctx.cfg.key, &node, ch), &f.payload[16..32]) {
                return Err(Finding::fail(expected, "a HELLO whose MAC does not verify"));
            }
            Ok((node, ch))
        }
        other => Err(ctx
            .imp
            .explain_silence()
            .unwrap_or_else(|| Finding::fail(expected, format!("{other:?}")))),
    }
}

/// A UDP socket of the suite for sending discovery datagrams to `to`.
pub fn udp_from(ip: IpAddr) -> Result<UdpSocket, Finding> {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .map_err(|e| Finding::error(format!("udp bind {ip}: {e}")))
}

/// Sends `datagram` to `to` from `sock`.
pub fn send_datagram(sock: &UdpSocket, datagram: &[u8], to: SocketAddr) -> Result<(), Finding> {
    sock.send_to(datagram, to)
        .map(|_| ())
        .map_err(|e| Finding::error(format!("send datagram to {to}: {e}")))
}

/// Streams received from the implementation, checked frame by frame.
#[derive(Debug, Default)]
pub struct Streams {
    open: HashMap<u32, (u32, Vec<u8>)>,
    /// Completed streams in order of their END: (id, bytes, DATA frames).
    pub done: Vec<(u32, Vec<u8>, u32)>,
    /// Rule breaches seen on the implementation's frames.
    pub violations: Vec<String>,
    /// Total payload bytes of DATA frames.
    pub data_bytes: usize,
}

impl Streams {
    /// Feeds one frame.
    pub fn feed(&mut self, f: RawFrame) {
        if f.version != 1 {
            self.violations
                .push(format!("{} (version must be 1)", f.describe()));
            return;
        }
        match f.ty {
            ty::DATA | ty::END if f.stream == 0 => self
                .violations
                .push(format!("{} on stream 0", f.describe())),
            ty::DATA => {
                let (next, buf) = self.open.entry(f.stream).or_default();
                if f.seq != *next {
                    self.violations
                        .push(format!("{}: expected seq {next}", f.describe()));
                }
                *next = f.seq.wrapping_add(1);
                self.data_bytes += f.payload.len();
                buf.extend_from_slice(&f.payload);
            }
            ty::END => {
                let (next, buf) = self.open.remove(&f.stream).unwrap_or_default();
                if f.seq != next {
                    self.violations.push(format!(
                        "{}: END seq must be the DATA count {next}",
                        f.describe()
                    ));
                }
                if f.len != 0 {
                    self.violations
                        .push(format!("{}: END must have length 0", f.describe()));
                }
                self.done.push((f.stream, buf, next));
            }
            ty::HELLO | ty::ACCEPT => self
                .violations
                .push(format!("{} after the handshake", f.describe())),
            _ => {}
        }
    }

    /// Reads frames until `n` streams completed, the peer closed or
    /// `within` passed.
    pub fn collect(conn: &mut Conn, n: usize, within: Duration) -> Result<Self, Finding> {
        let mut s = Self::default();
        let deadline = Instant::now() + within;
        while s.done.len() < n {
            match conn.next(deadline.saturating_duration_since(Instant::now()))? {
                Observed::Frame(f) => s.feed(f),
                Observed::Closed { .. } => {
                    return Err(Finding::fail(
                        format!("{n} stream(s) echoed back"),
                        format!("connection closed after {} stream(s)", s.done.len()),
                    ))
                }
                Observed::Silent { .. } => {
                    return Err(Finding::fail(
                        format!("{n} stream(s) echoed back"),
                        format!("{} stream(s) within {within:?}", s.done.len()),
                    ))
                }
            }
        }
        Ok(s)
    }

    /// Fails on any violation.
    pub fn clean(&self) -> Result<(), Finding> {
        match self.violations.first() {
            None => Ok(()),
            Some(v) => Err(Finding::fail("well-formed streams (WIRE.md §4)", v.clone())),
        }
    }

    /// Requires the completed payloads to be `expected`, in any order.
    pub fn expect_payloads(&self, expected: &[&[u8]]) -> Result<(), Finding> {
        self.clean()?;
        let mut got: Vec<&[u8]> = self.done.iter().map(|(_, b, _)| b.as_slice()).collect();
        let mut want: Vec<&[u8]> = expected.to_vec();
        got.sort();
        want.sort();
        if got == want {
            Ok(())
        } else {
            Err(Finding::fail(
                format!("echoed payloads of {:?} bytes", lens(expected)),
                format!("payloads of {:?} bytes, content differs", lens(&got)),
            ))
        }
    }
}

fn lens(v: &[&[u8]]) -> Vec<usize> {
    v.iter().map(|b| b.len()).collect()
}

/// Deterministic test bytes.
#[must_use]
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
