//! `asoc bench` as a smoke run (--quick, tiny sizes) on every runtime: the
//! JSON lines carry every field, the rates are positive and the ratio is
//! the quotient of the reported rates. No timing is asserted.

use crate::common;

use serde_json::Value;

use common::*;

const THROUGHPUT: [&str; 4] = [
    "one-stream",
    "small-frames",
    "many-streams",
    "many-connections",
];
const SETUP: [&str; 2] = ["setup", "setup-parallel"];
/// The wires of a throughput bench and of a set-up bench, in row order.
const THROUGHPUT_WIRES: [&str; 3] = ["v1", "v2", "v1+tls"];
const SETUP_WIRES: [&str; 2] = ["v1", "v2"];

/// The (bench, wire) rows a full plan reports, in order.
fn expected_rows(throughput: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for b in throughput {
        out.extend(THROUGHPUT_WIRES.iter().map(|w| (*b, *w)));
    }
    for b in SETUP {
        out.extend(SETUP_WIRES.iter().map(|w| (b, *w)));
    }
    out
}

/// The measurement rows (the comparison lines carry a `compare` field).
fn rows(lines: &[Value]) -> Vec<&Value> {
    lines
        .iter()
        .filter(|v| v.get("compare").is_none())
        .collect()
}

/// The `(bench, wire)` of each measurement row.
fn row_names(lines: &[Value]) -> Vec<(&str, &str)> {
    rows(lines)
        .iter()
        .map(|v| (v["bench"].as_str().unwrap(), v["wire"].as_str().unwrap()))
        .collect()
}

fn bench(args: &[&str]) -> Vec<Value> {
    let out = asoc().arg("bench").args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The JSON rows of a quick run of one 1 MiB pair on smol, with `extra`.
fn one_small_pair_on_smol(extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "--runtime",
        "smol",
        "--quick",
        "--pairs",
        "1",
        "--size",
        "1MiB",
    ];
    args.extend_from_slice(extra);
    args.push("--json");
    bench(&args)
}

/// The `bench` field of each measurement row, each name once, in order.
fn bench_names(lines: &[Value]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for v in rows(lines) {
        let name = v["bench"].as_str().unwrap();
        if names.last() != Some(&name) {
            names.push(name);
        }
    }
    names
}

fn positive(v: &Value, field: &str) -> f64 {
    let x = v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"));
    assert!(x > 0.0 && x.is_finite(), "{field} = {x} in {v}");
    x
}

fn uint(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Checks one runtime's lines; returns them by bench name.
fn check(lines: &[Value], runtime: &str, streams: u64, connections: u64) {
    assert_eq!(row_names(lines), expected_rows(&THROUGHPUT));
    for v in rows(lines) {
        assert_eq!(v["runtime"], runtime, "{v}");
        assert_eq!(uint(v, "pairs"), 2, "{v}");
        // v1 rows are judged, and v2's one-stream and small-frames rows.
        let judged = v["wire"] == "v1"
            || (v["wire"] == "v2"
                && ["one-stream", "small-frames"].contains(&v["bench"].as_str().unwrap()));
        assert!(v["met"].is_boolean(), "{v}");
        assert_eq!(v["target"].as_f64().is_some(), judged, "{v}");
        let (asoc, base) = if SETUP.contains(&v["bench"].as_str().unwrap()) {
            assert!(v["chunk_size"].is_null() && v["streams"].is_null() && v["bytes"].is_null());
            assert_eq!(uint(v, "setups"), 32, "{v}");
            assert!(v.get("asoc_mib_s").is_none(), "{v}");
            (positive(v, "asoc_per_s"), positive(v, "baseline_per_s"))
        } else {
            assert!(uint(v, "chunk_size") > 0, "{v}");
            assert_eq!(uint(v, "bytes"), 2 << 20, "{v}");
            assert!(v.get("asoc_per_s").is_none(), "{v}");
            (positive(v, "asoc_mib_s"), positive(v, "baseline_mib_s"))
        };
        let ratio = positive(v, "ratio");
        assert!((ratio - asoc / base).abs() <= 1e-9 * ratio, "{v}");
    }
    // v2 against v1 inside TLS (one stream) and against v1's set-ups.
    let row = |bench: &str, wire: &str| {
        *rows(lines)
            .iter()
            .find(|v| v["bench"] == bench && v["wire"] == wire)
            .unwrap()
    };
    let compared: Vec<&Value> = lines
        .iter()
        .filter(|v| v.get("compare").is_some())
        .collect();
    assert_eq!(compared.len(), 3, "{compared:?}");
    for c in compared {
        let bench = c["bench"].as_str().unwrap();
        let (other, unit) = match bench {
            "one-stream" => ("v1+tls", "asoc_mib_s"),
            _ => ("v1", "asoc_per_s"),
        };
        let want = positive(row(bench, "v2"), unit) / positive(row(bench, other), unit);
        let got = positive(c, "ratio");
        assert!((got - want).abs() <= 1e-9 * want, "{c}");
        assert!(
            c["target"].as_f64().is_some() && c["met"].is_boolean(),
            "{c}"
        );
    }
    let by = |name: &str| row(name, "v2");
    assert_eq!(uint(by("one-stream"), "chunk_size"), 1 << 20);
    assert_eq!(uint(by("small-frames"), "chunk_size"), 4 << 10);
    assert_eq!(uint(by("many-streams"), "streams"), streams);
    assert_eq!(uint(by("many-streams"), "connections"), 1);
    assert_eq!(uint(by("many-connections"), "connections"), connections);
    assert_eq!(uint(by("many-connections"), "streams"), 1);
    assert_eq!(uint(by("setup"), "connections"), 1);
    assert_eq!(uint(by("setup-parallel"), "connections"), 16);
}

fn quick(runtime: &str) {
    let lines = bench(&[
        "--runtime",
        runtime,
        "--quick",
        "--pairs",
        "2",
        "--size",
        "2MiB",
        "--streams",
        "4",
        "--connections",
        "2",
        "--json",
    ]);
    check(&lines, runtime, 4, 2);
}

#[test]
fn quick_json_on_tokio() {
    quick("tokio");
}

#[test]
fn quick_json_on_smol() {
    quick("smol");
}

#[test]
fn quick_json_on_mio() {
    quick("mio");
}

#[test]
fn chunk_size_replaces_the_large_frames_and_drops_small_frames() {
    let lines = one_small_pair_on_smol(&["--chunk-size", "64KiB"]);
    assert_eq!(
        row_names(&lines),
        expected_rows(&["one-stream", "many-streams", "many-connections"])
    );
    let rows = rows(&lines);
    for v in &rows[..9] {
        assert_eq!(uint(v, "chunk_size"), 64 << 10, "{v}");
    }
    assert_eq!(uint(rows[3], "streams"), 64);
    assert_eq!(uint(rows[6], "connections"), 8);
}

#[test]
fn the_table_lists_every_bench_and_json_goes_nowhere_else() {
    let out = asoc()
        .args(["bench", "--runtime", "tokio", "--quick", "--pairs", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        head,
        [
            "bench",
            "wire",
            "runtime",
            "parameters",
            "asoc",
            "baseline",
            "ratio",
            "target",
            "met?"
        ]
    );
    let all: Vec<&str> = lines.collect();
    let expected = expected_rows(&THROUGHPUT);
    // The table, then one line per comparison.
    assert_eq!(all.len(), expected.len() + 3, "{text}");
    for (row, (name, wire)) in all.iter().zip(&expected) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            (cells[0], cells[1], cells[2]),
            (*name, *wire, "tokio"),
            "{row}"
        );
    }
    for line in &all[expected.len()..] {
        assert!(line.contains("v2 / "), "{line}");
    }
    assert!(!text.contains('{'), "{text}");
    // Progress, one line per pair, on stderr.
    assert_eq!(
        stderr(&out)
            .lines()
            .filter(|l| l.contains(" pair 1/1"))
            .count(),
        expected.len()
    );
}

#[test]
fn too_few_pairs_or_zero_counts_are_usage_errors() {
    let out = asoc().args(["bench", "--pairs", "4"]).output().unwrap();
    assert_fails(&out, 2, "--pairs must be at least 5");
    let out = asoc()
        .args(["bench", "--quick", "--pairs", "0"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--pairs");
    let out = asoc()
        .args(["bench", "--quick", "--streams", "0"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--streams must be at least 1");
    let out = asoc()
        .args(["bench", "--quick", "--chunk-size", "0"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--chunk-size");
}

#[test]
fn only_runs_the_named_benches_and_refuses_unknown_names() {
    let lines =
        one_small_pair_on_smol(&["--only", "many-connections,one-stream", "--only", "setup"]);
    let names = bench_names(&lines);
    // In plan order, whatever the order of the flags.
    assert_eq!(names, ["one-stream", "many-connections", "setup"]);
    let out = asoc()
        .args(["bench", "--quick", "--only", "one-strem"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "no bench named \"one-strem\"");
    // Small frames are not part of a plan with a chunk size of its own.
    let out = asoc()
        .args([
            "bench",
            "--quick",
            "--chunk-size",
            "64KiB",
            "--only",
            "small-frames",
        ])
        .output()
        .unwrap();
    assert_fails(&out, 2, "small-frames");
}

#[test]
fn wire_chooses_the_rows_and_refuses_unknown_names() {
    let lines = one_small_pair_on_smol(&["--only", "one-stream,setup", "--wire", "v2"]);
    assert_eq!(row_names(&lines), [("one-stream", "v2"), ("setup", "v2")]);
    // Nothing to compare v2 with.
    assert_eq!(rows(&lines).len(), lines.len());
    let out = asoc()
        .args(["bench", "--quick", "--wire", "v3"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--wire: \"v3\" is not one of v1, v2, v1+tls");
}

/// `asoc bench --cli` with a tiny file: every row (v1 and v2 of each
/// mode) with positive rates of both the processes and the plain copy, a
/// ratio that is their quotient, and the hashing cost on the digest rows.
#[test]
fn cli_mode_reports_every_row_against_the_plain_copy() {
    let lines = bench(&[
        "--cli",
        "--cli-size",
        "4MiB",
        "--quick",
        "--pairs",
        "1",
        "--json",
    ]);
    let names: Vec<(&str, &str)> = lines
        .iter()
        .map(|v| (v["bench"].as_str().unwrap(), v["wire"].as_str().unwrap()))
        .collect();
    let mut want = Vec::new();
    for b in ["cli-1MiB", "cli-4KiB", "cli-out", "cli-digest"] {
        want.extend([(b, "v1"), (b, "v2")]);
    }
    assert_eq!(names, want);
    for v in &lines {
        assert_eq!(v["mode"], "cli", "{v}");
        assert_eq!(uint(v, "bytes"), 4 << 20, "{v}");
        let (a, b) = (positive(v, "asoc_mib_s"), positive(v, "baseline_mib_s"));
        let ratio = v["ratio"].as_f64().unwrap();
        assert!((ratio - a / b).abs() < 1e-9 * ratio.max(1.0), "{v}");
        let digest = v["bench"] == "cli-digest";
        assert_eq!(v["digest"], digest, "{v}");
        assert_eq!(v["out"], v["bench"] == "cli-out", "{v}");
        assert_eq!(v["hashing_s_per_gib"].is_number(), digest, "{v}");
        assert_eq!(v["digest_over_no_digest"].is_number(), digest, "{v}");
        let chunk = if v["bench"] == "cli-4KiB" {
            4096
        } else {
            1 << 20
        };
        assert_eq!(uint(v, "chunk_size"), chunk, "{v}");
    }
}

/// `asoc bench --cli` without --json prints the table, one line per row.
#[test]
fn cli_mode_prints_a_table() {
    let out = asoc()
        .args([
            "bench",
            "--cli",
            "--cli-size",
            "1MiB",
            "--quick",
            "--pairs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 9, "{text}");
    assert!(lines[0].starts_with("bench"), "{text}");
    assert!(lines[0].contains("plain copy"), "{text}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("cli-")).count(), 8);
}

/// `--cli` does not combine with the in-process benches' selectors.
#[test]
fn cli_mode_refuses_in_process_options() {
    let out = asoc()
        .args(["bench", "--cli", "--only", "one-stream"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--only");
    let out = asoc()
        .args(["bench", "--cli-size", "1MiB"])
        .output()
        .unwrap();
    assert_fails(&out, 2, "--cli");
}

/// `asoc bench --plot`: one SVG document with the four series named in
/// its legend, and with --json one point per series and frame size.
#[test]
fn plot_draws_four_series_into_an_svg_file() {
    let dir = temp_dir("bench-plot");
    let file = dir.join("throughput.svg");
    let lines = bench(&[
        "--plot",
        file.to_str().unwrap(),
        "--runtime",
        "smol",
        "--quick",
        "--pairs",
        "1",
        "--size",
        "256KiB",
        "--json",
    ]);
    let series = ["raw TCP", "v1", "v2", "v1+tls"];
    let chunks: Vec<u64> = (0..7).map(|i| 4096u64 << (2 * i)).collect();
    assert_eq!(lines.len(), series.len() * chunks.len());
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["plot"], series[i % series.len()], "{v}");
        assert_eq!(uint(v, "chunk_size"), chunks[i / series.len()], "{v}");
        positive(v, "mib_s");
    }
    let svg = std::fs::read_to_string(&file).unwrap();
    let start = svg.trim_start();
    assert!(
        start.starts_with("<svg") || start.starts_with("<?xml"),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "not a whole document");
    assert_eq!(svg.matches("<svg").count(), 1);
    for name in series {
        assert!(
            svg.contains(&format!(">{name}<")) || svg.contains(&format!(">\n{name}\n<")),
            "no legend entry {name:?}"
        );
    }
    // Every line of the chart is a polyline (one per series).
    assert!(svg.matches("<polyline").count() >= series.len(), "{svg}");
}
