//! Quick throughput comparison on smol's global executor:
//! `cargo run --release -p asoc-smol --example smol_quickbench [chunk_kib] [streams] [connections]`.
//! `QUICKBENCH_ONLY=asoc|raw` runs one side alone (three runs), for a
//! profiler to see nothing else.

fn main() -> Result<(), asoc_async::Error> {
    let net = asoc_smol::Smol::global();
    smol::block_on(asoc_testkit::bench::quickbench(
        &net,
        std::env::args().skip(1),
    ))
}
