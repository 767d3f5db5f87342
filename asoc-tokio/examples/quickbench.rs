//! Quick throughput comparison on tokio (two workers):
//! `cargo run --release -p asoc-tokio --example quickbench [chunk_kib] [streams] [connections]`.
//! `QUICKBENCH_ONLY=asoc|raw` runs one side alone (three runs), for a
//! profiler to see nothing else.

fn main() -> Result<(), asoc_async::Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let net = asoc_tokio::Tokio::from_handle(rt.handle().clone());
    rt.block_on(asoc_testkit::bench::quickbench(
        &net,
        std::env::args().skip(1),
    ))
}
