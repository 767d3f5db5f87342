//! Floods and load (asoc_testkit::floods!) on smol's executor, like tokio's.
//! A binary of its own: every test asserts on the growth of the whole
//! process's resident memory. The CI-sized versions run by default; the
//! full-sized ones are `#[ignore]`d and run with
//! `cargo test --release -p asoc-smol --test floods -- --ignored --nocapture --test-threads 1`.

use asoc_smol::Smol;

fn run<F: std::future::Future<Output = T>, T>(f: impl FnOnce(Smol) -> F) -> T {
    smol::block_on(f(Smol::global()))
}

asoc_testkit::floods!(run);
