//! One connection over real loopback TCP.

use asoc_proto::connection::CloseReason;
use asoc_testkit::scenarios::{connection_auth as auth, hashed, tensor};
use asoc_tokio::{DriverConfig, Error};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const KEY: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_and_a_verified_256_mib_stream_over_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_auth = auth(2, KEY);
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let conn = asoc_tokio::accept(sock, &server_auth, DriverConfig::default())
            .await
            .unwrap();
        assert_eq!(conn.session().peer_node, Some(Uuid::from_bytes([1; 16])));
        let mut stream = conn.accept_stream().await.unwrap();
        let (n, digest) = hashed(&mut stream).await;
        (n, stream.frames(), digest)
    });
    let sock = TcpStream::connect(addr).await.unwrap();
    let conn = asoc_tokio::connect(sock, &auth(1, KEY), DriverConfig::default())
        .await
        .unwrap();
    let data = tensor(256 << 20);
    let expected = Sha256::digest(&data).to_vec();
    conn.send_tensor(Bytes::from(data), 1 << 20).await.unwrap();
    let (n, frames, digest) = server.await.unwrap();
    assert_eq!(n, 256 << 20);
    assert_eq!(frames, 256);
    assert_eq!(digest, expected);
    conn.close().await;
    assert_eq!(conn.closed().await, CloseReason::Local);
}

#[tokio::test]
async fn wrong_key_is_refused_and_the_server_sends_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        asoc_tokio::accept(sock, &auth(2, KEY), DriverConfig::default()).await
    });
    let sock = TcpStream::connect(addr).await.unwrap();
    let client = asoc_tokio::connect(
        sock,
        &auth(1, "a-completely-different-key"),
        DriverConfig::default(),
    )
    .await;
    match server.await.unwrap() {
        Err(Error::Handshake(CloseReason::AuthFailed(f))) => assert_eq!(f.as_str(), "bad_mac"),
        other => panic!("server: {other:?}"),
    }
    match client {
        Err(Error::Handshake(CloseReason::PeerClosed)) => {}
        other => panic!("client: {other:?}"),
    }
}

/// A transport that, like a TLS layer, keeps what it is given until it is
/// flushed, and whose flush needs a second call each time (it wakes the task
/// and reports `Pending` first). A driver that flushed only after writing
/// something new would leave the last bytes here for ever.
struct HoldsUntilFlushed {
    inner: TcpStream,
    held: Vec<u8>,
    deferred: bool,
}

impl tokio::io::AsyncRead for HoldsUntilFlushed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for HoldsUntilFlushed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        if self.held.len() >= 64 << 10 {
            // Full: push what is held first, as rustls does.
            match self.as_mut().poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.len().min(64 << 10);
        self.held.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if !self.held.is_empty() && !self.deferred {
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while !self.held.is_empty() {
            let this = &mut *self;
            match std::pin::Pin::new(&mut this.inner).poll_write(cx, &this.held) {
                Poll::Ready(Ok(n)) => {
                    this.held.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.deferred = false;
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match self.as_mut().poll_flush(cx) {
            Poll::Ready(Ok(())) => std::pin::Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_a_transport_holds_is_flushed_even_when_nothing_new_is_written() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let io = HoldsUntilFlushed {
            inner: sock,
            held: Vec::new(),
            deferred: false,
        };
        let conn = asoc_tokio::accept(io, &auth(2, KEY), DriverConfig::default())
            .await
            .unwrap();
        let mut stream = conn.accept_stream().await.unwrap();
        let (n, digest) = hashed(&mut stream).await;
        // Answer on a stream of our own: its last bytes go through the
        // holding transport, and the client must still get all of them.
        let mut reply = conn.open_stream().await.unwrap();
        reply.send(Bytes::copy_from_slice(&digest)).await.unwrap();
        reply.finish().await.unwrap();
        (n, conn)
    });
    let io = HoldsUntilFlushed {
        inner: TcpStream::connect(addr).await.unwrap(),
        held: Vec::new(),
        deferred: false,
    };
    let conn = asoc_tokio::connect(io, &auth(1, KEY), DriverConfig::default())
        .await
        .unwrap();
    let data = tensor((3 << 20) + 12_345);
    let expected = Sha256::digest(&data).to_vec();
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        conn.send_tensor(Bytes::from(data.clone()), 1 << 20),
    );
    sent.await.expect("send within 20 s").unwrap();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut stream = conn.accept_stream().await.unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = stream.chunk().await.unwrap() {
            got.extend_from_slice(&chunk);
        }
        got
    })
    .await
    .expect("the reply arrives well before any idle timer");
    assert_eq!(reply, expected);
    let (n, _server_conn) = server.await.unwrap();
    assert_eq!(n, data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_still_queued_when_the_connection_ends_fails_instead_of_waiting_for_ever() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let config = DriverConfig::builder()
            .receive_buffer(64 << 10)
            .build()
            .unwrap();
        // Never takes a stream: reading stops at 64 KiB, so the client's
        // commands pile up behind its high-water mark.
        let conn = asoc_tokio::accept(sock, &auth(2, KEY), config)
            .await
            .unwrap();
        close_rx.await.unwrap();
        conn.close().await;
        conn.closed().await
    });
    let config = DriverConfig::builder().command_queue(256).build().unwrap();
    let sock = TcpStream::connect(addr).await.unwrap();
    let conn = asoc_tokio::connect(sock, &auth(1, KEY), config)
        .await
        .unwrap();
    let mut stream = conn.open_stream().await.unwrap();
    let chunk = Bytes::from(vec![7u8; 1 << 20]);
    for _ in 0..128 {
        stream.send(chunk.clone()).await.unwrap();
    }
    let finish = tokio::spawn(stream.finish());
    // Let the driver take what fits and hold the rest, FINISH among it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !finish.is_finished(),
        "the peer reads nothing, so FINISH must still be queued"
    );
    close_tx.send(()).unwrap();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), finish)
        .await
        .expect("finish answers once the connection has ended")
        .unwrap();
    match result {
        Err(Error::Closed(_)) => {}
        other => panic!("finish of a cut stream: {other:?}"),
    }
    server.await.unwrap();
}

#[test]
fn driver_config_refuses_zero_limits_in_build() {
    use asoc_proto::connection::ConfigError;
    for (config, field) in [
        (DriverConfig::builder().receive_buffer(0), "receive_buffer"),
        (DriverConfig::builder().command_queue(0), "command_queue"),
    ] {
        assert_eq!(config.build().err(), Some(ConfigError::ZeroLimit { field }));
    }
    let built = DriverConfig::builder()
        .receive_buffer(1)
        .command_queue(1)
        .build()
        .unwrap();
    assert_eq!((built.receive_buffer(), built.command_queue()), (1, 1));
}
