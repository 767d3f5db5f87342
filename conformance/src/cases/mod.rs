//! The case library. Every case is data plus a function; ids never change
//! once published (a retired case keeps its number, unused).

use std::time::Duration;

use crate::case::{Case, CaseResult, Finding, Wire};
use crate::target::Ctx;
use crate::wire::{self, Conn, Streams};

mod client;
mod discovery;
mod handshake;
mod limits;
mod reconnect;
mod streaming;
mod v2;

/// Builds a [`Case`]: `case!(id, LEVEL, Role, Transport, echo?, title, requirement, fn)`.
macro_rules! case {
    ($id:literal, $level:ident, $role:ident, $tr:ident, $echo:literal, $title:literal, $req:literal, $f:expr) => {
        $crate::case::Case {
            id: $id,
            title: $title,
            requirement: $req,
            level: $crate::case::Level::$level,
            role: $crate::case::Role::$role,
            transport: $crate::case::Transport::$tr,
            needs_echo: $echo,
            run: $f,
        }
    };
}
pub(crate) use case;

/// The cases that test `wire`: WIRE.md's `R1-…`/`R2-…` for v1,
/// WIRE-v2.md's `R3-…` for v2; sorted by section and number.
#[must_use]
pub fn for_wire(wire: Wire) -> Vec<Case> {
    all().into_iter().filter(|c| c.wire() == wire).collect()
}

/// Every case of both wire versions, sorted by section and number.
#[must_use]
pub fn all() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(discovery::cases());
    v.extend(handshake::cases());
    v.extend(client::cases());
    v.extend(streaming::cases());
    v.extend(limits::cases());
    v.extend(reconnect::cases());
    v.extend(v2::cases());
    v.sort_by(|a, b| {
        let key = |c: &Case| {
            let nums: Vec<u32> = c
                .section()
                .trim_start_matches(|ch: char| ch != '-')
                .trim_start_matches('-')
                .split('.')
                .filter_map(|n| n.parse().ok())
                .collect();
            (c.id.chars().nth(1), nums, c.number())
        };
        key(a).cmp(&key(b))
    });
    v
}

/// A connection that completed the handshake.
pub(crate) fn established(ctx: &mut Ctx<'_>) -> Result<Conn, Finding> {
    let mut c = Conn::connect(ctx)?;
    c.handshake(ctx)?;
    Ok(c)
}

/// Sends `bytes` as the first thing on a fresh connection and requires a
/// silent close: the RFC's requirement (RFC-0001 §9.1: close, no error
/// frame). WIRE.md §3.2 adds "at once"; a close that comes later than the
/// suite's `--timeout`, yet by the handshake deadline plus slack, passes,
/// and the delay is reported.
pub(crate) fn refused_silently(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    c.send(bytes)?;
    let start = std::time::Instant::now();
    let within = ctx.cfg.timeout.max(deadline_slack(ctx));
    let r = c.expect_silent_close(within)?;
    let took = start.elapsed();
    if took <= ctx.cfg.timeout {
        Ok(r)
    } else {
        Ok(format!(
            "{r}: not at once (WIRE.md §3.2 asks for a close at once, within the suite's {:?}); \
             the RFC asks only for the close without an error frame",
            ctx.cfg.timeout
        ))
    }
}

/// Like [`refused_silently`], where the RFC itself says "immediately"
/// (RFC-0001 §9.1, an invalid HMAC): the close must come within the
/// suite's `--timeout`.
pub(crate) fn refused_immediately(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    c.send(bytes)?;
    c.expect_silent_close(ctx.cfg.timeout)
}

/// Sends `bytes` on an established connection and requires a close.
pub(crate) fn closes_after(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let mut c = established(ctx)?;
    c.send(bytes)?;
    c.expect_close(ctx.cfg.timeout)
}

/// Sends `bytes` on an established connection, then a stream; the
/// connection must stay usable (the stream echoed when echo is on, else
/// the connection still open).
pub(crate) fn skipped_and_usable(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let mut c = established(ctx)?;
    c.send(bytes)?;
    usable(ctx, &mut c)
}

/// Checks that `c` still carries a stream.
pub(crate) fn usable(ctx: &mut Ctx<'_>, c: &mut Conn) -> CaseResult {
    let payload = wire::pattern(9, 1000);
    c.send(&wire::stream_frames(1, &[&payload]))?;
    if ctx.cfg.echo {
        let s = Streams::collect(c, 1, ctx.cfg.timeout)?;
        s.expect_payloads(&[&payload])?;
        Ok("connection still usable: the next stream was echoed intact".into())
    } else {
        c.expect_open(ctx.cfg.quiet)?;
        Ok("connection still open after the next stream".into())
    }
}

/// Sends `frames` (whole streams) and requires `payloads` back.
pub(crate) fn echoes(
    ctx: &mut Ctx<'_>,
    frames: &[u8],
    payloads: &[&[u8]],
) -> Result<Streams, Finding> {
    ctx.require_echo()?;
    let mut c = established(ctx)?;
    c.send(frames)?;
    let s = Streams::collect(&mut c, payloads.len(), ctx.cfg.timeout + ctx.cfg.timeout)?;
    s.expect_payloads(payloads)?;
    Ok(s)
}

/// The deadline plus the slack the suite allows for "within".
pub(crate) fn deadline_slack(ctx: &Ctx<'_>) -> Duration {
    ctx.cfg.handshake_timeout + ctx.cfg.timeout
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::all;
    use crate::case::Level;
    use crate::spec::{section, SECTIONS};

    #[test]
    fn ids_are_unique_and_well_formed() {
        let cases = all();
        let mut seen = HashSet::new();
        for c in &cases {
            assert!(seen.insert(c.id), "duplicate id {}", c.id);
            assert!(
                c.id.starts_with("R1-") || c.id.starts_with("R2-") || c.id.starts_with("R3-"),
                "{}",
                c.id
            );
            assert!(c.number() >= 1, "{} has no case number", c.id);
            assert!(!c.title.is_empty() && !c.requirement.is_empty(), "{}", c.id);
        }
        assert!(cases.len() >= 60, "only {} cases", cases.len());
    }

    #[test]
    fn every_named_section_exists() {
        for c in all() {
            assert!(
                section(c.section()).is_some(),
                "{} names an unknown section",
                c.id
            );
        }
        let mut ids = HashSet::new();
        for s in SECTIONS {
            assert!(ids.insert(s.id), "section {} listed twice", s.id);
        }
    }

    #[test]
    fn every_section_has_a_binding_case() {
        for s in SECTIONS {
            assert!(
                all()
                    .iter()
                    .any(|c| c.section() == s.id && c.level != Level::Info)
                    || s.id == "R2-7.4",
                "section {} has no MUST or SHOULD case",
                s.id
            );
        }
    }
}
