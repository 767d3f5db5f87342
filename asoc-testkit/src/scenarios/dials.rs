//! Dials that cannot hang: the TCP connect of every dial is bounded by the
//! handshake timeout, so a blackholed address costs a dial that long, not
//! the kernel's SYN retries (about two minutes on Linux).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use asoc_async::{Error, Net};

use super::{builder, start, KEY};

/// A loopback address whose SYNs are dropped, and what keeps it so: a
/// listener with a backlog of 0 that never accepts, its one queue slot
/// held by a connection (Linux then drops further SYNs instead of
/// answering them). Keep both alive while dialing. Checked before it is
/// returned: a probe connect to it must not complete within 300 ms.
///
/// # Panics
///
/// When the address answers anyway (a kernel that refuses or accepts a
/// full queue's SYNs): a dial to it would prove nothing.
#[must_use]
pub fn blackhole() -> (socket2::Socket, TcpStream, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    listener.bind(&any.into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect(addr).unwrap();
    let probe = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
    assert!(
        matches!(&probe, Err(e) if e.kind() == std::io::ErrorKind::TimedOut),
        "{addr} is no blackhole: a probe connect gave {probe:?}"
    );
    (listener, filler, addr)
}

/// A node whose handshake timeout is 1 s dials a blackholed address: the
/// dial fails with a timed-out I/O error naming the TCP connect, instead
/// of waiting for the kernel to give up. The scenario itself gives up
/// after 30 s, long before the kernel would.
pub async fn connect_to_a_blackhole_times_out<N: Net>(net: N) {
    let (_listener, _filler, addr) = blackhole();
    let node = start(
        &net,
        builder(KEY).driver(super::handshake_deadline(Duration::from_secs(1))),
    )
    .await;
    let started = Instant::now();
    let dial = node.connect(addr.to_string());
    let outcome = asoc_async::race(dial, net.sleep_until(started + Duration::from_secs(30)))
        .await
        .expect("the dial to a blackholed address was still connecting after 30 s");
    match outcome {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            assert!(e.to_string().contains("TCP connect"), "{e}");
        }
        other => panic!("a dial to a blackholed address gave {other:?}"),
    }
    assert!(node.peers().is_empty());
    node.shutdown(Duration::from_secs(1)).await;
}
