//! Backpressure end to end on `Mio`, the executor of asoc-mio's blocking
//! node: alone in its test binary so that the memory it measures is its own.

use std::time::Duration;

use asoc_mio::{Mio, MioConfig};
use asoc_testkit::scenarios as s;

#[test]
fn four_gib_to_a_stalled_reader_keeps_memory_bounded_and_the_stall_timeout_closes() {
    let linger = MioConfig::default().connection().send_stall_timeout();
    let rt = Mio::new("asoc-mio-backpressure", linger).unwrap();
    futures_lite::future::block_on(s::stalled_reader_backpressure(
        rt,
        4 << 30,
        Duration::from_secs(2),
    ));
}
