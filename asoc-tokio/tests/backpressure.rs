//! Alone in its test binary so that the memory it measures is its own.

use std::time::Duration;

use asoc_testkit::scenarios as s;
use asoc_tokio::Tokio;

#[test]
fn four_gib_to_a_stalled_reader_keeps_memory_bounded_and_the_stall_timeout_closes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = Tokio::from_handle(rt.handle().clone());
    rt.block_on(s::stalled_reader_backpressure(
        net,
        4 << 30,
        Duration::from_secs(2),
    ));
}
