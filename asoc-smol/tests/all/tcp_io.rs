//! `TcpIo` reads: they wait for readiness only after finding the socket
//! drained, and never miss data that arrives while they wait.

use std::future::poll_fn;

use asoc_async::Transport;
use asoc_smol::TcpIo;
use async_net::{TcpListener, TcpStream};
use bytes::BytesMut;
use futures_lite::future::{block_on, poll_once};
use futures_lite::AsyncWriteExt;

async fn pair() -> (TcpIo, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (TcpIo::new(client), server)
}

async fn read(io: &mut TcpIo, buf: &mut BytesMut, max: usize) -> usize {
    poll_fn(|cx| io.poll_read_into(cx, buf, max)).await.unwrap()
}

#[test]
fn reads_wait_for_data_and_wake_when_it_arrives() {
    block_on(async {
        let (mut io, mut peer) = pair().await;
        let mut buf = BytesMut::new();
        // Nothing sent yet: pending, and nothing appended (the zeroed
        // window is not left in the buffer).
        let first = poll_once(poll_fn(|cx| io.poll_read_into(cx, &mut buf, 1024))).await;
        assert!(first.is_none());
        assert!(buf.is_empty());
        peer.write_all(b"0123456789").await.unwrap();
        // A short read: the next one waits for readiness first.
        assert_eq!(read(&mut io, &mut buf, 1024).await, 10);
        assert_eq!(&buf[..], b"0123456789");
        let waiting = poll_once(poll_fn(|cx| io.poll_read_into(cx, &mut buf, 1024))).await;
        assert!(waiting.is_none());
        peer.write_all(b"abcde").await.unwrap();
        assert_eq!(read(&mut io, &mut buf, 1024).await, 5);
        assert_eq!(&buf[..], b"0123456789abcde");
        drop(peer);
        assert_eq!(read(&mut io, &mut buf, 1024).await, 0);
    });
}

#[test]
fn a_read_that_filled_its_window_reads_the_rest_at_once() {
    block_on(async {
        let (mut io, mut peer) = pair().await;
        let mut buf = BytesMut::new();
        peer.write_all(&[7u8; 100]).await.unwrap();
        assert_eq!(read(&mut io, &mut buf, 10).await, 10);
        // The first read took all it was offered, so the rest is read on
        // the first poll, without a round through the reactor.
        let rest = poll_once(poll_fn(|cx| io.poll_read_into(cx, &mut buf, 1000))).await;
        assert_eq!(rest.map(Result::unwrap), Some(90));
        assert_eq!(&buf[..], &[7u8; 100][..]);
    });
}
