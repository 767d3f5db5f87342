//! The shared adapter scenarios (asoc_testkit::scenarios) on smol's executor
//! and on async-std's, plus smol <-> tokio.

use std::future::Future;

use asoc_smol::Smol;
use asoc_testkit::scenarios as s;

fn run_smol<F: Future<Output = ()>>(f: impl FnOnce(Smol) -> F) {
    ::smol::block_on(f(Smol::global()));
}

fn run_async_std<F: Future<Output = ()>>(f: impl FnOnce(Smol) -> F) {
    ::async_std::task::block_on(f(Smol::with_spawner(|task| {
        ::async_std::task::spawn(task);
    })));
}

mod on_smol {
    asoc_testkit::scenarios!(super::run_smol);
}

mod on_async_std {
    asoc_testkit::scenarios!(super::run_async_std);
}

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
