//! Counting-allocator check (one test in this binary, so nothing else
//! allocates while it measures): an idle authenticated asoc-tokio
//! connection holds no read window (the driver keeps a 256-byte buffer for
//! the first read after a pause). Both ends live in this process; the
//! figure is per connection, both ends together. `tests/idle_memory.rs`
//! measures the same at 10,000 connections in process memory.

use std::alloc::System;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asoc_tokio::asoc_proto::auth::{ApiKey, KeyRing};
use asoc_tokio::asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_tokio::asoc_proto::v2::WireVersion;
use asoc_tokio::{Connection, DriverConfig, SharedAuthenticator};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn heap_live() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64
}

fn auth(node: u8) -> SharedAuthenticator {
    let key = ApiKey::new("0123456789abcdef0123456789abcdef").unwrap();
    let config =
        AuthenticatorConfig::builder(uuid::Uuid::from_bytes([node; 16]), KeyRing::new(key))
            .allow_v1(true)
            .build()
            .unwrap();
    Arc::new(Mutex::new(Authenticator::new(config, [node; 32])))
}

/// Opens `n` connections to `listener`, keeping both ends' handles.
async fn open(
    n: usize,
    listener: &TcpListener,
    client: &SharedAuthenticator,
    server: &SharedAuthenticator,
    kept: &mut Vec<Connection>,
    wire: WireVersion,
) {
    let config = DriverConfig::builder().wire(wire).build().unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..n {
        let (c, s) = tokio::join!(
            async {
                let io = TcpStream::connect(addr).await.unwrap();
                asoc_tokio::connect(io, client, config).await
            },
            async {
                let (io, _) = listener.accept().await.unwrap();
                asoc_tokio::accept(io, server, config).await
            }
        );
        kept.push(c.unwrap());
        kept.push(s.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_holds_no_read_buffer() {
    // Each end's read window is 4 KiB. On v1, with it held, a connection
    // (both ends) costs about 16 KiB of heap, without it about 9 KiB. v2
    // adds about 5 KiB: each end's two AEAD keys (ring's expanded key
    // schedules) and the authenticators' records of the ephemeral keys.
    for (wire, budget) in [(WireVersion::V1, 12 * 1024), (WireVersion::V2, 17 * 1024)] {
        idle_cost(wire, budget).await;
    }
}

async fn idle_cost(wire: WireVersion, budget: i64) {
    const WARM: usize = 64;
    const N: usize = 64;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, server) = (auth(1), auth(2));
    let mut kept = Vec::with_capacity(2 * (WARM + N));
    // Warm the runtime's I/O slabs and the authenticators' tables.
    open(WARM, &listener, &client, &server, &mut kept, wire).await;
    let before = heap_live();
    open(N, &listener, &client, &server, &mut kept, wire).await;
    // The tasks go idle right after their handshakes; wait for it rather
    // than for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let per_connection = loop {
        let per = (heap_live() - before) / N as i64;
        if per <= budget || Instant::now() > deadline {
            break per;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("an idle {wire} connection, both ends: {per_connection} heap bytes");
    assert!(kept.iter().all(|c| c.close_reason().is_none()));
    assert!(
        per_connection <= budget,
        "an idle {wire} connection (both ends) holds {per_connection} heap bytes"
    );
}
