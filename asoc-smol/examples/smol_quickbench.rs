//! Quick throughput comparison on smol's global executor:
//! `cargo run --release -p asoc-smol --example smol_quickbench [chunk_kib] [streams] [connections]`.
//! `QUICKBENCH_ONLY=asoc|raw` runs one side alone (three runs), for a
//! profiler to see nothing else.
use asoc_async::bench::{asoc, compare, median, raw_tcp, Workload};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let w = Workload {
        bytes: 2 << 30,
        chunk: args.first().copied().unwrap_or(1024) << 10,
        streams: args.get(1).copied().unwrap_or(1),
        connections: args.get(2).copied().unwrap_or(1),
    };
    let net = asoc_smol::Smol::global();
    smol::block_on(async {
        if let Ok(only) = std::env::var("QUICKBENCH_ONLY") {
            for i in 0..3u8 {
                let rate = if only == "raw" {
                    raw_tcp(&net, w).await
                } else {
                    asoc(&net, w, i).await
                }
                .unwrap();
                println!("{only} {:8.1} MiB/s", rate / 1048576.0);
            }
            return;
        }
        let samples = compare(&net, w, 5).await.unwrap();
        for s in &samples {
            println!(
                "asoc {:8.1} MiB/s  raw {:8.1} MiB/s  ratio {:.3}",
                s.asoc / 1048576.0,
                s.baseline / 1048576.0,
                s.ratio()
            );
        }
        if let Some(m) = median(&samples) {
            println!("median ratio {:.3}", m.ratio());
        }
    });
}
