//! Floods and load (asoc_testkit::floods!) on tokio. A binary of its own:
//! every test asserts on the growth of the whole process's resident memory.
//! The CI-sized versions run by default; the full-sized ones are `#[ignore]`d
//! and run with
//! `cargo test --release -p asoc-tokio --test floods -- --ignored --nocapture --test-threads 1`.

use asoc_tokio::Tokio;

fn run<F: std::future::Future<Output = T>, T>(f: impl FnOnce(Tokio) -> F) -> T {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = Tokio::from_handle(rt.handle().clone());
    rt.block_on(f(net))
}

asoc_testkit::floods!(run);
