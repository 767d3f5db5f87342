//! `asoc bench`: ASoc against a raw-TCP baseline on loopback, on the same
//! runtime in the same run. Each bench runs baseline and ASoc alternately
//! (A B A B …) and reports the pair whose ratio is the median, so that drift
//! on a shared machine hits both sides alike and the printed ratio is
//! exactly the quotient of the printed rates.
//!
//! Every runtime, mio included, runs [`asoc_testkit::bench`]; on mio the
//! sending and the receiving side each have a loop thread of their own.

use asoc_async::Net;
use asoc_testkit::bench::{self as ab, Sample, Wire, Workload};
use serde_json::{json, Value};

use crate::cli::{BenchArgs, BenchRuntime};
use crate::error::{CliError, CliResult};
use crate::output::Out;
use crate::runtime::{self, Job, RuntimeKind};

mod cli;
mod plot;

pub(crate) use cli::{plain_receive, plain_send};

const MIB: f64 = 1024.0 * 1024.0;

/// What one bench measures.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Bytes per second through `Workload`.
    Throughput(Workload),
    /// Connection set-ups per second: `count` of them, `in_flight` at a
    /// time.
    Setup { count: usize, in_flight: usize },
}

/// One bench of the plan.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    kind: Kind,
    /// What the ASoc side speaks.
    wire: Wire,
    /// The ratio asoc / baseline this bench must reach to count as met;
    /// `None` for rows that are reported, not judged.
    target: Option<f64>,
}

/// One finished measurement.
struct Row {
    case: Case,
    runtime: &'static str,
    median: Sample,
    pairs: usize,
    /// Median over the pairs of the CPU the ASoc run took per unit (byte
    /// or set-up) over the baseline's, and of the ASoc run's CPU seconds
    /// per GiB moved or microseconds per set-up (both ends together: they
    /// share the process).
    cpu: Option<(f64, f64)>,
}

impl Row {
    fn met(&self) -> bool {
        self.case.target.is_none_or(|t| self.median.ratio() >= t)
    }

    fn json(&self) -> Value {
        let r = self.median.ratio();
        let mut v = match self.case.kind {
            Kind::Throughput(w) => json!({
                "bench": self.case.name,
                "wire": self.case.wire.name(),
                "runtime": self.runtime,
                "chunk_size": w.chunk,
                "streams": w.streams,
                "connections": w.connections,
                "bytes": w.bytes * w.connections as u64,
                "asoc_mib_s": self.median.asoc / MIB,
                "baseline_mib_s": self.median.baseline / MIB,
            }),
            Kind::Setup { count, in_flight } => json!({
                "bench": self.case.name,
                "wire": self.case.wire.name(),
                "runtime": self.runtime,
                "chunk_size": null,
                "streams": null,
                "connections": in_flight,
                "setups": count,
                "bytes": null,
                "asoc_per_s": self.median.asoc,
                "baseline_per_s": self.median.baseline,
            }),
        };
        if let Some(o) = v.as_object_mut() {
            o.insert("cpu_ratio".into(), json!(self.cpu.map(|c| c.0)));
            let unit = match self.case.kind {
                Kind::Throughput(_) => "asoc_cpu_s_per_gib",
                Kind::Setup { .. } => "asoc_cpu_us_per_setup",
            };
            o.insert(unit.into(), json!(self.cpu.map(|c| c.1)));
            o.insert("ratio".into(), json!(r));
            o.insert("target".into(), json!(self.case.target));
            o.insert("met".into(), json!(self.met()));
            o.insert("pairs".into(), json!(self.pairs));
        }
        v
    }

    fn cells(&self) -> [String; 9] {
        let (params, asoc, base) = match self.case.kind {
            Kind::Throughput(w) => (
                format!(
                    "{} frames, {} stream(s), {} conn(s), {}",
                    size(w.chunk as u64),
                    w.streams,
                    w.connections,
                    size(w.bytes * w.connections as u64)
                ),
                format!("{:.0} MiB/s", self.median.asoc / MIB),
                format!("{:.0} MiB/s", self.median.baseline / MIB),
            ),
            Kind::Setup { count, in_flight } => (
                format!("{count} set-ups, {in_flight} in flight"),
                format!("{:.0} /s", self.median.asoc),
                format!("{:.0} /s", self.median.baseline),
            ),
        };
        [
            self.case.name.into(),
            self.case.wire.name().into(),
            self.runtime.into(),
            params,
            asoc,
            base,
            format!("{:.3}", self.median.ratio()),
            self.case.target.map_or("-".into(), |t| format!("≥{t:.2}")),
            match (self.case.target, self.met()) {
                (None, _) => "-",
                (Some(_), true) => "yes",
                (Some(_), false) => "NO",
            }
            .into(),
        ]
    }
}

/// `1MiB`-style text for a byte count.
fn size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} B")
}

/// The benches `args` ask for, with their defaults overridden as the
/// flags' help says.
fn plan(args: &BenchArgs) -> CliResult<Vec<Case>> {
    let positive = |v: Option<usize>, flag: &str, default: usize| match v {
        Some(0) => Err(CliError::usage(format!("{flag} must be at least 1"))),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let streams = positive(args.streams, "--streams", 64)?;
    let connections = positive(args.connections, "--connections", 8)?;
    let chunk = match args.chunk_size {
        Some(c) if c == 0 || c > 16 << 20 => {
            return Err(CliError::usage("--chunk-size must be between 1B and 16MiB"))
        }
        Some(c) => Some(usize::try_from(c).unwrap_or(1 << 20)),
        None => None,
    };
    let (big, small, setups) = if args.quick {
        (8 << 20, 1 << 20, 32)
    } else {
        (1 << 30, 256 << 20, 2000)
    };
    let total = |default: u64| args.size.unwrap_or(default);
    let workload = |bytes: u64, chunk: usize, streams: usize, connections: usize| {
        // Per connection; `asoc_testkit::bench` splits it over the streams.
        Workload {
            bytes: bytes / connections as u64,
            chunk,
            streams,
            connections,
        }
    };
    let large = chunk.unwrap_or(1 << 20);
    // (name, kind, v1 target, v2 target); v1 inside TLS is reported only.
    let mut benches = vec![(
        "one-stream",
        Kind::Throughput(workload(total(big), large, 1, 1)),
        0.95,
        Some(0.65),
    )];
    if chunk.is_none() {
        benches.push((
            "small-frames",
            Kind::Throughput(workload(total(small), 4 << 10, 1, 1)),
            1.0,
            Some(1.0),
        ));
    }
    benches.push((
        "many-streams",
        Kind::Throughput(workload(total(big), large, streams, 1)),
        0.9,
        None,
    ));
    benches.push((
        "many-connections",
        Kind::Throughput(workload(total(big), large, 1, connections)),
        0.9,
        None,
    ));
    for (name, in_flight) in [("setup", 1), ("setup-parallel", 16)] {
        let kind = Kind::Setup {
            count: setups,
            in_flight,
        };
        // v2 set-ups are judged against v1's, after the table.
        benches.push((name, kind, 0.7, None));
    }
    let wires: Vec<Wire> = if args.wire.is_empty() {
        Wire::ALL.to_vec()
    } else {
        args.wire
            .iter()
            .map(|w| {
                Wire::parse(w).ok_or_else(|| {
                    CliError::usage(format!("--wire: {w:?} is not one of v1, v2, v1+tls"))
                })
            })
            .collect::<CliResult<_>>()?
    };
    let mut cases = Vec::new();
    for (name, kind, v1, v2) in benches {
        for &wire in &wires {
            let target = match (wire, kind) {
                (Wire::V1, _) => Some(v1),
                (Wire::V2, _) => v2,
                // Set-up inside TLS measures rustls, not ASoc.
                (Wire::V1Tls, Kind::Setup { .. }) => continue,
                (Wire::V1Tls, Kind::Throughput(_)) => None,
            };
            cases.push(Case {
                name,
                kind,
                wire,
                target,
            });
        }
    }
    if let Some(unknown) = args
        .only
        .iter()
        .find(|name| !cases.iter().any(|c| c.name == name.as_str()))
    {
        return Err(CliError::usage(format!(
            "--only: no bench named {unknown:?} in this plan"
        )));
    }
    if !args.only.is_empty() {
        cases.retain(|c| args.only.iter().any(|name| name == c.name));
    }
    for c in &cases {
        if let Kind::Throughput(w) = c.kind {
            if w.bytes / (w.streams as u64) == 0 {
                return Err(CliError::usage(format!(
                    "--size is too small for {} stream(s) on {} connection(s)",
                    w.streams, w.connections
                )));
            }
        }
    }
    Ok(cases)
}

/// Runs `asoc bench`.
pub(crate) fn run(args: &BenchArgs) -> CliResult {
    if args.pairs == 0 || (args.pairs < 5 && !args.quick) {
        return Err(CliError::usage(
            "--pairs must be at least 5 (or at least 1 with --quick)",
        ));
    }
    if args.cli {
        return cli::run(args);
    }
    if let Some(file) = &args.plot {
        return plot::run(args, file);
    }
    let cases = plan(args)?;
    let out = Out::new(args.json);
    let runtimes: &[RuntimeKind] = match args.runtime {
        BenchRuntime::All => &[RuntimeKind::Tokio, RuntimeKind::Smol, RuntimeKind::Mio],
        BenchRuntime::Tokio => &[RuntimeKind::Tokio],
        BenchRuntime::Smol => &[RuntimeKind::Smol],
        BenchRuntime::Mio => &[RuntimeKind::Mio],
    };
    let mut rows = Vec::new();
    for &kind in runtimes {
        let job = Bench {
            cases: cases.clone(),
            pairs: args.pairs,
            runtime: kind,
            out,
            json: args.json,
        };
        rows.extend(runtime::run(kind, job)?);
    }
    out.note(|| table(&rows));
    for c in comparisons(&rows) {
        out.emit(c.json(), || c.line());
    }
    Ok(())
}

/// A ratio between two ASoc rows of one runtime, with its target.
struct Comparison {
    bench: &'static str,
    runtime: &'static str,
    what: &'static str,
    ratio: f64,
    target: f64,
}

impl Comparison {
    fn json(&self) -> Value {
        json!({"compare": self.what, "bench": self.bench, "runtime": self.runtime,
               "ratio": self.ratio, "target": self.target, "met": self.ratio >= self.target})
    }

    fn line(&self) -> String {
        format!(
            "{} {} {}: {:.3} (target ≥{:.2}, {})",
            self.bench,
            self.runtime,
            self.what,
            self.ratio,
            self.target,
            if self.ratio >= self.target {
                "met"
            } else {
                "NOT met"
            }
        )
    }
}

/// v2 against v1 inside TLS (one stream, 1 MiB frames) and v2 set-ups
/// against v1's, for every runtime where both rows ran.
fn comparisons(rows: &[Row]) -> Vec<Comparison> {
    let find = |bench: &str, runtime: &str, wire: Wire| {
        rows.iter()
            .find(|r| r.case.name == bench && r.runtime == runtime && r.case.wire == wire)
    };
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.case.wire == Wire::V2) {
        let (other, what, target) = match r.case.name {
            "one-stream" => (Wire::V1Tls, "v2 / v1+tls", 1.25),
            "setup" | "setup-parallel" => (Wire::V1, "v2 / v1", 0.5),
            _ => continue,
        };
        if let Some(o) = find(r.case.name, r.runtime, other) {
            out.push(Comparison {
                bench: r.case.name,
                runtime: r.runtime,
                what,
                ratio: r.median.asoc / o.median.asoc,
                target,
            });
        }
    }
    out
}

/// The rows as an aligned text table.
fn table(rows: &[Row]) -> String {
    let head = [
        "bench",
        "wire",
        "runtime",
        "parameters",
        "asoc",
        "baseline",
        "ratio",
        "target",
        "met?",
    ];
    let cells: Vec<[String; 9]> = rows.iter().map(Row::cells).collect();
    align(&head, &cells)
}

/// `head` and `cells` as columns padded to their widest cell.
fn align<const N: usize>(head: &[&str; N], cells: &[[String; N]]) -> String {
    let mut width = head.map(|h| h.chars().count());
    for r in cells {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String]| {
        r.iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut text = line(&head.map(String::from));
    for r in cells {
        text.push('\n');
        text.push_str(&line(r));
    }
    text
}

/// Every bench of the plan on one runtime.
struct Bench {
    cases: Vec<Case>,
    pairs: usize,
    runtime: RuntimeKind,
    out: Out,
    json: bool,
}

impl Bench {
    /// Reports one pair on stderr.
    /// Reports one pair on stderr, with the CPU time per byte (or per
    /// set-up) of ASoc over the baseline's when the process CPU time is
    /// known: on a loaded machine rates swing with the CPU share each run
    /// gets, while the CPU a run costs barely moves.
    fn progress(&self, case: &Case, i: usize, s: &Sample, cpu: Option<f64>) {
        let (a, b, unit) = match case.kind {
            Kind::Throughput(_) => (s.asoc / MIB, s.baseline / MIB, "MiB/s"),
            Kind::Setup { .. } => (s.asoc, s.baseline, "/s"),
        };
        let cpu = cpu.map_or(String::new(), |c| format!(", CPU per unit {c:.3}x"));
        eprintln!(
            "asoc bench: {} {} {} pair {}/{}: asoc {a:.0} {unit}, baseline {b:.0} {unit}, ratio {:.3}{cpu}",
            case.name,
            case.wire.name(),
            self.runtime.name(),
            i + 1,
            self.pairs,
            s.ratio()
        );
    }

    /// The median of `samples` as a row, printed at once in JSON mode.
    fn finish(&self, case: Case, samples: &[Sample], cpu: &[(f64, f64)]) -> CliResult<Row> {
        let mut sorted = cpu.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let cpu = sorted.get(sorted.len() / 2).copied();
        let median = ab::median(samples)
            .filter(|m| m.asoc > 0.0 && m.baseline > 0.0)
            .ok_or_else(|| CliError::runtime(format!("{}: no measurement", case.name)))?;
        let row = Row {
            case,
            runtime: self.runtime.name(),
            median,
            pairs: samples.len(),
            cpu,
        };
        if self.json {
            self.out.emit(row.json(), String::new);
        }
        Ok(row)
    }
}

/// CPU time (user and system) of this process so far, threads that ended
/// included, in Linux clock ticks (`/proc/self/stat`); `None` elsewhere.
/// Ticks are coarse (10 ms), a throughput run costs hundreds of them.
fn process_cpu() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name in parentheses may hold spaces: count from its end.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user = fields.next()?.parse::<u64>().ok()?;
    let system = fields.next()?.parse::<u64>().ok()?;
    Some(user + system)
}

/// The CPU time one unit of the ASoc run (`t1`..`t2`) took over one unit
/// of the baseline run (`t0`..`t1`); both runs move the same bytes or
/// make the same set-ups, so the units cancel.
fn cpu_ratio(t0: Option<u64>, t1: Option<u64>, t2: Option<u64>) -> Option<f64> {
    let (t0, t1, t2) = (t0?, t1?, t2?);
    let baseline = t1.checked_sub(t0).filter(|&d| d > 0)?;
    Some(t2.checked_sub(t1)? as f64 / baseline as f64)
}

/// The ASoc run's CPU (`t1`..`t2`, clock ticks of 10 ms) per GiB moved, in
/// seconds, or per set-up, in microseconds.
fn cpu_per_unit(case: &Case, t1: Option<u64>, t2: Option<u64>) -> Option<f64> {
    let secs = t2?.checked_sub(t1?)? as f64 / 100.0;
    match case.kind {
        Kind::Throughput(w) => {
            let gib = (w.bytes * w.connections as u64) as f64 / (1u64 << 30) as f64;
            (gib > 0.0).then(|| secs / gib)
        }
        Kind::Setup { count, .. } => (count > 0).then(|| secs * 1e6 / count as f64),
    }
}

fn failed(case: &Case, e: impl std::fmt::Display) -> CliError {
    CliError::runtime(format!("bench {}: {e}", case.name))
}

impl Job for Bench {
    type Output = Vec<Row>;

    async fn run<N: Net>(self, net: N) -> CliResult<Vec<Row>> {
        self.run_two_sided(net.clone(), net).await
    }

    fn two_sided(&self) -> bool {
        true
    }

    /// Senders and clients on `net`, receivers and servers on `far`.
    async fn run_two_sided<N: Net>(self, net: N, far: N) -> CliResult<Vec<Row>> {
        let sides = ab::Sides {
            sender: net,
            receiver: far,
        };
        let mut rows = Vec::new();
        for case in self.cases.clone() {
            let mut samples = Vec::with_capacity(self.pairs);
            let mut cpu = Vec::with_capacity(self.pairs);
            for i in 0..self.pairs {
                let seed = i as u8;
                // Baseline first, then ASoc: A B A B … over the pairs.
                let t0 = process_cpu();
                let baseline = match case.kind {
                    Kind::Throughput(w) => ab::raw_tcp(&sides, w).await,
                    Kind::Setup { count, in_flight } => {
                        ab::raw_setup(&sides, count, in_flight).await
                    }
                };
                let t1 = process_cpu();
                let asoc = match case.kind {
                    Kind::Throughput(w) => ab::asoc(&sides, w, seed, case.wire).await,
                    Kind::Setup { count, in_flight } => {
                        ab::asoc_setup(&sides, count, in_flight, seed, case.wire.version()).await
                    }
                };
                let t2 = process_cpu();
                let s = Sample {
                    baseline: baseline.map_err(|e| failed(&case, e))?,
                    asoc: asoc.map_err(|e| failed(&case, e))?,
                };
                self.progress(&case, i, &s, cpu_ratio(t0, t1, t2));
                if let (Some(ratio), Some(per_unit)) =
                    (cpu_ratio(t0, t1, t2), cpu_per_unit(&case, t1, t2))
                {
                    cpu.push((ratio, per_unit));
                }
                samples.push(s);
            }
            rows.push(self.finish(case, &samples, &cpu)?);
        }
        Ok(rows)
    }
}
