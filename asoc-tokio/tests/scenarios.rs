//! The shared adapter scenarios (asoc_async::scenarios) on tokio.

use asoc_async::scenarios as s;
use asoc_tokio::Tokio;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce(Tokio) -> F) {
    let rt = rt();
    let handle = Tokio::from_handle(rt.handle().clone());
    rt.block_on(f(handle));
}

#[test]
fn one_gib_in_1_mib_chunks_sha256_verified() {
    run(|net| s::large_transfer(net, 1 << 30));
}

#[test]
fn sixty_four_concurrent_streams_each_way() {
    run(|net| s::concurrent_streams(net, 64));
}

#[test]
fn wrong_key_refused_with_reason() {
    run(s::wrong_key);
}

#[test]
fn discovery_over_loopback_with_unicast_targets() {
    run(s::discovery_unicast);
}

#[test]
fn fifty_node_full_mesh() {
    run(|net| s::full_mesh(net, 50));
}

#[test]
fn graceful_shutdown() {
    run(s::graceful_shutdown);
}

#[test]
fn tls_with_a_pinned_self_signed_certificate() {
    run(s::tls_pinned);
}

#[test]
fn mutual_tls() {
    run(s::tls_mutual);
}

#[test]
fn sender_killed_mid_stream_is_incomplete() {
    run(s::sender_killed_mid_stream);
}

#[test]
fn resets_half_closes_and_close_after_accept() {
    run(s::abrupt_endings);
}

#[test]
fn slowloris_clients_are_closed_at_the_deadline_while_a_peer_streams() {
    run(|net| s::slowloris(net, 60));
}

#[test]
fn static_peer_restart_reconnects_on_schedule() {
    run(|net| async move {
        s::static_peer_restart(net).await;
    });
}

#[test]
fn a_refused_chunk_never_lets_the_stream_complete() {
    run(s::refused_chunk_never_completes);
}

#[test]
fn stats_stay_current_while_an_established_connection_streams() {
    run(s::lifecycle::stats_stay_current);
}

#[test]
fn shutdown_waits_for_a_stream_still_being_written() {
    run(s::lifecycle::shutdown_waits_for_open_streams);
}

#[test]
fn dropping_the_last_handle_shuts_the_node_down() {
    run(s::lifecycle::dropping_the_last_handle_shuts_down);
}
