//! Versions and downgrade (WIRE-v2.md §6): a v2-only node refuses v1, a
//! failed v2 dial is never retried as v1, and a node id seen through v2
//! cannot be claimed through v1.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use super::refused_silently;
use crate::case::{Case, CaseResult, Finding};
use crate::cases::case;
use crate::target::Ctx;
use crate::v2::link::{self, read_hello2};
use crate::v2::{self, discovery_key, unix_ms, Announcement};
use crate::wire::{self, challenge, hello_frame, uuid_v4, Conn, Listener, Observed};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R3-6/1", Must, SuiteDials, Tcp, false, "A v1 HELLO to a v2-only server is refused silently (v1_disabled)",
            "WIRE-v2.md §6: A server with v1 disabled that receives a v1 HELLO closes silently and reports the auth failure `v1_disabled`.",
            |ctx| { v2_only(ctx)?; let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); refused_silently(ctx, &f) }),
        case!("R3-6/2", Must, SuiteDials, Tcp, false, "Refused v1 HELLOs do not lock the address out",
            "WIRE-v2.md §6: [v1_disabled] is not counted as a failed authentication for lockout.",
            v1_not_counted),
        case!("R3-6/3", Must, ImplDials, Tcp, false, "A failed v2 dial is never retried as v1",
            "WIRE-v2.md §6: A failed v2 dial is never retried as v1. A node dials v1 only to a static peer configured as v1, or to a discovered peer seen only through v1 announcements.",
            no_v1_fallback),
        case!("R3-6/4", Must, SuiteDials, Udp, false, "A v1 HELLO claiming a node id seen through v2 announcements is refused (downgrade)",
            "WIRE-v2.md §6: Once a v2 announcement from a node id has been accepted, that node id is dialed with v2 only, and a v1 HELLO claiming it is refused (`downgrade`), while the peer stays in the table.",
            downgrade),
        case!("R3-6/5", Must, SuiteDials, Tcp, false, "A connection reports the version and suite it runs",
            "WIRE-v2.md §6: Every established connection reports the version and suite it runs.",
            |_| Err(Finding::Skip("reports are not on the wire; covered by asoc-proto's test connection::v2_handshake_establishes_both_sides_with_the_same_session (the Established event's version and suite)".into()))),
    ]
}

fn v2_only(ctx: &Ctx<'_>) -> Result<(), Finding> {
    if ctx.cfg.allow_v1 {
        Err(Finding::Skip("the target accepts v1 (--allow-v1)".into()))
    } else {
        Ok(())
    }
}

fn v1_not_counted(ctx: &mut Ctx<'_>) -> CaseResult {
    v2_only(ctx)?;
    let to = ctx.endpoint()?.tcp;
    let Some(src) = ctx.source_for(to) else {
        return Err(Finding::Skip(
            "needs a loopback target (distinct 127.x source addresses)".into(),
        ));
    };
    let n = ctx.cfg.lockout_threshold + 1;
    for _ in 0..n {
        let mut c = Conn::connect_src(ctx, src)?;
        c.send(&hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()))?;
        c.expect_silent_close(ctx.cfg.timeout).map_err(|e| {
            Finding::Error(format!("a v1 HELLO was not refused (see R3-6/1): {e:?}"))
        })?;
    }
    let i = link::initiator(ctx, ctx.cfg.suite)?;
    let mut c = Conn::connect_src(ctx, src)?;
    c.send(i.hello())?;
    link::expect_accept2(&mut c, ctx, i)?;
    Ok(format!(
        "{n} v1 HELLOs refused; a HELLO2 from {src} still accepted"
    ))
}

fn no_v1_fallback(ctx: &mut Ctx<'_>) -> CaseResult {
    let l = Listener::bind(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
    ctx.imp.dial(l.addr()?, Some(b"never over v1"))?;
    let mut c = l.accept(ctx, "the implementation dials the suite")?;
    read_hello2(&mut c, ctx)?;
    drop(c);
    // Every later dial within the re-dial schedule must be v2 again.
    let watch = ctx.cfg.retry_max * 3 + ctx.cfg.quiet;
    let end = Instant::now() + watch;
    let mut dials = 0;
    while let Some(mut c) = l.accept_within(end.saturating_duration_since(Instant::now()))? {
        dials += 1;
        match c.next(ctx.cfg.timeout)? {
            Observed::Frame(f) if f.version == v2::VERSION => {}
            Observed::Frame(f) => {
                return Err(Finding::fail(
                    "every re-dial with a HELLO2",
                    format!(
                        "re-dial {dials} after the failed v2 dial sent {}",
                        f.describe()
                    ),
                ))
            }
            other => {
                return Err(Finding::Error(format!(
                    "inconclusive: re-dial {dials} sent no frame ({other:?})"
                )))
            }
        }
    }
    Ok(format!("{dials} re-dial(s) within {watch:?}, all v2"))
}

fn downgrade(ctx: &mut Ctx<'_>) -> CaseResult {
    if !ctx.cfg.allow_v1 {
        return Err(Finding::Skip(
            "needs a target with v1 enabled (--allow-v1); a v2-only one refuses every v1 HELLO (R3-6/1)".into(),
        ));
    }
    let to = ctx.udp_target()?;
    let ip = if to.ip().is_loopback() {
        ctx.sources.next()
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let l = Listener::bind(ip)?;
    let sock = wire::udp_from(ip)?;
    let node = wire::high_uuid();
    let a = Announcement::new(&ctx.cfg.community, node, l.addr()?.port(), unix_ms());
    wire::send_datagram(&sock, &a.encode(&discovery_key(&ctx.cfg.key)), to)?;
    let Some(mut dialed) = l.accept_within(ctx.cfg.timeout)? else {
        return Err(Finding::Error(
            "inconclusive: the v2 announcement was not dialed (see R3-5/4)".into(),
        ));
    };
    read_hello2(&mut dialed, ctx)?;
    refused_silently(ctx, &hello_frame(&ctx.cfg.key, &node, challenge()))?;
    // The control: a v1 HELLO of a node never seen through v2 is accepted.
    let mut c = Conn::connect(ctx)?;
    c.handshake(ctx).map_err(|e| {
        Finding::Error(format!(
            "inconclusive: a v1 HELLO of a new node id was refused too ({e:?})"
        ))
    })?;
    Ok(format!(
        "v1 HELLO claiming {node} refused; a v1 HELLO of another node id accepted"
    ))
}
