//! `asoc send`: one authenticated connection to a listening peer, one
//! stream per input in order, then a clean close. Exit 0 only once every
//! END was written and the connection closed cleanly.

use asoc_proto::connection::StreamId;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asoc_async::Session;
use asoc_async::{Connection, DriverConfig, Error, Net, Transport};
use asoc_proto::auth::AuthFailure;
use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::connection::CloseReason;
use asoc_proto::connection::ConnectionConfig;
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use asoc_proto::v2::{Suite, WireVersion};
use serde_json::json;
use uuid::Uuid;

use crate::cli::SendArgs;
use crate::error::{CliError, CliResult};
use crate::net_errors::{check_target, unreachable};
use crate::output::{hex, Out};
use crate::progress::Progress;
use crate::reader::{Item, Source};
use crate::runtime::{until, Job, RuntimeKind};
use crate::{events, os, secrets, tls};

/// Largest chunk: the default maximum frame payload of receivers (WIRE.md §6).
const MAX_CHUNK: u64 = 16 << 20;

/// Bytes of small chunks the stream may queue toward the connection's
/// task before `send` waits: with the default of 8 chunks, 4 KiB frames
/// had the sending task and the connection's task wake each other for
/// every few frames (a futex and a context switch per frame), where this
/// lets a whole read block through at once.
const QUEUED_BYTES: usize = 512 << 10;

/// The command queue for `chunk_size`-byte frames: the library's default
/// of 8, or more small frames up to [`QUEUED_BYTES`].
fn command_queue(chunk_size: usize) -> usize {
    (QUEUED_BYTES / chunk_size.max(1)).clamp(8, 1024)
}

/// A checked `send` command, ready to run.
pub(crate) struct Send {
    peer: String,
    chunk_size: usize,
    out: Out,
    key: ApiKey,
    tls: Option<Arc<rustls::ClientConfig>>,
    sources: Vec<Source>,
    runtime: RuntimeKind,
    wire: WireVersion,
    peer_id: Option<Uuid>,
    suite: Suite,
    handshake_timeout: Duration,
    /// Compute and report the SHA-256 of each stream.
    digest: bool,
}

impl Send {
    /// Checks every input before any socket is opened.
    pub(crate) fn prepare(args: SendArgs) -> CliResult<Self> {
        check_target(&args.peer, "--peer")?;
        if args.chunk_size == 0 || args.chunk_size > MAX_CHUNK {
            return Err(CliError::usage(format!(
                "--chunk-size must be between 1B and 16MiB, not {} bytes",
                args.chunk_size
            )));
        }
        if args.files.iter().filter(|f| f.as_os_str() == "-").count() > 1 {
            return Err(CliError::usage("standard input (-) can be sent only once"));
        }
        if args.wire == WireVersion::V1 && (args.peer_id.is_some() || args.suite.is_some()) {
            return Err(CliError::usage(
                "--peer-id and --suite need --wire v2: a v1 listener proves no node id and \
                 runs no cipher suite",
            ));
        }
        let key = secrets::api_key(&args.key)?;
        let identity = args.tls_cert.as_ref().zip(args.tls_key.as_ref());
        let tls = tls::client(&args.tls, identity)?;
        let sources = args
            .files
            .iter()
            .map(|f| Source::open(f))
            .collect::<CliResult<Vec<_>>>()?;
        Ok(Self {
            peer: args.peer,
            chunk_size: usize::try_from(args.chunk_size).unwrap_or(usize::MAX),
            out: Out::new(args.json),
            key,
            tls,
            sources,
            runtime: args.runtime.runtime,
            wire: args.wire,
            peer_id: args.peer_id,
            suite: args.suite.unwrap_or_default(),
            handshake_timeout: args.handshake_timeout,
            digest: !args.no_digest,
        })
    }

    pub(crate) fn runtime(&self) -> RuntimeKind {
        self.runtime
    }

    async fn connect<N: Net>(&self, net: &N) -> CliResult<Connection> {
        // Bounded like the handshake: a blackholed address would otherwise
        // hold the connect for the kernel's SYN retries (about two minutes
        // on Linux).
        let deadline = Instant::now() + self.handshake_timeout;
        let (io, addr) = until(net, deadline, net.connect(self.peer.clone()))
            .await
            .unwrap_or_else(|| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "TCP connect timed out after {:?} (--handshake-timeout)",
                        self.handshake_timeout
                    ),
                ))
            })
            .map_err(|e| unreachable(&self.peer, &e))?;
        let io: Box<dyn Transport> = match &self.tls {
            None => Box::new(io),
            Some(config) => {
                let name = asoc_async::tls::server_name(&self.peer)
                    .map_err(|e| CliError::usage(e.to_string()))?;
                let deadline = Instant::now() + self.handshake_timeout;
                let linger = DriverConfig::default().connection().send_stall_timeout();
                let handshake = asoc_async::tls::connect(net, io, config.clone(), name, linger);
                match until(net, deadline, handshake).await {
                    Some(Ok(io)) => Box::new(io),
                    Some(Err(e)) => {
                        return Err(CliError::auth(format!(
                            "TLS handshake with {} failed: {e}",
                            self.peer
                        )))
                    }
                    None => {
                        return Err(CliError::auth(format!(
                            "TLS handshake with {} timed out",
                            self.peer
                        )))
                    }
                }
            }
        };
        let node = os::node_id()?;
        let auth = self.authenticator(node)?;
        let connection = ConnectionConfig::builder()
            .suite(self.suite)
            .handshake_timeout(self.handshake_timeout)
            .build()
            .map_err(|e| CliError::usage(e.to_string()))?;
        let driver = DriverConfig::builder()
            .connection(connection)
            .command_queue(command_queue(self.chunk_size))
            .wire(self.wire)
            .expect_peer(self.peer_id)
            .build()
            .map_err(|e| CliError::usage(e.to_string()))?;
        let conn = Connection::connect(net, io, &auth, driver)
            .await
            .map_err(|e| match e {
                Error::Handshake(reason) => self.refused(&reason),
                other => self.failed(&other),
            })?;
        self.connected(addr, node, &conn.session());
        Ok(conn)
    }

    /// The authenticator of our side of the handshake, as node `node`.
    fn authenticator(&self, node: Uuid) -> CliResult<Arc<Mutex<Authenticator>>> {
        let seed = os::seed()?;
        Ok(Arc::new(Mutex::new(Authenticator::new(
            AuthenticatorConfig::new(node, KeyRing::new(self.key.clone())),
            seed,
        ))))
    }

    /// The handshake verified: our first line.
    fn connected(&self, addr: std::net::SocketAddr, node: Uuid, session: &Session) {
        let version = session.info.version;
        let suite = session.info.suite.map(Suite::as_str);
        self.out.emit(
            json!({"event": "connected", "addr": addr.to_string(), "node": node.to_string(),
                   "peer": events::peer(session.peer_node), "version": version.byte(),
                   "suite": suite}),
            || match (session.peer_node, suite) {
                (Some(peer), Some(suite)) => format!(
                    "connected to {addr} ({version}, {suite}), handshake verified: \
                     the listener proved node id {peer}"
                ),
                _ => format!("connected to {addr} ({version}, unencrypted), handshake verified"),
            },
        );
    }

    /// The handshake failed for `reason` (exit 3, naming the likely causes).
    fn refused(&self, reason: &CloseReason) -> CliError {
        let peer = &self.peer;
        match reason {
            CloseReason::AuthFailed(AuthFailure::UnexpectedPeer { expected, proven }) => {
                CliError::auth(format!(
                    "{peer} proved node id {proven}, not the expected {expected} (--peer-id): \
                     another node answers at this address"
                ))
            }
            CloseReason::PeerClosed | CloseReason::Transport if self.wire == WireVersion::V2 => {
                CliError::auth(format!(
                    "{peer} closed the connection during the v2 handshake without a word: \
                     refused: a different key, throttling or capacity, which cannot be told \
                     apart on the wire (check the API key: ASOC_API_KEY or --api-key-file; a throttled \
                     or full listener admits this address again shortly). It may also speak only \
                     v1 (dial it with --wire v1) or accept only the other cipher suite (--suite)"
                ))
            }
            CloseReason::HandshakeTimeout => CliError::auth(format!(
                "{peer} did not answer the handshake in time: is it an ASoc listener, \
                 and does it expect TLS (--tls-ca / --tls-pin)?"
            )),
            reason => CliError::auth(format!(
                "{peer} refused the handshake ({reason}): refused: a different key, throttling \
                 or capacity, which cannot be told apart on the wire (check the API key: ASOC_API_KEY or \
                 --api-key-file, and that both sides use the key of the same cluster and \
                 community; a throttled or full listener admits this address again shortly), \
                 or the listener expects TLS"
            )),
        }
    }

    /// The connection failed other than by its handshake.
    fn failed(&self, e: &dyn std::fmt::Display) -> CliError {
        CliError::runtime(format!("connection to {} failed: {e}", self.peer))
    }

    async fn send_one(&self, conn: &Connection, source: Source) -> CliResult {
        let name = source.name.clone();
        let lost = |e: Error| CliError::runtime(format!("connection to {} lost: {e}", self.peer));
        let mut stream = conn.open_stream().await.map_err(lost)?;
        let id = stream.id();
        let bar = Progress::new(&name, source.len);
        let chunks = source.chunks(self.chunk_size, self.digest);
        let (mut bytes, mut frames) = (0u64, 0u64);
        let digest = loop {
            match chunks.recv().await {
                Ok(Item::Chunk(block)) => {
                    let n = block.len() as u64;
                    frames += n.div_ceil(self.chunk_size as u64);
                    stream
                        .send_chunked(block, self.chunk_size)
                        .await
                        .map_err(lost)?;
                    bytes += n;
                    bar.advance(n);
                }
                Ok(Item::End(digest)) => break digest,
                Ok(Item::Failed(e)) => {
                    bar.finish();
                    return Err(CliError::runtime(format!("cannot read {name}: {e}")));
                }
                Err(_) => return Err(CliError::runtime(format!("reading {name} stopped"))),
            }
        };
        stream.finish().await.map_err(lost)?;
        bar.finish();
        self.sent(&name, id, (bytes, frames), digest.as_ref());
        Ok(())
    }

    /// A stream was sent whole, END included.
    /// `digest` is `None` with `--no-digest` (`"sha256": null`).
    fn sent(
        &self,
        name: &str,
        id: StreamId,
        (bytes, frames): (u64, u64),
        digest: Option<&[u8; 32]>,
    ) {
        let sha = digest.map(|d| hex(d));
        self.out.emit(
            json!({"event": "stream_sent", "file": name, "stream": id.get(), "frames": frames,
                   "bytes": bytes, "sha256": sha}),
            || {
                let sha = sha
                    .as_deref()
                    .map_or("no digest (--no-digest)".into(), |s| format!("sha256 {s}"));
                format!("sent {name}: stream {id}, {bytes} bytes in {frames} frames, {sha}")
            },
        );
    }

    /// The connection closed after the last stream: exit 0 only when it
    /// closed cleanly.
    fn closed(&self, reason: &CloseReason) -> CliResult {
        match reason {
            CloseReason::Local => {
                self.out
                    .emit(json!({"event": "closed", "reason": "local_close"}), || {
                        "done: every stream ended and the connection closed cleanly".to_string()
                    });
                Ok(())
            }
            reason => Err(CliError::runtime(format!(
                "the connection to {} did not close cleanly ({reason}); the last stream may not \
                 have arrived",
                self.peer
            ))),
        }
    }
}

impl Job for Send {
    type Output = ();

    async fn run<N: Net>(mut self, net: N) -> CliResult {
        let conn = self.connect(&net).await?;
        for source in std::mem::take(&mut self.sources) {
            self.send_one(&conn, source).await?;
        }
        conn.close().await;
        self.closed(&conn.closed().await)
    }
}
