//! Is ASoc faster than gRPC? The same single-stream transfer of 1 MiB messages
//! through gRPC (tonic, client streaming of a protobuf `bytes` field),
//! through asoc-tokio, and as plain 1 MiB TCP writes, on one tokio runtime
//! in the same run. The three take turns (raw, ASoc, tonic, raw, ...) so
//! that drift on a shared machine hits all of them; medians are reported.
//!
//! ```sh
//! cargo run --release -p bench-grpc -- [--size 1GiB] [--message 1MiB] [--rounds 5]
//! ```
//!
//! The gRPC service is written by hand (what `tonic-build` would generate
//! for `service Sink { rpc Upload(stream Chunk) returns (Received); }`), so
//! no `protoc` is needed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use asoc_tokio::asoc_proto::auth::{ApiKey, KeyRing};
use asoc_tokio::asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_tokio::{DriverConfig, SharedAuthenticator};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::server::ClientStreamingService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic::{Status, Streaming};
use tonic_prost::ProstCodec;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// `message Chunk { bytes data = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Chunk {
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

/// `message Received { uint64 bytes = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Received {
    #[prost(uint64, tag = "1")]
    bytes: u64,
}

const UPLOAD: &str = "/asoc.bench.Sink/Upload";

/// HTTP/2 flow-control settings of a tonic run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum H2 {
    /// tonic's and hyper's defaults (the receiving server advertises 1 MiB
    /// stream and connection windows and 16 KiB frames).
    Default,
    /// Tuned for bulk transfer: 16 MiB stream and 32 MiB connection
    /// windows and 1 MiB frames on both ends, so flow control never stalls
    /// a 1 MiB message and each message is a single DATA frame.
    Tuned,
}

/// The server side of `Sink.Upload`: counts the bytes of every chunk.
struct Upload;

impl ClientStreamingService<Chunk> for Upload {
    type Response = Received;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Received>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Streaming<Chunk>>) -> Self::Future {
        Box::pin(async move {
            let mut chunks = request.into_inner();
            let mut bytes = 0u64;
            while let Some(chunk) = chunks.message().await? {
                bytes += chunk.data.len() as u64;
            }
            Ok(tonic::Response::new(Received { bytes }))
        })
    }
}

/// The service router `tonic-build` would generate: one method.
#[derive(Clone, Copy)]
struct Sink {
    max_message: usize,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Sink {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let max_message = self.max_message;
        Box::pin(async move {
            if req.uri().path() != UPLOAD {
                return Ok(Status::unimplemented(req.uri().path().to_owned()).into_http());
            }
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Received, Chunk>::default())
                .max_decoding_message_size(max_message);
            Ok(grpc.client_streaming(Upload, req).await)
        })
    }
}

/// A run's parameters.
#[derive(Clone, Copy, Debug)]
struct Workload {
    bytes: u64,
    message: usize,
}

impl Workload {
    /// The sizes of the messages, the last one possibly short.
    fn messages(self, payload: &Bytes) -> impl Iterator<Item = Bytes> + Send + 'static {
        let payload = payload.clone();
        let size = self.message as u64;
        let total = self.bytes;
        (0..total.div_ceil(size)).map(move |i| {
            let n = (total - i * size).min(size) as usize;
            payload.slice(..n)
        })
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Bytes per second of one transfer: elapsed from the first write to the
/// receiver having counted every byte.
fn rate(bytes: u64, start: Instant, received: u64) -> Result<f64, Error> {
    if received != bytes {
        return Err(format!("received {received} of {bytes} bytes").into());
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

/// Plain TCP: `message`-byte writes to a reader that discards.
async fn raw_tcp(w: Workload) -> Result<f64, Error> {
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut io, _) = listener.accept().await?;
        io.set_nodelay(true)?;
        let mut buf = vec![0u8; w.message];
        let mut total = 0u64;
        loop {
            match io.read(&mut buf).await? {
                0 => return Ok::<u64, std::io::Error>(total),
                n => total += n as u64,
            }
        }
    });
    let mut io = TcpStream::connect(addr).await?;
    io.set_nodelay(true)?;
    let payload = Bytes::from(vec![0x5a; w.message]);
    let start = Instant::now();
    for chunk in w.messages(&payload) {
        io.write_all(&chunk).await?;
    }
    io.shutdown().await?;
    let received = reader.await??;
    rate(w.bytes, start, received)
}

fn authenticator(node: u8, seed: u8) -> Result<SharedAuthenticator, Error> {
    let key = ApiKey::new("bench-grpc-key-0123456789abcdef")?;
    let config = AuthenticatorConfig::new(uuid::Uuid::from_bytes([node; 16]), KeyRing::new(key));
    Ok(Arc::new(Mutex::new(Authenticator::new(config, [seed; 32]))))
}

/// asoc-tokio: one authenticated connection, one stream of `message`-byte
/// frames, a receiver that counts and drops them.
async fn asoc(w: Workload, seed: u8) -> Result<f64, Error> {
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    let server_auth = authenticator(2, seed)?;
    let server = tokio::spawn(async move {
        let (io, _) = listener.accept().await?;
        io.set_nodelay(true)?;
        let conn = asoc_tokio::accept(io, &server_auth, DriverConfig::default()).await?;
        let mut stream = conn.accept_stream().await.ok_or("no stream arrived")?;
        let mut total = 0u64;
        while let Some(chunk) = stream.chunk().await? {
            total += chunk.len() as u64;
        }
        Ok::<u64, Error>(total)
    });
    let io = TcpStream::connect(addr).await?;
    io.set_nodelay(true)?;
    let conn =
        asoc_tokio::connect(io, &authenticator(1, seed ^ 0xff)?, DriverConfig::default()).await?;
    let payload = Bytes::from(vec![0x5a; w.message]);
    let start = Instant::now();
    let mut stream = conn.open_stream().await?;
    for chunk in w.messages(&payload) {
        stream.send(chunk).await?;
    }
    stream.finish().await?;
    let received = server.await??;
    let rate = rate(w.bytes, start, received);
    conn.close().await;
    rate
}

/// tonic: one client-streaming call carrying `message`-byte `Chunk`s.
async fn tonic(w: Workload, h2: H2) -> Result<f64, Error> {
    let listener = TcpListener::bind(loopback()).await?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = Server::builder();
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    if h2 == H2::Tuned {
        server = server
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20);
        endpoint = endpoint
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(32 << 20)
            .max_frame_size(1 << 20);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sink = Sink {
        max_message: w.message + 64,
    };
    let serving = tokio::spawn(server.serve_with_incoming_shutdown(sink, incoming, async {
        let _ = stopped.await;
    }));
    let channel = endpoint.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let payload = Bytes::from(vec![0x5a; w.message]);
    let chunks = tokio_stream::iter(w.messages(&payload).map(|data| Chunk { data }));
    let start = Instant::now();
    let reply = grpc
        .client_streaming(
            tonic::Request::new(chunks),
            http::uri::PathAndQuery::from_static(UPLOAD),
            ProstCodec::<Chunk, Received>::default(),
        )
        .await?;
    let rate = rate(w.bytes, start, reply.into_inner().bytes);
    drop(grpc);
    let _ = stop.send(());
    serving.await??;
    rate
}

/// One round's rates, bytes per second.
#[derive(Clone, Copy, Debug)]
struct Round {
    raw: f64,
    asoc: f64,
    tonic_default: f64,
    tonic_tuned: f64,
}

async fn round(w: Workload, i: usize) -> Result<Round, Error> {
    // Rotate the order so no contender always runs first or last.
    let mut r = Round {
        raw: 0.0,
        asoc: 0.0,
        tonic_default: 0.0,
        tonic_tuned: 0.0,
    };
    for k in 0..4 {
        match (i + k) % 4 {
            0 => r.raw = raw_tcp(w).await?,
            1 => r.asoc = asoc(w, i as u8).await?,
            2 => r.tonic_default = tonic(w, H2::Default).await?,
            _ => r.tonic_tuned = tonic(w, H2::Tuned).await?,
        }
    }
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Parses `1GiB`, `512MiB`, `64KiB` or a plain byte count.
fn parse_size(s: &str) -> Result<u64, Error> {
    let (digits, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = digits.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return Err(format!("bad size unit in {s:?} (B, KiB, MiB, GiB)").into()),
    };
    n.checked_mul(1 << shift)
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("size {s:?} out of range").into())
}

struct Args {
    workload: Workload,
    rounds: usize,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        workload: Workload {
            bytes: 1 << 30,
            message: 1 << 20,
        },
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--size" => args.workload.bytes = parse_size(&value()?)?,
            "--message" => {
                args.workload.message = usize::try_from(parse_size(&value()?)?)?;
                if args.workload.message > 16 << 20 {
                    return Err("--message is at most 16MiB".into());
                }
            }
            "--rounds" => args.rounds = value()?.parse()?,
            "-h" | "--help" => {
                println!("usage: bench-grpc [--size 1GiB] [--message 1MiB] [--rounds 5]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-grpc: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Error> {
    let args = parse_args()?;
    let w = args.workload;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "one stream, {} MiB in {} KiB messages, {} rounds (MiB/s)",
        w.bytes >> 20,
        w.message >> 10,
        args.rounds
    );
    println!("round       raw TCP    asoc-tokio  tonic(default)  tonic(tuned)");
    let mut rounds = Vec::new();
    for i in 0..args.rounds {
        let r = rt.block_on(round(w, i))?;
        let mib = |x: f64| x / f64::from(1 << 20);
        println!(
            "{i:>5} {:>13.1} {:>13.1} {:>15.1} {:>13.1}",
            mib(r.raw),
            mib(r.asoc),
            mib(r.tonic_default),
            mib(r.tonic_tuned)
        );
        rounds.push(r);
    }
    let med = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let mib = f64::from(1 << 20);
    println!(
        "median MiB/s: raw TCP {:.1}, asoc-tokio {:.1}, tonic default {:.1}, tonic tuned {:.1}",
        med(|r| r.raw) / mib,
        med(|r| r.asoc) / mib,
        med(|r| r.tonic_default) / mib,
        med(|r| r.tonic_tuned) / mib
    );
    println!(
        "median ratios: asoc-tokio / raw TCP {:.3}; asoc-tokio / tonic default {:.2}x; asoc-tokio / tonic tuned {:.2}x (target >= 1.5x)",
        med(|r| r.asoc / r.raw),
        med(|r| r.asoc / r.tonic_default),
        med(|r| r.asoc / r.tonic_tuned)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each contender delivers every byte of a small transfer with a short
    /// last message (the rate check fails on any shortfall).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_contender_delivers_every_byte() {
        let w = Workload {
            bytes: (3 << 20) + 12_345,
            message: 1 << 20,
        };
        assert!(raw_tcp(w).await.unwrap() > 0.0);
        assert!(asoc(w, 7).await.unwrap() > 0.0);
        assert!(tonic(w, H2::Default).await.unwrap() > 0.0);
        assert!(tonic(w, H2::Tuned).await.unwrap() > 0.0);
    }

    #[test]
    fn messages_cover_the_size_exactly() {
        let payload = Bytes::from(vec![0u8; 1000]);
        let w = Workload {
            bytes: 2500,
            message: 1000,
        };
        let sizes: Vec<usize> = w.messages(&payload).map(|b| b.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("3MiB").unwrap(), 3 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1GB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[tokio::test]
    async fn unknown_methods_are_unimplemented() {
        let mut sink = Sink { max_message: 1024 };
        let req = http::Request::builder()
            .uri("/other.Service/Call")
            .body(tonic::body::Body::empty())
            .unwrap();
        let resp = tower_service::Service::call(&mut sink, req).await.unwrap();
        let status = Status::from_header_map(resp.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
}
