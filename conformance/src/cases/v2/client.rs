//! The implementation dials the suite: its HELLO2, how it judges ACCEPT2,
//! its CONFIRM, its deadline, and how its client receives sealed frames
//! (WIRE-v2.md §3, §4).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use uuid::Uuid;

use super::hex;
use crate::case::{Case, CaseResult, Finding};
use crate::cases::{case, deadline_slack};
use crate::target::Ctx;
use crate::v2::link::{self, read_hello2, Secure};
use crate::v2::{self, unix_ms, Hello, Initiator, Suite};
use crate::wire::{self, pattern, ty, uuid_v4, Conn, Listener, Observed, Streams};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R3-3.1/3", Must, ImplDials, Tcp, false, "The implementation's HELLO2 has the exact header, decrypts and carries a current timestamp",
            "WIRE-v2.md §3.1: HELLO2: header `02 04 00000000 <suite> 00000048`, then Noise message 1 (72 bytes) = `e.pub(32) | ENCRYPT(payload1)(24 + 16)` with `payload1 = client_node_id(16) | client wall-clock time, unix milliseconds, u64(8)`.",
            own_hello2),
        case!("R3-3.1/4", Must, ImplDials, Tcp, false, "Two HELLO2s of the implementation carry different ephemeral keys",
            "WIRE-v2.md §3.1: A fresh ephemeral key for every HELLO2.",
            two_ephemerals),
        case!("R3-3.4/1", Must, ImplDials, Tcp, false, "An ACCEPT2 naming another suite makes the client close",
            "WIRE-v2.md §3.4: The client requires the first frame it reads to be exactly such an ACCEPT2 header for its suite.",
            |ctx| client_closes(ctx, |h, _| { let (mut a, _) = answer(h)?; a[9] = if a[9] == 1 { 2 } else { 1 }; Ok(a) })),
        case!("R3-3.4/2", Must, ImplDials, Tcp, false, "An ACCEPT2 with one bit flipped makes the client close (bad_mac)",
            "WIRE-v2.md §3.4: ... and `ReadMessage` to succeed (`bad_mac` otherwise).",
            |ctx| client_closes(ctx, |h, _| { let (mut a, _) = answer(h)?; a[14 + 32 + 7] ^= 0x04; Ok(a) })),
        case!("R3-3.4/3", Must, ImplDials, Tcp, false, "A recorded ACCEPT2, valid for another HELLO2, makes the client close",
            "WIRE-v2.md §3.4: Because message 2 mixes in `ee`, a recorded ACCEPT2 never verifies for another HELLO2.",
            |ctx| client_closes(ctx, |h, key| recorded_accept(h.suite(), key))),
        case!("R3-3.4/4", Must, ImplDials, Tcp, false, "A v1 ACCEPT in answer to a HELLO2 makes the client close",
            "WIRE-v2.md §3.4: The client requires the first frame it reads to be exactly such an ACCEPT2 header for its suite. §6: A failed v2 dial is never retried as v1.",
            |ctx| client_closes(ctx, |_, key| Ok(wire::accept_frame(key)))),
        case!("R3-3.4/5", Must, ImplDials, Tcp, false, "An ACCEPT2 from a server whose node id is not the one expected makes the client close",
            "WIRE-v2.md §3.4: If the dial expected a node id (... a static peer whose id is configured ...), `server_node_id` must equal it, else the client closes with `unexpected_peer`.",
            |ctx| expected_peer(ctx, false)),
        case!("R3-3.4/6", Must, ImplDials, Tcp, false, "An ACCEPT2 from the expected node id is accepted and the tensor follows",
            "WIRE-v2.md §3.4: If the dial expected a node id, `server_node_id` must equal it.",
            |ctx| expected_peer(ctx, true)),
        case!("R3-3.6/5", Must, ImplDials, Tcp, false, "The client's first transport frame is CONFIRM, right after ACCEPT2",
            "WIRE-v2.md §3.6: CONFIRM: the client's first transport frame is a CONTROL frame on stream 0 with seq 0 and empty plaintext (on the wire: header `02 03 00000000 00000000 00000010` and a 16-byte tag), sent right after ACCEPT2 is verified.",
            |ctx| { let (c, h) = dialed_hello(ctx, None)?; link::serve(c, ctx, h)?; Ok("CONFIRM opened with nonce 0".into()) }),
        case!("R3-3.6/6", Must, ImplDials, Tcp, false, "After CONFIRM the client's tensor arrives intact as one sealed stream",
            "WIRE-v2.md §3.6: the client is then established and may send DATA. §4: `n` counts the frames this side has sent ... client → server: CONFIRM is 0.",
            client_payload),
        case!("R3-3.6/7", Must, ImplDials, Tcp, false, "The client sends nothing after its HELLO2 until the ACCEPT2",
            "WIRE-v2.md §3.6: CONFIRM ... sent right after ACCEPT2 is verified; the client is then established and may send DATA.",
            nothing_before_accept2),
        case!("R3-3.7/3", Must, ImplDials, Tcp, false, "A client without an ACCEPT2 closes at its handshake deadline",
            "WIRE-v2.md §3.7: ACCEPT2 within 10 s of HELLO2 sent.",
            |ctx| { let (mut c, _) = dialed_hello(ctx, None)?; let d = deadline_slack(ctx); let t = Instant::now(); c.expect_close(d).map(|_| format!("closed after {:?}", t.elapsed())) }),
        case!("R3-4/15", Must, ImplDials, Tcp, false, "A server frame whose tag does not verify makes the client close (bad_frame_mac)",
            "WIRE-v2.md §4: The receiver verifies the tag before it acts on any field of the frame. A bad tag closes the connection with `bad_frame_mac`.",
            |ctx| closes_after_established(ctx, |s| { let mut f = s.session.tx.seal(ty::DATA, 2, 0, b"forged"); let n = f.len(); f[n - 1] ^= 1; f })),
        case!("R3-4/16", Must, ImplDials, Tcp, false, "Sealed DATA on stream 0 from the server makes the client close",
            "WIRE-v2.md §4: Only then do the v1 receiver rules of WIRE.md §4 apply: ... no DATA or END on stream 0.",
            |ctx| closes_after_established(ctx, |s| s.session.tx.seal(ty::DATA, 0, 0, b"x"))),
        case!("R3-4/17", Must, ImplDials, Tcp, false, "A server frame replayed with its old nonce makes the client close",
            "WIRE-v2.md §4: `n` counts the frames this side has sent in this direction since the handshake, from 0. [A frame sealed with an earlier nonce does not verify.]",
            |ctx| closes_after_established(ctx, |s| { let f = s.session.tx.seal(42, 2, 0, b"unknown type, skipped"); let mut two = f.clone(); two.extend_from_slice(&f); two })),
    ]
}

fn listen_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Listens, makes the implementation dial with `payload`, accepts.
fn dialed(ctx: &mut Ctx<'_>, payload: Option<&[u8]>) -> Result<(Conn, SocketAddr), Finding> {
    let l = Listener::bind(listen_ip())?;
    let addr = l.addr()?;
    ctx.imp.dial(addr, payload)?;
    let c = l.accept(ctx, "the implementation dials the suite")?;
    Ok((c, addr))
}

/// `dialed`, then its HELLO2 read and decrypted.
fn dialed_hello(ctx: &mut Ctx<'_>, payload: Option<&[u8]>) -> Result<(Conn, Hello), Finding> {
    let (mut c, _) = dialed(ctx, payload)?;
    let (h, _) = read_hello2(&mut c, ctx)?;
    Ok((c, h))
}

/// A valid ACCEPT2 for `h` from a random node id.
fn answer(h: Hello) -> Result<(Vec<u8>, v2::Session), Finding> {
    h.accept(&uuid_v4(), wire::random()).map_err(Finding::error)
}

/// An ACCEPT2 that answers another HELLO2 (one the suite made itself).
fn recorded_accept(suite: Suite, key: &[u8]) -> Result<Vec<u8>, Finding> {
    let other = Initiator::new(key, suite, link::ephemeral(), &uuid_v4(), unix_ms())
        .map_err(Finding::error)?;
    let h = Hello::read(key, &[suite], link::ephemeral(), other.hello()).map_err(Finding::error)?;
    Ok(answer(h)?.0)
}

fn own_hello2(ctx: &mut Ctx<'_>) -> CaseResult {
    let (_c, h) = dialed_hello(ctx, None)?;
    let skew = h.unix_ms as i128 - unix_ms() as i128;
    let window = ctx.cfg.timestamp_window.as_millis() as i128;
    if skew.abs() > window {
        return Err(Finding::fail(
            "a timestamp within the window of the suite's clock",
            format!("skew {skew} ms"),
        ));
    }
    if h.node.is_nil() {
        return Err(Finding::fail("the client's node id", "the nil UUID"));
    }
    Ok(format!(
        "HELLO2 of {} from {}, skew {skew} ms",
        h.suite().protocol_name(),
        h.node
    ))
}

fn two_ephemerals(ctx: &mut Ctx<'_>) -> CaseResult {
    let (a, h1) = dialed_hello(ctx, None)?;
    drop(a);
    let (_b, h2) = dialed_hello(ctx, None)?;
    if h1.ephemeral == h2.ephemeral {
        Err(Finding::fail(
            "a fresh ephemeral per HELLO2",
            format!("ephemeral {} twice", hex(&h1.ephemeral)),
        ))
    } else {
        Ok(format!(
            "{} then {}",
            hex(&h1.ephemeral[..8]),
            hex(&h2.ephemeral[..8])
        ))
    }
}

/// Answers the implementation's HELLO2 with what `make` builds; the client
/// must close without sending anything (no CONFIRM, no DATA).
fn client_closes(
    ctx: &mut Ctx<'_>,
    make: impl FnOnce(Hello, &[u8]) -> Result<Vec<u8>, Finding>,
) -> CaseResult {
    let (mut c, h) = dialed_hello(ctx, Some(b"must not be sent"))?;
    let key = ctx.cfg.key.clone();
    c.send(&make(h, &key)?)?;
    let before = c.received;
    let r = c.expect_close(ctx.cfg.timeout)?;
    if c.received > before {
        return Err(Finding::fail(
            "close without sending anything",
            format!("sent {} bytes after the bad ACCEPT2", c.received - before),
        ));
    }
    Ok(r)
}

fn expected_peer(ctx: &mut Ctx<'_>, matching: bool) -> CaseResult {
    let payload = pattern(60, 5000);
    let l = Listener::bind(listen_ip())?;
    let expected = uuid_v4();
    ctx.imp
        .dial_expecting(l.addr()?, Some(&payload), expected)?;
    let mut c = l.accept(ctx, "the implementation dials the suite")?;
    let (h, _) = read_hello2(&mut c, ctx)?;
    let shown: Uuid = if matching { expected } else { uuid_v4() };
    let (accept, session) = h.accept(&shown, wire::random()).map_err(Finding::error)?;
    c.send(&accept)?;
    let mut s = Secure {
        conn: c,
        session,
        peer: shown,
        session_id: [0; 8],
        hello: Vec::new(),
        accept,
        confirm: Vec::new(),
    };
    if matching {
        let got = s.collect(1, ctx.cfg.timeout + ctx.cfg.timeout)?;
        got.expect_payloads(&[&payload])?;
        clean_exit(ctx, s.conn)?;
        return Ok("the expected server was accepted; the tensor arrived".into());
    }
    let deadline = Instant::now() + ctx.cfg.timeout;
    loop {
        match s.next(deadline.saturating_duration_since(Instant::now()))? {
            link::Seen::Frame(o) if o.ty() == ty::CONTROL => {}
            link::Seen::Frame(o) => {
                return Err(Finding::fail(
                    "close (unexpected_peer) without sending the tensor",
                    o.as_plain().describe(),
                ))
            }
            link::Seen::Closed => {
                return Ok(format!(
                    "closed on server node id {shown} (expected {expected})"
                ))
            }
            link::Seen::Silent => {
                return Err(Finding::fail(
                    "close (unexpected_peer)",
                    format!("still open after {:?}", ctx.cfg.timeout),
                ))
            }
        }
    }
}

/// As the v1 client cases: a client program must exit 0 after the suite
/// played a valid server to the end.
fn clean_exit(ctx: &mut Ctx<'_>, mut c: Conn) -> Result<(), Finding> {
    let _ = c.expect_close(ctx.cfg.quiet);
    drop(c);
    ctx.imp.expect_clean_exit(ctx.cfg.timeout)
}

fn client_payload(ctx: &mut Ctx<'_>) -> CaseResult {
    let payload = pattern(61, 60_000);
    let (c, h) = dialed_hello(ctx, Some(&payload))?;
    let mut s = link::serve(c, ctx, h)?;
    let got: Streams = s.collect(1, ctx.cfg.timeout + ctx.cfg.timeout)?;
    got.expect_payloads(&[&payload])?;
    let (id, _, n) = got.done[0];
    clean_exit(ctx, s.conn)?;
    Ok(format!("stream {id}: {n} sealed DATA frames, intact"))
}

fn nothing_before_accept2(ctx: &mut Ctx<'_>) -> CaseResult {
    let payload = pattern(62, 1000);
    let (mut c, _) = dialed_hello(ctx, Some(&payload))?;
    let watch = ctx.cfg.quiet.min(ctx.cfg.handshake_timeout / 2);
    match c.next(watch)? {
        Observed::Silent { partial: 0 } => Ok(format!("nothing for {watch:?} after the HELLO2")),
        other => Err(Finding::fail(
            "nothing until the ACCEPT2",
            format!("{other:?}"),
        )),
    }
}

fn closes_after_established(
    ctx: &mut Ctx<'_>,
    make: impl FnOnce(&mut Secure) -> Vec<u8>,
) -> CaseResult {
    let (c, h) = dialed_hello(ctx, None)?;
    let mut s = link::serve(c, ctx, h)?;
    s.conn.expect_open(ctx.cfg.quiet / 4)?;
    let f = make(&mut s);
    s.conn.send(&f)?;
    s.conn.expect_close(ctx.cfg.timeout)
}
