//! # asoc-testkit
//!
//! Test and measurement code every ASoc adapter shares, kept out of the
//! libraries so that they expose only what applications use:
//!
//! - [`scenarios`](mod@scenarios): the behaviour every adapter must show
//!   (verified large transfers, concurrent streams, wrong keys, discovery,
//!   meshes, TLS, faults, floods, backpressure, and the attacks v2 defeats
//!   and v1 does not), each an `async fn` generic over
//!   [`asoc_async::Net`], so one body runs on tokio, smol, async-std's
//!   executor and mio.
//! - [`scenarios!`] and [`floods!`]: expand to one `#[test]` per scenario on
//!   the runtime the calling test crate names, so an adapter's test binary
//!   runs every shared scenario without copying the list.
//! - [`bench`](mod@bench): the throughput and connection-rate measurements
//!   behind `asoc bench`.
//!
//! Not published; adapters take it as a dev-dependency.

pub mod bench;
pub mod scenarios;

/// One `#[test]` per shared scenario, each run through `$run`.
///
/// `$run` is a function (or path to one) that takes a closure from the
/// runtime's [`Net`](asoc_async::Net) handle to a future, and runs that
/// future to completion on a runtime of its own: for tokio,
///
/// ```ignore
/// fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce(asoc_tokio::Tokio) -> F) {
///     let rt = tokio::runtime::Runtime::new().unwrap();
///     let net = asoc_tokio::Tokio::from_handle(rt.handle().clone());
///     rt.block_on(f(net));
/// }
/// asoc_testkit::scenarios!(run);
/// ```
///
/// Invoke it once per runtime, in a module of its own when one binary runs
/// several (`mod smol { asoc_testkit::scenarios!(super::on_smol); }`). The
/// floods and the stalled reader measure the whole process's memory and are
/// not here: see [`floods!`].
#[macro_export]
macro_rules! scenarios {
    ($run:expr) => {
        #[test]
        fn one_gib_in_1_mib_chunks_sha256_verified() {
            $run(|net| $crate::scenarios::large_transfer(net, 1 << 30));
        }

        #[test]
        fn sixty_four_concurrent_streams_each_way() {
            $run(|net| $crate::scenarios::concurrent_streams(net, 64));
        }

        #[test]
        fn wrong_key_refused_with_reason() {
            $run($crate::scenarios::wrong_key);
        }

        #[test]
        fn discovery_over_loopback_with_unicast_targets() {
            $run($crate::scenarios::discovery_unicast);
        }

        #[test]
        fn fifty_node_full_mesh() {
            $run(|net| $crate::scenarios::full_mesh(net, 50));
        }

        #[test]
        fn graceful_shutdown() {
            $run($crate::scenarios::graceful_shutdown);
        }

        #[test]
        fn tls_with_a_pinned_self_signed_certificate() {
            $run($crate::scenarios::tls_pinned);
        }

        #[test]
        fn mutual_tls() {
            $run($crate::scenarios::tls_mutual);
        }

        #[test]
        fn sender_killed_mid_stream_is_incomplete() {
            $run($crate::scenarios::sender_killed_mid_stream);
        }

        #[test]
        fn resets_half_closes_and_close_after_accept() {
            $run($crate::scenarios::abrupt_endings);
        }

        #[test]
        fn slowloris_clients_are_closed_at_the_deadline_while_a_peer_streams() {
            $run(|net| $crate::scenarios::slowloris(net, 60));
        }

        #[test]
        fn static_peer_restart_reconnects_on_schedule() {
            $run(|net| async move {
                $crate::scenarios::static_peer_restart(net).await;
            });
        }

        #[test]
        fn attack_dial_to_a_blackholed_address_fails_at_the_handshake_timeout() {
            $run($crate::scenarios::dials::connect_to_a_blackhole_times_out);
        }

        #[test]
        fn a_refused_chunk_never_lets_the_stream_complete() {
            $run($crate::scenarios::refused_chunk_never_completes);
        }

        #[test]
        fn stats_stay_current_while_an_established_connection_streams() {
            $run($crate::scenarios::lifecycle::stats_stay_current);
        }

        #[test]
        fn shutdown_waits_for_a_stream_still_being_written() {
            $run($crate::scenarios::lifecycle::shutdown_waits_for_open_streams);
        }

        #[test]
        fn dropping_the_last_handle_shuts_the_node_down() {
            $run($crate::scenarios::lifecycle::dropping_the_last_handle_shuts_down);
        }

        #[test]
        fn attack_replayed_hello2_opens_no_other_v2_node() {
            $run($crate::scenarios::attacks::replayed_hello_v2);
        }

        #[test]
        fn attack_replayed_v1_hello_injects_a_tensor_under_the_senders_id() {
            $run($crate::scenarios::attacks::replayed_hello_v1);
        }

        #[test]
        fn attack_recorded_accept2_is_refused_and_nothing_is_sent() {
            $run($crate::scenarios::attacks::recorded_accept_v2);
        }

        #[test]
        fn attack_recorded_v1_accept_streams_the_tensor_to_the_impostor() {
            $run($crate::scenarios::attacks::recorded_accept_v1);
        }

        #[test]
        fn attack_relay_flipping_a_byte_closes_v2_with_bad_frame_mac() {
            $run($crate::scenarios::attacks::flipped_byte_v2);
        }

        #[test]
        fn attack_relay_flipping_a_byte_completes_an_altered_v1_tensor() {
            $run($crate::scenarios::attacks::flipped_byte_v1);
        }

        #[test]
        fn attack_relay_to_another_node_fails_the_v2_peer_id_check() {
            $run($crate::scenarios::attacks::redirected_dial_v2);
        }

        #[test]
        fn attack_relay_to_another_node_goes_unnoticed_in_v1() {
            $run($crate::scenarios::attacks::redirected_dial_v1);
        }

        #[test]
        fn attack_node_id_squatting_with_a_replayed_hello2_is_refused() {
            $run($crate::scenarios::attacks::squatting_v2);
        }

        #[test]
        fn attack_node_id_squatting_with_a_replayed_v1_hello_succeeds_elsewhere() {
            $run($crate::scenarios::attacks::squatting_v1);
        }

        #[test]
        fn attack_relayed_v1_announcements_neither_move_nor_starve_the_peer() {
            $run($crate::scenarios::discovery_attacks::relayed_v1_announcements);
        }

        #[test]
        fn attack_relayed_v2_announcements_neither_move_nor_starve_the_peer() {
            $run($crate::scenarios::discovery_attacks::relayed_v2_announcements);
        }

        #[test]
        fn attack_a_squatted_node_id_loses_to_the_discovered_address() {
            $run($crate::scenarios::identity::squatted_node_id);
        }

        #[test]
        fn attack_a_peer_reconnecting_every_round_is_dialed_back_and_bounded() {
            $run($crate::scenarios::identity::churning_peer);
        }

        #[test]
        fn admission_five_junk_hellos_then_a_correct_one_is_accepted() {
            $run($crate::scenarios::admission::junk_hellos_then_a_correct_one);
        }

        #[test]
        fn admission_a_hundred_connect_and_closes_then_a_correct_one_is_accepted() {
            $run($crate::scenarios::admission::connect_and_close_then_a_correct_one);
        }

        #[test]
        fn admission_a_hundred_and_one_successful_handshakes_are_all_accepted() {
            $run($crate::scenarios::admission::a_hundred_and_one_successes);
        }

        #[test]
        fn admission_200_silent_connections_from_one_address_hold_only_its_share() {
            $run(|net| async move {
                $crate::scenarios::admission::silent_flood(net, 200, 16 << 20, false).await;
            });
        }

        #[test]
        fn admission_refusals_of_one_address_are_aggregated() {
            $run(|net| $crate::scenarios::admission::refusals_are_aggregated(net, 60));
        }
    };
}

/// One `#[test]` per flood scenario, each run through `$run` like
/// [`scenarios!`], except that `$run` must pass the future's output back
/// (`fn run<F: Future<Output = T>, T>(f: impl FnOnce(N) -> F) -> T`).
///
/// Every flood asserts on the growth of the whole process's resident
/// memory, so the expansion holds one process-wide lock around each test,
/// and a binary that uses it should hold nothing else that moves much
/// data. The CI-sized floods run by default; the full-sized ones are
/// `#[ignore]`d, to be run with
/// `cargo test --release -p CRATE --test floods -- --ignored --nocapture --test-threads 1`.
#[macro_export]
macro_rules! floods {
    ($run:expr) => {
        /// Held by every test of this binary: each asserts on the growth of
        /// the whole process's resident memory, which another test moving
        /// hundreds of MiB at the same time would inflate.
        static ONE_AT_A_TIME: ::std::sync::Mutex<()> = ::std::sync::Mutex::new(());

        fn alone() -> ::std::sync::MutexGuard<'static, ()> {
            ONE_AT_A_TIME
                .lock()
                .unwrap_or_else(::std::sync::PoisonError::into_inner)
        }

        #[test]
        fn wrong_key_flood_locks_the_flooder_out_and_the_legitimate_transfer_completes() {
            let _alone = alone();
            $run(|net| $crate::scenarios::wrong_key_flood(net, 1_000, 256 << 20));
        }

        #[test]
        fn silent_connections_hold_the_pre_handshake_cap_and_close_at_the_deadline() {
            let _alone = alone();
            $run(|net| $crate::scenarios::silent_connections(net, 1_000));
        }

        #[test]
        fn a_hundred_senders_of_8_mib_lose_nothing() {
            let _alone = alone();
            $run(|net| $crate::scenarios::many_senders(net, 100, 8 << 20));
        }

        #[test]
        fn hostile_discovery_datagrams_cause_no_peer_event_and_are_counted_by_reason() {
            let _alone = alone();
            $run(|net| $crate::scenarios::discovery_flood(net, 50_000));
        }

        #[test]
        #[ignore = "full size: 10,000 attempts against a 1 GiB transfer"]
        fn full_wrong_key_flood() {
            let _alone = alone();
            let r = $run(|net| $crate::scenarios::wrong_key_flood(net, 10_000, 1 << 30));
            assert!(
                r.loaded >= 0.8 * r.unloaded,
                "throughput under flood {:.2}x",
                r.loaded / r.unloaded
            );
        }

        /// The silent flood at full size: 200 silent connections from
        /// 127.0.0.7, reopened for the whole transfer, while a peer on
        /// 127.0.0.1 streams 512 MiB; both rates are measured in the same
        /// run and the loaded one must be at least 0.8 times the other.
        /// `cargo test --release -p asoc-tokio --test floods -- --ignored --nocapture --test-threads 1 full_silent_flood`
        #[test]
        #[ignore = "full size: 512 MiB against 200 silent connections from one address"]
        fn full_silent_flood_from_one_address() {
            let _alone = alone();
            let r =
                $run(|net| $crate::scenarios::admission::silent_flood(net, 200, 512 << 20, true));
            let ratio = r.loaded / r.unloaded;
            println!("silent flood throughput ratio: {ratio:.2}");
            assert!(
                ratio >= 0.8,
                "throughput under the silent flood {ratio:.2}x"
            );
        }

        #[test]
        #[ignore = "full size: 10,000 silent connections"]
        fn full_silent_connections() {
            let _alone = alone();
            $run(|net| $crate::scenarios::silent_connections(net, 10_000));
        }

        #[test]
        #[ignore = "full size: 1,000 senders x 8 MiB = 8 GiB"]
        fn full_thousand_senders() {
            let _alone = alone();
            $run(|net| $crate::scenarios::many_senders(net, 1_000, 8 << 20));
        }

        #[test]
        #[ignore = "full size: 1,000,000 hostile discovery datagrams"]
        fn full_discovery_flood() {
            let _alone = alone();
            $run(|net| $crate::scenarios::discovery_flood(net, 1_000_000));
        }
    };
}
