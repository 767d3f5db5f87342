//! `asoc bench --plot FILE.svg`: throughput against frame size for raw
//! TCP, v1, v2 and v1 inside TLS, one line each, all from one run of the
//! in-process measurements of [`asoc_testkit::bench`] on one runtime.

use std::path::Path;

use asoc_async::Net;
use asoc_testkit::bench::{self as ab, Wire, Workload};
use plotters::prelude::*;
use serde_json::json;

use crate::cli::{BenchArgs, BenchRuntime};
use crate::error::{CliError, CliResult};
use crate::output::Out;
use crate::runtime::{self, Job, RuntimeKind};

use super::{size, MIB};

/// Frame sizes plotted: 4 KiB to 16 MiB in powers of 4.
const CHUNKS: [usize; 7] = [
    4 << 10,
    16 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
];

/// The series' names, in legend order: the raw baseline, then the wires.
pub(crate) const SERIES: [&str; 4] = ["raw TCP", "v1", "v2", "v1+tls"];

/// MiB/s of every series at every chunk size (`points[series][chunk]`).
struct Curves {
    points: Vec<Vec<f64>>,
}

struct Plot {
    bytes: u64,
    pairs: usize,
    out: Out,
    json: bool,
    runtime: &'static str,
}

impl Plot {
    /// The median of `runs` measurements, in MiB/s.
    fn median(mut runs: Vec<f64>) -> f64 {
        runs.sort_by(f64::total_cmp);
        runs.get(runs.len() / 2).copied().unwrap_or(0.0) / MIB
    }
}

impl Job for Plot {
    type Output = Curves;

    async fn run<N: Net>(self, net: N) -> CliResult<Curves> {
        self.run_two_sided(net.clone(), net).await
    }

    fn two_sided(&self) -> bool {
        true
    }

    async fn run_two_sided<N: Net>(self, net: N, far: N) -> CliResult<Curves> {
        let sides = ab::Sides {
            sender: net,
            receiver: far,
        };
        let fail = |e: asoc_async::Error| CliError::runtime(format!("bench --plot: {e}"));
        let mut points = vec![Vec::new(); SERIES.len()];
        for &chunk in &CHUNKS {
            let w = Workload {
                bytes: self.bytes.max(chunk as u64),
                chunk,
                streams: 1,
                connections: 1,
            };
            let mut runs = vec![Vec::new(); SERIES.len()];
            // Interleaved per pair, as the other benches alternate, so drift
            // on a shared machine falls on every series alike.
            for i in 0..self.pairs {
                runs[0].push(ab::raw_tcp(&sides, w).await.map_err(fail)?);
                for (s, wire) in [Wire::V1, Wire::V2, Wire::V1Tls].into_iter().enumerate() {
                    runs[s + 1].push(ab::asoc(&sides, w, i as u8, wire).await.map_err(fail)?);
                }
            }
            for (s, r) in runs.into_iter().enumerate() {
                let mib_s = Self::median(r);
                eprintln!(
                    "asoc bench --plot: {} frames, {}: {mib_s:.0} MiB/s",
                    size(chunk as u64),
                    SERIES[s]
                );
                if self.json {
                    self.out.emit(
                        json!({"plot": SERIES[s], "runtime": self.runtime, "chunk_size": chunk,
                               "bytes": w.bytes, "mib_s": mib_s, "pairs": self.pairs}),
                        String::new,
                    );
                }
                points[s].push(mib_s);
            }
        }
        Ok(Curves { points })
    }
}

/// Runs `asoc bench --plot FILE`.
pub(crate) fn run(args: &BenchArgs, file: &Path) -> CliResult {
    let kind = match args.runtime {
        BenchRuntime::All | BenchRuntime::Tokio => RuntimeKind::Tokio,
        BenchRuntime::Smol => RuntimeKind::Smol,
        BenchRuntime::Mio => RuntimeKind::Mio,
    };
    let bytes = args
        .size
        .unwrap_or(if args.quick { 4 << 20 } else { 256 << 20 });
    let out = Out::new(args.json);
    let job = Plot {
        bytes,
        pairs: args.pairs,
        out,
        json: args.json,
        runtime: kind.name(),
    };
    let curves = runtime::run(kind, job)?;
    let title = format!(
        "asoc bench --plot: one stream over loopback, {} per point, {} ({} run(s), median)",
        size(bytes),
        kind.name(),
        args.pairs
    );
    draw(file, &title, &curves)
        .map_err(|e| CliError::runtime(format!("cannot draw {}: {e}", file.display())))?;
    out.note(|| format!("wrote {}", file.display()));
    Ok(())
}

/// The chart: log2 frame size across, MiB/s up.
fn draw(file: &Path, title: &str, curves: &Curves) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(file, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = curves
        .points
        .iter()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.1;
    let exp = |chunk: usize| f64::from(chunk.trailing_zeros());
    let (lo, hi) = (exp(CHUNKS[0]), exp(CHUNKS[CHUNKS.len() - 1]));
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(lo..hi, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("frame (chunk) size")
        .y_desc("MiB/s")
        .x_labels(CHUNKS.len())
        .x_label_formatter(&|e| size(1u64 << (e.round() as u32)))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let colors = [BLACK, BLUE, RED, GREEN];
    for (s, points) in curves.points.iter().enumerate() {
        let color = colors[s % colors.len()];
        let line: Vec<(f64, f64)> = CHUNKS
            .iter()
            .zip(points)
            .map(|(&c, &y)| (exp(c), y))
            .collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(SERIES[s])
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
