//! Throughput and connection-rate measurements for `asoc bench`: ASoc
//! against a raw-TCP baseline on the same runtime, in the same run,
//! alternating A B A B so that drift on a shared machine hits both.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::task::Context;
use std::time::{Duration, Instant};

use asoc_proto::auth::ApiKey;
use bytes::{Bytes, BytesMut};

use crate::{BoxFuture, Error, Net, NodeBuilder, PeerRef, Transport};

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
pub async fn raw_tcp<N: Net>(net: &N, w: Workload) -> Result<f64, Error> {
    let listener = net.bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = N::tcp_local_addr(&listener)?;
    let listener = std::sync::Arc::new(listener);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let payload = Bytes::from(vec![0x5au8; w.chunk]);
    let start = Instant::now();
    for _ in 0..w.connections {
        let l = listener.clone();
        readers.push(spawn(net, async move {
            let (io, _) = N::accept(&l).await?;
            Ok(discard(io).await?)
        }));
        let (mut io, _) = net.connect(addr.to_string()).await?;
        let payload = payload.clone();
        writers.push(spawn(net, async move {
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
/// concurrent streams in `chunk`-byte frames to a receiver that discards.
pub async fn asoc<N: Net>(net: &N, w: Workload, seed: u8) -> Result<f64, Error> {
    let key =
        ApiKey::new("bench-key-0123456789abcdef").map_err(|e| Error::Config(e.to_string()))?;
    let mut pairs = Vec::new();
    for i in 0..w.connections {
        let b = NodeBuilder::new("bench", key.clone()).bind(SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut id = [seed; 16];
        id[0] = i as u8;
        id[1] = 1;
        let rx = b
            .start(net.clone(), [seed; 32], uuid::Uuid::from_bytes(id))
            .await?;
        id[1] = 2;
        let a = NodeBuilder::new("bench", key.clone())
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .chunk_size(w.chunk);
        let tx = a
            .start(net.clone(), [seed ^ 0xff; 32], uuid::Uuid::from_bytes(id))
            .await?;
        let peer = tx.connect(rx.local_addr().to_string()).await?;
        pairs.push((tx, rx, peer.id));
    }
    let per_stream = w.bytes / w.streams.max(1) as u64;
    let payload = Bytes::from(vec![0x5au8; w.chunk]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (tx, rx, peer) in &pairs {
        for _ in 0..w.streams.max(1) {
            let (tx, payload, peer) = (tx.clone(), payload.clone(), *peer);
            tasks.push(spawn(net, async move {
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
            tasks.push(spawn(net, async move {
                let mut incoming = rx.accept_stream().await.ok_or(Error::Gone)?;
                let mut n = 0u64;
                while let Some(c) = incoming
                    .stream
                    .chunk()
                    .await
                    .map_err(|e| Error::Config(e.to_string()))?
                {
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

/// Runs baseline and ASoc alternately `pairs` times.
pub async fn compare<N: Net>(net: &N, w: Workload, pairs: usize) -> Result<Vec<Sample>, Error> {
    let mut out = Vec::new();
    for i in 0..pairs {
        let baseline = raw_tcp(net, w).await?;
        let asoc = asoc(net, w, i as u8).await?;
        out.push(Sample { asoc, baseline });
    }
    Ok(out)
}

/// Median of the ratios asoc / baseline, with the median rates.
#[must_use]
pub fn median(samples: &[Sample]) -> (f64, f64, f64) {
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    (
        med(samples.iter().map(|s| s.asoc).collect()),
        med(samples.iter().map(|s| s.baseline).collect()),
        med(samples.iter().map(|s| s.asoc / s.baseline).collect()),
    )
}
