//! `asoc demo`: two nodes on loopback, an authenticated handshake and a
//! SHA-256-verified tensor stream, with no set-up at all.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{CloseReason, Connection, ConnectionConfig, Event};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_proto::rng::Rng;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::blocking::Driver;
use crate::os;

/// What the receiving node saw.
struct Received {
    handshake_bytes: u64,
    frames: u32,
    bytes: u64,
    digest: [u8; 32],
    elapsed: Duration,
}

pub(crate) fn run(size: u64, chunk: usize) -> Result<(), String> {
    let seed = os::seed().map_err(|e| format!("no OS randomness: {e}"))?;
    let key = ApiKey::generate(Rng::from_seed(seed).inner());
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind 127.0.0.1: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("asoc demo: two nodes on loopback, a fresh 256-bit key held in memory");
    println!("  receiver listening on {addr}");

    let server_key = key.clone();
    let receiver = thread::spawn(move || receive(listener, server_key));
    let sent = send(addr, key, size, chunk)?;
    let got = receiver
        .join()
        .map_err(|_| "receiver thread panicked".to_string())??;

    let ok = got.digest == sent && got.bytes == size;
    let secs = got.elapsed.as_secs_f64().max(1e-9);
    println!(
        "  handshake:   HELLO 50 B + ACCEPT 30 B = {} B on the wire, HMAC-SHA256 verified",
        got.handshake_bytes
    );
    println!(
        "  transferred: {} bytes in {} DATA frames + END",
        got.bytes, got.frames
    );
    println!(
        "  throughput:  {:.1} MiB/s ({:.3} s)",
        got.bytes as f64 / (1024.0 * 1024.0) / secs,
        secs
    );
    println!("  sha256 sent:     {}", hex(&sent));
    println!("  sha256 received: {}", hex(&got.digest));
    if ok {
        println!("  verification: OK, the tensor arrived intact");
        Ok(())
    } else {
        Err("verification FAILED: the received tensor differs from the one sent".into())
    }
}

fn authenticator(key: ApiKey) -> Result<Authenticator, String> {
    let node = os::node_id().map_err(|e| e.to_string())?;
    let seed = os::seed().map_err(|e| e.to_string())?;
    Ok(Authenticator::new(
        AuthenticatorConfig::new(node, KeyRing::new(key)),
        seed,
    ))
}

fn send(
    addr: std::net::SocketAddr,
    key: ApiKey,
    size: u64,
    chunk: usize,
) -> Result<[u8; 32], String> {
    let socket = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut auth = authenticator(key)?;
    let conn = auth.client(Instant::now(), ConnectionConfig::default());
    let mut d = Driver::new(conn, auth, socket);
    d.flush().map_err(|e| e.to_string())?;
    while !d.conn.is_established() {
        d.read_once().map_err(|e| e.to_string())?;
        while let Some(ev) = d.poll_event() {
            if let Event::Closed { reason } = ev {
                return Err(format!("handshake failed: {reason}"));
            }
        }
    }
    // The tensor: a deterministic pattern, hashed as it is produced.
    let stream = d.conn.open_stream().map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; chunk];
    let mut sent = 0u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bar = Progress::new(size);
    while sent < size {
        let n = (size - sent).min(chunk as u64) as usize;
        for word in block[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        hasher.update(&block[..n]);
        let payload = Bytes::copy_from_slice(&block[..n]);
        d.conn
            .send(Instant::now(), stream, payload)
            .map_err(|e| e.to_string())?;
        d.flush().map_err(|e| e.to_string())?;
        sent += n as u64;
        bar.update(sent);
    }
    d.conn
        .finish(Instant::now(), stream)
        .map_err(|e| e.to_string())?;
    d.conn.close(Instant::now());
    d.flush().map_err(|e| e.to_string())?;
    bar.done();
    Ok(hasher.finalize().into())
}

fn receive(listener: TcpListener, key: ApiKey) -> Result<Received, String> {
    let (socket, _) = listener.accept().map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    let auth = authenticator(key)?;
    let conn = Connection::server(ConnectionConfig::default(), Instant::now());
    let mut d = Driver::new(conn, auth, socket);
    let mut hasher = Sha256::new();
    let mut started = None;
    let mut handshake_bytes = 0;
    loop {
        d.read_once().map_err(|e| e.to_string())?;
        d.flush().map_err(|e| e.to_string())?;
        while let Some(ev) = d.poll_event() {
            match ev {
                Event::Established { .. } => {
                    started = Some(Instant::now());
                    // The HELLO consumed plus the ACCEPT written (or queued) in reply.
                    let stats = d.conn.stats();
                    handshake_bytes =
                        stats.bytes_in + stats.bytes_out + d.conn.pending_output() as u64;
                }
                Event::Data { payload, .. } => hasher.update(&payload),
                Event::StreamEnd { frames, bytes, .. } => {
                    let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
                    return Ok(Received {
                        handshake_bytes,
                        frames,
                        bytes,
                        digest: hasher.finalize().into(),
                        elapsed,
                    });
                }
                Event::Closed { reason } => return Err(closed(&reason)),
                _ => {}
            }
        }
    }
}

fn closed(reason: &CloseReason) -> String {
    format!("receiver: connection closed before the stream ended: {reason}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-line progress display on stderr, updated in place; silent when
/// stderr is not a terminal.
struct Progress {
    total: u64,
    start: Instant,
    visible: bool,
}

impl Progress {
    fn new(total: u64) -> Self {
        use std::io::IsTerminal;
        Self {
            total,
            start: Instant::now(),
            visible: std::io::stderr().is_terminal(),
        }
    }

    fn update(&self, done: u64) {
        if !self.visible || (done % (16 << 20) != 0 && done != self.total) {
            return;
        }
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r  sending: {:>4} / {} MiB  {:>7.1} MiB/s",
            done >> 20,
            self.total >> 20,
            done as f64 / (1024.0 * 1024.0) / secs
        );
    }

    fn done(&self) {
        if self.visible {
            eprintln!();
        }
    }
}
