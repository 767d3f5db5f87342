//! Counting-allocator checks (one test in this binary, so that nothing else
//! allocates while it measures): v1 payloads are never copied, v2 payloads
//! are decrypted in place on receipt and copied once (into the sealed
//! buffer) to send, and an idle established connection (v1 client or
//! server, v2 server) costs at most 4 KiB.

mod harness;

use std::alloc::System;
use std::time::Instant;

use asoc_proto::connection::{Connection, ConnectionConfig, Event};
use asoc_proto::wire::{FrameType, Header};
use bytes::{Bytes, BytesMut};
use harness::v2peer::RawClient;
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

    v2_payloads_are_opened_in_place_and_sealed_with_one_copy(now);
}

fn v2_server_auth() -> asoc_proto::handshake::Authenticator {
    asoc_proto::handshake::Authenticator::new(
        asoc_proto::handshake::AuthenticatorConfig::new(
            uuid::Uuid::from_bytes([2; 16]),
            asoc_proto::auth::KeyRing::new(key(KEY)),
        ),
        [9; 32],
    )
}

fn v2_client(e: u32) -> RawClient {
    RawClient::new(
        &key(KEY),
        asoc_proto::v2::Suite::AesGcm,
        uuid::Uuid::from_bytes([1; 16]),
        UNIX_START,
        e,
    )
}

/// A v2 server connection judged by `auth`, established with the
/// hand-driven `client`, whose keys seal what the server reads and open
/// what it writes; and the receive buffer its adapter would own.
fn established_v2(
    now: Instant,
    auth: &mut asoc_proto::handshake::Authenticator,
    client: &mut RawClient,
) -> (Connection, BytesMut) {
    let mut conn = Connection::server(ConnectionConfig::default(), now);
    let mut rx = BytesMut::with_capacity(64 << 10);
    rx.extend_from_slice(&client.hello);
    conn.handle_input(now, &mut rx);
    auth.drive(now, UNIX_START, &mut conn);
    let mut accept = Vec::with_capacity(128);
    conn.write_to(now, &mut accept).unwrap();
    let (_, confirm) = client.finish(&accept).expect("ACCEPT2 verifies");
    rx.extend_from_slice(&confirm);
    conn.handle_input(now, &mut rx);
    auth.drive(now, UNIX_START, &mut conn);
    assert!(conn.is_established(), "{:?}", conn.poll_event());
    while conn.poll_event().is_some() {}
    (conn, rx)
}

fn v2_payloads_are_opened_in_place_and_sealed_with_one_copy(now: Instant) {
    const MIB: usize = 1 << 20;
    let mut auth = v2_server_auth();
    // Warm the authenticator's tables so that only the connection is
    // measured.
    drop(established_v2(now, &mut auth, &mut v2_client(1)));
    let mut client = v2_client(2);
    let region = Region::new(GLOBAL);
    let (mut conn, mut rx) = established_v2(now, &mut auth, &mut client);
    // Also holds the ephemeral key the authenticator recorded: an upper
    // bound.
    let held = live(region.change()) - rx.capacity() as isize;
    let cost = idle_cost("v2 server", held);
    assert!(cost <= 4096, "idle v2 server connection costs {cost} bytes");

    // Receiving a sealed 1 MiB frame: opened in the receive buffer, the
    // payload handed out is a view of it, and nothing near its size is
    // allocated.
    let payload = vec![0xabu8; MIB];
    let sealed = client.keys().seal(FrameType::Data, 1, 0, &payload);
    rx.reserve(sealed.len());
    rx.extend_from_slice(&sealed);
    drop(sealed);
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
    let got = got.expect("the sealed frame was delivered");
    assert!(got == payload, "decrypted payload differs");
    assert_eq!(
        got.as_ptr() as usize,
        base + 14,
        "v2 payload is a view of the receive buffer, decrypted in place"
    );
    println!(
        "receiving a sealed 1 MiB frame allocated {} bytes",
        receive.bytes_allocated
    );
    assert!(
        receive.bytes_allocated < 64 << 10,
        "v2 receive allocated {} bytes",
        receive.bytes_allocated
    );

    // Sending a 1 MiB chunk: exactly one copy of it, the sealed buffer
    // (payload and tag), and nothing else of its size.
    let chunk = Bytes::from(vec![0xcdu8; MIB]);
    let mut out = Vec::with_capacity(MIB + 64);
    let stream = conn.open_stream().unwrap();
    let region = Region::new(GLOBAL);
    conn.send(now, stream, chunk.clone()).unwrap();
    let mut slots = [std::io::IoSlice::new(&[]); 4];
    let n = conn.transmit_slices(&mut slots);
    assert_eq!(n, 2, "header and sealed body");
    assert_eq!(slots[1].len(), MIB + 16, "ciphertext and tag in one buffer");
    assert_ne!(
        slots[1].as_ptr(),
        chunk.as_ptr(),
        "the sealed body is not the caller's plaintext"
    );
    for s in &slots[..n] {
        out.extend_from_slice(s);
    }
    conn.handle_written(now, out.len());
    let send = region.change();
    println!(
        "sending a 1 MiB chunk sealed allocated {} bytes",
        send.bytes_allocated
    );
    assert!(
        send.bytes_allocated >= MIB + 16,
        "the sealed copy was not allocated ({} bytes)",
        send.bytes_allocated
    );
    assert!(
        send.bytes_allocated < MIB + (64 << 10),
        "v2 send allocated {} bytes: more than one copy of the payload",
        send.bytes_allocated
    );
    let frames = client
        .keys()
        .open_all(&out)
        .expect("the sealed frame opens");
    assert_eq!(frames.len(), 1);
    assert!(frames[0].1 == chunk, "the peer reads the chunk back");
}
