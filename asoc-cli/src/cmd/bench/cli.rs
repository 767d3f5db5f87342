//! `asoc bench --cli`: the commands as people run them. Each run is two
//! processes of this executable over loopback: `asoc send FILE` into
//! `asoc listen`, against a plain-TCP pair making the same copy (a sender
//! that reads the file into one reused buffer and writes each chunk to the
//! socket, a receiver that discards or, for the `--out` rows, writes to a
//! file and syncs it as `asoc listen --out` does). Baseline and ASoc runs
//! alternate (A B A B …) and each row reports the pair with the median
//! ratio, as the in-process benches do.
//!
//! A run's time goes from spawning the sender to the moment both the
//! sender has exited and the receiver has reported the whole stream;
//! receivers are started (and listening) before the clock starts, for
//! both sides alike.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use asoc_testkit::bench::{self as ab, Sample};
use serde_json::{json, Value};

use crate::cli::{BenchArgs, BenchRuntime, PlainReceiveArgs, PlainSendArgs};
use crate::error::{CliError, CliResult};
use crate::output::Out;
use crate::runtime::RuntimeKind;

use super::{size, MIB};

/// How long one process may take to report before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(600);

/// One row: what the ASoc pair runs, and its plain-TCP counterpart.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    /// `v1` or `v2`.
    wire: &'static str,
    chunk: usize,
    /// `--out DIR` on the listener; the baseline writes to a file.
    out: bool,
    /// SHA-256 on both ASoc sides (the default of both commands).
    digest: bool,
    target: Option<f64>,
}

/// The rows of a `--cli` run, in order.
fn plan() -> Vec<Case> {
    let mut cases = Vec::new();
    // (name, chunk, out, digest, target)
    let rows: [(&str, usize, bool, bool, Option<f64>); 4] = [
        ("cli-1MiB", 1 << 20, false, false, Some(0.95)),
        ("cli-4KiB", 4 << 10, false, false, Some(1.0)),
        ("cli-out", 1 << 20, true, false, Some(0.9)),
        ("cli-digest", 1 << 20, false, true, None),
    ];
    for (name, chunk, out, digest, target) in rows {
        for wire in ["v1", "v2"] {
            cases.push(Case {
                name,
                wire,
                chunk,
                out,
                digest,
                target,
            });
        }
    }
    cases
}

/// A finished row.
struct Row {
    case: Case,
    median: Sample,
    pairs: usize,
    bytes: u64,
    /// Digest rows: the throughput of this row over the same wire's
    /// digest-off 1 MiB row, and the seconds per GiB hashing added.
    hashing: Option<(f64, f64)>,
}

impl Row {
    fn met(&self) -> bool {
        self.case.target.is_none_or(|t| self.median.ratio() >= t)
    }

    fn json(&self) -> Value {
        json!({
            "bench": self.case.name,
            "mode": "cli",
            "wire": self.case.wire,
            "chunk_size": self.case.chunk,
            "out": self.case.out,
            "digest": self.case.digest,
            "bytes": self.bytes,
            "asoc_mib_s": self.median.asoc / MIB,
            "baseline_mib_s": self.median.baseline / MIB,
            "ratio": self.median.ratio(),
            "target": self.case.target,
            "met": self.met(),
            "pairs": self.pairs,
            "digest_over_no_digest": self.hashing.map(|h| h.0),
            "hashing_s_per_gib": self.hashing.map(|h| h.1),
        })
    }

    fn cells(&self) -> [String; 9] {
        let mut params = format!(
            "{} chunks, {}",
            size(self.case.chunk as u64),
            size(self.bytes)
        );
        if self.case.out {
            params.push_str(", --out (baseline writes a file)");
        }
        if self.case.digest {
            params.push_str(", SHA-256 both sides");
            if let Some((share, cost)) = self.hashing {
                params.push_str(&format!(" ({share:.2}x of digests off, +{cost:.2} s/GiB)"));
            }
        } else {
            params.push_str(", --no-digest");
        }
        [
            self.case.name.into(),
            self.case.wire.into(),
            params,
            format!("{:.0} MiB/s", self.median.asoc / MIB),
            format!("{:.0} MiB/s", self.median.baseline / MIB),
            format!("{:.3}", self.median.ratio()),
            self.case.target.map_or("-".into(), |t| format!("≥{t:.2}")),
            match (self.case.target, self.met()) {
                (None, _) => "-",
                (Some(_), true) => "yes",
                (Some(_), false) => "NO",
            }
            .into(),
            self.pairs.to_string(),
        ]
    }
}

fn table(rows: &[Row]) -> String {
    let head = [
        "bench",
        "wire",
        "parameters",
        "asoc",
        "plain copy",
        "ratio",
        "target",
        "met?",
        "pairs",
    ];
    let cells: Vec<[String; 9]> = rows.iter().map(Row::cells).collect();
    super::align(&head, &cells)
}

fn failed(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::runtime(format!("bench --cli: {what}: {e}"))
}

/// Runs `asoc bench --cli`.
pub(crate) fn run(args: &BenchArgs) -> CliResult {
    let bytes = args
        .cli_size
        .unwrap_or(if args.quick { 8 << 20 } else { 1 << 30 });
    if bytes == 0 {
        return Err(CliError::usage("--cli-size must be at least 1B"));
    }
    let runtime = match args.runtime {
        BenchRuntime::All | BenchRuntime::Tokio => RuntimeKind::Tokio,
        BenchRuntime::Smol => RuntimeKind::Smol,
        BenchRuntime::Mio => RuntimeKind::Mio,
    };
    let out = Out::new(args.json);
    let exe = std::env::current_exe().map_err(|e| failed("this executable", e))?;
    let work = tempfile::Builder::new()
        .prefix("asoc-bench-cli-")
        .tempdir()
        .map_err(|e| failed("temporary directory", e))?;
    let input = work.path().join("input.bin");
    write_input(&input, bytes).map_err(|e| failed("writing the input file", e))?;
    let saved = work.path().join("saved");
    std::fs::create_dir(&saved).map_err(|e| failed("temporary directory", e))?;
    let bench = Bench {
        exe,
        key: key()?,
        runtime,
        input,
        bytes,
        saved,
    };
    let mut rows: Vec<Row> = Vec::new();
    for case in plan() {
        let mut samples = Vec::with_capacity(args.pairs);
        for i in 0..args.pairs {
            let baseline = bench.plain(&case)?;
            let asoc = bench.asoc(&case)?;
            let s = Sample { asoc, baseline };
            eprintln!(
                "asoc bench --cli: {} {} pair {}/{}: asoc {:.0} MiB/s, plain copy {:.0} MiB/s, ratio {:.3}",
                case.name,
                case.wire,
                i + 1,
                args.pairs,
                s.asoc / MIB,
                s.baseline / MIB,
                s.ratio()
            );
            samples.push(s);
        }
        let median = ab::median(&samples)
            .ok_or_else(|| CliError::runtime(format!("{}: no measurement", case.name)))?;
        let hashing = case
            .digest
            .then(|| {
                rows.iter()
                    .find(|r| r.case.wire == case.wire && r.case.name == "cli-1MiB")
            })
            .flatten()
            .map(|off| {
                let gib = (1u64 << 30) as f64;
                let cost = gib / median.asoc - gib / off.median.asoc;
                (median.asoc / off.median.asoc, cost)
            });
        let row = Row {
            case,
            median,
            pairs: samples.len(),
            bytes,
            hashing,
        };
        if args.json {
            out.emit(row.json(), String::new);
        }
        rows.push(row);
    }
    out.note(|| table(&rows));
    Ok(())
}

/// A fresh API key for the run's processes.
fn key() -> CliResult<String> {
    let seed = crate::os::seed()?;
    let mut rng = asoc_proto::rng::Rng::from_seed(seed);
    Ok(asoc_proto::auth::generate_key_hex(rng.inner())
        .as_str()
        .to_string())
}

/// `bytes` of incompressible-looking data (xorshift), so that nothing on
/// the path can profit from zeros.
fn write_input(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()
}

/// A child process whose JSON stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<Value>,
    what: &'static str,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &'static str) -> CliResult<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| failed(what, e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed(what, "no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Self { child, lines, what })
    }

    /// The first line whose `event` is `event`.
    fn wait_for(&self, event: &str) -> CliResult<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return Ok(v),
                Ok(v) if v["event"] == "stream_incomplete" => {
                    return Err(failed(self.what, format!("stream incomplete: {v}")))
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(failed(
                        self.what,
                        format!("no {event} event (exited, or silent for {PATIENCE:?})"),
                    ))
                }
            }
        }
    }

    fn addr(&self) -> CliResult<String> {
        let v = self.wait_for("listening")?;
        v["tcp"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| failed(self.what, "no address in its listening event"))
    }

    /// Waits for the process to exit; `Ok` only on exit status 0.
    fn exited(mut self) -> CliResult {
        let status = self.child.wait().map_err(|e| failed(self.what, e))?;
        if status.success() {
            Ok(())
        } else {
            Err(failed(self.what, format!("exited with {status}")))
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Only this bench's own children, each by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    exe: PathBuf,
    key: String,
    runtime: RuntimeKind,
    input: PathBuf,
    bytes: u64,
    saved: PathBuf,
}

impl Bench {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        c.env("ASOC_API_KEY", &self.key);
        c.env_remove("ASOC_COMMUNITY");
        c
    }

    fn rate(&self, start: Instant) -> f64 {
        self.bytes as f64 / start.elapsed().as_secs_f64().max(1e-9)
    }

    /// Empties the directory the `--out` rows write into, between runs.
    fn clear_saved(&self) -> CliResult {
        let entries = std::fs::read_dir(&self.saved).map_err(|e| failed("--out directory", e))?;
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(())
    }

    /// One ASoc run: bytes per second.
    fn asoc(&self, case: &Case) -> CliResult<f64> {
        let mut listen = self.command();
        listen.args(["listen", "--json", "--bind", "127.0.0.1:0", "--runtime"]);
        listen.arg(self.runtime.name());
        if case.wire == "v1" {
            listen.arg("--allow-v1");
        }
        if !case.digest {
            listen.arg("--no-digest");
        }
        if case.out {
            listen.arg("--out").arg(&self.saved);
        }
        let listener = Proc::spawn(listen, "asoc listen")?;
        let addr = listener.addr()?;
        let mut send = self.command();
        send.args(["send", "--json", "--peer", &addr, "--wire", case.wire]);
        send.args(["--runtime", self.runtime.name()]);
        send.args(["--chunk-size", &case.chunk.to_string()]);
        if !case.digest {
            send.arg("--no-digest");
        }
        send.arg(&self.input);
        let start = Instant::now();
        let sender = Proc::spawn(send, "asoc send")?;
        let done = listener.wait_for("stream_complete")?;
        sender.exited()?;
        let rate = self.rate(start);
        if done["bytes"].as_u64() != Some(self.bytes) {
            return Err(failed("asoc listen", format!("received {done}")));
        }
        drop(listener);
        self.clear_saved()?;
        Ok(rate)
    }

    /// One plain-TCP run: bytes per second.
    fn plain(&self, case: &Case) -> CliResult<f64> {
        let mut receive = self.command();
        receive.args(["bench-plain-receive", "--bind", "127.0.0.1:0"]);
        if case.out {
            receive.arg("--out").arg(self.saved.join("plain.bin"));
        }
        let receiver = Proc::spawn(receive, "plain receiver")?;
        let addr = receiver.addr()?;
        let mut send = self.command();
        send.args(["bench-plain-send", "--peer", &addr]);
        send.args(["--chunk-size", &case.chunk.to_string()]);
        send.arg(&self.input);
        let start = Instant::now();
        let sender = Proc::spawn(send, "plain sender")?;
        let done = receiver.wait_for("received")?;
        sender.exited()?;
        let rate = self.rate(start);
        if done["bytes"].as_u64() != Some(self.bytes) {
            return Err(failed("plain receiver", format!("received {done}")));
        }
        receiver.exited()?;
        self.clear_saved()?;
        Ok(rate)
    }
}

/// `asoc bench-plain-send`: the baseline's sender. Reads FILE into one
/// buffer of `--chunk-size` bytes, reused for every chunk, and writes each
/// chunk to the socket with one `write_all`.
pub(crate) fn plain_send(args: &PlainSendArgs) -> CliResult {
    let chunk = usize::try_from(args.chunk_size)
        .ok()
        .filter(|&c| c > 0 && c <= 16 << 20)
        .ok_or_else(|| CliError::usage("--chunk-size must be between 1B and 16MiB"))?;
    let mut file = std::fs::File::open(&args.file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", args.file.display())))?;
    let mut socket = TcpStream::connect(args.peer).map_err(|e| failed("connect", e))?;
    if args.sendfile {
        return plain_sendfile(&file, socket, chunk);
    }
    let mut buf = vec![0u8; chunk];
    loop {
        let mut filled = 0;
        while filled < chunk {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed("read", e)),
            }
        }
        if filled == 0 {
            break;
        }
        socket
            .write_all(&buf[..filled])
            .map_err(|e| failed("write", e))?;
    }
    socket
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| failed("shutdown", e))?;
    Ok(())
}

/// The plain copy with sendfile(2): the file's pages go to the socket
/// without passing through a buffer of ours.
#[cfg(target_os = "linux")]
fn plain_sendfile(file: &std::fs::File, mut socket: TcpStream, chunk: usize) -> CliResult {
    loop {
        match rustix::fs::sendfile(&socket, file, None, chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(failed("sendfile", e)),
        }
    }
    socket.flush().map_err(|e| failed("flush", e))?;
    socket
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| failed("shutdown", e))
}

#[cfg(not(target_os = "linux"))]
fn plain_sendfile(_: &std::fs::File, _: TcpStream, _: usize) -> CliResult {
    Err(CliError::usage("--sendfile needs Linux"))
}

/// `asoc bench-plain-receive`: the baseline's receiver. Prints its address,
/// accepts one connection, reads it to the end in 1 MiB reads and discards
/// the bytes or writes them to `--out` (synced before the report, as
/// `asoc listen --out` syncs its files), then prints the byte count.
pub(crate) fn plain_receive(args: &PlainReceiveArgs) -> CliResult {
    let listener = TcpListener::bind(args.bind).map_err(|e| failed("bind", e))?;
    let addr: SocketAddr = listener.local_addr().map_err(|e| failed("bind", e))?;
    let out = Out::new(true);
    out.emit(
        json!({"event": "listening", "tcp": addr.to_string()}),
        String::new,
    );
    let (mut socket, _) = listener.accept().map_err(|e| failed("accept", e))?;
    let mut file = match &args.out {
        Some(path) => Some(std::fs::File::create(path).map_err(|e| failed("create", e))?),
        None => None,
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed("read", e)),
        };
        if let Some(f) = &mut file {
            f.write_all(&buf[..n]).map_err(|e| failed("write", e))?;
        }
        total += n as u64;
    }
    if let Some(f) = &file {
        f.sync_all().map_err(|e| failed("sync", e))?;
    }
    out.emit(json!({"event": "received", "bytes": total}), String::new);
    Ok(())
}
