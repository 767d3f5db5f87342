//! What the implementation does after a dial to a discovered peer fails or
//! its connection drops: when it dials again, how the waits grow, when it
//! stops (RFC-0001 §9.4, WIRE.md §6), and that a peer silent past its
//! expiry is not dialed again (RFC-0001 §4.4).
//!
//! The suite announces one of its own listeners with a single valid
//! datagram from an address of its own and watches the implementation's
//! dials to it. A dial "fails" when the suite reads its HELLO and closes
//! without an ACCEPT: the connection never reached ESTABLISHED (WIRE.md
//! §3.5), whatever a TCP-level view would say. One datagram only: a later
//! announcement may lawfully re-record a dropped peer (WIRE.md §7: "A valid
//! message records or refreshes the peer").

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::case;
use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::wire::{accept_frame, read_hello, send_datagram, udp_from, Conn, Datagram, Listener};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R1-4.4/8", Should, ImplDials, Udp, false, "A discovered peer silent past the expiry is not dialed again when its connection drops",
            "RFC-0001 §4.4: stale peers (>15 seconds) removed. WIRE.md §6: discovered peer expiry | 15 s without a valid message.",
            expired_not_redialed),
        case!("R1-9.4/1", Should, ImplDials, Udp, false, "A lost connection to a discovered peer is dialed again after the first retry delay",
            "WIRE.md §6: reconnect | random 1–5 s, then exponential backoff up to 60 s (RFC-0001 §9.4).",
            |ctx| first_retry(ctx, true)),
        case!("R1-9.4/2", Should, ImplDials, Udp, false, "A failed first dial is retried after the first retry delay",
            "WIRE.md §6: reconnect | random 1–5 s, then exponential backoff up to 60 s (RFC-0001 §9.4).",
            |ctx| first_retry(ctx, false)),
        case!("R1-9.4/3", Should, ImplDials, Udp, false, "The wait before the second retry is backed off",
            "WIRE.md §6: reconnect | random 1–5 s, then exponential backoff up to 60 s (RFC-0001 §9.4).",
            backoff),
        case!("R1-9.4/4", Should, ImplDials, Udp, false, "A discovered peer is not dialed again after 3 consecutive failed dials",
            "WIRE.md §6: reconnect | ... static peers forever, discovered peers dropped after 3 failures (RFC-0001 §9.4).",
            gives_up),
    ]
}

/// A listener of the suite announced to the implementation once.
struct Announced {
    l: Listener,
    /// When the datagram went out.
    sent: Instant,
}

fn announce(ctx: &mut Ctx<'_>) -> Result<Announced, Finding> {
    let to = ctx.udp_target()?;
    // An address of its own per case, so that a dial left over from another
    // case never lands on this listener.
    let ip = if to.ip().is_loopback() {
        ctx.sources.next()
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let l = Listener::bind(ip)?;
    let sock = udp_from(ip)?;
    let g = Datagram::new(&ctx.cfg.community, l.addr()?.port());
    send_datagram(&sock, &g.encode(&ctx.cfg.key), to)?;
    Ok(Announced {
        l,
        sent: Instant::now(),
    })
}

/// The first dial, which a valid datagram makes at once (R1-4.4/1).
fn first_dial(ctx: &mut Ctx<'_>, a: &Announced) -> Result<Conn, Finding> {
    a.l.accept_within(ctx.cfg.timeout)?
        .ok_or_else(|| Finding::Error("inconclusive: the valid datagram was not dialed".into()))
}

/// Reads the HELLO of dial `n` and closes without an ACCEPT: a failed dial.
/// Returns when the close went out.
fn fail_dial(ctx: &mut Ctx<'_>, mut c: Conn, n: u32) -> Result<Instant, Finding> {
    read_hello(&mut c, ctx).map_err(|e| {
        Finding::Error(format!(
            "inconclusive: dial {n} sent no valid HELLO ({e:?})"
        ))
    })?;
    drop(c);
    Ok(Instant::now())
}

/// The next dial within `within` of `since`, and how long after `since`.
fn next_dial(
    a: &Announced,
    since: Instant,
    within: Duration,
) -> Result<Option<(Conn, Duration)>, Finding> {
    let left = (since + within).saturating_duration_since(Instant::now());
    Ok(a.l.accept_within(left)?.map(|c| (c, since.elapsed())))
}

/// Earliest first retry the suite accepts: the configured minimum less a
/// fifth, for timer and scheduling slack.
fn earliest(ctx: &Ctx<'_>) -> Duration {
    ctx.cfg.retry_min.mul_f64(0.8)
}

/// How much longer than the first wait the second must be to count as
/// backed off: a doubling, less a quarter for timer and scheduling slack.
const GROWTH: f64 = 1.5;

/// Slack on a latest wait: a fifth of it, at least half a second.
fn late(d: Duration) -> Duration {
    d + (d / 5).max(Duration::from_millis(500))
}

fn first_retry(ctx: &mut Ctx<'_>, established: bool) -> CaseResult {
    let a = announce(ctx)?;
    let mut c = first_dial(ctx, &a)?;
    read_hello(&mut c, ctx)?;
    let what = if established {
        c.send(&accept_frame(&ctx.cfg.key))?;
        // Let the ACCEPT land before the close.
        c.expect_open(Duration::from_millis(200)).map_err(|e| {
            Finding::Error(format!(
                "inconclusive: the connection closed after a valid ACCEPT ({e:?})"
            ))
        })?;
        "the connection was lost"
    } else {
        "the first dial failed"
    };
    drop(c);
    let since = Instant::now();
    let (lo, hi) = (earliest(ctx), late(ctx.cfg.retry_max));
    let want = format!(
        "a new dial {:?}–{:?} after {what}",
        ctx.cfg.retry_min, ctx.cfg.retry_max
    );
    match next_dial(&a, since, hi)? {
        None => Err(Finding::fail(want, format!("no dial within {hi:?}"))),
        Some((_, w)) if w < lo => Err(Finding::fail(want, format!("dialed again after {w:?}"))),
        Some((_, w)) => Ok(format!("dialed again {w:?} after {what}")),
    }
}

fn backoff(ctx: &mut Ctx<'_>) -> CaseResult {
    if ctx.cfg.dial_failures < 3 {
        return Err(Finding::Skip(format!(
            "the target drops a discovered peer after {} failed dials; a second retry needs 3",
            ctx.cfg.dial_failures
        )));
    }
    let a = announce(ctx)?;
    let c = first_dial(ctx, &a)?;
    let t1 = fail_dial(ctx, c, 1)?;
    let hi1 = late(ctx.cfg.retry_max);
    let Some((c, w1)) = next_dial(&a, t1, hi1)? else {
        return Err(Finding::Error(format!(
            "inconclusive: no retry within {hi1:?} of a failed dial (see R1-9.4/2)"
        )));
    };
    let t2 = fail_dial(ctx, c, 2)?;
    let hi2 = late((ctx.cfg.retry_max * 2).min(ctx.cfg.max_backoff));
    let floor = (ctx.cfg.retry_min * 2).min(ctx.cfg.max_backoff);
    let want = format!(
        "a second retry {:?}–{hi2:?} after the second failure (at least twice the shortest first delay), \
         and at least {GROWTH}× the wait before the first retry",
        floor.mul_f64(0.8)
    );
    match next_dial(&a, t2, hi2)? {
        None if a.sent.elapsed() >= ctx.cfg.peer_expiry => Err(Finding::Error(format!(
            "inconclusive: no second retry, and the peer's expiry ({:?}) has passed",
            ctx.cfg.peer_expiry
        ))),
        None => Err(Finding::fail(want, format!("no dial within {hi2:?}"))),
        // Backoff doubles the wait: a second wait no longer than the first
        // (a steady schedule that happens to sit above the floor) is none.
        Some((_, w2)) if w2 < floor.mul_f64(0.8) || w2 < w1.mul_f64(GROWTH) => Err(Finding::fail(
            want,
            format!("first retry after {w1:?}, second after {w2:?}"),
        )),
        Some((_, w2)) => Ok(format!(
            "first retry after {w1:?}, second after {w2:?} ({:.1}×)",
            w2.as_secs_f64() / w1.as_secs_f64().max(1e-3)
        )),
    }
}

fn gives_up(ctx: &mut Ctx<'_>) -> CaseResult {
    let max = ctx.cfg.dial_failures;
    let a = announce(ctx)?;
    let c = first_dial(ctx, &a)?;
    let mut failed_at = fail_dial(ctx, c, 1)?;
    let mut waits = Vec::new();
    for n in 2..=max {
        let bound = ctx
            .cfg
            .retry_max
            .saturating_mul(1 << (n - 2).min(16))
            .min(ctx.cfg.max_backoff);
        match next_dial(&a, failed_at, late(bound))? {
            Some((c, w)) => {
                waits.push(w);
                failed_at = fail_dial(ctx, c, n)?;
            }
            None => {
                return Ok(format!(
                    "no dial after {} failed dial(s) (waits {waits:?}){}",
                    n - 1,
                    expiry_note(ctx, &a)
                ))
            }
        }
    }
    // Any retry comes within the backoff cap; watch past it.
    let watch = ctx.cfg.max_backoff + ctx.cfg.quiet;
    match next_dial(&a, failed_at, watch)? {
        Some((_, w)) => Err(Finding::fail(
            format!("no dial after {max} consecutive failed dials"),
            format!(
                "dial {} came {w:?} after failure {max} (waits before: {waits:?})",
                max + 1
            ),
        )),
        None => Ok(format!(
            "{max} dials failed (waits {waits:?}); no dial within {watch:?} after the last{}",
            expiry_note(ctx, &a)
        )),
    }
}

/// Says so when the peer's expiry, not the failure count, may be why the
/// dials stopped.
fn expiry_note(ctx: &Ctx<'_>, a: &Announced) -> String {
    if a.sent.elapsed() >= ctx.cfg.peer_expiry {
        format!(
            " (the peer's {:?} expiry also passed meanwhile)",
            ctx.cfg.peer_expiry
        )
    } else {
        String::new()
    }
}

fn expired_not_redialed(ctx: &mut Ctx<'_>) -> CaseResult {
    let a = announce(ctx)?;
    let mut c = first_dial(ctx, &a)?;
    read_hello(&mut c, ctx)?;
    c.send(&accept_frame(&ctx.cfg.key))?;
    // Keep the connection until the peer's only announcement is older than
    // the expiry (plus slack for the implementation's timer); WIRE.md says
    // nothing of the connection itself, so whether it is closed meanwhile is
    // only reported. Dials that come meanwhile are accepted as they come
    // (a backlog left to fill would later pass for dials made after the
    // expiry) and reported with when they came: the peer was still fresh.
    let until = a.sent + ctx.cfg.peer_expiry + ctx.cfg.quiet;
    let step = Duration::from_millis(50);
    let mut conn = Some(c);
    let mut closed = "kept the connection open".to_string();
    let mut fresh_dials = Vec::new();
    while Instant::now() < until {
        let left = until.saturating_duration_since(Instant::now()).min(step);
        match conn.as_mut() {
            Some(c) => {
                if c.expect_open(left).is_err() {
                    closed = format!(
                        "closed the connection {:?} after the announcement",
                        a.sent.elapsed()
                    );
                    conn = None;
                }
            }
            None => std::thread::sleep(left),
        }
        while a.l.accept_within(Duration::ZERO)?.is_some() {
            fresh_dials.push(a.sent.elapsed());
        }
    }
    drop(conn);
    let fresh = if fresh_dials.is_empty() {
        String::new()
    } else {
        format!("; dials while the peer was fresh, after the announcement: {fresh_dials:?}")
    };
    let since = Instant::now();
    let watch = late(ctx.cfg.retry_max) + ctx.cfg.quiet;
    match next_dial(&a, since, watch)? {
        Some((_, w)) => Err(Finding::fail(
            format!(
                "no dial to a peer silent for more than {:?}",
                ctx.cfg.peer_expiry
            ),
            format!(
                "dialed again {w:?} after the connection dropped, {:?} after the peer's only announcement{fresh}",
                a.sent.elapsed()
            ),
        )),
        None => Ok(format!(
            "the implementation {closed}; no dial within {watch:?} after the connection dropped{fresh}"
        )),
    }
}
