//! Floods and load on smol's executor, from `asoc_async::scenarios` like
//! tokio's. The CI-sized versions run by default; the full-sized ones are
//! `#[ignore]`d and run with
//! `cargo test --release -p asoc-smol --test floods -- --ignored --nocapture --test-threads 1`.

use asoc_async::scenarios as s;
use asoc_smol::Smol;

/// Held by every test of this binary: each asserts on the growth of the
/// whole process's resident memory, which another test moving hundreds of
/// MiB at the same time would inflate.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    smol::block_on(f)
}

#[test]
fn wrong_key_flood_locks_the_flooder_out_and_the_legitimate_transfer_completes() {
    block_on(s::wrong_key_flood(Smol::global(), 1_000, 256 << 20));
}

#[test]
fn silent_connections_hold_the_pre_handshake_cap_and_close_at_the_deadline() {
    block_on(s::silent_connections(Smol::global(), 1_000));
}

#[test]
#[ignore = "full size: 10,000 attempts against a 1 GiB transfer"]
fn full_wrong_key_flood() {
    let r = smol::block_on(s::wrong_key_flood(Smol::global(), 10_000, 1 << 30));
    assert!(
        r.loaded >= 0.8 * r.unloaded,
        "throughput under flood {:.2}x",
        r.loaded / r.unloaded
    );
}

#[test]
#[ignore = "full size: 10,000 silent connections"]
fn full_silent_connections() {
    block_on(s::silent_connections(Smol::global(), 10_000));
}

#[test]
fn hostile_discovery_datagrams_cause_no_peer_event_and_are_counted_by_reason() {
    block_on(s::discovery_flood(Smol::global(), 50_000));
}

#[test]
#[ignore = "full size: 1,000,000 hostile discovery datagrams"]
fn full_discovery_flood() {
    block_on(s::discovery_flood(Smol::global(), 1_000_000));
}
