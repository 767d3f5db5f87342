//! `asoc listen`: a node that runs until SIGINT or SIGTERM, reporting what
//! happens; incoming streams are handled in [`incoming`].

mod incoming;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asoc_async::tls::TlsConfig;
use asoc_async::{DriverConfig, Error, Net, Node, NodeBuilder};
use asoc_proto::auth::ApiKey;
use asoc_proto::connection::ConnectionConfig;
use asoc_proto::discovery::DiscoveryConfig;
use asoc_proto::policy::PolicyConfig;
use serde_json::json;

use crate::cli::ListenArgs;
use crate::error::{CliError, CliResult};
use crate::net_errors::{bind_failed, check_target};
use crate::output::Out;
use crate::runtime::{spawn, until, Job, RuntimeKind};
use crate::{events, os, secrets, signals, tls};

use incoming::Streams;

/// How long shutdown waits for sends in flight and connections to close.
const GRACE: Duration = Duration::from_secs(5);

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
    runtime: RuntimeKind,
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
            .build()
            .map_err(|e| {
                CliError::usage(format!(
                    "--handshake-timeout / --max-frame / --stall-timeout: {e}"
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
            .build()
            .map_err(|e| CliError::usage(format!("--max-connections: {e}")))?;
        let driver = DriverConfig::builder()
            .connection(connection)
            .build()
            .map_err(|e| CliError::usage(format!("connection settings: {e}")))?;
        let out_dir = args.out.as_deref().map(prepare_dir).transpose()?;
        let tls = dial_tls(&args)?;
        Ok(Self {
            bind: args.bind,
            discovery,
            community,
            peers: args.peer,
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
            runtime: args.runtime.runtime,
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
            .tls(self.tls.clone());
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
    fn listening(&self, tcp: SocketAddr, udp: Option<SocketAddr>, node: uuid::Uuid) {
        let runtime = self.runtime.name();
        self.out.emit(
            json!({"event": "listening", "tcp": tcp.to_string(),
                   "udp": udp.map(|u| u.to_string()), "node": node.to_string(),
                   "runtime": runtime}),
            || {
                let udp = udp.map_or_else(|| "off".into(), |u| u.to_string());
                format!("listening on tcp {tcp} (discovery {udp}) as node {node} [{runtime}]")
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
        let node = self.start(&net).await?;
        self.listening(node.local_addr(), node.discovery_addr(), node.node_id());
        let printer = spawn(&net, {
            let (node, out) = (node.clone(), self.out);
            async move {
                while let Some(event) = node.next_event().await {
                    events::print(out, &event);
                }
            }
        });
        let streams = Streams::new(node.clone(), net.clone(), self.out, self.streams);
        let handlers = streams.accept_all();
        let _ = stop.recv().await;
        self.out.note(|| "shutting down".into());
        node.shutdown(GRACE).await;
        // Streams cut by the shutdown report themselves; give them a moment.
        let deadline = Instant::now() + GRACE;
        let _ = until(&net, deadline, async {
            handlers.await;
            printer.await;
        })
        .await;
        Ok(())
    }

    fn linger(&self) -> Duration {
        self.driver.connection().send_stall_timeout()
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
    let dials = !args.peer.is_empty() || !args.peer_v1.is_empty() || args.discovery;
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
        eprintln!(
            "asoc: warning: --dial-cleartext: this TLS listener dials its peers without TLS; \
             its HELLOs cross the network in cleartext and a v1 HELLO can be replayed"
        );
    }
    tls::node(&args.tls, &args.tls_client)
}

/// `--out DIR`: created when missing; must be a directory.
fn prepare_dir(dir: &Path) -> CliResult<Arc<PathBuf>> {
    let shown = dir.display();
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::usage(format!("cannot use --out {shown}: {e}")))?;
    if !dir.is_dir() {
        return Err(CliError::usage(format!(
            "cannot use --out {shown}: not a directory"
        )));
    }
    Ok(Arc::new(dir.to_path_buf()))
}
