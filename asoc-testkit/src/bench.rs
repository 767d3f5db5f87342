//! Throughput and connection-rate measurements for `asoc bench`: ASoc
//! against a raw-TCP baseline on the same runtime, in the same run,
//! alternating A B A B so that drift on a shared machine hits both.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig, ClientOptions};
use asoc_proto::v2::WireVersion;
use bytes::{Bytes, BytesMut};

use asoc_async::tls::{client_config, server_config, ServerTrust, TlsConfig};
use asoc_async::{
    BoxFuture, Connection, DriverConfig, Error, Net, NodeBuilder, PeerRef, Transport,
};

/// The key every bench node and connection shares.
pub const KEY: &str = "bench-key-0123456789abcdef";

/// The protocol the ASoc side of a measurement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    /// v1: HMAC handshake, cleartext frames.
    V1,
    /// v2: Noise handshake, every frame sealed (the default).
    V2,
    /// v1 inside TLS 1.3 (rustls), a pinned self-signed certificate.
    V1Tls,
}

impl Wire {
    /// Every wire, in the order the bench reports them.
    pub const ALL: [Self; 3] = [Self::V1, Self::V2, Self::V1Tls];

    /// Its name in reports and JSON: `v1`, `v2`, `v1+tls`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V1Tls => "v1+tls",
        }
    }

    /// The ASoc version spoken (inside TLS or not).
    #[must_use]
    pub fn version(self) -> WireVersion {
        match self {
            Self::V2 => WireVersion::V2,
            Self::V1 | Self::V1Tls => WireVersion::V1,
        }
    }

    /// The wire `name` names.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// One workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Bytes per connection.
    pub bytes: u64,
    /// Chunk (frame payload or write) size.
    pub chunk: usize,
    /// Concurrent streams per connection (ASoc); the baseline writes the
    /// same bytes over one connection.
    pub streams: usize,
    /// Parallel connections.
    pub connections: usize,
}

/// The result of one pair of runs.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// ASoc, bytes per second.
    pub asoc: f64,
    /// Raw TCP, bytes per second.
    pub baseline: f64,
}

/// The runtimes of a measurement's two ends: the sending side (writers,
/// clients, sending nodes) and the receiving side (readers, servers,
/// receiving nodes). On tokio and smol both are the same multi-threaded
/// runtime; on mio each is a loop thread of its own, as two `asoc_mio`
/// nodes would be, so that neither end waits for the other's thread.
#[derive(Clone, Debug)]
pub struct Sides<N> {
    /// Where senders and clients run.
    pub sender: N,
    /// Where receivers and servers run.
    pub receiver: N,
}

impl<N: Net> Sides<N> {
    /// Both ends on `net`.
    pub fn shared(net: &N) -> Self {
        Self {
            sender: net.clone(),
            receiver: net.clone(),
        }
    }
}

fn spawn<N: Net, T: Send + 'static>(
    net: &N,
    fut: impl Future<Output = Result<T, Error>> + Send + 'static,
) -> BoxFuture<Result<T, Error>> {
    let (tx, rx) = async_channel::bounded(1);
    net.spawn(Box::pin(async move {
        let _ = tx.send(fut.await).await;
    }));
    Box::pin(async move { rx.recv().await.unwrap_or(Err(Error::Gone)) })
}

async fn write_all<T: Transport>(io: &mut T, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let n = std::future::poll_fn(|cx: &mut Context<'_>| {
            io.poll_write_vectored(cx, &[IoSlice::new(data)])
        })
        .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        data = data.get(n..).unwrap_or(&[]);
    }
    Ok(())
}

async fn discard<T: Transport>(mut io: T) -> std::io::Result<u64> {
    let mut buf = BytesMut::with_capacity(1 << 20);
    let mut total = 0u64;
    loop {
        buf.clear();
        buf.reserve(1 << 20);
        let n =
            std::future::poll_fn(|cx: &mut Context<'_>| io.poll_read_into(cx, &mut buf, 1 << 20))
                .await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Raw TCP: `connections` connections, each writing `bytes` in `chunk`
/// writes to a reader that discards. Returns bytes per second.
pub async fn raw_tcp<N: Net>(sides: &Sides<N>, w: Workload) -> Result<f64, Error> {
    let Sides { sender, receiver } = sides;
    let listener = receiver
        .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let addr = N::tcp_local_addr(&listener)?;
    let listener = Arc::new(listener);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let payload = Bytes::from(vec![0x5au8; w.chunk]);
    let start = Instant::now();
    for _ in 0..w.connections {
        let l = listener.clone();
        readers.push(spawn(receiver, async move {
            let (io, _) = N::accept(&l).await?;
            Ok(discard(io).await?)
        }));
        let (mut io, _) = sender.connect(addr.to_string()).await?;
        let payload = payload.clone();
        writers.push(spawn(sender, async move {
            let mut left = w.bytes;
            while left > 0 {
                let n = left.min(payload.len() as u64) as usize;
                write_all(&mut io, &payload[..n]).await?;
                left -= n as u64;
            }
            Ok(std::future::poll_fn(|cx| io.poll_shutdown(cx)).await?)
        }));
    }
    for wtr in writers {
        wtr.await?;
    }
    let mut total = 0;
    for r in readers {
        total += r.await?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// ASoc: `connections` pairs of nodes, each sending `bytes` over `streams`
/// concurrent streams in `chunk`-byte frames to a receiver that discards,
/// speaking `wire`.
pub async fn asoc<N: Net>(
    sides: &Sides<N>,
    w: Workload,
    seed: u8,
    wire: Wire,
) -> Result<f64, Error> {
    let Sides { sender, receiver } = sides;
    let key = ApiKey::new(KEY)?;
    let tls = match wire {
        Wire::V1Tls => Some(bench_tls()?),
        Wire::V1 | Wire::V2 => None,
    };
    let mut pairs = Vec::new();
    for i in 0..w.connections {
        let mut b = NodeBuilder::new("bench", key.clone())
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .allow_v1(wire.version() == WireVersion::V1);
        if let Some((server, _)) = &tls {
            b = b.tls(server.clone());
        }
        let mut id = [seed; 16];
        id[0] = i as u8;
        id[1] = 1;
        let rx = b
            .start(receiver.clone(), [seed; 32], uuid::Uuid::from_bytes(id))
            .await?;
        id[1] = 2;
        let mut a = NodeBuilder::new("bench", key.clone())
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .chunk_size(w.chunk);
        if let Some((_, client)) = &tls {
            a = a.tls(client.clone());
        }
        let tx = a
            .start(
                sender.clone(),
                [seed ^ 0xff; 32],
                uuid::Uuid::from_bytes(id),
            )
            .await?;
        let peer = tx
            .connect_with(
                rx.local_addr().to_string(),
                ClientOptions::version(wire.version()),
            )
            .await?;
        pairs.push((tx, rx, peer.id));
    }
    let per_stream = w.bytes / w.streams.max(1) as u64;
    let payload = Bytes::from(vec![0x5au8; w.chunk]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (tx, rx, peer) in &pairs {
        for _ in 0..w.streams.max(1) {
            let (tx, payload, peer) = (tx.clone(), payload.clone(), *peer);
            tasks.push(spawn(sender, async move {
                let mut s = tx.open_stream(PeerRef::Conn(peer)).await?;
                let mut left = per_stream;
                while left > 0 {
                    let n = left.min(payload.len() as u64) as usize;
                    s.send(payload.slice(..n)).await?;
                    left -= n as u64;
                }
                s.finish().await?;
                Ok::<u64, Error>(0)
            }));
            let rx = rx.clone();
            tasks.push(spawn(receiver, async move {
                let mut incoming = rx.accept_stream().await.ok_or(Error::Gone)?;
                let mut n = 0u64;
                while let Some(c) = incoming.stream.chunk().await? {
                    n += c.len() as u64;
                }
                Ok(n)
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    for (tx, rx, _) in pairs {
        tx.shutdown(Duration::from_secs(1)).await;
        rx.shutdown(Duration::from_secs(1)).await;
    }
    Ok(rate)
}

/// Bytes of the raw set-up baseline's request (a HELLO is 52 bytes).
pub const SETUP_REQUEST: usize = 50;
/// Bytes of the raw set-up baseline's reply (an ACCEPT is 18 bytes).
pub const SETUP_REPLY: usize = 16;

async fn read_exact<T: Transport>(io: &mut T, n: usize) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(n);
    while buf.len() < n {
        let want = n - buf.len();
        let got =
            std::future::poll_fn(|cx: &mut Context<'_>| io.poll_read_into(cx, &mut buf, want))
                .await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

/// How many of `count` set-ups client `i` of `in_flight` makes (the
/// shares differ by at most one and add up to `count`).
#[must_use]
pub fn share(count: usize, in_flight: usize, i: usize) -> usize {
    let in_flight = in_flight.max(1);
    count / in_flight + usize::from(i < count % in_flight)
}

/// Accepts exactly `count` connections on `listener`, each handled by
/// `serve` on a task of its own; completes once every handler did.
fn serve<N, F, Fut>(
    net: &N,
    listener: N::Listener,
    count: usize,
    serve: F,
) -> BoxFuture<Result<(), Error>>
where
    N: Net,
    F: Fn(N::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let inner = net.clone();
    spawn(net, async move {
        let mut handlers = Vec::with_capacity(count);
        for _ in 0..count {
            let (io, _) = N::accept(&listener).await?;
            handlers.push(spawn(&inner, serve(io)));
        }
        for h in handlers {
            h.await?;
        }
        Ok(())
    })
}

/// Raw TCP set-ups: `count` connections, `in_flight` at a time, each a
/// connect, a [`SETUP_REQUEST`]-byte request, a [`SETUP_REPLY`]-byte reply
/// and a close. Returns set-ups per second (timed at the clients).
pub async fn raw_setup<N: Net>(
    sides: &Sides<N>,
    count: usize,
    in_flight: usize,
) -> Result<f64, Error> {
    let Sides { sender, receiver } = sides;
    let listener = receiver
        .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let addr = N::tcp_local_addr(&listener)?.to_string();
    let server = serve(receiver, listener, count, |mut io: N::Stream| async move {
        read_exact(&mut io, SETUP_REQUEST).await?;
        write_all(&mut io, &[0x5a; SETUP_REPLY]).await?;
        // Until the client closes, as an ASoc server waits for its peer.
        discard(io).await?;
        Ok(())
    });
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..in_flight.max(1) {
        let (net2, addr, n) = (sender.clone(), addr.clone(), share(count, in_flight, i));
        clients.push(spawn(sender, async move {
            for _ in 0..n {
                let (mut io, _) = net2.connect(addr.clone()).await?;
                write_all(&mut io, &[0xa5; SETUP_REQUEST]).await?;
                read_exact(&mut io, SETUP_REPLY).await?;
            }
            Ok(())
        }));
    }
    for c in clients {
        c.await?;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    server.await?;
    Ok(rate)
}

/// The receiver's and the sender's TLS settings: a self-signed
/// certificate for 127.0.0.1, pinned by the sender.
fn bench_tls() -> Result<(TlsConfig, TlsConfig), Error> {
    let pki = crate::scenarios::TestPki::new();
    let tls = |e: asoc_async::tls::TlsError| Error::Io(std::io::Error::other(e.to_string()));
    let server = server_config(&pki.path("self.pem"), &pki.path("self.key"), None).map_err(tls)?;
    let client = client_config(&ServerTrust::Pinned(pki.path("self.pem")), None).map_err(tls)?;
    Ok((
        TlsConfig {
            server: Some(server),
            client: None,
        },
        TlsConfig {
            server: None,
            client: Some(client),
        },
    ))
}

/// An authenticator for `node` holding [`KEY`] (accepting v1 too), shared
/// by every connection of one side so that replays are caught across them.
pub fn bench_authenticator(node: u8, seed: u8) -> Result<asoc_async::SharedAuthenticator, Error> {
    let key = ApiKey::new(KEY)?;
    let config =
        AuthenticatorConfig::builder(uuid::Uuid::from_bytes([node; 16]), KeyRing::new(key))
            .allow_v1(true)
            .build()?;
    Ok(Arc::new(Mutex::new(Authenticator::new(
        config,
        [seed ^ node; 32],
    ))))
}

/// Authenticated ASoc set-ups: `count` connections, `in_flight` at a time,
/// each a TCP connect, the handshake of `version` (v1: HELLO, verified
/// ACCEPT; v2: HELLO2, verified ACCEPT2, CONFIRM verified by the server)
/// and a graceful close by the client. Returns set-ups per second (timed
/// at the clients).
pub async fn asoc_setup<N: Net>(
    sides: &Sides<N>,
    count: usize,
    in_flight: usize,
    seed: u8,
    version: WireVersion,
) -> Result<f64, Error> {
    let config = DriverConfig::builder().wire(version).build()?;
    let Sides { sender, receiver } = sides;
    let server_auth = bench_authenticator(2, seed)?;
    let client_auth = bench_authenticator(1, seed)?;
    let listener = receiver
        .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let addr = N::tcp_local_addr(&listener)?.to_string();
    let rt = receiver.clone();
    let server = serve(receiver, listener, count, move |io: N::Stream| {
        let (rt, auth) = (rt.clone(), server_auth.clone());
        async move {
            let conn = Connection::accept(&rt, io, &auth, config).await?;
            conn.closed().await;
            Ok(())
        }
    });
    let start = Instant::now();
    let mut clients = Vec::new();
    for i in 0..in_flight.max(1) {
        let (net2, addr, auth) = (sender.clone(), addr.clone(), client_auth.clone());
        let n = share(count, in_flight, i);
        clients.push(spawn(sender, async move {
            for _ in 0..n {
                let (io, _) = net2.connect(addr.clone()).await?;
                let conn = Connection::connect(&net2, io, &auth, config).await?;
                conn.close().await;
                conn.closed().await;
            }
            Ok(())
        }));
    }
    for c in clients {
        c.await?;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    server.await?;
    Ok(rate)
}

/// Runs baseline and ASoc throughput alternately (A B A B …) `pairs`
/// times, so that drift on a shared machine hits both alike.
pub async fn compare<N: Net>(
    sides: &Sides<N>,
    w: Workload,
    pairs: usize,
    wire: Wire,
) -> Result<Vec<Sample>, Error> {
    let mut out = Vec::with_capacity(pairs);
    for i in 0..pairs {
        let baseline = raw_tcp(sides, w).await?;
        let asoc = asoc(sides, w, i as u8, wire).await?;
        out.push(Sample { asoc, baseline });
    }
    Ok(out)
}

/// The pair whose ratio asoc / baseline is the median of all pairs' (the
/// upper one of the two middle pairs for an even count); `None` for no
/// samples. Its two rates are reported with it, so that the reported
/// ratio is exactly their quotient.
#[must_use]
pub fn median(samples: &[Sample]) -> Option<Sample> {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    v.get(v.len() / 2).copied()
}

impl Sample {
    /// asoc / baseline.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.asoc / self.baseline
    }
}

/// The body of the adapters' `quickbench` examples, a profiling aid beside
/// `asoc bench`: throughput of 2 GiB with `[chunk_kib] [streams]
/// [connections] [wire]` from `args` (default 1024 1 1 v2), five
/// baseline/ASoc pairs and their median. With `QUICKBENCH_ONLY=asoc|raw` in the environment it
/// runs one side alone, three times, for a profiler to see nothing else.
pub async fn quickbench<N: Net>(net: &N, args: impl Iterator<Item = String>) -> Result<(), Error> {
    let sides = Sides::shared(net);
    let args: Vec<String> = args.collect();
    let wire = args.iter().find_map(|a| Wire::parse(a)).unwrap_or(Wire::V2);
    let args: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let w = Workload {
        bytes: 2 << 30,
        chunk: args.first().copied().unwrap_or(1024) << 10,
        streams: args.get(1).copied().unwrap_or(1),
        connections: args.get(2).copied().unwrap_or(1),
    };
    const MIB: f64 = 1048576.0;
    if let Ok(only) = std::env::var("QUICKBENCH_ONLY") {
        for i in 0..3u8 {
            let rate = if only == "raw" {
                raw_tcp(&sides, w).await?
            } else {
                asoc(&sides, w, i, wire).await?
            };
            println!("{only} {:8.1} MiB/s", rate / MIB);
        }
        return Ok(());
    }
    let samples = compare(&sides, w, 5, wire).await?;
    for s in &samples {
        println!(
            "asoc {:8.1} MiB/s  raw {:8.1} MiB/s  ratio {:.3}",
            s.asoc / MIB,
            s.baseline / MIB,
            s.ratio()
        );
    }
    if let Some(m) = median(&samples) {
        println!(
            "median pair: asoc {:.1} MiB/s raw {:.1} MiB/s ratio {:.3}",
            m.asoc / MIB,
            m.baseline / MIB,
            m.ratio()
        );
    }
    Ok(())
}
