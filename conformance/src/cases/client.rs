//! The implementation dials the suite: its HELLO, how it judges ACCEPT, its
//! handshake deadline, and the stream it sends.

use std::net::SocketAddr;
use std::time::Instant;

use super::{case, deadline_slack, usable};
use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::wire::{
    self, accept_frame, frame, header, pattern, read_hello, ty, Conn, Listener, Observed, Streams,
};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R1-5.2/3", Must, ImplDials, Tcp, false, "The implementation's HELLO is well-formed and its MAC verifies",
            "WIRE.md §3.1: Client sends HELLO: type 4, stream 0, seq 0, length 36, payload `node_uuid(16) | MAC(key, node_uuid || challenge_be32, 16) | challenge_be32(4)`.",
            |ctx| { let (mut c, _) = dialed(ctx, None)?; let (node, ch) = read_hello(&mut c, ctx)?; Ok(format!("HELLO from {node}, challenge {ch:#010x}")) }),
        case!("R1-5.3/1", Must, ImplDials, Tcp, false, "An ACCEPT whose token MAC does not verify makes the client close",
            "WIRE.md §3.4: Client requires the first frame it reads to be such an ACCEPT with a valid MAC; otherwise it closes.",
            |ctx| { let mut a = accept_frame(&ctx.cfg.key); a[14 + 15] ^= 1; client_closes(ctx, &a) }),
        case!("R1-5.3/2", Must, ImplDials, Tcp, false, "An ACCEPT of 15 bytes makes the client close",
            "WIRE.md §3.3: Server replies ACCEPT: type 5, stream 0, seq 0, length 16. §3.4: otherwise it closes.",
            |ctx| { let a = accept_frame(&ctx.cfg.key); let mut f = header(1, ty::ACCEPT, 0, 0, 15).to_vec(); f.extend_from_slice(&a[14..29]); client_closes(ctx, &f) }),
        case!("R1-5.3/3", Must, ImplDials, Tcp, false, "A DATA frame instead of the ACCEPT makes the client close",
            "WIRE.md §3.4: Client requires the first frame it reads to be such an ACCEPT; otherwise it closes.",
            |ctx| client_closes(ctx, &frame(ty::DATA, 2, 0, b"not an accept"))),
        case!("R1-5.3/4", Must, ImplDials, Tcp, false, "An ACCEPT on stream 1 makes the client close",
            "WIRE.md §3.3: ACCEPT: type 5, stream 0, seq 0, length 16. §3.4: otherwise it closes.",
            |ctx| { let mut a = accept_frame(&ctx.cfg.key); a[5] = 1; client_closes(ctx, &a) }),
        case!("R1-5.3/5", Must, ImplDials, Tcp, false, "An ACCEPT with version 2 makes the client close",
            "WIRE.md §2: version | 1. §3.4: otherwise it closes.",
            |ctx| { let mut a = accept_frame(&ctx.cfg.key); a[0] = 2; client_closes(ctx, &a) }),
        case!("R1-5.3/6", Must, ImplDials, Tcp, false, "An ACCEPT signed with another key makes the client close",
            "WIRE.md §3.4: Client requires the first frame it reads to be such an ACCEPT with a valid MAC; otherwise it closes.",
            |ctx| client_closes(ctx, &accept_frame(b"not-the-key-0123456789abcdef"))),
        case!("R1-5.4/1", Must, ImplDials, Tcp, false, "The client sends nothing after its HELLO until the ACCEPT",
            "WIRE.md §3.4: A client sends no DATA before ACCEPT arrives.",
            no_data_before_accept),
        case!("R1-5.4/2", Must, ImplDials, Tcp, false, "After the ACCEPT the client's tensor arrives intact as one well-formed stream",
            "RFC-0001 §5.4: [Client verifies signature] [Connection established] <== DATA Frames ==>. WIRE.md §4: DATA frames with seq 0, 1, 2, … closed by one END frame.",
            client_payload),
        case!("R1-5.4/3", Must, ImplDials, Tcp, false, "An ACCEPT written one byte at a time is accepted",
            "WIRE.md §2: Every frame is a 14-byte header followed by `length` payload bytes (TCP is a byte stream).",
            accept_slowly),
        case!("R1-6.3/4", Should, ImplDials, Tcp, false, "The client side of a connection opens odd stream ids",
            "RFC-0001 §6.3: Client-initiated streams: Odd numbers (1, 3, 5, ...). WIRE.md §4: this project's senders follow that.",
            client_odd_ids),
        case!("R1-6.3/5", Must, ImplDials, Tcp, true, "The client accepts an odd stream id from the server side",
            "WIRE.md §4: receivers MUST NOT reject an id for its parity (the Python implementation uses odd ids on both sides).",
            |ctx| { ctx.require_echo()?; let (mut c, _) = handshaken(ctx, None)?; let r = usable(ctx, &mut c)?; clean_exit(ctx, c)?; Ok(r) }),
        case!("R1-8.1/3", Must, ImplDials, Tcp, false, "A HELLO from the server after the ACCEPT makes the client close",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... HELLO or ACCEPT again.",
            |ctx| { let f = wire::hello_frame(&ctx.cfg.key, &wire::uuid_v4(), wire::challenge()); closes_after_established(ctx, &f) }),
        case!("R1-8.1/4", Must, ImplDials, Tcp, false, "A second ACCEPT makes the client close",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... HELLO or ACCEPT again.",
            |ctx| { let f = accept_frame(&ctx.cfg.key); closes_after_established(ctx, &f) }),
        case!("R1-9.2/14", Must, ImplDials, Tcp, false, "The client skips an unknown frame type from the server",
            "RFC-0001 §9.2: Invalid Frame Type: Frame MUST be ignored. Connection remains open.",
            |ctx| { let (mut c, _) = handshaken(ctx, None)?; c.send(&frame(42, 0, 0, b"future"))?; let r = usable(ctx, &mut c)?; clean_exit(ctx, c)?; Ok(r) }),
        case!("R1-9.2/15", Must, ImplDials, Tcp, false, "DATA on stream 0 from the server makes the client close",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... DATA or END on stream 0.",
            |ctx| closes_after_established(ctx, &frame(ty::DATA, 0, 0, b"x"))),
        case!("R1-9.2/16", Must, ImplDials, Tcp, false, "Version 2 from the server after the ACCEPT makes the client close",
            "RFC-0001 §9.2: Invalid Frame Version: Connection MUST be closed. WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: version != 1.",
            |ctx| { let mut f = frame(ty::DATA, 2, 0, b"x"); f[0] = 2; closes_after_established(ctx, &f) }),
        case!("R1-9.3/5", Must, ImplDials, Tcp, false, "A client without an ACCEPT closes at its handshake deadline",
            "WIRE.md §3.5: ACCEPT within 10 s of HELLO sent (client) ... or the connection is closed (RFC-0001 §9.3).",
            |ctx| { let (mut c, _) = dialed(ctx, None)?; read_hello(&mut c, ctx)?; let d = deadline_slack(ctx); let t = Instant::now(); c.expect_close(d).map(|_| format!("closed after {:?}", t.elapsed())) }),
        case!("R1-10.4/8", Must, ImplDials, Tcp, false, "A DATA length of 2^32-1 from the server makes the client close without waiting for the payload",
            "RFC-0001 §10.4: Enforce maximum frame size. Close connection if frame exceeds limit. WIRE.md §4: a payload longer than the local maximum [is a protocol error that closes the connection].",
            |ctx| closes_after_established(ctx, &header(1, ty::DATA, 2, 0, u32::MAX))),
        case!("R2-4.3/5", Must, ImplDials, Tcp, false, "Two HELLOs of the client carry different challenges",
            "WIRE.md §3.1: The challenge is 32 fresh random bits from a CSPRNG for every HELLO. RFC-0002 §4.3: Sender includes random 32-bit challenge.",
            two_challenges),
    ]
}

/// Listens, makes the implementation dial, and accepts its connection.
fn dialed(ctx: &mut Ctx<'_>, payload: Option<&[u8]>) -> Result<(Conn, SocketAddr), Finding> {
    let l = Listener::bind(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))?;
    let addr = l.addr()?;
    ctx.imp.dial(addr, payload)?;
    let c = l.accept(ctx, "the implementation dials the suite")?;
    Ok((c, addr))
}

/// `dialed`, then the suite's half of a valid handshake.
fn handshaken(ctx: &mut Ctx<'_>, payload: Option<&[u8]>) -> Result<(Conn, SocketAddr), Finding> {
    let (mut c, a) = dialed(ctx, payload)?;
    read_hello(&mut c, ctx)?;
    c.send(&accept_frame(&ctx.cfg.key))?;
    Ok((c, a))
}

/// Closes `c` after the suite played a valid server to the end: a client
/// program must then exit with success. A one-shot client closes by itself
/// once its stream is out; the suite lets it close first (for `--quiet`),
/// so that who closes first is never a race the client is judged on.
fn clean_exit(ctx: &mut Ctx<'_>, mut c: Conn) -> Result<(), Finding> {
    let _ = c.expect_close(ctx.cfg.quiet);
    drop(c);
    ctx.imp.expect_clean_exit(ctx.cfg.timeout)
}

fn client_closes(ctx: &mut Ctx<'_>, answer: &[u8]) -> CaseResult {
    let (mut c, _) = dialed(ctx, Some(b"must not be sent"))?;
    read_hello(&mut c, ctx)?;
    c.send(answer)?;
    let before = c.received;
    let r = c.expect_close(ctx.cfg.timeout)?;
    if c.received > before {
        return Err(Finding::fail(
            "close without sending anything",
            format!("sent {} bytes after the bad ACCEPT", c.received - before),
        ));
    }
    Ok(r)
}

fn closes_after_established(ctx: &mut Ctx<'_>, bytes: &[u8]) -> CaseResult {
    let (mut c, _) = handshaken(ctx, None)?;
    c.expect_open(ctx.cfg.quiet / 4)?;
    c.send(bytes)?;
    c.expect_close(ctx.cfg.timeout)
}

fn no_data_before_accept(ctx: &mut Ctx<'_>) -> CaseResult {
    let payload = pattern(30, 1000);
    let (mut c, _) = dialed(ctx, Some(&payload))?;
    read_hello(&mut c, ctx)?;
    // Watch for less than the client's own handshake deadline.
    let watch = ctx.cfg.quiet.min(ctx.cfg.handshake_timeout / 2);
    match c.next(watch)? {
        Observed::Silent { partial: 0 } => Ok(format!("nothing for {watch:?} after the HELLO")),
        other => Err(Finding::fail(
            "nothing until the ACCEPT",
            format!("{other:?}"),
        )),
    }
}

fn client_payload(ctx: &mut Ctx<'_>) -> CaseResult {
    // 60 000 bytes: as ASOC_PAYLOAD_HEX (120 000 characters) it still fits
    // in one environment string of a live client program (Linux: 128 KiB).
    let payload = pattern(31, 60_000);
    let (mut c, _) = handshaken(ctx, Some(&payload))?;
    let s = Streams::collect(&mut c, 1, ctx.cfg.timeout + ctx.cfg.timeout)?;
    s.expect_payloads(&[&payload])?;
    let (id, _, n) = &s.done[0];
    clean_exit(ctx, c)?;
    Ok(format!("stream {id}: {n} DATA frames, intact"))
}

fn accept_slowly(ctx: &mut Ctx<'_>) -> CaseResult {
    let payload = pattern(32, 100);
    let (mut c, _) = dialed(ctx, Some(&payload))?;
    read_hello(&mut c, ctx)?;
    let a = accept_frame(&ctx.cfg.key);
    c.send_slowly(&a, std::time::Duration::from_millis(3))?;
    let s = Streams::collect(&mut c, 1, ctx.cfg.timeout + ctx.cfg.timeout)?;
    s.expect_payloads(&[&payload])?;
    clean_exit(ctx, c)?;
    Ok("accepted; the tensor followed".into())
}

fn client_odd_ids(ctx: &mut Ctx<'_>) -> CaseResult {
    let payload = pattern(33, 10);
    let (mut c, _) = handshaken(ctx, Some(&payload))?;
    let s = Streams::collect(&mut c, 1, ctx.cfg.timeout + ctx.cfg.timeout)?;
    let id = s.done[0].0;
    clean_exit(ctx, c)?;
    if id % 2 == 1 {
        Ok(format!("stream {id}"))
    } else {
        Err(Finding::fail("an odd stream id", format!("stream {id}")))
    }
}

fn two_challenges(ctx: &mut Ctx<'_>) -> CaseResult {
    let (mut a, _) = dialed(ctx, None)?;
    let (_, c1) = read_hello(&mut a, ctx)?;
    drop(a);
    let (mut b, _) = dialed(ctx, None)?;
    let (_, c2) = read_hello(&mut b, ctx)?;
    if c1 == c2 {
        Err(Finding::fail(
            "a fresh challenge per HELLO",
            format!("challenge {c1:#010x} twice"),
        ))
    } else {
        Ok(format!("{c1:#010x} then {c2:#010x}"))
    }
}
