//! Counting-allocator checks (one test in this binary, so that nothing else
//! allocates while it measures): payloads are never copied, and an idle
//! established connection, client or server, costs at most 4 KiB.

mod harness;

use std::alloc::System;
use std::time::Instant;

use asoc_proto::connection::{Connection, ConnectionConfig, Event};
use asoc_proto::wire::{FrameType, Header};
use bytes::{Bytes, BytesMut};
use harness::{authenticator, key, KEY, UNIX_START};
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
    auth.drive(now, UNIX_START, &mut conn);
    let mut sink = Vec::with_capacity(64);
    conn.write_to(now, &mut sink).unwrap();
    assert!(conn.is_established(), "{:?}", conn.poll_event());
    while conn.poll_event().is_some() {}
    (conn, rx)
}

/// A client connection after a completed handshake with a server judged by
/// `server_auth` (that server connection is gone by the end), and the
/// receive buffer its adapter would own.
fn established_client(
    now: Instant,
    client_auth: &mut asoc_proto::handshake::Authenticator,
    server_auth: &mut asoc_proto::handshake::Authenticator,
) -> (Connection, BytesMut) {
    let mut client = client_auth.client(
        now,
        UNIX_START,
        ConnectionConfig::default(),
        asoc_proto::handshake::ClientOptions::v1(),
    );
    let mut hello = Vec::with_capacity(64);
    client.write_to(now, &mut hello).unwrap();
    let mut server = Connection::server(ConnectionConfig::default(), now);
    server.handle_read(now, &hello);
    server_auth.drive(now, UNIX_START, &mut server);
    let mut accept = Vec::with_capacity(64);
    server.write_to(now, &mut accept).unwrap();
    let mut rx = BytesMut::with_capacity(64 << 10);
    rx.extend_from_slice(&accept);
    client.handle_input(now, &mut rx);
    client_auth.drive(now, UNIX_START, &mut client);
    assert!(client.is_established(), "{:?}", client.poll_event());
    while client.poll_event().is_some() {}
    (client, rx)
}

/// What an idle connection costs: the heap its creation left allocated
/// (less the adapter's receive buffer) plus the struct itself.
fn idle_cost(side: &str, held: isize) -> isize {
    let cost = held + size_of::<Connection>() as isize;
    println!(
        "idle established {side} connection: {held} heap bytes + {} inline = {cost} bytes",
        size_of::<Connection>()
    );
    cost
}

#[test]
fn payloads_are_never_copied_and_idle_connections_are_small() {
    let now = Instant::now();
    let mut auth = authenticator(2, key(KEY), 3);
    let mut client_auth = authenticator(4, key(KEY), 5);
    let mut server_auth = authenticator(6, key(KEY), 7);
    // Warm the authenticators' tables so that only the connections are
    // measured.
    drop(established(now, &mut auth, 8));
    drop(established_client(now, &mut client_auth, &mut server_auth));

    // Idle established connections, each side: heap still held after the
    // handshake plus the struct's own size. The client's figure also holds
    // whatever both authenticators kept of its handshake (replay and
    // reflection records), so it is an upper bound.
    let region = Region::new(GLOBAL);
    let (client, client_rx) = established_client(now, &mut client_auth, &mut server_auth);
    let held = live(region.change()) - client_rx.capacity() as isize;
    let cost = idle_cost("client", held);
    assert!(cost <= 4096, "idle client connection costs {cost} bytes");
    // Cross-check: what dropping it frees is what it owned.
    let region = Region::new(GLOBAL);
    drop(client);
    let owned = region.change().bytes_deallocated as isize;
    assert!(
        owned <= held,
        "the client owned {owned} heap bytes, more than the {held} its creation left"
    );
    drop(client_rx);

    let region = Region::new(GLOBAL);
    let (mut conn, mut rx) = established(now, &mut auth, 9);
    let rx_capacity = rx.capacity();
    let held = live(region.change()) - rx_capacity as isize;
    let cost = idle_cost("server", held);
    assert!(cost <= 4096, "idle server connection costs {cost} bytes");

    // Receiving a 1 MiB frame: the payload handed out is the receive buffer,
    // and nothing near its size is allocated (no copy of it).
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
