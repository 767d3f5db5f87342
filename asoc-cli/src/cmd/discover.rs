//! `asoc discover`: listens for authenticated discovery announcements for
//! a while and lists the peers found. Passive: it announces nothing and
//! dials nobody.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asoc_async::Net;
use asoc_proto::auth::{ApiKey, KeyRing};
use asoc_proto::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
use asoc_proto::v2::WireVersion;
use serde_json::json;

use crate::cli::DiscoverArgs;
use crate::error::{CliError, CliResult};
use crate::events;
use crate::net_errors::bind_failed;
use crate::output::Out;
use crate::runtime::{until, Job, RuntimeKind};
use crate::{os, secrets};

/// A checked `discover` command, ready to run.
pub(crate) struct Discover {
    bind: SocketAddr,
    duration: Duration,
    config: DiscoveryConfig,
    keys: KeyRing,
    out: Out,
    runtime: RuntimeKind,
}

impl Discover {
    /// Checks every input before any socket is opened.
    pub(crate) fn prepare(args: DiscoverArgs) -> CliResult<Self> {
        let key: ApiKey = secrets::api_key(&args.key)?;
        let community = args.community.filter(|c| !c.is_empty()).ok_or_else(|| {
            CliError::usage(
                "discover needs a community: pass --community NAME or set ASOC_COMMUNITY",
            )
        })?;
        Ok(Self {
            bind: args.bind,
            duration: args.duration,
            // Listening only, never dialing: v1 announcements are listed
            // too, each peer with the version it announces.
            config: DiscoveryConfig::builder(community)
                .allow_v1(true)
                .build()
                .map_err(|e| CliError::usage(format!("discovery: {e}")))?,
            keys: KeyRing::new(key),
            out: Out::new(args.json),
            runtime: args.runtime.runtime,
        })
    }

    pub(crate) fn runtime(&self) -> RuntimeKind {
        self.runtime
    }

    /// The socket is bound to `bound`: the listening starts now.
    fn begin(&self, bound: SocketAddr) -> CliResult<(Discovery, Instant)> {
        let seed = os::seed()?;
        let id = os::node_id()?;
        let start = Instant::now();
        let discovery = Discovery::new(self.config.clone(), id, 0, seed, start);
        self.out.note(|| {
            format!(
                "listening for announcements on udp {bound} for {:?}",
                self.duration
            )
        });
        Ok((discovery, start))
    }

    /// One datagram from `src`.
    fn datagram(&self, discovery: &mut Discovery, src: SocketAddr, datagram: &[u8]) {
        discovery.handle_datagram(
            Instant::now(),
            asoc_async::unix_ms(),
            src,
            datagram,
            &self.keys,
        );
    }

    /// After a datagram or the deadline: timers, then the events to print.
    fn tick(&self, discovery: &mut Discovery) {
        discovery.handle_timeout(Instant::now());
        while let Some(event) = discovery.poll_event() {
            match event {
                DiscoveryEvent::Discovered {
                    node,
                    addr,
                    version,
                    ..
                } => {
                    events::discovery(self.out, "peer_discovered", node, addr, Some(version));
                }
                DiscoveryEvent::Expired { node, addr } => {
                    events::discovery(self.out, "peer_expired", node, addr, None);
                }
                _ => {}
            }
        }
    }

    /// The last line: every peer found.
    fn list(&self, discovery: &Discovery) {
        let peers: Vec<_> = discovery.peers().collect();
        let list: Vec<_> = peers
            .iter()
            .map(|p| {
                json!({"peer": p.node.to_string(), "addr": p.addr.to_string(),
                       "version": p.version.byte(), "accepts_v1": p.accepts_v1})
            })
            .collect();
        self.out.emit(json!({"event": "peers", "peers": list}), || {
            let mut text = format!("{} peer(s) found", peers.len());
            for p in &peers {
                let v1 = if p.version == WireVersion::V2 && p.accepts_v1 {
                    ", accepts v1"
                } else {
                    ""
                };
                text.push_str(&format!("\n  {}  {}  {}{v1}", p.node, p.addr, p.version));
            }
            text
        });
    }
}

impl Job for Discover {
    type Output = ();

    async fn run<N: Net>(self, net: N) -> CliResult {
        let udp = net
            .bind_udp(self.bind)
            .await
            .map_err(|e| bind_failed(&format!("udp {}", self.bind), &e))?;
        let bound = N::udp_local_addr(&udp).unwrap_or(self.bind);
        let (mut discovery, start) = self.begin(bound)?;
        let deadline = start + self.duration;
        let mut buf = vec![0u8; 2048];
        loop {
            match until(&net, deadline, N::recv_from(&udp, &mut buf)).await {
                None => break,
                Some(Ok((n, src))) => {
                    self.datagram(&mut discovery, src, buf.get(..n).unwrap_or(&[]));
                }
                // Like a lost datagram; the next announcement follows.
                Some(Err(_)) => {}
            }
            self.tick(&mut discovery);
        }
        self.list(&discovery);
        Ok(())
    }
}
