//! Quick throughput comparison on tokio: `cargo run --release -p asoc-tokio --example quickbench [chunk_kib] [streams] [connections]`.
use asoc_async::bench::{asoc, compare, median, raw_tcp, Workload};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let chunk = args.first().copied().unwrap_or(1024) << 10;
    let streams = args.get(1).copied().unwrap_or(1);
    let connections = args.get(2).copied().unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = asoc_tokio::Tokio::from_handle(rt.handle().clone());
    let w = Workload {
        bytes: 2 << 30,
        chunk,
        streams,
        connections,
    };
    // QUICKBENCH_ONLY=asoc|raw runs one side alone (three runs), for a
    // profiler to see nothing else.
    if let Ok(only) = std::env::var("QUICKBENCH_ONLY") {
        for i in 0..3u8 {
            let rate = rt
                .block_on(async {
                    if only == "raw" {
                        raw_tcp(&net, w).await
                    } else {
                        asoc(&net, w, i).await
                    }
                })
                .unwrap();
            println!("{only} {:8.1} MiB/s", rate / 1048576.0);
        }
        return;
    }
    let samples = rt.block_on(compare(&net, w, 5)).unwrap();
    for s in &samples {
        println!(
            "asoc {:8.1} MiB/s  raw {:8.1} MiB/s  ratio {:.3}",
            s.asoc / 1048576.0,
            s.baseline / 1048576.0,
            s.asoc / s.baseline
        );
    }
    if let Some(m) = median(&samples) {
        println!(
            "median pair: asoc {:.1} MiB/s raw {:.1} MiB/s ratio {:.3}",
            m.asoc / 1048576.0,
            m.baseline / 1048576.0,
            m.ratio()
        );
    }
}
