//! Counting-allocator checks (one test in this binary, so that nothing else
//! allocates while it measures): payloads are never copied, and an idle
//! established connection costs at most 4 KiB.

mod harness;

use std::alloc::System;
use std::time::Instant;

use asoc_proto::connection::{Connection, ConnectionConfig, Event};
use asoc_proto::wire::{FrameType, Header};
use bytes::{Bytes, BytesMut};
use harness::{authenticator, key, KEY};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn live(stats: stats_alloc::Stats) -> isize {
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

/// A server connection after a completed handshake, and the receive buffer
/// its adapter would own.
fn established(
    now: Instant,
    auth: &mut asoc_proto::handshake::Authenticator,
    seed: u8,
) -> (Connection, BytesMut) {
    let mut client_auth = authenticator(1, key(KEY), seed);
    let hello = client_auth.make_hello(now);
    let mut rx = BytesMut::with_capacity(64 << 10);
    let mut conn = Connection::server(ConnectionConfig::default(), now);
    rx.extend_from_slice(&hello.encode_frame());
    conn.handle_input(now, &mut rx);
    auth.drive(now, &mut conn);
    let mut sink = Vec::with_capacity(64);
    conn.write_to(now, &mut sink).unwrap();
    assert!(conn.is_established(), "{:?}", conn.poll_event());
    while conn.poll_event().is_some() {}
    (conn, rx)
}

#[test]
fn payloads_are_never_copied_and_idle_connections_are_small() {
    let now = Instant::now();
    let mut auth = authenticator(2, key(KEY), 3);
    // Warm the authenticator's tables so that only the connection is measured.
    drop(established(now, &mut auth, 8));

    // An idle established connection: heap it still holds plus its own size.
    let region = Region::new(GLOBAL);
    let (mut conn, mut rx) = established(now, &mut auth, 9);
    let rx_capacity = rx.capacity();
    let held = live(region.change()) - rx_capacity as isize;
    let cost = held + std::mem::size_of::<Connection>() as isize;
    println!(
        "idle established connection: {held} heap bytes + {} inline = {cost} bytes",
        std::mem::size_of::<Connection>()
    );
    assert!(cost <= 4096, "idle connection costs {cost} bytes");

    // Receiving a 1 MiB frame: the payload handed out is the receive buffer.
    let payload = vec![0xabu8; 1 << 20];
    rx.reserve(14 + payload.len());
    rx.extend_from_slice(&Header::new(FrameType::Data, 1, 0, payload.len() as u32).encode());
    rx.extend_from_slice(&payload);
    let base = rx.as_ptr() as usize;
    let region = Region::new(GLOBAL);
    conn.handle_input(now, &mut rx);
    let mut got = None;
    while let Some(e) = conn.poll_event() {
        if let Event::Data { payload, .. } = e {
            got = Some(payload);
        }
    }
    let receive = region.change();
    let got = got.expect("the frame was delivered");
    assert_eq!(got.len(), 1 << 20);
    assert_eq!(
        got.as_ptr() as usize,
        base + 14,
        "payload is a view of the receive buffer"
    );
    println!(
        "receiving a 1 MiB frame allocated {} bytes",
        receive.bytes_allocated
    );
    assert!(
        receive.bytes_allocated < 64 << 10,
        "receive allocated {} bytes",
        receive.bytes_allocated
    );

    // Sending a 1 MiB chunk: queued and written without copying it.
    let chunk = Bytes::from(vec![0xcdu8; 1 << 20]);
    let mut out = Vec::with_capacity((1 << 20) + 64);
    let stream = conn.open_stream().unwrap();
    let region = Region::new(GLOBAL);
    conn.send(now, stream, chunk.clone()).unwrap();
    let mut slots = [std::io::IoSlice::new(&[]); 4];
    let n = conn.transmit_slices(&mut slots);
    assert_eq!(
        slots[1].as_ptr(),
        chunk.as_ptr(),
        "the payload slice is the caller's chunk"
    );
    for s in &slots[..n] {
        out.extend_from_slice(s);
    }
    conn.handle_written(now, out.len());
    let send = region.change();
    println!(
        "sending a 1 MiB chunk allocated {} bytes",
        send.bytes_allocated
    );
    assert!(
        send.bytes_allocated < 64 << 10,
        "send allocated {} bytes",
        send.bytes_allocated
    );
    assert_eq!(out.len(), 14 + (1 << 20));
}
