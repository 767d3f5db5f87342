//! `asoc listen`: a node that runs until SIGINT or SIGTERM, reporting what
//! happens; incoming streams are handled in [`incoming`].

mod control;
mod incoming;
mod ops;
mod replace;
mod state;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asoc_async::tls::TlsConfig;
use asoc_async::{DriverConfig, Error, Net, Node, NodeBuilder};
use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::{ConnectionConfig, StreamId};
use asoc_proto::discovery::{DiscoveryConfig, DiscoveryReplayState};
use asoc_proto::handshake::AuthenticatorConfig;
use asoc_proto::node::{ConnId, NodeEvent};
use asoc_proto::persist::{AuthReplayState, RestoreReport};
use asoc_proto::policy::PolicyConfig;
use serde_json::json;

use crate::cli::ListenArgs;
use crate::error::{CliError, CliResult};
use crate::net_errors::{bind_failed, check_target};
use crate::output::Out;
use crate::runtime::{spawn, until, Job, RuntimeKind};
use crate::{events, os, secrets, signals, tls};

use incoming::Streams;
use state::{Saver, StateDir};

/// How long shutdown waits for sends in flight and connections to close.
const GRACE: Duration = Duration::from_secs(5);

/// `--state-dir`: the directory and what was loaded from it.
struct Restored {
    dir: StateDir,
    auth: Option<AuthReplayState>,
    discovery: Option<DiscoveryReplayState>,
}

/// A checked `listen` command, ready to run.
pub(crate) struct Listen {
    bind: SocketAddr,
    discovery: Option<(SocketAddr, DiscoveryConfig)>,
    community: String,
    peers: Vec<String>,
    peers_v1: Vec<String>,
    allow_v1: bool,
    driver: DriverConfig,
    policy: PolicyConfig,
    key: ApiKey,
    tls: TlsConfig,
    out: Out,
    streams: incoming::Settings,
    /// HELLO retention and replay capacity, as checked in `prepare`.
    hello_replay: (Duration, usize),
    state: Option<Restored>,
    runtime: RuntimeKind,
    ops: ops::Ops,
    /// `--control` (bound at start) and `--api-key-file` (rewritten on a
    /// key switch).
    control: Option<PathBuf>,
    key_file: control::KeyFile,
}

impl Listen {
    /// Checks every input before any socket is opened.
    pub(crate) fn prepare(args: ListenArgs) -> CliResult<Self> {
        let key = secrets::api_key(&args.key)?;
        for peer in &args.peer {
            check_target(peer, "--peer")?;
        }
        for peer in &args.peer_v1 {
            check_target(peer, "--peer-v1")?;
        }
        let community = args.community.clone().unwrap_or_default();
        let discovery = if args.discovery {
            if community.is_empty() {
                return Err(CliError::usage(
                    "discovery needs a community: pass --community NAME or set ASOC_COMMUNITY",
                ));
            }
            let config = DiscoveryConfig::builder(community.clone())
                .unicast_targets(args.announce_to.clone())
                .allow_v1(args.allow_v1)
                .build()
                .map_err(|e| CliError::usage(format!("discovery: {e}")))?;
            Some((args.discovery_bind, config))
        } else {
            None
        };
        let max_frame = u32::try_from(args.max_frame)
            .ok()
            .filter(|m| *m > 0)
            .ok_or_else(|| CliError::usage("--max-frame must be between 1B and 4GiB - 1"))?;
        let mut connection = ConnectionConfig::builder();
        if let Some(suite) = args.suite {
            connection = connection.only_suite(suite);
        }
        let connection = connection
            .handshake_timeout(args.handshake_timeout)
            .max_payload(max_frame)
            .send_stall_timeout(args.stall_timeout)
            .max_incoming_streams(args.max_incoming_streams)
            .build()
            .map_err(|e| {
                CliError::usage(format!(
                    "--handshake-timeout / --max-frame / --stall-timeout / \
                     --max-incoming-streams: {e}"
                ))
            })?;
        // The handshake cap may not exceed the connection cap.
        let policy = PolicyConfig::builder()
            .max_connections(args.max_connections)
            .max_handshaking(
                PolicyConfig::default()
                    .max_handshaking()
                    .min(args.max_connections),
            )
            .max_incoming_streams(args.max_node_streams)
            .build()
            .map_err(|e| CliError::usage(format!("--max-connections / --max-node-streams: {e}")))?;
        let driver = DriverConfig::builder()
            .connection(connection)
            .build()
            .map_err(|e| CliError::usage(format!("connection settings: {e}")))?;
        let out_dir = args.out.as_deref().map(prepare_dir).transpose()?;
        // Checked here, not at start: a refused setting must not leave a
        // state directory behind. Only its limits are kept; the node builds
        // its own with its id.
        let auth = AuthenticatorConfig::builder(uuid::Uuid::nil(), KeyRing::new(key.clone()))
            .hello_retention(args.replay.hello_retention)
            .build()
            .map_err(|e| CliError::usage(format!("--hello-retention: {e}")))?;
        let hello_replay = (auth.hello_retention(), auth.hello_replay_capacity());
        let state = match &args.replay.state_dir {
            Some(dir) => {
                let dir = StateDir::open(dir)?;
                let most = auth.hello_replay_capacity() + auth.v2_replay_capacity();
                let auth = dir.load_auth(most)?;
                let discovery = match &discovery {
                    Some((_, config)) => dir.load_discovery(config)?,
                    None => None,
                };
                Some(Restored {
                    dir,
                    auth,
                    discovery,
                })
            }
            None => None,
        };
        let (ops, cluster_peers) = ops::Ops::prepare(&args.ops, args.bind)?;
        let tls = dial_tls(&args)?;
        Ok(Self {
            bind: args.bind,
            discovery,
            community,
            peers: args.peer.into_iter().chain(cluster_peers).collect(),
            peers_v1: args.peer_v1,
            allow_v1: args.allow_v1,
            driver,
            policy,
            key,
            tls,
            out: Out::new(args.json),
            streams: incoming::Settings {
                digest: !args.no_digest,
                out_dir,
                echo: args.echo,
            },
            hello_replay,
            state,
            runtime: args.runtime.runtime,
            ops,
            control: args.control,
            key_file: control::KeyFile(args.key.api_key_file),
        })
    }

    pub(crate) fn runtime(&self) -> RuntimeKind {
        self.runtime
    }

    fn builder(&self) -> NodeBuilder {
        let mut b = NodeBuilder::new(self.community.clone(), self.key.clone())
            .bind(self.bind)
            .driver(self.driver)
            .policy(self.policy.clone())
            .hello_replay(self.hello_replay.0, self.hello_replay.1)
            .tls(self.tls.clone());
        if let Some(state) = &self.state {
            if let Some(saved) = &state.auth {
                b = b.restore_replay_state(saved.clone());
            }
            if let Some(saved) = &state.discovery {
                b = b.restore_discovery_state(saved.clone());
            }
        }
        if let Some((bind, config)) = &self.discovery {
            b = b.discovery(*bind, config.clone());
        }
        for peer in &self.peers {
            b = b.static_peer(peer.clone());
        }
        for peer in &self.peers_v1 {
            b = b.static_peer_v1(peer.clone());
        }
        b.allow_v1(self.allow_v1)
    }

    async fn start<N: Net>(&self, net: &N) -> CliResult<Node<N>> {
        let seed = os::seed()?;
        let id = os::node_id()?;
        self.builder()
            .start(net.clone(), seed, id)
            .await
            .map_err(|e| match e {
                Error::Io(io) => self.bind_failed(&io),
                other => CliError::runtime(format!("cannot start the node: {other}")),
            })
    }

    /// Binding the node's sockets failed.
    fn bind_failed(&self, e: &std::io::Error) -> CliError {
        let what = match &self.discovery {
            Some((udp, _)) => format!("tcp {} / udp {udp}", self.bind),
            None => self.bind.to_string(),
        };
        bind_failed(&what, e)
    }

    /// The first line: the node's sockets are bound.
    fn listening(
        &self,
        tcp: SocketAddr,
        udp: Option<SocketAddr>,
        node: uuid::Uuid,
        metrics: Option<SocketAddr>,
    ) {
        let runtime = self.runtime.name();
        let mut line = json!({"event": "listening", "tcp": tcp.to_string(),
                              "udp": udp.map(|u| u.to_string()), "node": node.to_string(),
                              "runtime": runtime});
        if let (Some(m), Some(o)) = (metrics, line.as_object_mut()) {
            o.insert("metrics".into(), json!(m.to_string()));
        }
        self.out.emit(line, || {
            let udp = udp.map_or_else(|| "off".into(), |u| u.to_string());
            format!("listening on tcp {tcp} (discovery {udp}) as node {node} [{runtime}]")
        });
    }
}

impl Listen {
    /// The saved replay memory was loaded.
    fn restored(&self, dir: &StateDir, r: &RestoreReport, discovery: Option<usize>) {
        let path = dir.auth_path().display().to_string();
        self.out.emit(
            json!({"event": "state_restored", "path": path, "restored": r.restored,
                   "expired": r.expired, "duplicate": r.duplicate,
                   "over_capacity": r.over_capacity, "discovery_entries": discovery}),
            || {
                format!(
                    "restored {} remembered handshakes from {path} ({} expired, {} over capacity)",
                    r.restored, r.expired, r.over_capacity
                )
            },
        );
    }
}

impl Job for Listen {
    type Output = ();

    async fn run<N: Net>(self, net: N) -> CliResult {
        // Installed before binding: a signal right after "listening" is
        // never lost.
        let stop = signals::termination()?;
        let counters = signals::user1()?;
        let mut control = self
            .control
            .as_deref()
            .map(control::Control::bind)
            .transpose()?;
        let node = self.start(&net).await?;
        let mut ops = self.ops.start(&node)?;
        self.listening(
            node.local_addr(),
            node.discovery_addr(),
            node.node_id(),
            ops.metrics,
        );
        self.ops.start_peers(&mut ops, &node, self.out)?;
        if let Some(control) = control.as_mut() {
            control.serve(node.clone(), self.out);
        }
        let saver = self.state.as_ref().map(|state| {
            if let Some(report) = node.restore_report() {
                let discovery = state
                    .discovery
                    .as_ref()
                    .map(|d| d.v2_last_unix_ms.len() + d.v1_seen.len());
                self.restored(&state.dir, &report, discovery);
            }
            Saver::start(state.dir.clone(), node.clone(), self.out)
        });
        let (cut_tx, cut_rx) = async_channel::unbounded();
        let printer = spawn(
            &net,
            print_events(
                node.clone(),
                net.clone(),
                self.out,
                cut_rx,
                ops.observer(),
                self.key_file.clone(),
            ),
        );
        // Never awaited: it ends with the process.
        let _counters = spawn(&net, {
            let (node, out) = (node.clone(), self.out);
            async move {
                while counters.recv().await.is_ok() {
                    events::discovery_counters(out, node.counters().discovery.as_ref());
                }
            }
        });
        let streams = Streams::new(node.clone(), net.clone(), self.out, self.streams, cut_tx)
            .map_err(|e| CliError::runtime(format!("cannot start the stream workers: {e}")))?;
        let handlers = streams.accept_all();
        let _ = stop.recv().await;
        self.out.note(|| "shutting down".into());
        node.shutdown(GRACE).await;
        if let Some(saver) = saver {
            saver.finish();
        }
        // Streams cut by the shutdown report themselves; give them a moment.
        let deadline = Instant::now() + GRACE;
        let _ = until(&net, deadline, async {
            handlers.await;
            printer.await;
        })
        .await;
        ops.finish();
        Ok(())
    }

    fn linger(&self) -> Duration {
        self.driver.connection().send_stall_timeout()
    }
}

/// How long `peer_disconnected` waits for the `stream_incomplete` lines of
/// its connection's cut streams (their handlers may still be closing files).
const CUT_REPORT_WAIT: Duration = Duration::from_secs(2);

/// Cut streams between the node's report and their handler's line.
#[derive(Default)]
struct CutReports {
    /// Reported cut by the node, not yet printed by their handler.
    awaited: HashSet<(ConnId, StreamId)>,
    /// Printed by their handler before the node's report was read.
    early: HashSet<(ConnId, StreamId)>,
}

/// Bound on `CutReports::early`: a handler line whose node report was lost
/// (the event queue overflowed) must not be kept for ever.
const MAX_EARLY_REPORTS: usize = 4096;

impl CutReports {
    fn reported_by_node(&mut self, key: (ConnId, StreamId)) {
        if !self.early.remove(&key) {
            self.awaited.insert(key);
        }
    }

    fn printed(&mut self, key: (ConnId, StreamId)) {
        if !self.awaited.remove(&key) && self.early.len() < MAX_EARLY_REPORTS {
            self.early.insert(key);
        }
    }

    fn awaits(&self, conn: ConnId) -> bool {
        self.awaited.iter().any(|(c, _)| *c == conn)
    }

    fn forget(&mut self, conn: ConnId) {
        self.awaited.retain(|(c, _)| *c != conn);
        self.early.retain(|(c, _)| *c != conn);
    }
}

/// Prints the node's events in order, holding each `peer_disconnected` back
/// until the stream handlers have printed every stream its connection cut
/// (they say so through `cut`), so that a reader sees a connection's cut
/// streams before its end.
async fn print_events<N: Net>(
    node: Node<N>,
    net: N,
    out: Out,
    cut: async_channel::Receiver<(ConnId, StreamId)>,
    observer: ops::Observer,
    key_file: control::KeyFile,
) {
    let mut reports = CutReports::default();
    while let Some(event) = node.next_event().await {
        while let Ok(key) = cut.try_recv() {
            reports.printed(key);
        }
        match &event {
            NodeEvent::StreamIncomplete { conn, stream, .. } => {
                reports.reported_by_node((*conn, *stream));
            }
            NodeEvent::PeerDisconnected { conn, .. } => {
                let deadline = Instant::now() + CUT_REPORT_WAIT;
                while reports.awaits(*conn) {
                    match until(&net, deadline, cut.recv()).await {
                        Some(Ok(key)) => reports.printed(key),
                        _ => break,
                    }
                }
                reports.forget(*conn);
            }
            _ => {}
        }
        events::print(out, &event);
        observer.event(&event);
        key_file.on_event(&node, out, &event);
    }
}

/// The node's TLS. A listener with TLS that dials (static peers or
/// discovery) must dial in TLS as well, verifying the server with --tls-ca
/// or --tls-pin: a cleartext dial would carry its HELLO, and a v1 HELLO
/// can be replayed by whoever sees it. `--dial-cleartext` is the explicit,
/// warned way out.
fn dial_tls(args: &ListenArgs) -> CliResult<TlsConfig> {
    let server_tls = args.tls.tls_cert.is_some();
    let verifies = args.tls_client.tls_ca.is_some() || args.tls_client.tls_pin.is_some();
    let dials = !args.peer.is_empty()
        || !args.peer_v1.is_empty()
        || args.discovery
        || args.ops.peers_from.is_some();
    if args.dial_cleartext && verifies {
        return Err(CliError::usage(
            "--dial-cleartext contradicts --tls-ca / --tls-pin: pick one",
        ));
    }
    if server_tls && dials && !verifies && !args.dial_cleartext {
        return Err(CliError::usage(
            "this TLS listener dials peers (--peer, --peer-v1 or --discovery) but has no way \
             to verify them: pass --tls-ca FILE or --tls-pin FILE so that its dials run TLS \
             too, or --dial-cleartext to dial without TLS (its HELLOs then cross the network \
             in cleartext)",
        ));
    }
    if args.dial_cleartext && dials {
        crate::output::warn(format_args!(
            "asoc: warning: --dial-cleartext: this TLS listener dials its peers without TLS; \
             its HELLOs cross the network in cleartext and a v1 HELLO can be replayed"
        ));
    }
    tls::node(&args.tls, &args.tls_client)
}

/// `--out DIR`: created when missing, with mode 0700 (what arrives is for
/// this user only); must be a directory.
fn prepare_dir(dir: &Path) -> CliResult<Arc<PathBuf>> {
    use std::os::unix::fs::DirBuilderExt;
    let shown = dir.display();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::usage(format!("cannot use --out {shown}: {e}")))?;
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "cannot use --out {shown}: not a directory"
        )));
    }
    Ok(Arc::new(dir.to_path_buf()))
}
