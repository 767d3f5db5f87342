//! DESIGN.md §2: asoc-proto never reads a clock, touches a socket, asks the
//! OS for randomness, sleeps, locks, uses a runtime or writes `unsafe`.
//! This test reads the crate's source and fails on any line that would.

use std::fs;
use std::path::{Path, PathBuf};

/// Text that must not appear anywhere under `src/`, with why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Instant::now", "reads the clock; take `now` as an argument"),
    (
        "SystemTime::now",
        "reads the wall clock; take unix seconds as an argument",
    ),
    ("std::net", "touches sockets; adapters do IO"),
    ("OsRng", "asks the OS for randomness; take a seed"),
    ("getrandom", "asks the OS for randomness; take a seed"),
    ("thread::sleep", "sleeps; return a timer deadline instead"),
    (
        "std::sync::Mutex",
        "locks; the core is single-threaded state",
    ),
    ("thread_rng", "asks the OS for randomness; take a seed"),
    ("from_entropy", "asks the OS for randomness; take a seed"),
    (
        "std::thread",
        "spawns or sleeps; the core is single-threaded state",
    ),
    ("std::fs", "does IO; adapters do that"),
    (
        "std::{",
        "a grouped std import would hide `std::net` and the like",
    ),
    ("tokio", "depends on a runtime; adapters do that"),
    ("smol", "depends on a runtime; adapters do that"),
    ("async_std", "depends on a runtime; adapters do that"),
    ("mio::", "depends on an event loop; adapters do that"),
    ("unsafe ", "unsafe code is forbidden"),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `file:line: found `pattern` (reason): line text` for every forbidden
/// pattern in `text`. Documentation lines (`//!`, `///`) are skipped: their
/// examples play the adapter's part (reading the clock, naming runtimes) and
/// compile as separate doc-test crates, never into the library.
fn violations(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//!") || trimmed.starts_with("///") {
            continue;
        }
        for (pattern, why) in FORBIDDEN {
            if line.contains(pattern) {
                found.push(format!(
                    "{file}:{}: found `{pattern}` ({why}): {}",
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    found
}

#[test]
fn src_has_no_io_clock_os_randomness_sleep_lock_runtime_or_unsafe() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    // The walk must actually reach the modules, or this test proves nothing.
    for must in [
        "lib.rs",
        "replay.rs",
        "rng.rs",
        "wire/decoder.rs",
        "auth/key.rs",
    ] {
        assert!(
            files.contains(&src.join(must)),
            "walking {} did not find {must}; found {files:?}",
            src.display()
        );
    }
    let mut all = Vec::new();
    for f in &files {
        let text =
            fs::read_to_string(f).unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        let shown = f.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(f);
        all.extend(violations(&shown.display().to_string(), &text));
    }
    assert!(
        all.is_empty(),
        "asoc-proto/src breaks the sans-IO rules (DESIGN.md §2):\n{}",
        all.join("\n")
    );
}

/// Crates that would bring IO, a clock, a runtime or OS randomness. The
/// text scan above cannot see a dependency used through a re-export, so the
/// manifest is checked too.
const FORBIDDEN_DEPENDENCIES: &[&str] = &[
    "tokio",
    "smol",
    "async-std",
    "async-io",
    "async-net",
    "futures-io",
    "mio",
    "socket2",
    "getrandom",
    "rand",
];

#[test]
fn manifest_has_no_runtime_io_or_os_randomness_dependency() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[dependencies]" {
            if let Some((name, spec)) = line.split_once(['=', '.']) {
                deps.push((name.trim().to_string(), spec.to_string()));
            }
        }
    }
    assert!(
        deps.iter().any(|(n, _)| n == "bytes"),
        "{} has no [dependencies] the parser found: {deps:?}",
        path.display()
    );
    for (name, spec) in &deps {
        assert!(
            !FORBIDDEN_DEPENDENCIES.contains(&name.as_str()),
            "asoc-proto depends on `{name}` (DESIGN.md §2)"
        );
        assert!(
            !spec.contains("getrandom") && !spec.contains("os_rng"),
            "asoc-proto enables OS randomness on `{name}`: {spec}"
        );
    }
}

#[test]
fn lib_forbids_unsafe_code() {
    let lib = src_dir().join("lib.rs");
    let text = fs::read_to_string(&lib).unwrap();
    assert!(
        text.lines().any(|l| l.trim() == "#![forbid(unsafe_code)]"),
        "{} must contain `#![forbid(unsafe_code)]`",
        lib.display()
    );
}

#[test]
fn the_scanner_catches_each_pattern_with_file_and_line() {
    for (pattern, _) in FORBIDDEN {
        let text =
            format!("//! {pattern} in docs is fine\nfn f() {{}}\n    let x = {pattern}();\n");
        let found = violations("src/x.rs", &text);
        assert_eq!(found.len(), 1, "{pattern}: {found:?}");
        assert!(
            found[0].starts_with("src/x.rs:3: found `"),
            "{pattern}: {}",
            found[0]
        );
        assert!(found[0].contains(pattern));
    }
    assert!(violations(
        "src/x.rs",
        "use core::time::Duration;\nlet t: Instant = now;\n"
    )
    .is_empty());
}
