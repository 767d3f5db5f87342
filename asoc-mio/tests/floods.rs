//! Floods and load (asoc_testkit::floods!) on `Mio`, the executor of
//! asoc-mio's blocking node, like tokio's and smol's. A binary of its own:
//! every test asserts on the growth of the whole process's resident memory.
//! The CI-sized versions run by default; the full-sized ones are `#[ignore]`d
//! and run with
//! `cargo test --release -p asoc-mio --test floods -- --ignored --nocapture --test-threads 1`.

use std::future::Future;

use asoc_mio::{Mio, MioConfig};

fn run<F: Future<Output = T>, T>(f: impl FnOnce(Mio) -> F) -> T {
    let linger = MioConfig::default().connection().send_stall_timeout();
    let rt = Mio::new("asoc-mio-flood", linger).unwrap();
    futures_lite::future::block_on(f(rt))
}

asoc_testkit::floods!(run);
