//! The servers the command-line tests and the self-check run against.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use conformance::wire::accept_frame;

/// The API key the sloppy server's ACCEPT is made with.
pub(crate) const KEY: &str = "0123456789abcdef0123456789abcdef";

/// A server that accepts every HELLO without checking its MAC, then runs
/// `then` on the connection, each in a thread of its own. A connection that
/// ends or fails before its ACCEPT is written is dropped.
pub(crate) fn accepting_server(then: fn(TcpStream)) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut hello = [0u8; 50];
                if s.read_exact(&mut hello).is_ok()
                    && s.write_all(&accept_frame(KEY.as_bytes())).is_ok()
                {
                    then(s);
                }
            });
        }
    });
    addr
}

/// A server that accepts every HELLO without checking its MAC, then reads
/// and ignores whatever else comes until the peer closes.
pub(crate) fn sloppy_server() -> SocketAddr {
    accepting_server(|mut s| {
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    })
}
