//! One connection over real loopback TCP (and a Unix socket pair), each
//! scenario under smol's global executor, an owned `async-executor` and
//! async-std's executor.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use asoc_proto::connection::CloseReason;
use asoc_smol::{DriverConfig, Error, Smol};
use asoc_testkit::scenarios::{connection_auth as auth, hashed, tensor};
use async_executor::Executor;
use bytes::Bytes;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future::zip;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";
const MIB: usize = 1 << 20;

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connected loopback TCP pair (server side, client side) of async-net.
async fn smol_tcp_pair() -> (async_net::TcpStream, async_net::TcpStream) {
    let listener = async_net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, client) = zip(listener.accept(), async_net::TcpStream::connect(addr)).await;
    (accepted.unwrap().0, client.unwrap())
}

/// The same with async-std's own sockets.
async fn async_std_tcp_pair() -> (async_std::net::TcpStream, async_std::net::TcpStream) {
    let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, client) = zip(listener.accept(), async_std::net::TcpStream::connect(addr)).await;
    (accepted.unwrap().0, client.unwrap())
}

/// Runs `f` on an owned executor served by the calling thread and one more.
fn on_executor<F: Future<Output = ()> + Send>(f: impl FnOnce(Smol) -> F) {
    let ex = Arc::new(Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    std::thread::scope(|s| {
        let worker = ex.clone();
        s.spawn(move || smol::block_on(worker.run(stopped.recv())));
        smol::block_on(ex.run(f(Smol::from_executor(ex.clone()))));
        drop(stop);
    });
}

fn async_std_rt() -> Smol {
    Smol::with_spawner(|task| {
        async_std::task::spawn(task);
    })
}

async fn stream_scenario(rt: Smol, server_io: impl Io, client_io: impl Io, size: usize) {
    let server = async {
        let conn = asoc_smol::accept_on(&rt, server_io, &auth(2, KEY), DriverConfig::default())
            .await
            .unwrap();
        assert_eq!(conn.session().peer_node, Some(Uuid::from_bytes([1; 16])));
        let mut stream = conn.accept_stream().await.unwrap();
        let (n, digest) = hashed(&mut stream).await;
        (n, stream.frames(), digest)
    };
    let client = async {
        let conn = asoc_smol::connect_on(&rt, client_io, &auth(1, KEY), DriverConfig::default())
            .await
            .unwrap();
        let data = tensor(size);
        let expected = Sha256::digest(&data).to_vec();
        conn.send_tensor(Bytes::from(data), MIB).await.unwrap();
        (conn, expected)
    };
    let ((n, frames, digest), (conn, expected)) = zip(server, client).await;
    assert_eq!(n, size as u64);
    assert_eq!(frames as usize, size.div_ceil(MIB));
    assert_eq!(digest, expected);
    conn.close().await;
    assert_eq!(conn.closed().await, CloseReason::Local);
}

/// A futures-io stream that counts the bytes read from it.
struct Counting<T>(T, Arc<AtomicUsize>);

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.0).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.1.fetch_add(n, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

async fn wrong_key_scenario(rt: Smol, server_io: impl Io, client_io: impl Io) {
    let received = Arc::new(AtomicUsize::new(0));
    let client_io = Counting(client_io, received.clone());
    let (server_auth, client_auth) = (auth(2, KEY), auth(1, "a-completely-different-key"));
    let server = asoc_smol::accept_on(&rt, server_io, &server_auth, DriverConfig::default());
    let client = asoc_smol::connect_on(&rt, client_io, &client_auth, DriverConfig::default());
    let (server, client) = zip(server, client).await;
    match server {
        Err(Error::Handshake(CloseReason::AuthFailed(f))) => assert_eq!(f.as_str(), "bad_mac"),
        other => panic!("server: {other:?}"),
    }
    // The server answered nothing: the client only saw the close.
    match client {
        Err(Error::Handshake(CloseReason::PeerClosed)) => {}
        other => panic!("client: {other:?}"),
    }
    assert_eq!(received.load(Ordering::Relaxed), 0);
}

#[test]
fn smol_global_handshake_and_a_verified_256_mib_stream_over_loopback() {
    smol::block_on(async {
        let (s, c) = smol_tcp_pair().await;
        stream_scenario(Smol::global(), s, c, 256 * MIB).await;
    });
}

#[test]
fn async_std_handshake_and_a_verified_256_mib_stream_over_loopback() {
    async_std::task::block_on(async {
        let (s, c) = async_std_tcp_pair().await;
        stream_scenario(async_std_rt(), s, c, 256 * MIB).await;
    });
}

#[test]
fn executor_handshake_and_a_verified_32_mib_stream_over_loopback() {
    on_executor(|rt| async move {
        let (s, c) = smol_tcp_pair().await;
        stream_scenario(rt, s, c, 32 * MIB + 12_345).await;
    });
}

#[test]
fn smol_global_wrong_key_is_refused_and_the_server_sends_nothing() {
    smol::block_on(async {
        let (s, c) = smol_tcp_pair().await;
        wrong_key_scenario(Smol::global(), s, c).await;
    });
}

#[test]
fn executor_wrong_key_is_refused_and_the_server_sends_nothing() {
    on_executor(|rt| async move {
        let (s, c) = smol_tcp_pair().await;
        wrong_key_scenario(rt, s, c).await;
    });
}

#[test]
fn async_std_wrong_key_is_refused_and_the_server_sends_nothing() {
    async_std::task::block_on(async {
        let (s, c) = async_std_tcp_pair().await;
        wrong_key_scenario(async_std_rt(), s, c).await;
    });
}

#[test]
fn smol_global_connection_over_a_unix_socket_pair() {
    smol::block_on(async {
        let (s, c) = async_net::unix::UnixStream::pair().unwrap();
        stream_scenario(Smol::global(), s, c, 16 * MIB).await;
    });
}

#[test]
fn async_std_connection_over_a_unix_socket_pair() {
    async_std::task::block_on(async {
        let (s, c) = async_net::unix::UnixStream::pair().unwrap();
        stream_scenario(async_std_rt(), s, c, 16 * MIB).await;
    });
}
