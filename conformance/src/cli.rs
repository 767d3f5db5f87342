//! The command line: `conformance server …`, `conformance client …` and
//! `--list`. [`main_with_args`] is what `asoc conformance` calls.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::case::{Case, Finding, Role, Transport, Wire};
use crate::cases;
use crate::report::{self, Format};
use crate::run::{run_case, CaseReport, Expectations, Outcome, Selection};
use crate::target::{Endpoint, Implementation, Sources, TargetConfig};
use crate::v2::Suite;

const USAGE: &str = "\
usage: PROG server --target HOST:PORT [--udp-target HOST:PORT] [OPTIONS] [SELECTION…]
       PROG client --exec \"COMMAND\" [OPTIONS] [SELECTION…]
       PROG --list [SELECTION…]

The API key comes from ASOC_API_KEY or --api-key-file FILE; the community
from --community NAME or ASOC_COMMUNITY.

SELECTION is a section prefix or case id: R3, R3-3.2, R3-3.2/1 (default: all
the cases of the selected wire version).

options:
  --wire v1|v2              the version to test: v2 (default) runs the R3 cases of
                            WIRE-v2.md, v1 the R1/R2 cases of WIRE.md
  --exclude GLOB            leave out cases whose id matches (repeatable)
  --strict                  SHOULD failures fail the run
  --timeout SECS            wait for what should happen at once (default 3)
  --quiet SECS              watch for what must not happen (default 1)
  --format human|json|junit output format (default human)
  --output FILE             write the report to FILE
  --expectations FILE       known deviations: `ID-or-GLOB reason` per line
  --list                    list the selected cases and exit
server mode:
  --echo                    the target echoes every completed stream back
  --handshake-timeout SECS  the target's handshake deadline (default 10)
  --max-payload BYTES       the target's maximum frame payload (default 16 MiB)
  --idle-timeout SECS       the target's receive idle timeout on an open stream (default 30)
  --stall-timeout SECS      the target's send stall timeout (default 10)
  --max-connections N       the target's cap on concurrent connections (its case is
                            skipped without it)
  --retry-min SECS          the target's shortest first re-dial delay (default 1)
  --retry-max SECS          the target's longest first re-dial delay (default 5)
  --max-backoff SECS        the target's longest wait between two dials (default 60)
  --dial-failures N         failed dials after which the target drops a discovered
                            peer (default 3)
  --peer-expiry SECS        the target's discovered-peer expiry (default 15)
  --lockout N               the target's failed authentications before lockout (default 5)
  --attempts-per-hour N     the target's connection attempts per IP per hour (default 100)
  --announce-listen ADDR    UDP address the target sends its announcements to (a
                            second one: another destination of the same target)
  --announce-interval SECS  the target's announce interval (default 3)
  --node-id UUID            the target's node id
  --suite aesgcm|chachapoly v2: the target accepts only this suite (default: both;
                            the suite then offers aesgcm)
  --allow-v1                v2: the target also accepts v1 (its cases then skip
                            the v2-only rules and check the downgrade rule)
  --timestamp-window SECS   v2: the target's HELLO2/announcement window (default 60)
client mode: COMMAND runs under `sh -c` once per dial with ASOC_TESTCASE,
  ASOC_HOST, ASOC_PORT, ASOC_API_KEY, ASOC_COMMUNITY and ASOC_PAYLOAD_HEX
  (also ASOC_PAYLOAD_FILE: the same bytes in a file); it exits 0 on success
  and 89 when it does not support the case. ASOC_WIRE says v1 or v2, and
  ASOC_PEER_ID, when set, is the node id the server must prove (v2).

exit status: 0 nothing unexpected, 1 unexpected results, 2 usage error or
unreachable target.
";

#[derive(Debug, Default)]
struct Args {
    mode: Option<String>,
    target: Option<String>,
    udp_target: Option<String>,
    exec: Option<String>,
    api_key_file: Option<String>,
    community: Option<String>,
    selection: Selection,
    strict: bool,
    list: bool,
    echo: bool,
    timeout: Option<f64>,
    quiet: Option<f64>,
    handshake_timeout: Option<f64>,
    max_payload: Option<u32>,
    lockout: Option<u32>,
    idle_timeout: Option<f64>,
    stall_timeout: Option<f64>,
    max_connections: Option<u32>,
    retry_min: Option<f64>,
    retry_max: Option<f64>,
    max_backoff: Option<f64>,
    dial_failures: Option<u32>,
    peer_expiry: Option<f64>,
    attempts_per_hour: Option<u32>,
    announce_listen: Vec<String>,
    announce_interval: Option<f64>,
    node_id: Option<uuid::Uuid>,
    wire: Wire,
    suite: Option<Suite>,
    allow_v1: bool,
    timestamp_window: Option<f64>,
    format: Option<Format>,
    output: Option<String>,
    expectations: Option<String>,
}

fn parse(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let secs = |v: String, name: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && s.is_finite())
                .ok_or_else(|| format!("{name}: `{v}` is not a positive number of seconds"))
        };
        let count = |v: String, name: &str| -> Result<u32, String> {
            v.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name}: `{v}` is not a positive whole number"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "server" | "client" if a.mode.is_none() => a.mode = Some(arg),
            "--target" => a.target = Some(value("--target")?),
            "--udp-target" => a.udp_target = Some(value("--udp-target")?),
            "--exec" => a.exec = Some(value("--exec")?),
            "--api-key-file" => a.api_key_file = Some(value("--api-key-file")?),
            "--community" => a.community = Some(value("--community")?),
            "--exclude" => a.selection.exclude.push(value("--exclude")?),
            "--strict" => a.strict = true,
            "--list" => a.list = true,
            "--echo" => a.echo = true,
            "--timeout" => a.timeout = Some(secs(value("--timeout")?, "--timeout")?),
            "--quiet" => a.quiet = Some(secs(value("--quiet")?, "--quiet")?),
            "--handshake-timeout" => {
                a.handshake_timeout =
                    Some(secs(value("--handshake-timeout")?, "--handshake-timeout")?);
            }
            "--announce-interval" => {
                a.announce_interval =
                    Some(secs(value("--announce-interval")?, "--announce-interval")?);
            }
            "--max-payload" => {
                let v = value("--max-payload")?;
                a.max_payload = Some(v.parse().map_err(|_| format!("--max-payload: `{v}`"))?);
            }
            "--lockout" => {
                let v = value("--lockout")?;
                a.lockout = Some(v.parse().map_err(|_| format!("--lockout: `{v}`"))?);
            }
            "--idle-timeout" => {
                a.idle_timeout = Some(secs(value("--idle-timeout")?, "--idle-timeout")?);
            }
            "--stall-timeout" => {
                a.stall_timeout = Some(secs(value("--stall-timeout")?, "--stall-timeout")?);
            }
            "--max-connections" => {
                a.max_connections = Some(count(value("--max-connections")?, "--max-connections")?);
            }
            "--retry-min" => a.retry_min = Some(secs(value("--retry-min")?, "--retry-min")?),
            "--retry-max" => a.retry_max = Some(secs(value("--retry-max")?, "--retry-max")?),
            "--max-backoff" => {
                a.max_backoff = Some(secs(value("--max-backoff")?, "--max-backoff")?);
            }
            "--dial-failures" => {
                a.dial_failures = Some(count(value("--dial-failures")?, "--dial-failures")?);
            }
            "--peer-expiry" => {
                a.peer_expiry = Some(secs(value("--peer-expiry")?, "--peer-expiry")?)
            }
            "--attempts-per-hour" => {
                let v = value("--attempts-per-hour")?;
                a.attempts_per_hour = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--attempts-per-hour: `{v}`"))?,
                );
            }
            "--announce-listen" => a.announce_listen.push(value("--announce-listen")?),
            "--node-id" => {
                let v = value("--node-id")?;
                a.node_id = Some(
                    v.parse()
                        .map_err(|_| format!("--node-id: `{v}` is not a UUID"))?,
                );
            }
            "--wire" => a.wire = value("--wire")?.parse()?,
            "--suite" => {
                let v = value("--suite")?;
                a.suite = Some(match v.as_str() {
                    "aesgcm" | "1" => Suite::AesGcm,
                    "chachapoly" | "2" => Suite::ChaChaPoly,
                    _ => return Err(format!("--suite: `{v}` (aesgcm, chachapoly)")),
                });
            }
            "--allow-v1" => a.allow_v1 = true,
            "--timestamp-window" => {
                a.timestamp_window =
                    Some(secs(value("--timestamp-window")?, "--timestamp-window")?);
            }
            "--format" => a.format = Some(value("--format")?.parse()?),
            "--output" => a.output = Some(value("--output")?),
            "--expectations" => a.expectations = Some(value("--expectations")?),
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`")),
            s => a.selection.include.push(s.to_string()),
        }
    }
    Ok(a)
}

fn resolve(what: &str, s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{what} `{s}`: {e}"))?
        .next()
        .ok_or_else(|| format!("{what} `{s}` resolves to nothing"))
}

/// The key under test, read as `asoc` reads keys (asoc-secrets): the key
/// file must be a regular file private to this user, and ASOC_API_KEY is
/// the value taken out of the environment at start when the program did so.
/// Its strength is not judged: it is the implementation's key, not ours.
fn read_key(a: &Args) -> Result<Vec<u8>, String> {
    if let Some(path) = &a.api_key_file {
        let key = asoc_secrets::read_private_file(std::path::Path::new(path))
            .map_err(|e| format!("--api-key-file: {e}"))?;
        return Ok(key.to_vec());
    }
    match asoc_secrets::env_secret("ASOC_API_KEY") {
        Some(k) if !k.is_empty() => Ok(k.to_vec()),
        _ => Err("no API key: set ASOC_API_KEY or pass --api-key-file".into()),
    }
}

/// Runs the command line `args` (without the program name) and returns the
/// exit status: 0 nothing unexpected, 1 unexpected results, 2 usage error or
/// unreachable target.
pub fn main_with_args<I: IntoIterator<Item = String>>(args: I) -> i32 {
    main_named("conformance", args)
}

/// [`main_with_args`] for a program that embeds the suite under another
/// name (`asoc conformance`): `program` is what usage and error messages
/// call it.
pub fn main_named<I: IntoIterator<Item = String>>(program: &str, args: I) -> i32 {
    let usage = USAGE.replace("PROG", program);
    let a = match parse(args.into_iter().collect()) {
        Ok(a) => a,
        Err(e) => {
            if e.is_empty() {
                print!("{usage}");
                return 0;
            }
            eprintln!("{program}: {e}\n\n{usage}");
            return 2;
        }
    };
    let all = cases::for_wire(a.wire);
    let mode_filter = |c: &Case| match a.mode.as_deref() {
        Some("client") => c.role == Role::ImplDials && c.transport == Transport::Tcp,
        Some("server") => !(c.role == Role::ImplDials && c.transport == Transport::Tcp),
        _ => true,
    };
    let selected: Vec<Case> = a
        .selection
        .apply(&all)
        .into_iter()
        .filter(mode_filter)
        .collect();
    if a.list {
        for c in &selected {
            println!(
                "{:<12} {:<11} {:<11} {} {}",
                c.id,
                c.level_label(),
                c.role.as_str(),
                c.transport.as_str(),
                c.title
            );
        }
        return 0;
    }
    match run_mode(&a, &selected) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{program}: {e}");
            2
        }
    }
}

fn run_mode(a: &Args, selected: &[Case]) -> Result<i32, String> {
    let key = read_key(a)?;
    let community = a
        .community
        .clone()
        .or_else(|| std::env::var("ASOC_COMMUNITY").ok())
        .unwrap_or_default();
    let mut cfg = TargetConfig::new(key, community);
    cfg.echo = a.echo;
    if let Some(s) = a.suite {
        cfg.suite = s;
        cfg.accepted_suites = vec![s];
    }
    cfg.allow_v1 = a.allow_v1;
    if let Some(t) = a.timestamp_window {
        cfg.timestamp_window = Duration::from_secs_f64(t);
    }
    if let Some(t) = a.timeout {
        cfg.timeout = Duration::from_secs_f64(t);
    }
    if let Some(t) = a.quiet {
        cfg.quiet = Duration::from_secs_f64(t);
    }
    if let Some(t) = a.handshake_timeout {
        cfg.handshake_timeout = Duration::from_secs_f64(t);
    }
    if let Some(t) = a.announce_interval {
        cfg.announce_interval = Duration::from_secs_f64(t);
    }
    if let Some(m) = a.max_payload {
        cfg.max_payload = m;
    }
    if let Some(l) = a.lockout {
        cfg.lockout_threshold = l;
    }
    if let Some(t) = a.idle_timeout {
        cfg.idle_timeout = Duration::from_secs_f64(t);
    }
    if let Some(n) = a.attempts_per_hour {
        cfg.attempts_per_hour = n;
    }
    if let Some(t) = a.stall_timeout {
        cfg.stall_timeout = Duration::from_secs_f64(t);
    }
    cfg.max_connections = a.max_connections;
    let secs = |t: Option<f64>, default: Duration| t.map_or(default, Duration::from_secs_f64);
    cfg.retry_min = secs(a.retry_min, cfg.retry_min);
    cfg.retry_max = secs(a.retry_max, cfg.retry_max);
    cfg.max_backoff = secs(a.max_backoff, cfg.max_backoff);
    cfg.peer_expiry = secs(a.peer_expiry, cfg.peer_expiry);
    if cfg.retry_min > cfg.retry_max || cfg.retry_max > cfg.max_backoff {
        return Err(format!(
            "--retry-min ({:?}) ≤ --retry-max ({:?}) ≤ --max-backoff ({:?}) does not hold",
            cfg.retry_min, cfg.retry_max, cfg.max_backoff
        ));
    }
    if let Some(n) = a.dial_failures {
        cfg.dial_failures = n;
    }
    let expectations = match &a.expectations {
        Some(p) => Expectations::parse(
            &std::fs::read_to_string(p).map_err(|e| format!("--expectations {p}: {e}"))?,
        )
        .map_err(|e| format!("--expectations {p}: {e}"))?,
        None => Expectations::default(),
    };
    let sources = Sources::new();
    let (label, mut reports) = match a.mode.as_deref() {
        Some("server") => {
            let target = a
                .target
                .as_deref()
                .ok_or("server mode needs --target HOST:PORT")?;
            let tcp = resolve("--target", target)?;
            TcpStream::connect_timeout(&tcp, cfg.timeout)
                .map_err(|e| format!("target {tcp} unreachable: {e}"))?;
            let udp = a
                .udp_target
                .as_deref()
                .map(|u| resolve("--udp-target", u))
                .transpose()?;
            let mut bound = Vec::new();
            for s in a.announce_listen.iter().take(2) {
                bound.push(
                    UdpSocket::bind(resolve("--announce-listen", s)?)
                        .map_err(|e| format!("--announce-listen {s}: {e}"))?,
                );
            }
            let copies = bound.get(1).and_then(|s| s.try_clone().ok());
            let ann = bound.into_iter().next();
            let mut imp = LiveServer {
                ep: Endpoint {
                    tcp,
                    udp,
                    node_id: a.node_id,
                },
                ann,
                copies,
            };
            let reports = selected
                .iter()
                .map(|c| run_case(c, &cfg, &mut imp, &sources))
                .collect::<Vec<_>>();
            (format!("server {tcp} ({})", a.wire.as_str()), reports)
        }
        Some("client") => {
            let exec = a
                .exec
                .clone()
                .ok_or("client mode needs --exec \"COMMAND\"")?;
            let mut reports = Vec::with_capacity(selected.len());
            for (n, c) in selected.iter().enumerate() {
                let mut imp = LiveClient::new(&exec, c.id, &cfg, n)?;
                imp.wire = a.wire;
                let mut r = run_case(c, &cfg, &mut imp, &sources);
                imp.annotate(&mut r);
                reports.push(r);
            }
            (format!("client `{exec}` ({})", a.wire.as_str()), reports)
        }
        _ => return Err("say `server` or `client` (or --list)".into()),
    };
    expectations.apply(&mut reports);
    emit(a, &reports, &label)?;
    Ok(i32::from(reports.iter().any(|r| r.is_unexpected(a.strict))))
}

fn emit(a: &Args, reports: &[CaseReport], label: &str) -> Result<(), String> {
    let text = match a.format.unwrap_or(Format::Human) {
        Format::Human => report::human(reports, a.strict, label),
        Format::Json => report::json(reports),
        Format::Junit => report::junit(reports, a.strict),
    };
    match &a.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| format!("--output {path}: {e}"))?;
            let s = report::summary(reports, a.strict);
            println!("{}", report::failed_line(&s));
            println!(
                "{} non-strict, {} errors, {} known deviations",
                s.non_strict, s.errors, s.known
            );
            println!(
                "{} passed, {} failed, {} skipped",
                s.passed, s.failed, s.skipped
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// A running implementation the suite dials (live server mode).
struct LiveServer {
    ep: Endpoint,
    ann: Option<UdpSocket>,
    copies: Option<UdpSocket>,
}

impl Implementation for LiveServer {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(self.ep)
    }

    fn dial(&mut self, _to: SocketAddr, _payload: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported(
            "client-role case: use client mode".into(),
        ))
    }

    fn announcements(&mut self) -> Option<&UdpSocket> {
        self.ann.as_ref()
    }

    fn announcement_copies(&mut self) -> Option<&UdpSocket> {
        self.copies.as_ref()
    }
}

/// An implementation run as a client program, once per dial (live client
/// mode).
struct LiveClient {
    exec: String,
    case: &'static str,
    key: String,
    community: String,
    /// Payload and standard-error files: a private (0700), randomly named
    /// directory, so that no other user can plant a file or a symbolic
    /// link where the suite writes, nor read the payloads.
    dir: tempfile::TempDir,
    children: Vec<Child>,
    /// Exit statuses of children that ended, in dial order.
    statuses: Vec<Option<std::process::ExitStatus>>,
    /// The wire version under test, passed on as ASOC_WIRE.
    wire: Wire,
}

/// Exit status of a client program that does not support a case.
const UNSUPPORTED_EXIT: i32 = 89;

impl LiveClient {
    fn new(exec: &str, case: &'static str, cfg: &TargetConfig, n: usize) -> Result<Self, String> {
        let prefix = format!("asoc-conformance-{n}-{}-", case.replace(['/', '.'], "_"));
        let mut dir = tempfile::Builder::new();
        dir.prefix(&prefix);
        // Created with this mode (no window with a wider one), whatever the
        // umask.
        #[cfg(unix)]
        dir.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let dir = dir
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        Ok(Self {
            exec: exec.to_string(),
            case,
            key: String::from_utf8_lossy(&cfg.key).into_owned(),
            community: cfg.community.clone(),
            dir,
            children: Vec::new(),
            statuses: Vec::new(),
            wire: Wire::default(),
        })
    }

    /// Runs the client program once for a dial to `to`.
    fn spawn(
        &mut self,
        to: SocketAddr,
        payload: Option<&[u8]>,
        peer_id: Option<uuid::Uuid>,
    ) -> Result<(), Finding> {
        let payload = payload.unwrap_or_default();
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        let n = self.children.len();
        let file = self.dir.path().join(format!("payload-{n}.bin"));
        create_new(&file)
            .and_then(|mut f| f.write_all(payload))
            .map_err(|e| Finding::Error(format!("{}: {e}", file.display())))?;
        let stderr_path = self.dir.path().join(format!("stderr-{n}"));
        let stderr = create_new(&stderr_path)
            .map_err(|e| Finding::Error(format!("{}: {e}", stderr_path.display())))?;
        let mut cmd = Command::new("sh");
        // A group of its own, so that whatever `sh` starts can be ended with
        // it: killing `sh` alone would leave its children running.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // ASOC_API_KEY is handed over explicitly below (the client program
        // needs it); nothing else secret is inherited.
        cmd.env_remove("ASOC_MASTER_KEY");
        if let Some(id) = peer_id {
            cmd.env("ASOC_PEER_ID", id.to_string());
        }
        let child = cmd
            .arg("-c")
            .arg(&self.exec)
            .env("ASOC_TESTCASE", self.case)
            .env("ASOC_HOST", to.ip().to_string())
            .env("ASOC_PORT", to.port().to_string())
            .env("ASOC_API_KEY", &self.key)
            .env("ASOC_COMMUNITY", &self.community)
            .env("ASOC_PAYLOAD_HEX", hex)
            .env("ASOC_PAYLOAD_FILE", &file)
            .env("ASOC_WIRE", self.wire.as_str())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Finding::Error(format!("cannot run `{}`: {e}", self.exec)))?;
        self.children.push(child);
        Ok(())
    }

    fn poll(&mut self) {
        self.statuses.resize(self.children.len(), None);
        for (child, status) in self.children.iter_mut().zip(&mut self.statuses) {
            if status.is_none() {
                *status = child.try_wait().ok().flatten();
            }
        }
    }

    fn said_unsupported(&mut self) -> bool {
        self.poll();
        self.statuses
            .iter()
            .any(|s| s.and_then(|s| s.code()) == Some(UNSUPPORTED_EXIT))
    }

    /// After the case: an outcome that the program explained by exiting 89
    /// becomes `unsupported`; a case that did not pass gets the program's
    /// exit status and last line of standard error appended.
    fn annotate(&mut self, r: &mut CaseReport) {
        // Give programs a moment to finish what the suite just saw.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            self.poll();
            if self.statuses.iter().all(Option::is_some) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(
            r.outcome,
            Outcome::Fail | Outcome::Error | Outcome::NonStrict
        ) && self.said_unsupported()
        {
            r.outcome = Outcome::Unsupported;
            r.expected = None;
            r.actual = Some("the client program does not support this case (exit 89)".into());
            return;
        }
        if matches!(
            r.outcome,
            Outcome::Pass | Outcome::Info | Outcome::Skip | Outcome::Unsupported
        ) {
            return;
        }
        let mut notes = Vec::new();
        for (i, status) in self.statuses.iter().enumerate() {
            let status = status.map_or_else(|| "still running".to_string(), |s| s.to_string());
            let err = std::fs::read_to_string(self.dir.path().join(format!("stderr-{i}")))
                .unwrap_or_default();
            match err.lines().rev().find(|l| !l.trim().is_empty()) {
                Some(line) => notes.push(format!("client {status}; stderr: {}", line.trim())),
                None => notes.push(format!("client {status}")),
            }
        }
        if !notes.is_empty() {
            let note = notes.join("; ");
            r.actual = Some(match r.actual.take() {
                Some(a) => format!("{a} ({note})"),
                None => note,
            });
        }
    }
}

impl Implementation for LiveClient {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Err(Finding::Unsupported(
            "server-role case: use server mode".into(),
        ))
    }

    fn dial(&mut self, to: SocketAddr, payload: Option<&[u8]>) -> Result<(), Finding> {
        self.spawn(to, payload, None)
    }

    fn dial_expecting(
        &mut self,
        to: SocketAddr,
        payload: Option<&[u8]>,
        node_id: uuid::Uuid,
    ) -> Result<(), Finding> {
        self.spawn(to, payload, Some(node_id))
    }

    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }

    fn explain_silence(&mut self) -> Option<Finding> {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            if let Some(f) = self.gave_up() {
                return Some(f);
            }
            self.poll();
            if Instant::now() >= deadline || self.statuses.iter().all(Option::is_some) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn expect_clean_exit(&mut self, within: Duration) -> Result<(), Finding> {
        let deadline = Instant::now() + within;
        loop {
            self.poll();
            if self.statuses.iter().all(Option::is_some) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.said_unsupported() {
            return Err(Finding::Unsupported(
                "the client program does not support this case (exit 89)".into(),
            ));
        }
        // A program still running is not judged: only an exit status is.
        match self.statuses.iter().flatten().find(|s| !s.success()) {
            None => Ok(()),
            Some(status) => Err(Finding::fail(
                "the client program exits 0: the suite played a valid server to the end",
                format!("the case held on the wire, but the client program ended with {status}"),
            )),
        }
    }

    fn gave_up(&mut self) -> Option<Finding> {
        self.said_unsupported().then(|| {
            Finding::Unsupported("the client program does not support this case (exit 89)".into())
        })
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        for child in &mut self.children {
            // The group bears the id of its leader, `sh`, and outlives it
            // while any member runs; `sh` is reaped only after the signal,
            // so the id cannot have been reused yet.
            #[cfg(unix)]
            let _ = rustix::process::kill_process_group(
                rustix::process::Pid::from_child(child),
                rustix::process::Signal::KILL,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        // The directory is removed when `dir` drops, after this.
    }
}

/// Creates `path`, which must not exist yet (`O_EXCL`: a file or symbolic
/// link already there is an error, never followed), readable only by its
/// owner.
fn create_new(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A client program whose shell keeps a child of its own (here a
    /// background `sleep`) is ended with that child when the case ends:
    /// nothing of it outlives the suite.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_whole_client_process_group_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let exec = format!("sleep 60 & echo $! > '{}'; wait", pidfile.display());
        let cfg = TargetConfig::new(b"k".to_vec(), "c");
        let mut client = LiveClient::new(&exec, "R1-5.4/2", &cfg, 0).unwrap();
        client
            .spawn("127.0.0.1:9".parse().unwrap(), None, None)
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            match std::fs::read_to_string(&pidfile) {
                Ok(s) if s.ends_with('\n') => break s.trim().to_string(),
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                other => panic!("the client program wrote no pid: {other:?}"),
            }
        };
        let alive = |pid: &str| {
            // A killed process may linger as a zombie until its new parent
            // reaps it; it runs no more.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
                .unwrap_or(false)
        };
        assert!(alive(&pid), "the background child {pid} is not running");
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(&pid), "the client's child {pid} outlived the case");
    }

    /// A symbolic link planted where earlier versions wrote their payloads
    /// (`$TMPDIR/asoc-conformance-PID-N-CASE`, all of it predictable) is
    /// never followed: the payload goes to a fresh private directory and
    /// the link's target stays empty.
    #[test]
    fn a_symlink_at_the_old_predictable_path_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let case = "R3-9.9/1";
        let old = std::env::temp_dir().join(format!(
            "asoc-conformance-{}-0-{}",
            std::process::id(),
            case.replace(['/', '.'], "_")
        ));
        let victim = tempfile::tempdir().unwrap();
        let _ = std::fs::remove_file(&old);
        std::os::unix::fs::symlink(victim.path(), &old).unwrap();
        let cfg = TargetConfig::new(b"k".to_vec(), "c");
        let result = (|| {
            let mut client = LiveClient::new("true", case, &cfg, 0)?;
            client
                .spawn(
                    "127.0.0.1:9".parse().unwrap(),
                    Some(b"secret payload"),
                    None,
                )
                .map_err(|f| format!("{f:?}"))?;
            let dir = client.dir.path().to_path_buf();
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            let payload = std::fs::read(dir.join("payload-0.bin")).unwrap();
            Ok::<_, String>((dir, mode, payload))
        })();
        let target = std::fs::read_link(&old);
        std::fs::remove_file(&old).unwrap();
        let (dir, mode, payload) = result.unwrap();
        assert_ne!(dir, old);
        assert_eq!(mode, 0o700, "{}", dir.display());
        assert_eq!(payload, b"secret payload");
        assert_eq!(target.unwrap(), victim.path());
        let planted: Vec<_> = std::fs::read_dir(victim.path()).unwrap().collect();
        assert!(planted.is_empty(), "written through the link: {planted:?}");
    }
}
