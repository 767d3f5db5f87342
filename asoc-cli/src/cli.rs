//! The command line: every command, flag and help text.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use asoc_proto::v2::{Suite, WireVersion};
use clap::{Args, Parser, Subcommand};

use crate::runtime::RuntimeKind;
use crate::units::{parse_duration, parse_size};

/// ASoc: authenticated tensor streaming between AI compute nodes.
///
/// The API key is read from the ASOC_API_KEY environment variable or from
/// --api-key-file (a file only its owner can read), never from the command
/// line. Exit codes: 0 success, 1 runtime failure, 2 usage error,
/// 3 authentication or handshake failure.
#[derive(Parser, Debug)]
#[command(name = "asoc", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Print a new 256-bit API key as 64 lower-case hex characters.
    Keygen,
    /// Derive a per-cluster key (PBKDF2-HMAC-SHA256, RFC-0002 §8.2) from the
    /// master key in ASOC_MASTER_KEY or --master-key-file.
    DeriveKey(DeriveKeyArgs),
    /// Run a node until SIGINT or SIGTERM: accept, verify and report
    /// incoming streams.
    Listen(Box<ListenArgs>),
    /// Send files (or standard input) to a peer, one stream per file.
    Send(SendArgs),
    /// Rotate the cluster's key without a restart, through a running
    /// `asoc listen --control PATH` (docs/key-rotation.md).
    RotateKey(crate::cmd::rotate_key::RotateKeyArgs),
    /// Listen for authenticated discovery announcements and list the peers.
    Discover(DiscoverArgs),
    /// Two nodes on loopback: authenticated handshake, then a SHA-256-verified
    /// tensor stream. Needs no set-up.
    Demo(DemoArgs),
    /// Measure ASoc against raw TCP on loopback, on the same runtime in the
    /// same run: throughput (one stream with 1 MiB and with 4 KiB frames,
    /// many streams, many connections) and authenticated connection
    /// set-ups. Each bench runs the raw baseline and ASoc alternately and
    /// reports the pair with the median ratio; progress goes to stderr.
    Bench(BenchArgs),
    /// Run the conformance suite against a live implementation: `server
    /// --target HOST:PORT` dials a running node, `client --exec COMMAND` runs
    /// a client program against the suite; `--wire v1|v2` picks the version
    /// tested (default v2: the WIRE-v2.md cases). `asoc conformance --help`
    /// lists the options. Exit codes: 0 nothing unexpected, 1 unexpected results,
    /// 2 usage error or unreachable target.
    #[command(disable_help_flag = true)]
    Conformance(ConformanceArgs),
    /// The plain-TCP sender `asoc bench --cli` measures against.
    #[command(name = "bench-plain-send", hide = true)]
    PlainSend(PlainSendArgs),
    /// The plain-TCP receiver `asoc bench --cli` measures against.
    #[command(name = "bench-plain-receive", hide = true)]
    PlainReceive(PlainReceiveArgs),
}

/// `asoc bench-plain-send`: FILE to PEER in `--chunk-size` writes.
#[derive(Args, Debug)]
pub(crate) struct PlainSendArgs {
    /// The receiver.
    #[arg(long, value_name = "ADDR")]
    pub(crate) peer: SocketAddr,
    /// Read and write size.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub(crate) chunk_size: u64,
    /// Copy with sendfile(2) in --chunk-size pieces instead of read and
    /// write (Linux): what a sendfile path could gain at best.
    #[arg(long)]
    pub(crate) sendfile: bool,
    /// The file to copy.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
}

/// `asoc bench-plain-receive`: one connection, discarded or written to a
/// file.
#[derive(Args, Debug)]
pub(crate) struct PlainReceiveArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(crate) bind: SocketAddr,
    /// Write what arrives to this file instead of discarding it.
    #[arg(long, value_name = "FILE")]
    pub(crate) out: Option<PathBuf>,
}

/// `asoc conformance …`: everything after the word is the suite's own
/// command line (see `conformance::main_with_args`).
#[derive(Args, Debug)]
pub(crate) struct ConformanceArgs {
    /// `server …`, `client …` or `--list`; `--help` prints the suite's usage.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub(crate) args: Vec<String>,
}

/// Where the API key comes from (besides ASOC_API_KEY).
#[derive(Args, Debug)]
pub(crate) struct KeyArgs {
    /// Read the API key from this file (mode 600; a trailing newline is
    /// stripped) instead of ASOC_API_KEY.
    #[arg(long, value_name = "PATH")]
    pub(crate) api_key_file: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept a key whose estimated entropy is below 128
    /// bits (with a warning); such a key can be guessed offline from one
    /// captured handshake or announcement.
    #[arg(long)]
    pub(crate) weak_key: bool,
}

/// How long `asoc listen` remembers accepted HELLOs, and where it keeps
/// that memory across restarts.
#[derive(Args, Debug)]
pub(crate) struct ReplayArgs {
    /// How long an accepted v1 HELLO stays refused as a replay (at least
    /// 60s). v1 HELLOs carry no timestamp: once this has passed, a recorded
    /// one is accepted again.
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration)]
    pub(crate) hello_retention: Duration,
    /// Keep the handshake replay memory in DIR (created with mode 700), so
    /// that a HELLO recorded before a restart is refused after it.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

/// Which async runtime runs the sockets.
#[derive(Args, Debug)]
pub(crate) struct RuntimeArgs {
    /// Async runtime (adapter) to run on.
    #[arg(long, value_enum, default_value = "tokio")]
    pub(crate) runtime: RuntimeKind,
}

#[derive(Args, Debug)]
pub(crate) struct DeriveKeyArgs {
    /// Cluster name (the PBKDF2 salt).
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: String,
    /// Read the master key from this file (mode 600) instead of
    /// ASOC_MASTER_KEY.
    #[arg(long, value_name = "PATH")]
    pub(crate) master_key_file: Option<PathBuf>,
    /// DEVELOPMENT ONLY: accept a master key whose estimated entropy is
    /// below 128 bits (with a warning).
    #[arg(long)]
    pub(crate) weak_key: bool,
}

/// Server-side TLS (RFC-0002 §9.2).
#[derive(Args, Debug)]
pub(crate) struct TlsServerArgs {
    /// Accept connections inside TLS with this PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,
}

/// Client-side TLS: how to trust the server.
#[derive(Args, Debug)]
pub(crate) struct TlsClientArgs {
    /// Dial inside TLS, trusting servers whose certificate this PEM CA signed
    /// for the dialed name.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_pin")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Dial inside TLS, trusting exactly this PEM (usually self-signed)
    /// certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_pin: Option<PathBuf>,
}

/// `asoc listen`'s operations options: peers from the cluster, the audit
/// log and the metrics endpoint.
#[derive(Args, Debug)]
pub(crate) struct OpsArgs {
    /// Static peers from the cluster: `slurm` (the job's nodes at this
    /// node's port, or `slurm:PORT`) or `dns:NAME:PORT` (every A and AAAA
    /// record of NAME, re-resolved every --peers-refresh).
    #[arg(long, value_name = "SOURCE")]
    pub(crate) peers_from: Option<crate::peers_from::PeersFrom>,
    /// How often `--peers-from dns:…` resolves its name again.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub(crate) peers_refresh: Duration,
    /// Append every security event to this file, one JSON object per line
    /// (created with mode 0600; reopened on SIGHUP, for logrotate).
    #[arg(long, value_name = "PATH")]
    pub(crate) audit_log: Option<PathBuf>,
    /// Audit events queued for the writer before they are counted as
    /// dropped (for tests of the overflow).
    #[arg(long, value_name = "N", default_value_t = 4096, hide = true)]
    pub(crate) audit_queue: usize,
    /// Serve Prometheus metrics over HTTP at ADDR/metrics (port 0 picks a
    /// free port; the listening event names the bound address).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<SocketAddr>,
}

#[derive(Args, Debug)]
pub(crate) struct ListenArgs {
    /// TCP address to listen on (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9000")]
    pub(crate) bind: SocketAddr,
    /// One JSON object per line on standard output.
    #[arg(long)]
    pub(crate) json: bool,
    // (help as an attribute: rustdoc would read `<peer>` as an HTML tag)
    #[arg(
        long,
        value_name = "DIR",
        help = "Write each complete stream to DIR/<peer>-<run>-<connection>-<stream>.bin, never replacing a file"
    )]
    pub(crate) out: Option<PathBuf>,
    /// Send every complete stream back to its sender.
    #[arg(long)]
    pub(crate) echo: bool,
    /// Announce this node and discover others over UDP (needs a community).
    #[arg(long)]
    pub(crate) discovery: bool,
    /// UDP address for discovery.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:9999",
        requires = "discovery"
    )]
    pub(crate) discovery_bind: SocketAddr,
    /// Announce to these UDP addresses instead of broadcasting (repeatable).
    #[arg(long, value_name = "ADDR", requires = "discovery")]
    pub(crate) announce_to: Vec<SocketAddr>,
    /// Community name; only nodes of the same community discover each other.
    #[arg(long, env = "ASOC_COMMUNITY", value_name = "NAME")]
    pub(crate) community: Option<String>,
    /// Keep a connection to this peer, reconnecting when it drops (repeatable).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) peer: Vec<String>,
    /// Like --peer, dialed with v1, for peers that speak only v1 such as the
    /// Python implementation (repeatable; needs --allow-v1).
    #[arg(long, value_name = "HOST:PORT", requires = "allow_v1")]
    pub(crate) peer_v1: Vec<String>,
    /// Also speak v1: accept v1 HELLOs and v1 announcements, and announce in
    /// v1 too. v1 falls to replay and man-in-the-middle attacks on a shared
    /// network (docs/security.md); enable it only for v1-only peers.
    #[arg(long)]
    pub(crate) allow_v1: bool,
    /// Accept only this v2 cipher suite (default: both; aesgcm is offered
    /// when dialing).
    #[arg(long, value_name = "aesgcm|chachapoly")]
    pub(crate) suite: Option<Suite>,
    /// Time allowed for a peer's handshake.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) handshake_timeout: Duration,
    /// Largest frame payload accepted.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub(crate) max_frame: u64,
    /// Close a connection whose sending makes no progress for this long.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) stall_timeout: Duration,
    /// Most connections, inbound and outbound together; more are refused.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub(crate) max_connections: usize,
    /// Most incoming streams open at once on one connection; a peer that
    /// opens more is disconnected.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub(crate) max_incoming_streams: usize,
    /// Most incoming streams open at once over all connections; the
    /// connection that opens one more is disconnected (a `stream_refused`
    /// event).
    #[arg(long, value_name = "N", default_value_t = 16384)]
    pub(crate) max_node_streams: usize,
    /// Do not compute SHA-256 of incoming streams (reported as null).
    #[arg(long)]
    pub(crate) no_digest: bool,
    #[command(flatten)]
    pub(crate) tls: TlsServerArgs,
    /// With --tls-cert, the node's dials (--peer, --peer-v1, discovered
    /// peers) run TLS too and verify the server by --tls-ca or --tls-pin;
    /// a TLS listener that dials refuses to start without one of them.
    #[command(flatten)]
    pub(crate) tls_client: TlsClientArgs,
    /// INSECURE: let a TLS listener dial its peers without TLS (a warning
    /// is printed): its HELLOs then cross the network in cleartext.
    #[arg(long, requires = "tls_cert")]
    pub(crate) dial_cleartext: bool,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    /// Serve `asoc rotate-key` on this Unix socket (created with mode 600).
    #[arg(long, value_name = "PATH")]
    pub(crate) control: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) replay: ReplayArgs,
    #[command(flatten)]
    pub(crate) ops: OpsArgs,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub(crate) struct SendArgs {
    /// The listening peer.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) peer: String,
    /// DATA frame payload size.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub(crate) chunk_size: u64,
    /// Protocol version: v2 (Noise handshake, every frame encrypted and
    /// authenticated) or v1 (for listeners that speak only v1).
    #[arg(long, value_name = "v1|v2", default_value = "v2")]
    pub(crate) wire: WireVersion,
    /// The node id the listener must prove (v2); another id exits 3.
    #[arg(long, value_name = "UUID")]
    pub(crate) peer_id: Option<uuid::Uuid>,
    /// The v2 cipher suite to offer (default aesgcm).
    #[arg(long, value_name = "aesgcm|chachapoly")]
    pub(crate) suite: Option<Suite>,
    /// Time allowed for each of the TCP connect, the TLS handshake and the
    /// ASoc handshake.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) handshake_timeout: Duration,
    /// One JSON object per line on standard output.
    #[arg(long)]
    pub(crate) json: bool,
    /// Do not compute the SHA-256 of what is sent (reported as null).
    #[arg(long)]
    pub(crate) no_digest: bool,
    #[command(flatten)]
    pub(crate) tls: TlsClientArgs,
    /// Client certificate (PEM) for servers that require mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
    /// Files to send, in order; `-` reads standard input.
    #[arg(value_name = "FILE", required = true)]
    pub(crate) files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct DiscoverArgs {
    /// UDP address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9999")]
    pub(crate) bind: SocketAddr,
    /// How long to listen.
    #[arg(long = "for", value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub(crate) duration: Duration,
    /// One JSON object per line on standard output.
    #[arg(long)]
    pub(crate) json: bool,
    /// Community name; only its announcements are accepted.
    #[arg(long, env = "ASOC_COMMUNITY", value_name = "NAME")]
    pub(crate) community: Option<String>,
    #[command(flatten)]
    pub(crate) key: KeyArgs,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
}

#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Tensor size.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub(crate) size: u64,
    /// DATA frame payload size.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub(crate) chunk_size: u64,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
}

/// Which runtimes `asoc bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchRuntime {
    /// tokio, then smol, then mio.
    All,
    /// tokio's multi-threaded runtime (asoc-tokio).
    Tokio,
    /// A smol executor run by one thread per core (asoc-smol).
    Smol,
    /// asoc-mio's own mio loop, on a thread of its own (asoc-mio).
    Mio,
}

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Runtime(s) to measure.
    #[arg(long, value_enum, default_value = "all")]
    pub(crate) runtime: BenchRuntime,
    /// Bytes each throughput run moves in total, split evenly over its
    /// connections and streams (default 1GiB; 256MiB for the 4 KiB bench).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) size: Option<u64>,
    /// Frame and write size of the one-stream, many-streams and
    /// many-connections benches instead of 1MiB; the small-frames bench is
    /// then left out (it is the one-stream bench at 4KiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) chunk_size: Option<u64>,
    /// Concurrent streams of the many-streams bench instead of 64.
    #[arg(long, value_name = "N")]
    pub(crate) streams: Option<usize>,
    /// Parallel connections of the many-connections bench instead of 8.
    #[arg(long, value_name = "N")]
    pub(crate) connections: Option<usize>,
    /// Runs only the named benches (one-stream, small-frames, many-streams,
    /// many-connections, setup, setup-parallel); repeat or separate with
    /// commas. All of them by default.
    #[arg(long, value_name = "BENCH", value_delimiter = ',')]
    pub(crate) only: Vec<String>,
    /// Runs only these wires: v1, v2, v1+tls (v1 inside TLS 1.3); repeat
    /// or separate with commas. All three by default, v2 beside every v1
    /// row.
    #[arg(long, value_name = "WIRE", value_delimiter = ',')]
    pub(crate) wire: Vec<String>,
    /// Baseline/ASoc pairs per bench (at least 5 unless --quick).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) pairs: usize,
    /// A smoke run, not a measurement: tiny defaults (8MiB per throughput
    /// run, 32 set-ups) and --pairs may be below 5.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Measure the commands instead of the library: `asoc send FILE` into
    /// `asoc listen`, each a process of its own, against a plain-TCP copy
    /// between two processes (v1 and v2; 1 MiB and 4 KiB chunks, --out,
    /// digests on). Uses --pairs, --runtime (default tokio) and --json.
    #[arg(long, conflicts_with_all = ["plot", "only", "wire", "size", "chunk_size"])]
    pub(crate) cli: bool,
    /// The file size of --cli runs (default 1GiB; 8MiB with --quick).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "cli")]
    pub(crate) cli_size: Option<u64>,
    /// Draw throughput against frame size (4 KiB to 16 MiB) for raw TCP,
    /// v1, v2 and v1 inside TLS into this SVG file, from one run of the
    /// in-process bench; --size sets the bytes per point (default 256MiB;
    /// 4MiB with --quick), --pairs the runs per point (median).
    #[arg(long, value_name = "FILE.svg", conflicts_with_all = ["only", "wire", "chunk_size"])]
    pub(crate) plot: Option<PathBuf>,
    /// One JSON object per measurement on standard output.
    #[arg(long)]
    pub(crate) json: bool,
}
