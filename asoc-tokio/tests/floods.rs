//! Floods and load on tokio: a node keeps serving legitimate peers. The CI-sized versions run by
//! default; the full-sized ones are `#[ignore]`d and run with
//! `cargo test --release -p asoc-tokio --test floods -- --ignored --nocapture --test-threads 1`.

use asoc_async::scenarios as s;
use asoc_tokio::Tokio;

/// Held by every test of this binary: each asserts on the growth of the
/// whole process's resident memory, which another test moving hundreds of
/// MiB at the same time would inflate.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run<F: std::future::Future<Output = T>, T>(f: impl FnOnce(Tokio) -> F) -> T {
    let _alone = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = Tokio::from_handle(rt.handle().clone());
    rt.block_on(f(net))
}

#[test]
fn wrong_key_flood_locks_the_flooder_out_and_the_legitimate_transfer_completes() {
    run(|net| s::wrong_key_flood(net, 1_000, 256 << 20));
}

#[test]
fn silent_connections_hold_the_pre_handshake_cap_and_close_at_the_deadline() {
    run(|net| s::silent_connections(net, 1_000));
}

#[test]
fn a_hundred_senders_of_8_mib_lose_nothing() {
    run(|net| s::many_senders(net, 100, 8 << 20));
}

#[test]
#[ignore = "full size: 10,000 attempts against a 1 GiB transfer"]
fn full_wrong_key_flood() {
    let r = run(|net| s::wrong_key_flood(net, 10_000, 1 << 30));
    assert!(
        r.loaded >= 0.8 * r.unloaded,
        "throughput under flood {:.2}x",
        r.loaded / r.unloaded
    );
}

#[test]
#[ignore = "full size: 10,000 silent connections"]
fn full_silent_connections() {
    run(|net| s::silent_connections(net, 10_000));
}

#[test]
#[ignore = "full size: 1,000 senders x 8 MiB = 8 GiB"]
fn full_thousand_senders() {
    run(|net| s::many_senders(net, 1_000, 8 << 20));
}

#[test]
fn hostile_discovery_datagrams_cause_no_peer_event_and_are_counted_by_reason() {
    run(|net| s::discovery_flood(net, 50_000));
}

#[test]
#[ignore = "full size: 1,000,000 hostile discovery datagrams"]
fn full_discovery_flood() {
    run(|net| s::discovery_flood(net, 1_000_000));
}
