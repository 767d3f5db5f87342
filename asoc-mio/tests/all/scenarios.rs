//! The shared adapter scenarios (asoc_testkit::scenarios) on `Mio`, the
//! executor of asoc-mio's blocking node: each on a loop of its own.

use std::future::Future;

use asoc_mio::{Mio, MioConfig};

fn run<F: Future<Output = ()>>(f: impl FnOnce(Mio) -> F) {
    let linger = MioConfig::default().connection().send_stall_timeout();
    let rt = Mio::new("asoc-mio-scenario", linger).unwrap();
    futures_lite::future::block_on(f(rt));
}

asoc_testkit::scenarios!(run);
