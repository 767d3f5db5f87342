//! The shared adapter scenarios (asoc_async::scenarios) on smol's executor
//! and on async-std's, plus smol <-> tokio.

use std::future::Future;

use asoc_async::scenarios as s;
use asoc_smol::Smol;

fn on_smol<F: Future<Output = ()>>(f: impl FnOnce(Smol) -> F) {
    smol::block_on(f(Smol::global()));
}

fn on_async_std<F: Future<Output = ()>>(f: impl FnOnce(Smol) -> F) {
    async_std::task::block_on(f(Smol::with_spawner(|task| {
        async_std::task::spawn(task);
    })));
}

macro_rules! both {
    ($name:ident, $f:expr) => {
        mod $name {
            use super::*;

            #[test]
            fn smol() {
                on_smol($f);
            }

            #[test]
            fn async_std() {
                on_async_std($f);
            }
        }
    };
}

both!(one_gib_in_1_mib_chunks_sha256_verified, |net| {
    s::large_transfer(net, 1 << 30)
});
both!(sixty_four_concurrent_streams_each_way, |net| {
    s::concurrent_streams(net, 64)
});
both!(wrong_key_refused_with_reason, s::wrong_key);
both!(
    discovery_over_loopback_with_unicast_targets,
    s::discovery_unicast
);
both!(fifty_node_full_mesh, |net| s::full_mesh(net, 50));
both!(graceful_shutdown, s::graceful_shutdown);
both!(tls_with_a_pinned_self_signed_certificate, s::tls_pinned);
both!(mutual_tls, s::tls_mutual);

#[test]
fn smol_and_tokio_nodes_talk_both_ways() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tokio_net = asoc_tokio::Tokio::from_handle(rt.handle().clone());
    smol::block_on(s::cross(Smol::global(), tokio_net.clone()));
    smol::block_on(s::cross(tokio_net, Smol::global()));
}
both!(
    sender_killed_mid_stream_is_incomplete,
    s::sender_killed_mid_stream
);
both!(resets_half_closes_and_close_after_accept, s::abrupt_endings);
both!(
    slowloris_clients_are_closed_at_the_deadline_while_a_peer_streams,
    |net| s::slowloris(net, 60)
);
both!(
    static_peer_restart_reconnects_on_schedule,
    |net| async move {
        s::static_peer_restart(net).await;
    }
);
both!(
    a_refused_chunk_never_lets_the_stream_complete,
    s::refused_chunk_never_completes
);
both!(
    stats_stay_current_while_an_established_connection_streams,
    s::lifecycle::stats_stay_current
);
both!(
    shutdown_waits_for_a_stream_still_being_written,
    s::lifecycle::shutdown_waits_for_open_streams
);
both!(
    dropping_the_last_handle_shuts_the_node_down,
    s::lifecycle::dropping_the_last_handle_shuts_down
);
