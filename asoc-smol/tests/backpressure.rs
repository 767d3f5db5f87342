//! Alone in its test binary (one test, run sequentially) so that the memory
//! it measures is its own.

use std::time::Duration;

use asoc_smol::Smol;
use asoc_testkit::scenarios as s;

#[test]
fn four_gib_to_a_stalled_reader_keeps_memory_bounded_and_the_stall_timeout_closes() {
    smol::block_on(s::stalled_reader_backpressure(
        Smol::global(),
        4 << 30,
        Duration::from_secs(2),
    ));
    async_std::task::block_on(s::stalled_reader_backpressure(
        Smol::with_spawner(|t| {
            async_std::task::spawn(t);
        }),
        4 << 30,
        Duration::from_secs(2),
    ));
}
