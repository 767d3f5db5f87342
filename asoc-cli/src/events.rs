//! The node's events as `asoc listen` prints them (the JSON shapes are
//! part of the command's interface; see docs/cli.md).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use asoc_proto::auth::AuthFailure;
use asoc_proto::connection::CloseReason;
use asoc_proto::discovery::{DiscoveryCounters, DropReason};
use asoc_proto::node::{Direction, NodeEvent};
use asoc_proto::policy::AuthFailureCounts;
use asoc_proto::v2::{Suite, WireVersion};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::output::Out;

/// What an operator should know when a v1 peer knocks on a v2-only node.
const V1_HINT: &str = "a v1 peer tried to connect; this node speaks only v2. Start it with \
                       --allow-v1 to accept v1 peers (v1 falls to replay and relay attacks), \
                       or move the peer to v2";

/// Prints one node event. Stream completion is printed by the stream
/// handler instead (it knows the SHA-256 and the file); events outside the
/// documented set are printed generically, so that every decision of the
/// node reaches `--json`.
/// Every runtime's node reports the same [`NodeEvent`].
pub(crate) fn print(out: Out, e: &NodeEvent) {
    match e {
        NodeEvent::PeerConnected {
            peer_node,
            addr,
            direction,
            session,
            ..
        } => {
            let suite = session.suite.map(Suite::as_str);
            out.emit(
                json!({"event": "peer_connected", "peer": peer(*peer_node),
                       "addr": addr.to_string(), "direction": direction_name(*direction),
                       "version": session.version.byte(), "suite": suite}),
                || {
                    format!(
                        "peer connected: {} {} ({}, {}{})",
                        shown(*peer_node),
                        addr,
                        direction_name(*direction),
                        session.version,
                        suite.map_or_else(|| ", unencrypted".to_string(), |s| format!(", {s}"))
                    )
                },
            );
        }
        NodeEvent::AuthFailed {
            addr,
            reason: AuthFailure::V1Disabled,
            ..
        } => out.emit(
            json!({"event": "auth_failed", "addr": addr.to_string(), "reason": "v1_disabled",
                   "hint": V1_HINT}),
            || format!("authentication failed: {addr} (v1_disabled): {V1_HINT}"),
        ),
        NodeEvent::PeerDisconnected {
            peer_node,
            addr,
            reason,
            ..
        } => {
            if let CloseReason::Protocol(err) = reason {
                out.emit(
                    json!({"event": "protocol_error", "peer": peer(*peer_node),
                           "addr": addr.to_string(), "reason": err.to_string()}),
                    || format!("protocol error from {} {addr}: {err}", shown(*peer_node)),
                );
            }
            out.emit(
                json!({"event": "peer_disconnected", "peer": peer(*peer_node),
                       "addr": addr.to_string(), "reason": reason.as_str()}),
                || format!("peer disconnected: {} {addr} ({reason})", shown(*peer_node)),
            );
        }
        NodeEvent::AuthFailed { addr, reason, .. } => out.emit(
            json!({"event": "auth_failed", "addr": addr.to_string(), "reason": reason.as_str()}),
            || format!("authentication failed: {addr} ({})", reason.as_str()),
        ),
        NodeEvent::PeerDiscovered {
            node,
            addr,
            version,
            ..
        } => discovery(out, "peer_discovered", *node, *addr, Some(*version)),
        NodeEvent::PeerExpired { node, addr } => {
            discovery(out, "peer_expired", *node, *addr, None);
        }
        NodeEvent::Throttled {
            ip,
            until,
            interval,
            cause,
        } => {
            let for_ms = millis(until.saturating_duration_since(Instant::now()));
            let every_ms = millis(*interval);
            out.emit(
                json!({"event": "throttled", "ip": ip.to_string(), "cause": cause.as_str(),
                       "for_ms": for_ms, "one_handshake_per_ms": every_ms}),
                || {
                    format!(
                        "throttled: {ip} after repeated {}: one handshake per {} s",
                        cause.as_str(),
                        interval.as_secs_f64()
                    )
                },
            );
        }
        NodeEvent::AuthFailuresAggregated {
            ip,
            count,
            first,
            last,
            reasons,
        } => aggregated(out, *ip, *count, *first, *last, reasons),
        NodeEvent::PeerAddressChanged { node, old, new } => out.emit(
            json!({"event": "peer_moved", "peer": node.to_string(), "old": old.to_string(),
                   "new": new.to_string()}),
            || format!("peer {node} moved from {old} to {new}"),
        ),
        NodeEvent::DialGaveUp { node, failures, .. } => out.emit(
            json!({"event": "dial_gave_up", "peer": node.to_string(), "failures": failures}),
            || format!("gave up dialing discovered peer {node} after {failures} failures"),
        ),
        NodeEvent::DialFailed {
            node,
            target,
            error,
            ..
        } => out.emit(
            json!({"event": "dial_failed", "peer": peer(*node), "target": target.to_string(),
                   "error": error}),
            || format!("dial to {target} failed: {error}"),
        ),
        NodeEvent::IdentityConflict {
            node,
            addr,
            other_addr,
            ..
        } => out.emit(
            json!({"event": "identity_conflict", "peer": node.to_string(),
                   "addr": addr.to_string(), "other_addr": other_addr.to_string()}),
            || {
                format!(
                    "identity conflict: node {node} claimed from {addr} and from {other_addr} \
                     (a holder of the key is squatting it)"
                )
            },
        ),
        NodeEvent::DialingBack {
            node,
            addr,
            duplicates,
        } => out.emit(
            json!({"event": "dialing_back", "peer": node.to_string(), "addr": addr.to_string(),
                   "duplicates": duplicates}),
            || {
                format!(
                    "dialing {node} back at {addr}: it opened {duplicates} duplicate connections"
                )
            },
        ),
        NodeEvent::StreamRefused {
            peer_node,
            addr,
            stream,
            max,
            ..
        } => out.emit(
            json!({"event": "stream_refused", "peer": peer(*peer_node),
                   "addr": addr.to_string(), "stream": stream.get(), "max": max}),
            || {
                format!(
                    "stream {stream} from {} {addr} refused: {max} incoming streams are open; \
                     disconnecting it",
                    shown(*peer_node)
                )
            },
        ),
        // Printed by the stream handler.
        NodeEvent::StreamComplete { .. } | NodeEvent::StreamIncomplete { .. } => {}
        // One per datagram: the counters say it on demand (SIGUSR1).
        NodeEvent::DatagramDropped { .. } => {}
        // Every other event is a decision an operator may need: printed
        // generically so that none is lost to `--json`.
        other => {
            if !rotation(out, other) {
                generic(out, other);
            }
        }
    }
}

/// The JSON lines [`print()`] gives `e` in `--json`, without printing them.
pub(crate) fn to_json(e: &NodeEvent) -> Vec<Value> {
    Out::capture(|out| print(out, e))
}

/// Prints a key-rotation event in its own shape (times as milliseconds
/// from now, never a key); `false` for any other event.
fn rotation(out: Out, event: &NodeEvent) -> bool {
    let now = Instant::now();
    let ms = |at: &Instant| {
        u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
    };
    let line = match event {
        NodeEvent::KeyRotationStarted {
            epoch,
            activate_at,
            old_key_until,
        } => json!({"event": "key_rotation_started", "epoch": epoch,
                    "activate_in_ms": ms(activate_at), "old_key_until_ms": ms(old_key_until)}),
        NodeEvent::KeyRotationLearned {
            epoch,
            peer_node,
            activate_at,
            old_key_until,
            ..
        } => json!({"event": "key_rotation_learned", "epoch": epoch,
                    "peer": peer(*peer_node),
                    "activate_in_ms": ms(activate_at), "old_key_until_ms": ms(old_key_until)}),
        NodeEvent::KeyRotationSent {
            epoch, peer_node, ..
        } => json!({"event": "key_rotation_sent", "epoch": epoch,
                    "peer": peer(*peer_node)}),
        NodeEvent::KeyRotationAcked {
            epoch,
            peer_node,
            status,
            ..
        } => json!({"event": "key_rotation_acked", "epoch": epoch,
                    "peer": peer(*peer_node), "status": status.as_str()}),
        NodeEvent::KeyRotationActivated { epoch, key } => {
            json!({"event": "key_rotation_activated", "epoch": epoch, "key": key.to_string()})
        }
        NodeEvent::KeyRotationOldKeyPurged { key } => {
            json!({"event": "key_rotation_old_key_purged", "key": key.to_string()})
        }
        NodeEvent::KeyRotationRefused { addr, reason, .. } => {
            json!({"event": "key_rotation_refused", "addr": addr.to_string(),
                   "reason": reason.as_str(), "detail": reason.to_string()})
        }
        _ => return false,
    };
    let human = line.to_string();
    out.emit(line, || human);
    true
}

/// An event without a dedicated shape: `{"event": <variant in snake_case>,
/// "detail": <its debug form>}`.
fn generic(out: Out, e: &NodeEvent) {
    let detail = format!("{e:?}");
    let name = detail
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .map(snake_case)
        .unwrap_or_default();
    out.emit(json!({"event": name, "detail": detail}), || detail.clone());
}

fn snake_case(camel: &str) -> String {
    let mut s = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `discovery_counters`: every drop counter of discovery, printed on
/// SIGUSR1 (`null` counters when discovery is off).
pub(crate) fn discovery_counters(out: Out, c: Option<&DiscoveryCounters>) {
    let Some(c) = c else {
        out.emit(
            json!({"event": "discovery_counters", "counters": null}),
            || "discovery counters: discovery is off".to_string(),
        );
        return;
    };
    let mut fields: Vec<(&str, u64)> = vec![
        ("received", c.received),
        ("accepted", c.accepted),
        ("sent", c.sent),
    ];
    fields.extend(DropReason::ALL.iter().map(|r| (r.as_str(), c.dropped(*r))));
    fields.extend([
        ("expired", c.expired),
        ("events_lost", c.events_lost),
        ("dropped", c.dropped_total()),
    ]);
    let counters: serde_json::Map<String, Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    out.emit(
        json!({"event": "discovery_counters", "counters": counters}),
        || {
            let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!("discovery counters: {}", parts.join(", "))
        },
    );
}

/// `auth_failed_aggregated`: the refusals of one address after its first
/// `auth_failed` of the interval, as one line with their count, their
/// reasons and the wall-clock times (unix ms) of the first and the last.
fn aggregated(
    out: Out,
    ip: Option<IpAddr>,
    count: u64,
    first: Instant,
    last: Instant,
    reasons: &AuthFailureCounts,
) {
    // The node's clock is monotonic; the line carries wall-clock times.
    let (now, unix) = (Instant::now(), asoc_async::unix_ms());
    let unix_at = |t: Instant| {
        let ago = u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX);
        unix.saturating_sub(ago)
    };
    let by_reason: serde_json::Map<String, Value> = reasons
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name.to_string(), json!(n)))
        .collect();
    let ip_text = ip.map(|ip| ip.to_string());
    out.emit(
        json!({"event": "auth_failed_aggregated", "ip": ip_text, "count": count,
               "first_unix_ms": unix_at(first), "last_unix_ms": unix_at(last),
               "reasons": by_reason}),
        || {
            let reasons: Vec<String> = by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect();
            format!(
                "authentication failed: {} more from {} over {:.1} s ({})",
                count,
                ip_text.as_deref().unwrap_or("untracked addresses"),
                last.saturating_duration_since(first).as_secs_f64(),
                reasons.join(", ")
            )
        },
    );
}

/// `peer_discovered` / `peer_expired`, shared with `asoc discover`.
/// `peer_discovered` carries the version of the announcement.
pub(crate) fn discovery(
    out: Out,
    what: &str,
    node: Uuid,
    addr: SocketAddr,
    version: Option<WireVersion>,
) {
    let mut v = json!({"event": what, "peer": node.to_string(), "addr": addr.to_string()});
    if let (Some(version), Some(o)) = (version, v.as_object_mut()) {
        o.insert("version".into(), json!(version.byte()));
    }
    out.emit(v, || match version {
        Some(version) => format!("{}: {node} {addr} ({version})", what.replace('_', " ")),
        None => format!("{}: {node} {addr}", what.replace('_', " ")),
    });
}

/// A node id as JSON: the UUID string or null.
pub(crate) fn peer(node: Option<Uuid>) -> Value {
    node.map_or(Value::Null, |n| Value::String(n.to_string()))
}

/// A node id for humans.
pub(crate) fn shown(node: Option<Uuid>) -> String {
    node.map_or_else(|| "(unknown id)".to_string(), |n| n.to_string())
}

fn direction_name(d: Direction) -> &'static str {
    d.as_str()
}
