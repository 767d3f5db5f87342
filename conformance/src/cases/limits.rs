//! Per-address limits: lockout after failed authentications and the
//! connection-attempt rate. Each case uses source addresses of its own
//! (127.a.b.c), so it never locks out another case.

use std::net::IpAddr;

use super::case;
use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::wire::{self, challenge, hello_frame, ty, uuid_v4, Conn, Observed, Streams};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R1-10.4/4", Must, SuiteDials, Tcp, false, "An address is refused after the configured number of failed authentications",
            "RFC-0001 §10.4: Close connections after 5 failed authentication attempts from same IP. WIRE.md §6: failed authentications per IP before that IP is refused | 5.",
            |ctx| { let src = loopback_source(ctx)?; fail_auth(ctx, src, ctx.cfg.lockout_threshold)?; refused_from(ctx, src) }),
        case!("R1-10.4/5", Must, SuiteDials, Tcp, false, "A lockout is per address: another address is still accepted",
            "WIRE.md §6: failed authentications per IP before that IP is refused (the lockout is per IP).",
            per_address_lockout),
        case!("R1-10.4/6", Should, SuiteDials, Tcp, false, "One failure fewer than the limit does not lock an address out",
            "WIRE.md §6: failed authentications per IP before that IP is refused | 5 (not fewer).",
            |ctx| { let src = loopback_source(ctx)?; fail_auth(ctx, src, ctx.cfg.lockout_threshold.saturating_sub(1))?; let mut c = Conn::connect_src(ctx, src)?; c.handshake(ctx)?; Ok("still accepted".into()) }),
        case!("R1-10.4/9", Must, SuiteDials, Tcp, false, "A connection beyond the concurrent-connection cap gets no ACCEPT; the others stay usable",
            "RFC-0001 §10.4: Limit concurrent connections. WIRE.md §6: max concurrent connections | 1024 (configurable).",
            connection_cap),
        case!("R2-10.2/2", Should, SuiteDials, Tcp, false, "Connection attempts above the hourly limit from one address are refused",
            "WIRE.md §6: connection attempts per IP per hour | 100. (RFC-0002 §10.2 sketches this limit under Future Extensions, where it is not a requirement.)",
            attempt_rate),
    ]
}

fn loopback_source(ctx: &mut Ctx<'_>) -> Result<IpAddr, Finding> {
    let to = ctx.endpoint()?.tcp;
    ctx.source_for(to).ok_or_else(|| {
        Finding::Skip("needs a loopback target (distinct 127.x source addresses)".into())
    })
}

/// `n` failed authentications (bad MAC) from `src`.
fn fail_auth(ctx: &mut Ctx<'_>, src: IpAddr, n: u32) -> Result<(), Finding> {
    for _ in 0..n {
        let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge());
        f[20] ^= 0x40;
        let mut c = Conn::connect_src(ctx, src)?;
        c.send(&f)?;
        c.expect_silent_close(ctx.cfg.timeout)
            .map_err(|e| Finding::Error(format!("a bad HELLO was not refused: {e:?}")))?;
    }
    Ok(())
}

/// A valid HELLO from `src` must get no ACCEPT.
fn refused_from(ctx: &mut Ctx<'_>, src: IpAddr) -> CaseResult {
    let to = ctx.endpoint()?.tcp;
    let mut c = match Conn::connect_from(to, Some(src), ctx.cfg.timeout) {
        Ok(c) => c,
        Err(e) => return Ok(format!("connection refused by TCP: {e}")),
    };
    c.send(&hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()))?;
    c.expect_silent_close(ctx.cfg.timeout)
        .map(|r| format!("valid HELLO from {src} refused: {r}"))
}

/// Locks out one address, requires another to be accepted, then checks that
/// the first is still refused: only then was "accepted while the other is
/// locked out" established.
fn per_address_lockout(ctx: &mut Ctx<'_>) -> CaseResult {
    let src = loopback_source(ctx)?;
    fail_auth(ctx, src, ctx.cfg.lockout_threshold)?;
    let other = ctx.sources.next();
    let mut c = Conn::connect_src(ctx, other)?;
    c.handshake(ctx)?;
    drop(c);
    match refused_from(ctx, src) {
        Ok(how) => Ok(format!(
            "{other} accepted while {src} is locked out ({how})"
        )),
        Err(Finding::Fail { actual, .. }) => Err(Finding::Error(format!(
            "inconclusive: {other} was accepted, but {src} was not refused after {} failed \
             authentications either ({actual}), so no lockout was established for the other \
             address to be accepted during (see R1-10.4/4)",
            ctx.cfg.lockout_threshold
        ))),
        Err(e) => Err(e),
    }
}

fn attempt_rate(ctx: &mut Ctx<'_>) -> CaseResult {
    let src = loopback_source(ctx)?;
    let n = ctx.cfg.attempts_per_hour;
    for i in 0..n {
        let mut c = Conn::connect_src(ctx, src)?;
        c.handshake(ctx).map_err(|e| {
            Finding::Error(format!("attempt {} of {n} was not accepted: {e:?}", i + 1))
        })?;
    }
    refused_from(ctx, src)
}

fn connection_cap(ctx: &mut Ctx<'_>) -> CaseResult {
    let Some(n) = ctx.cfg.max_connections else {
        return Err(Finding::Skip(
            "the target's connection cap is not known (--max-connections)".into(),
        ));
    };
    // Each from an address of its own: only the cap, not a per-address
    // limit, can refuse them.
    let mut open = Vec::new();
    for i in 0..n {
        let mut c = Conn::connect(ctx)?;
        c.handshake(ctx).map_err(|e| {
            Finding::Error(format!(
                "inconclusive: connection {} of {n} was not accepted ({e:?}); \
                 is the cap lower, or does the target hold connections of its own?",
                i + 1
            ))
        })?;
        open.push(c);
    }
    let to = ctx.endpoint()?.tcp;
    let src = ctx.source_for(to);
    let extra = match Conn::connect_from(to, src, ctx.cfg.timeout) {
        Err(e) => format!("refused by TCP ({e})"),
        Ok(mut c) => {
            c.send(&hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()))?;
            match c.next(ctx.cfg.timeout)? {
                Observed::Closed { .. } => "closed without an ACCEPT".to_string(),
                Observed::Silent { .. } => {
                    format!("left without an ACCEPT for {:?}", ctx.cfg.timeout)
                }
                Observed::Frame(f) => {
                    let what = if f.ty == ty::ACCEPT {
                        "an ACCEPT".to_string()
                    } else {
                        f.describe()
                    };
                    return Err(Finding::fail(
                        format!("connection {} refused or closed without an ACCEPT", n + 1),
                        what,
                    ));
                }
            }
        }
    };
    // The first n are untouched by the refusal: each still carries a stream.
    let payload = wire::pattern(41, 500);
    for c in &mut open {
        c.send(&wire::stream_frames(1, &[&payload]))?;
    }
    if !ctx.cfg.echo {
        std::thread::sleep(ctx.cfg.quiet);
    }
    for (i, c) in open.iter_mut().enumerate() {
        let usable = if ctx.cfg.echo {
            Streams::collect(c, 1, ctx.cfg.timeout).and_then(|s| s.expect_payloads(&[&payload]))
        } else {
            c.expect_open(std::time::Duration::from_millis(10))
        };
        usable.map_err(|e| {
            Finding::fail(
                format!("the first {n} connections still usable"),
                format!("connection {}: {e:?}", i + 1),
            )
        })?;
    }
    Ok(format!(
        "{n} connections accepted; connection {}: {extra}; the first {n} still usable",
        n + 1
    ))
}
