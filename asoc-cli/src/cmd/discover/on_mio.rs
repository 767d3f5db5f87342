//! `asoc discover --runtime mio`: the same passive listening on a mio UDP
//! socket in a `mio::Poll` of our own (asoc-mio's node always listens on
//! TCP too, and discover opens nothing but the UDP socket).

use std::io;
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::Discover;
use crate::error::{CliError, CliResult};
use crate::net_errors::bind_failed;

const UDP: Token = Token(0);

/// Listens until `--for` has passed, then lists the peers found.
pub(super) fn run(discover: Discover) -> CliResult {
    let failed = |e: io::Error| CliError::runtime(format!("mio poll failed: {e}"));
    let mut udp = UdpSocket::bind(discover.bind)
        .map_err(|e| bind_failed(&format!("udp {}", discover.bind), &e))?;
    let mut poll = Poll::new().map_err(failed)?;
    poll.registry()
        .register(&mut udp, UDP, Interest::READABLE)
        .map_err(failed)?;
    let bound = udp.local_addr().unwrap_or(discover.bind);
    let (mut discovery, start) = discover.begin(bound)?;
    let deadline = start + discover.duration;
    let mut events = Events::with_capacity(8);
    let mut buf = vec![0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(e)),
        }
        loop {
            match udp.recv_from(&mut buf) {
                Ok((n, src)) => {
                    discover.datagram(&mut discovery, src, buf.get(..n).unwrap_or(&[]));
                    discover.tick(&mut discovery);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors of earlier datagrams and interruptions are
                // one-offs: keep reading (readiness is edge-triggered).
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                // Like a lost datagram; the next announcement follows.
                Err(_) => break,
            }
        }
    }
    discover.list(&discovery);
    Ok(())
}
