//! `asoc listen --metrics ADDR`: the node's counters in the Prometheus text
//! exposition format (0.0.4) over HTTP, at `/metrics`.
//!
//! Each scrape reads the node's own counters and connections (nothing is
//! copied in between, so the values cannot drift from what the node
//! counts); what the node reports only as events (streams ended, dial
//! failures, identity conflicts) is counted from the events the listener
//! prints. Per-peer series are bounded: the [`TOP_PEERS`] peers with the
//! most bytes are named, the rest are summed as `peer="other"`.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use asoc_async::{Net, Node};
use asoc_proto::discovery::DropReason;
use asoc_proto::node::NodeEvent;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use uuid::Uuid;

use crate::audit::Audit;
use crate::error::{CliError, CliResult};

/// Peers named in the per-peer series; the others are `other`.
pub(crate) const TOP_PEERS: usize = 16;

/// What only the node's events say.
#[derive(Debug, Default)]
pub(crate) struct EventCounts {
    streams_complete: AtomicU64,
    streams_incomplete: AtomicU64,
    dial_failures: AtomicU64,
    identity_conflicts: AtomicU64,
}

impl EventCounts {
    /// Counts `e`.
    pub(crate) fn event(&self, e: &NodeEvent) {
        let counter = match e {
            NodeEvent::StreamComplete { .. } => &self.streams_complete,
            NodeEvent::StreamIncomplete { .. } => &self.streams_incomplete,
            NodeEvent::DialFailed { .. } => &self.dial_failures,
            NodeEvent::IdentityConflict { .. } => &self.identity_conflicts,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The scrape: the node's state read at each request.
struct Source<N: Net> {
    node: Node<N>,
    events: Arc<EventCounts>,
    audit: Option<Audit>,
}

impl<N: Net> fmt::Debug for Source<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source").field("node", &self.node).finish()
    }
}

type Labels = Vec<(&'static str, String)>;

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, M)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        value.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> fmt::Result {
    let rows = rows.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(enc, name, help, MetricType::Counter, rows)
}

fn gauges(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, i64)>,
) -> fmt::Result {
    let rows = rows.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(enc, name, help, MetricType::Gauge, rows)
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn int(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Bytes and frames, in and out, of one peer.
#[derive(Clone, Copy, Default)]
struct Traffic([u64; 4]);

impl Traffic {
    fn add(&mut self, other: [u64; 4]) {
        for (a, b) in self.0.iter_mut().zip(other) {
            *a = a.saturating_add(b);
        }
    }
}

impl<N: Net> Source<N> {
    /// Per peer: closed connections' totals plus the live connections'.
    fn traffic(&self) -> Vec<(String, Traffic)> {
        let mut by_peer: HashMap<Option<Uuid>, Traffic> = HashMap::new();
        for (node, t) in self.node.peers_traffic() {
            by_peer.entry(Some(node)).or_default().add([
                t.bytes_in,
                t.bytes_out,
                t.frames_in,
                t.frames_out,
            ]);
        }
        for c in self.node.peers() {
            let s = c.stats;
            by_peer
                .entry(c.peer_node.filter(|_| c.established))
                .or_default()
                .add([s.bytes_in, s.bytes_out, s.frames_in, s.frames_out]);
        }
        let mut named: Vec<(Uuid, Traffic)> = Vec::new();
        let mut rest = Traffic::default();
        let mut unknown = Traffic::default();
        for (node, t) in by_peer {
            match node {
                Some(n) => named.push((n, t)),
                None => unknown.add(t.0),
            }
        }
        // Most bytes first; ties by id, so that the named set is stable.
        named.sort_by_key(|(n, t)| (std::cmp::Reverse(t.0[0].saturating_add(t.0[1])), *n));
        let mut rows: Vec<(String, Traffic)> = Vec::new();
        for (i, (n, t)) in named.into_iter().enumerate() {
            if i < TOP_PEERS {
                rows.push((n.to_string(), t));
            } else {
                rest.add(t.0);
            }
        }
        rows.push(("other".into(), rest));
        rows.push(("unknown".into(), unknown));
        rows
    }
}

impl<N: Net> Collector for Source<N> {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let c = self.node.counters();
        let peers = self.node.peers();

        let mut conns: HashMap<(&'static str, String), i64> = HashMap::new();
        for state in [
            ("handshaking", "none"),
            ("established", "1"),
            ("established", "2"),
        ] {
            conns.insert((state.0, state.1.to_string()), 0);
        }
        for p in &peers {
            let state = if p.established {
                "established"
            } else {
                "handshaking"
            };
            let version = p
                .session
                .map_or_else(|| "none".to_string(), |s| s.version.byte().to_string());
            *conns.entry((state, version)).or_default() += 1;
        }
        let mut conns: Vec<_> = conns.into_iter().collect();
        conns.sort();
        gauges(
            &mut enc,
            "asoc_connections",
            "Open connections by state and wire version",
            conns
                .into_iter()
                .map(|((s, v), n)| (vec![("state", s.to_string()), ("version", v)], n)),
        )?;
        let mut nodes: Vec<Uuid> = peers
            .iter()
            .filter(|p| p.established)
            .filter_map(|p| p.peer_node)
            .collect();
        nodes.sort();
        nodes.dedup();
        gauge(
            &mut enc,
            "asoc_peer_nodes",
            "Distinct peer node ids with an established connection",
            int(nodes.len()),
        )?;

        let failures = c.policy.auth_failures;
        counters(
            &mut enc,
            "asoc_handshakes",
            "Handshakes by result, and failures by reason",
            std::iter::once((
                vec![("result", "success".into()), ("reason", "none".into())],
                c.policy.established,
            ))
            .chain(failures.iter().map(|(reason, n)| {
                (
                    vec![("result", "failure".into()), ("reason", reason.to_string())],
                    n,
                )
            })),
        )?;
        counter(
            &mut enc,
            "asoc_throttles",
            "Source addresses throttled after repeated failures or attempts",
            c.policy.throttles,
        )?;

        let traffic = self.traffic();
        let per_peer = |index: [usize; 2]| {
            traffic.iter().flat_map(move |(peer, t)| {
                [("in", t.0[index[0]]), ("out", t.0[index[1]])].map(|(dir, v)| {
                    (
                        vec![("peer", peer.clone()), ("direction", dir.to_string())],
                        v,
                    )
                })
            })
        };
        counters(
            &mut enc,
            "asoc_peer_bytes",
            "Bytes exchanged per peer node (whole frames; the top peers by bytes are named, \
             the rest are other, connections without a proven id are unknown)",
            per_peer([0, 1]),
        )?;
        counters(
            &mut enc,
            "asoc_peer_frames",
            "Frames exchanged per peer node (labels as asoc_peer_bytes)",
            per_peer([2, 3]),
        )?;
        counters(
            &mut enc,
            "asoc_streams",
            "Incoming streams ended, complete (END received) or incomplete (cut off)",
            [
                (
                    "complete",
                    self.events.streams_complete.load(Ordering::Relaxed),
                ),
                (
                    "incomplete",
                    self.events.streams_incomplete.load(Ordering::Relaxed),
                ),
            ]
            .map(|(r, n)| (vec![("result", r.to_string())], n)),
        )?;

        let discovery = c.discovery.as_ref();
        counters(
            &mut enc,
            "asoc_discovery_dropped",
            "Discovery datagrams dropped, by the first check they failed",
            DropReason::ALL.iter().map(|r| {
                (
                    vec![("reason", r.as_str().to_string())],
                    discovery.map_or(0, |d| d.dropped(*r)),
                )
            }),
        )?;

        let fill = self.node.replay_fill();
        let caches = ["hello_v1", "hello2_ephemeral"];
        gauges(
            &mut enc,
            "asoc_replay_cache_entries",
            "Entries in the handshake replay caches (a full cache refuses handshakes)",
            caches
                .iter()
                .zip(fill)
                .map(|(name, (len, _))| (vec![("cache", (*name).to_string())], int(len))),
        )?;
        gauges(
            &mut enc,
            "asoc_replay_cache_capacity",
            "Capacity of the handshake replay caches",
            caches
                .iter()
                .zip(fill)
                .map(|(name, (_, cap))| (vec![("cache", (*name).to_string())], int(cap))),
        )?;

        counter(
            &mut enc,
            "asoc_dial_attempts",
            "Dials of static and discovered peers started",
            c.dials,
        )?;
        counter(
            &mut enc,
            "asoc_dial_failures",
            "Dials that failed before their connection was established",
            self.events.dial_failures.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "asoc_identity_conflicts",
            "Node ids claimed by two live connections from different addresses",
            self.events.identity_conflicts.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "asoc_events_dropped",
            "Node events dropped because too many were unread",
            c.events_dropped,
        )?;
        counter(
            &mut enc,
            "asoc_audit_dropped",
            "Audit events dropped because the audit writer's queue was full",
            self.audit.as_ref().map_or(0, Audit::dropped),
        )?;
        Ok(())
    }
}

/// The endpoint; serves until the process ends.
pub(crate) struct Endpoint {
    /// The bound address (port 0 resolved).
    pub(crate) addr: SocketAddr,
}

/// Binds `addr` and serves `/metrics` for `node` on a thread of its own.
pub(crate) fn serve<N: Net>(
    addr: SocketAddr,
    node: Node<N>,
    events: Arc<EventCounts>,
    audit: Option<Audit>,
) -> CliResult<Endpoint> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| CliError::runtime(format!("cannot serve --metrics on {addr}: {e}")))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| CliError::runtime(format!("--metrics {addr}: not an IP address")))?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Source {
        node,
        events,
        audit,
    }));
    std::thread::Builder::new()
        .name("asoc-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                respond(&registry, request);
            }
        })
        .map_err(|e| CliError::runtime(format!("cannot start the metrics thread: {e}")))?;
    Ok(Endpoint { addr: bound })
}

fn respond(registry: &Registry, request: tiny_http::Request) {
    use tiny_http::{Header, Method, Response};
    let path = request.url().split('?').next().unwrap_or_default();
    let answer = if *request.method() != Method::Get && *request.method() != Method::Head {
        Response::from_string("only GET\n").with_status_code(405)
    } else if path != "/metrics" {
        Response::from_string("see /metrics\n").with_status_code(404)
    } else {
        let mut body = String::new();
        match prometheus_client::encoding::prometheus_text::encode(&mut body, registry) {
            Ok(()) => {
                let mut r = Response::from_string(body);
                if let Ok(h) = Header::from_bytes(
                    &b"Content-Type"[..],
                    &b"text/plain; version=0.0.4; charset=utf-8"[..],
                ) {
                    r = r.with_header(h);
                }
                r
            }
            Err(_) => Response::from_string("encoding failed\n").with_status_code(500),
        }
    };
    // A scraper that hung up is not the node's problem.
    let _ = request.respond(answer);
}
