//! The suite dials the implementation: HELLO, ACCEPT, authentication
//! failures, the handshake deadline, replays and session tokens.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use asoc_proto::auth::hmac_sha256;

use super::{case, closes_after, deadline_slack, refused_immediately, refused_silently};
use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::wire::{
    self, challenge, frame, header, hello_frame, hello_mac, hello_payload_with, ty, uuid_v4, Conn,
    Observed,
};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R1-5.2/1", Must, SuiteDials, Tcp, false, "A valid HELLO gets an ACCEPT that verifies",
            "WIRE.md §3.3: Server replies ACCEPT: type 5, stream 0, seq 0, length 16, payload `session_token(8 random bytes) | MAC(key, session_token, 8)`.",
            valid_hello),
        case!("R1-5.2/2", Must, SuiteDials, Tcp, false, "A HELLO written one byte at a time is accepted",
            "WIRE.md §2: Every frame is a 14-byte header followed by `length` payload bytes (TCP is a byte stream; segment boundaries carry no meaning).",
            hello_byte_by_byte),
        case!("R1-7.1/1", Must, SuiteDials, Tcp, false, "A HELLO in the RFC's 4-bit packed header form is refused",
            "WIRE.md §2: Version and type are one byte each: `01 04 …` starts a HELLO frame. (The 13-byte `0x14` header of RFC-0001 Appendix A.1 is wrong.)",
            packed_header),
        case!("R1-7.1/2", Must, SuiteDials, Tcp, false, "A HELLO with version 2 is refused silently",
            "WIRE.md §2: version | 1. WIRE.md §3.2: Server requires the first frame to be a HELLO of exactly 36 bytes ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[0] = 2; refused_silently(ctx, &f) }),
        case!("R1-7.1/3", Must, SuiteDials, Tcp, false, "A HELLO with version 0 is refused silently",
            "WIRE.md §2: version | 1. WIRE.md §3.2: On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[0] = 0; refused_silently(ctx, &f) }),
        case!("R1-8.1/1", Must, SuiteDials, Tcp, false, "A second HELLO after the handshake closes the connection",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... HELLO or ACCEPT again.",
            |ctx| { let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); closes_after(ctx, &f) }),
        case!("R1-8.1/2", Must, SuiteDials, Tcp, false, "An ACCEPT sent to the server after the handshake closes the connection",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... HELLO or ACCEPT again.",
            |ctx| { let f = wire::accept_frame(&ctx.cfg.key); closes_after(ctx, &f) }),
        case!("R1-9.1/1", Must, SuiteDials, Tcp, false, "A HELLO with one MAC bit flipped is refused silently",
            "RFC-0001 §9.1: Invalid HMAC Signature: Server MUST close TCP connection immediately. No error frame is sent.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[14 + 16] ^= 0x01; refused_immediately(ctx, &f) }),
        case!("R1-9.1/2", Must, SuiteDials, Tcp, false, "A HELLO with an all-zero MAC is refused silently",
            "RFC-0001 §9.1: Invalid HMAC Signature: Server MUST close TCP connection immediately. No error frame is sent.",
            |ctx| { let n = uuid_v4(); let f = frame(ty::HELLO, 0, 0, &hello_payload_with(&n, &[0; 16], challenge())); refused_immediately(ctx, &f) }),
        case!("R1-9.1/3", Must, SuiteDials, Tcp, false, "A HELLO of 35 bytes is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO of exactly 36 bytes ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); let mut g = header(1, ty::HELLO, 0, 0, 35).to_vec(); g.extend_from_slice(&f[14..49]); refused_silently(ctx, &g) }),
        case!("R1-9.1/4", Must, SuiteDials, Tcp, false, "A HELLO of 37 bytes is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO of exactly 36 bytes ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); let mut g = header(1, ty::HELLO, 0, 0, 37).to_vec(); g.extend_from_slice(&f[14..]); g.push(0); refused_silently(ctx, &g) }),
        case!("R1-9.1/5", Must, SuiteDials, Tcp, false, "A HELLO on stream 1 is refused silently",
            "WIRE.md §3.1: Client sends HELLO: type 4, stream 0, seq 0, length 36. §3.2: On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[5] = 1; refused_silently(ctx, &f) }),
        case!("R1-9.1/6", Must, SuiteDials, Tcp, false, "A HELLO with seq 1 is refused silently",
            "WIRE.md §3.1: Client sends HELLO: type 4, stream 0, seq 0, length 36. §3.2: On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[9] = 1; refused_silently(ctx, &f) }),
        case!("R1-9.1/7", Must, SuiteDials, Tcp, false, "A DATA frame as the first frame is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| refused_silently(ctx, &frame(ty::DATA, 1, 0, b"tensor"))),
        case!("R1-9.1/8", Must, SuiteDials, Tcp, false, "An ACCEPT as the first frame is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| { let f = wire::accept_frame(&ctx.cfg.key); refused_silently(ctx, &f) }),
        case!("R1-9.1/9", Must, SuiteDials, Tcp, false, "An END as the first frame is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| refused_silently(ctx, &frame(ty::END, 1, 0, &[]))),
        case!("R1-9.1/10", Must, SuiteDials, Tcp, false, "A CONTROL frame as the first frame is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| refused_silently(ctx, &frame(ty::CONTROL, 0, 0, &[1, 2, 3, 4]))),
        case!("R1-9.1/11", Must, SuiteDials, Tcp, false, "An unknown frame type before the handshake is refused silently",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO (unknown types are skipped only once ESTABLISHED, §4).",
            |ctx| refused_silently(ctx, &frame(6, 0, 0, &[0; 36]))),
        case!("R1-9.1/12", Must, SuiteDials, Tcp, false, "A HELLO header announcing 4 GiB is refused without waiting for the payload",
            "WIRE.md §3.2: Server requires the first frame to be a HELLO of exactly 36 bytes ... On any failure it closes the TCP connection at once and sends nothing.",
            |ctx| refused_silently(ctx, &header(1, ty::HELLO, 0, 0, u32::MAX))),
        case!("R1-9.1/13", Must, SuiteDials, Tcp, false, "Non-ASoc bytes (an HTTP request) are refused silently",
            "RFC-0001 §9.1: No error frame is sent. Rationale: Prevents information leakage to attacker.",
            |ctx| refused_silently(ctx, b"GET / HTTP/1.1\r\nHost: asoc\r\n\r\n")),
        case!("R1-9.3/1", Must, SuiteDials, Tcp, false, "A connection that sends nothing is closed at the handshake deadline",
            "WIRE.md §3.5: HELLO within 10 s of TCP accept (server) ... or the connection is closed (RFC-0001 §9.3).",
            |ctx| { let mut c = Conn::connect(ctx)?; let d = deadline_slack(ctx); c.expect_silent_close(d) }),
        case!("R1-9.3/2", Must, SuiteDials, Tcp, false, "A half-sent HELLO is closed at the handshake deadline",
            "WIRE.md §3.5: HELLO within 10 s of TCP accept (server) ... or the connection is closed (RFC-0001 §9.3).",
            |ctx| { let mut c = Conn::connect(ctx)?; let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); c.send(&f[..20])?; let d = deadline_slack(ctx); c.expect_silent_close(d) }),
        case!("R1-9.3/3", Must, SuiteDials, Tcp, false, "A HELLO trickled slower than the deadline is closed at the deadline",
            "WIRE.md §3.5: HELLO within 10 s of TCP accept (server), or the connection is closed: the deadline runs from the accept, not from the last byte.",
            trickle),
        case!("R1-9.3/4", Should, SuiteDials, Tcp, false, "A HELLO sent at half the deadline is still accepted",
            "WIRE.md §6: handshake timeout | 10 s (the connection is not closed before its deadline).",
            |ctx| { let mut c = Conn::connect(ctx)?; std::thread::sleep(ctx.cfg.handshake_timeout / 2); c.handshake(ctx).map(|_| "accepted".into()) }),
        case!("R2-4.2/1", Must, SuiteDials, Tcp, false, "A HELLO keyed with the hex-decoded API key is refused",
            "WIRE.md §1: A hex key such as `a3f5…c9e1` is used as its 64 ASCII bytes, NOT hex-decoded.",
            hex_decoded_key),
        case!("R2-4.2/2", Must, SuiteDials, Tcp, false, "A HELLO whose MAC covers a little-endian challenge is refused",
            "RFC-0002 §4.2: message = node_uuid + challenge; WIRE.md: All integers are big-endian; MAC over `node_uuid || challenge_be32`.",
            |ctx| { let n = uuid_v4(); let ch = 0x1234_5678; let mac = hello_mac(&ctx.cfg.key, &n, u32::swap_bytes(ch)); let f = frame(ty::HELLO, 0, 0, &hello_payload_with(&n, &mac, ch)); refused_silently(ctx, &f) }),
        case!("R2-4.2/3", Must, SuiteDials, Tcp, false, "A HELLO whose MAC covers challenge || uuid (wrong order) is refused",
            "RFC-0002 §4.2: Connection Phase (HELLO): message = node_uuid + challenge; signature = HMAC-SHA256(api_key, message)[:16].",
            |ctx| { let n = uuid_v4(); let ch = challenge(); let full = hmac_sha256(&ctx.cfg.key, &[&ch.to_be_bytes(), n.as_bytes()]); let mac: [u8; 16] = full[..16].try_into().unwrap_or([0; 16]); let f = frame(ty::HELLO, 0, 0, &hello_payload_with(&n, &mac, ch)); refused_silently(ctx, &f) }),
        case!("R2-4.3/1", Must, SuiteDials, Tcp, false, "A replayed HELLO is refused while the first connection is open",
            "RFC-0002 §4.3: Duplicate challenges rejected. WIRE.md §5: the server remembers every accepted (node_uuid, challenge) pair at least 60 s and rejects a repeat.",
            |ctx| replay(ctx, false)),
        case!("R2-4.3/2", Must, SuiteDials, Tcp, false, "A replayed HELLO is refused after the first connection closed",
            "WIRE.md §5: the server remembers every accepted (node_uuid, challenge) pair at least 60 s (RFC-0002 §4.3) and rejects a repeat.",
            |ctx| replay(ctx, true)),
        case!("R2-4.3/3", Must, SuiteDials, Tcp, false, "The same node id with a fresh challenge is accepted",
            "WIRE.md §5: ... rejects a repeat [of the (node_uuid, challenge) pair]; a fresh challenge is not a repeat.",
            |ctx| { let n = uuid_v4(); let mut a = Conn::connect(ctx)?; a.handshake_as(ctx, &n, challenge())?; let mut b = Conn::connect(ctx)?; b.handshake_as(ctx, &n, challenge())?; Ok("both accepted".into()) }),
        case!("R2-4.3/4", Should, SuiteDials, Tcp, false, "The same challenge from another node id is accepted",
            "WIRE.md §5: the server remembers every accepted (node_uuid, challenge) pair ... and rejects a repeat (the pair, not the challenge alone).",
            |ctx| { let ch = challenge(); let mut a = Conn::connect(ctx)?; a.handshake_as(ctx, &uuid_v4(), ch)?; let mut b = Conn::connect(ctx)?; b.handshake_as(ctx, &uuid_v4(), ch)?; Ok("both accepted".into()) }),
        case!("R2-4.4/1", Must, SuiteDials, Tcp, false, "A HELLO carrying the full 32-byte HMAC is refused",
            "RFC-0002 §4.4: Truncated: 128 bits (16 bytes). WIRE.md §3.2: the first frame [must be] a HELLO of exactly 36 bytes.",
            |ctx| { let n = uuid_v4(); let ch = challenge(); let full = hmac_sha256(&ctx.cfg.key, &[n.as_bytes(), &ch.to_be_bytes()]); let mut p = n.as_bytes().to_vec(); p.extend_from_slice(&full); p.extend_from_slice(&ch.to_be_bytes()); refused_silently(ctx, &frame(ty::HELLO, 0, 0, &p)) }),
        case!("R2-4.4/2", Must, SuiteDials, Tcp, false, "A HELLO whose MAC is right in its first 8 bytes only is refused",
            "RFC-0002 §4.4: Truncated: 128 bits (16 bytes) [all 16 are compared]. RFC-0002 §7.4: Use constant-time comparison.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); for b in &mut f[14 + 24..14 + 32] { *b ^= 0xa5; } refused_silently(ctx, &f) }),
        case!("R2-4.4/3", Must, SuiteDials, Tcp, false, "A HELLO carrying the last 16 bytes of the HMAC is refused",
            "RFC-0002 §4.2: signature = HMAC-SHA256(api_key, message)[:16] (the first 16 bytes).",
            |ctx| { let n = uuid_v4(); let ch = challenge(); let full = hmac_sha256(&ctx.cfg.key, &[n.as_bytes(), &ch.to_be_bytes()]); let mac: [u8; 16] = full[16..].try_into().unwrap_or([0; 16]); refused_silently(ctx, &frame(ty::HELLO, 0, 0, &hello_payload_with(&n, &mac, ch))) }),
        case!("R2-5.2/1", Must, SuiteDials, Tcp, false, "The ACCEPT token is 8 bytes signed by an 8-byte truncated HMAC",
            "RFC-0002 §5.2: session_token = secrets.token_bytes(8); signature = HMAC-SHA256(api_key, session_token)[:8]; Total: 16 bytes.",
            |ctx| { let mut c = Conn::connect(ctx)?; let p = c.handshake(ctx)?; Ok(format!("token {} verifies", hex(&p[..8]))) }),
        case!("R2-5.2/2", Must, SuiteDials, Tcp, false, "Two connections get different session tokens",
            "RFC-0002 §5.2: Session Token: 8 bytes (random).",
            |ctx| tokens_distinct(ctx, 2)),
        case!("R2-6.2.1/1", Must, SuiteDials, Tcp, false, "A HELLO signed with another key is refused silently",
            "RFC-0002 §6.2.1: Connection: HELLO signature invalid → TCP connection closed. Result: Attacker cannot join.",
            |ctx| refused_silently(ctx, &hello_frame(b"not-the-key-0123456789abcdef", &uuid_v4(), challenge()))),
        case!("R2-6.2.3/1", Must, SuiteDials, Tcp, false, "A HELLO whose node id was changed after signing is refused",
            "RFC-0002 §6.2.3: HMAC signature covers entire message; any modification invalidates signature; receiver rejects invalid signatures.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[14 + 15] ^= 0x80; refused_silently(ctx, &f) }),
        case!("R2-6.2.3/2", Must, SuiteDials, Tcp, false, "A HELLO whose challenge was changed after signing is refused",
            "RFC-0002 §6.2.3: HMAC signature covers entire message; any modification invalidates signature; receiver rejects invalid signatures.",
            |ctx| { let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge()); f[49] ^= 0x01; refused_silently(ctx, &f) }),
        case!("R2-7.3/1", Must, SuiteDials, Tcp, false, "Eight connections get eight distinct, non-zero session tokens",
            "RFC-0002 §7.3: Use cryptographically secure PRNG. Requirements: Unpredictable, Non-repeating.",
            |ctx| tokens_distinct(ctx, 8)),
        case!("R2-7.4/1", Info, SuiteDials, Tcp, false, "Close latency for a MAC wrong in its first vs its last byte",
            "RFC-0002 §7.4: HMAC Comparison: Use constant-time comparison (informational: loopback timing is only indicative).",
            timing),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn valid_hello(ctx: &mut Ctx<'_>) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    c.handshake(ctx)?;
    c.expect_open(Duration::from_millis(200))?;
    Ok("ACCEPT verified; connection open".into())
}

fn hello_byte_by_byte(ctx: &mut Ctx<'_>) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge());
    let gap = (ctx.cfg.handshake_timeout / 200).min(Duration::from_millis(5));
    c.send_slowly(&f, gap)?;
    c.expect_accept(ctx)?;
    Ok("accepted".into())
}

fn packed_header(ctx: &mut Ctx<'_>) -> CaseResult {
    // RFC-0001 Appendix A.1: 0x14, stream(4), seq(4), length(4) = 13 bytes.
    let n = uuid_v4();
    let ch = challenge();
    let mut f = vec![0x14];
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&36u32.to_be_bytes());
    f.extend_from_slice(&hello_payload_with(
        &n,
        &hello_mac(&ctx.cfg.key, &n, ch),
        ch,
    ));
    refused_silently(ctx, &f)
}

fn trickle(ctx: &mut Ctx<'_>) -> CaseResult {
    let mut c = Conn::connect(ctx)?;
    let start = Instant::now();
    let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge());
    // 50 bytes spread over 5 deadlines.
    let gap = ctx.cfg.handshake_timeout / 10;
    let limit = deadline_slack(ctx);
    for b in &f {
        c.send(std::slice::from_ref(b))?;
        match c.next(gap)? {
            Observed::Closed { .. } if c.received == 0 => {
                return Ok(format!("closed after {:?}", start.elapsed()))
            }
            Observed::Silent { .. } if start.elapsed() < limit => {}
            other => {
                return Err(Finding::fail(
                    format!("closed without a byte within {limit:?} of the accept"),
                    format!("{other:?} after {:?}", start.elapsed()),
                ))
            }
        }
    }
    Err(Finding::fail(
        format!("closed within {limit:?} of the accept"),
        "the whole trickled HELLO was read without a close",
    ))
}

fn hex_decoded_key(ctx: &mut Ctx<'_>) -> CaseResult {
    let key = &ctx.cfg.key;
    if !key.len().is_multiple_of(2) || key.is_empty() || !key.iter().all(u8::is_ascii_hexdigit) {
        return Err(Finding::Skip(
            "the configured key is not a hex string".into(),
        ));
    }
    let decoded: Vec<u8> = key
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0))
        .collect();
    refused_silently(ctx, &hello_frame(&decoded, &uuid_v4(), challenge()))
}

fn replay(ctx: &mut Ctx<'_>, close_first: bool) -> CaseResult {
    let f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge());
    let mut a = Conn::connect(ctx)?;
    a.send(&f)?;
    a.expect_accept(ctx)?;
    if close_first {
        drop(a);
        std::thread::sleep(Duration::from_millis(100));
        let mut b = Conn::connect(ctx)?;
        b.send(&f)?;
        b.expect_silent_close(ctx.cfg.timeout)
    } else {
        let mut b = Conn::connect(ctx)?;
        b.send(&f)?;
        let r = b.expect_silent_close(ctx.cfg.timeout);
        drop(a);
        r
    }
}

fn tokens_distinct(ctx: &mut Ctx<'_>, n: usize) -> CaseResult {
    let mut seen = HashSet::new();
    let mut conns = Vec::new();
    for _ in 0..n {
        let mut c = Conn::connect(ctx)?;
        let p = c.handshake(ctx)?;
        let token = p[..8].to_vec();
        if token.iter().all(|b| *b == 0) {
            return Err(Finding::fail("a random token", "an all-zero token"));
        }
        if !seen.insert(token.clone()) {
            return Err(Finding::fail(
                "a different token on every connection",
                format!("token {} repeated", hex(&token)),
            ));
        }
        conns.push(c);
    }
    Ok(format!("{n} distinct tokens"))
}

fn timing(ctx: &mut Ctx<'_>) -> CaseResult {
    let mut first = Vec::new();
    let mut last = Vec::new();
    for i in 0..30 {
        let mut f = hello_frame(&ctx.cfg.key, &uuid_v4(), challenge());
        let at = if i % 2 == 0 { 14 + 16 } else { 14 + 31 };
        f[at] ^= 0xff;
        let mut c = Conn::connect(ctx)?;
        let t = Instant::now();
        c.send(&f)?;
        match c.next(ctx.cfg.timeout)? {
            Observed::Closed { .. } => {}
            other => return Err(Finding::error(format!("expected a close, got {other:?}"))),
        }
        let d = t.elapsed();
        if i % 2 == 0 {
            first.push(d)
        } else {
            last.push(d)
        }
    }
    first.sort();
    last.sort();
    Ok(format!(
        "median close latency: first byte wrong {:?}, last byte wrong {:?} (15 samples each)",
        first[first.len() / 2],
        last[last.len() / 2]
    ))
}
