//! 1 GiB in 1 MiB chunks between two mio nodes on loopback, against raw
//! TCP in the same run (alternating A B A B so that drift on a shared
//! machine hits both). `cargo run --release -p asoc-mio --example throughput [GiB] [rounds]`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use asoc_mio::{NodeBuilder, PeerRef};
use asoc_proto::auth::ApiKey;
use bytes::Bytes;

const CHUNK: usize = 1 << 20;

/// Raw TCP: one blocking writer, one blocking reader; bytes per second.
fn raw(total: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut n = 0u64;
        while n < total {
            n += s.read(&mut buf).unwrap() as u64;
        }
    });
    let chunk = vec![7u8; CHUNK];
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    for _ in 0..total / CHUNK as u64 {
        s.write_all(&chunk).unwrap();
    }
    reader.join().unwrap();
    total as f64 / started.elapsed().as_secs_f64()
}

/// Two mio nodes: one stream of `total` bytes; bytes per second from the
/// first chunk sent to the last chunk received.
fn asoc(total: u64) -> f64 {
    let key = || ApiKey::new("0123456789abcdef0123456789abcdef").unwrap();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let b = NodeBuilder::new("bench", key())
        .bind(loopback)
        .start()
        .unwrap();
    let a = NodeBuilder::new("bench", key())
        .bind(loopback)
        .start()
        .unwrap();
    let peer = a.connect(b.local_addr()).unwrap();
    let receiver = {
        let b = b.clone();
        thread::spawn(move || {
            let mut stream = b.accept_stream().unwrap().stream;
            let mut n = 0u64;
            while let Some(c) = stream.chunk().unwrap() {
                n += c.len() as u64;
            }
            n
        })
    };
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let started = Instant::now();
    let mut s = a.open_stream(PeerRef::Conn(peer.id)).unwrap();
    for _ in 0..total / CHUNK as u64 {
        s.send(chunk.clone()).unwrap();
    }
    s.finish().unwrap();
    assert_eq!(receiver.join().unwrap(), total);
    let rate = total as f64 / started.elapsed().as_secs_f64();
    a.shutdown(Duration::from_secs(5));
    b.shutdown(Duration::from_secs(5));
    rate
}

fn main() {
    let mut args = std::env::args().skip(1);
    let gib: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let total = gib << 30;
    let gibps = |r: f64| r / f64::from(1u32 << 30);
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let base = raw(total);
        let node = asoc(total);
        ratios.push(node / base);
        println!(
            "round {round}: raw TCP {:.2} GiB/s, mio nodes {:.2} GiB/s, ratio {:.2}",
            gibps(base),
            gibps(node),
            node / base
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!("median ratio {:.2}", ratios[ratios.len() / 2]);
}
