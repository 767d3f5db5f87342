//! The shared adapter scenarios (asoc_testkit::scenarios) on tokio.

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

asoc_testkit::scenarios!(run);
