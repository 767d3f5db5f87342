//! The `R3-…` cases: WIRE-v2.md §2–§6, judged with the suite's own v2 peer
//! ([`crate::v2`]).

use std::time::Duration;

use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::v2::link::{self, Secure};
use crate::wire::{self, Conn};

mod client;
mod discovery;
mod handshake;
mod transport;
mod versions;

/// Every v2 case.
pub(super) fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.extend(handshake::cases());
    v.extend(client::cases());
    v.extend(transport::cases());
    v.extend(discovery::cases());
    v.extend(versions::cases());
    v
}

/// A connection that completed the v2 handshake (CONFIRM sent).
pub(crate) fn established(ctx: &mut Ctx<'_>) -> Result<Secure, Finding> {
    link::connect(ctx)
}

/// How long a close "at once" may take: the suite's timeout, but well
/// inside the target's handshake deadline, so that a server that waits for
/// more bytes and closes only at its deadline is told apart.
pub(crate) fn at_once(ctx: &Ctx<'_>) -> Duration {
    ctx.cfg.timeout.min(ctx.cfg.handshake_timeout / 2)
}

/// Sends `bytes` first on a fresh connection; requires a silent close
/// within [`at_once`].
pub(crate) fn refused_at_once(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    c.send(bytes)?;
    let within = at_once(ctx);
    c.expect_silent_close(within)
}

/// Sends `bytes` first on a fresh connection; requires a silent close
/// within the suite's timeout.
pub(crate) fn refused_silently(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    c.send(bytes)?;
    c.expect_silent_close(ctx.cfg.timeout)
}

/// Sends `bytes` on an established connection, then a stream: the
/// connection must close, with nothing delivered (no echo of the stream).
pub(crate) fn closes_after(
    ctx: &mut Ctx<'_>,
    make: impl FnOnce(&mut Secure) -> Vec<u8>,
) -> CaseResult {
    let mut s = established(ctx)?;
    let bytes = make(&mut s);
    s.conn.send(&bytes)?;
    s.expect_close_delivering_nothing(ctx.cfg.timeout)
}

/// Checks that `s` still carries a stream (echoed when echo is on).
pub(crate) fn usable(ctx: &mut Ctx<'_>, s: &mut Secure) -> CaseResult {
    let payload = wire::pattern(19, 1000);
    s.send_stream(1, &[&payload])?;
    if ctx.cfg.echo {
        let got = s.collect(1, ctx.cfg.timeout)?;
        got.expect_payloads(&[&payload])?;
        Ok("connection usable: the next stream was echoed intact".into())
    } else {
        s.conn.expect_open(ctx.cfg.quiet)?;
        Ok("connection still open after the next stream".into())
    }
}

/// `wire::hex`.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
