//! Frame decode and encode throughput of asoc-proto alone (the codec must
//! not be the bottleneck: at least 20 million frames per second with 0–64 byte payloads).

use std::hint::black_box;
use std::time::Instant;

use asoc_proto::connection::{Connection, ConnectionConfig, Event};
use asoc_proto::handshake::ClientOptions;
use asoc_proto::wire::{FrameDecoder, FrameType, Header};
use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const FRAMES: usize = 10_000;

fn wire(payload: usize) -> Vec<u8> {
    let body = vec![7u8; payload];
    let mut v = Vec::with_capacity(FRAMES * (14 + payload));
    for seq in 0..FRAMES as u32 {
        v.extend_from_slice(&Header::new(FrameType::Data, 1, seq, payload as u32).encode());
        v.extend_from_slice(&body);
    }
    v
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(FRAMES as u64));
    for payload in [0usize, 16, 64] {
        let input = wire(payload);
        g.bench_function(format!("frame decoder, {payload} B payloads"), |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |mut buf| {
                    let mut dec = FrameDecoder::new(1 << 24);
                    while let Ok(Some(f)) = dec.decode(&mut buf) {
                        black_box(f);
                    }
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(FRAMES as u64));
    g.bench_function("header encode", |b| {
        b.iter(|| {
            for seq in 0..FRAMES as u32 {
                black_box(Header::new(FrameType::Data, 1, seq, 64).encode());
            }
        })
    });
    // Whole frames into one contiguous buffer, as a writer coalescing small
    // frames into one large write would lay them out.
    for payload in [0usize, 16, 64] {
        let body = vec![7u8; payload];
        let mut out = Vec::with_capacity(FRAMES * (14 + payload));
        g.bench_function(format!("frame encode, {payload} B payloads"), |b| {
            b.iter(|| {
                out.clear();
                for seq in 0..FRAMES as u32 {
                    let header = Header::new(FrameType::Data, 1, seq, payload as u32);
                    out.extend_from_slice(&header.encode());
                    out.extend_from_slice(black_box(&body));
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// Whole connections: established server receiving DATA frames, and an
/// established client queueing and writing them.
fn connection(c: &mut Criterion) {
    use asoc_proto::auth::{ApiKey, KeyRing};
    use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
    let now = Instant::now();
    let auth = |n: u8| {
        Authenticator::new(
            AuthenticatorConfig::new(
                uuid::Uuid::from_bytes([n; 16]),
                KeyRing::new(ApiKey::new("0123456789abcdef").unwrap()),
            ),
            [n; 32],
        )
    };
    let pair = || {
        let (mut ca, mut sa) = (auth(1), auth(2));
        let mut client = ca.client(now, 0, ConnectionConfig::default(), ClientOptions::v1());
        let mut server = Connection::server(ConnectionConfig::default(), now);
        let mut hello = Vec::new();
        client.write_to(now, &mut hello).unwrap();
        server.handle_read(now, &hello);
        sa.drive(now, 0, &mut server);
        let mut accept = Vec::new();
        server.write_to(now, &mut accept).unwrap();
        client.handle_read(now, &accept);
        ca.drive(now, 0, &mut client);
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
        (client, server)
    };
    let mut g = c.benchmark_group("connection");
    g.throughput(Throughput::Elements(FRAMES as u64));
    for payload in [0usize, 64] {
        let input = wire(payload);
        g.bench_function(format!("server receives {payload} B DATA frames"), |b| {
            b.iter_batched(
                || (pair().1, BytesMut::from(&input[..])),
                |(mut server, mut buf)| {
                    server.handle_input(now, &mut buf);
                    let mut n = 0;
                    while let Some(e) = server.poll_event() {
                        if let Event::Data { .. } = e {
                            n += 1;
                        }
                    }
                    assert_eq!(n, FRAMES);
                },
                criterion::BatchSize::LargeInput,
            )
        });
        let chunk = Bytes::from(vec![1u8; payload]);
        g.bench_function(format!("client sends {payload} B DATA frames"), |b| {
            b.iter_batched(
                || (pair().0, Vec::with_capacity(FRAMES * (14 + payload))),
                |(mut client, mut out)| {
                    let s = client.open_stream().unwrap();
                    for _ in 0..FRAMES {
                        client.send(now, s, chunk.clone()).unwrap();
                    }
                    client.write_to(now, &mut out).unwrap();
                    black_box(out.len())
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, decode, encode, connection);
}
criterion_main!(group::benches);
