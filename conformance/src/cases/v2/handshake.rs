//! The suite dials the implementation: HELLO2 and the server's checks,
//! ACCEPT2, the split keys, CONFIRM and the handshake deadlines
//! (WIRE-v2.md §2, §3).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::{established, hex, refused_at_once, refused_silently, usable};
use crate::case::{Case, CaseResult, Finding};
use crate::cases::{case, deadline_slack};
use crate::target::Ctx;
use crate::v2::link::{self, expect_accept2, initiator, initiator_as, Seen};
use crate::v2::{self, handshake_header, unix_ms, Announcement, Initiator, Suite};
use crate::wire::{self, ty, uuid_v4, Conn, Listener, Observed};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R3-2/1", Must, SuiteDials, Tcp, false, "A HELLO2 written one byte at a time is accepted",
            "WIRE-v2.md §2: Every v2 frame is the v1 14-byte header followed by `length` bytes (TCP is a byte stream; segment boundaries carry no meaning).",
            hello2_byte_by_byte),
        case!("R3-2/2", Must, SuiteDials, Tcp, true, "The server's frames are 14-byte headers with version 2, then length bytes",
            "WIRE-v2.md §2: Every v2 frame is the v1 14-byte header followed by `length` bytes: `version(1) = 2 | type(1) | stream_id(4) | seq(4) | length(4)`. Types keep their v1 numbers.",
            frames_are_v2),
        case!("R3-3.1/1", Must, SuiteDials, Tcp, false, "A valid HELLO2 of suite 1 gets an ACCEPT2 that verifies, and the connection carries a stream",
            "WIRE-v2.md §3.1: HELLO2, client → server: header `02 04 00000000 <suite> 00000048`, then Noise message 1 (72 bytes). §1: suite 1 = Noise_NNpsk0_25519_AESGCM_SHA256 (default).",
            |ctx| valid_suite(ctx, Suite::AesGcm)),
        case!("R3-3.1/2", Must, SuiteDials, Tcp, false, "A valid HELLO2 of suite 2 (ChaChaPoly) is accepted too",
            "WIRE-v2.md §1: suite 2 = Noise_NNpsk0_25519_ChaChaPoly_SHA256. A server accepts both unless configured otherwise.",
            |ctx| valid_suite(ctx, Suite::ChaChaPoly)),
        case!("R3-3.2/1", Must, SuiteDials, Tcp, false, "A first byte other than 1 or 2 is refused at that byte",
            "WIRE-v2.md §3.2: The server requires the first 14 bytes to be exactly a HELLO2 header of a suite it accepts ..., failing on the first wrong byte. §2: The first byte on a connection tells the server which version the client speaks.",
            |ctx| refused_at_once(ctx, &[0x03])),
        case!("R3-3.2/2", Must, SuiteDials, Tcp, false, "A v2 header of another type (ACCEPT2) is refused at its type byte",
            "WIRE-v2.md §3.2: The server requires the first 14 bytes to be exactly a HELLO2 header ..., failing on the first wrong byte.",
            |ctx| refused_at_once(ctx, &[0x02, 0x05])),
        case!("R3-3.2/3", Must, SuiteDials, Tcp, false, "A HELLO2 header on stream 1 is refused at the stream id's last byte",
            "WIRE-v2.md §3.1: header `02 04 00000000 <suite> 00000048`. §3.2: ... exactly a HELLO2 header ..., failing on the first wrong byte.",
            |ctx| refused_at_once(ctx, &[0x02, 0x04, 0, 0, 0, 1])),
        case!("R3-3.2/4", Must, SuiteDials, Tcp, false, "A HELLO2 header naming suite 0 is refused at the suite's last byte",
            "WIRE-v2.md §3.2: The server requires the first 14 bytes to be exactly a HELLO2 header of a suite it accepts ..., failing on the first wrong byte.",
            |ctx| refused_at_once(ctx, &[0x02, 0x04, 0, 0, 0, 0, 0, 0, 0, 0])),
        case!("R3-3.2/5", Must, SuiteDials, Tcp, false, "A HELLO2 naming an unknown suite (3), with a valid body, is refused silently",
            "WIRE-v2.md §1: suites 1 and 2. §3.2: ... a HELLO2 header of a suite it accepts ..., failing on the first wrong byte.",
            |ctx| { let i = initiator(ctx, Suite::AesGcm)?; let mut f = i.hello().to_vec(); f[9] = 3; refused_at_once(ctx, &f[..10]) }),
        case!("R3-3.2/6", Must, SuiteDials, Tcp, false, "A HELLO2 header with length 71 or 73 is refused at the length's last byte",
            "WIRE-v2.md §3.1: header `02 04 00000000 <suite> 00000048` (72 bytes follow). §3.2: failing on the first wrong byte, and then reads exactly 72 bytes.",
            |ctx| { let mut h = handshake_header(ty::HELLO, ctx.cfg.suite); h[13] = 0x47; refused_at_once(ctx, &h)?; h[13] = 0x49; refused_at_once(ctx, &h).map(|r| format!("71 and 73 refused; {r}")) }),
        case!("R3-3.2/20", Must, SuiteDials, Tcp, false, "A HELLO2 header wrong in any one of its 14 bytes is refused at that byte",
            "WIRE-v2.md §3.2: The server requires the first 14 bytes to be exactly a HELLO2 header of a suite it accepts ..., failing on the first wrong byte.",
            every_header_byte),
        case!("R3-3.2/7", Must, SuiteDials, Tcp, false, "A suite the target was configured not to accept is refused",
            "WIRE-v2.md §1: A server accepts both unless configured otherwise. §3.2: ... exactly a HELLO2 header of a suite it accepts.",
            unaccepted_suite),
        case!("R3-3.2/8", Must, SuiteDials, Tcp, false, "A HELLO2 with one bit of its encrypted payload flipped is refused silently (bad_mac)",
            "WIRE-v2.md §3.2: For each accepted key ... the first that decrypts names the key. ... each failure a silent close (nothing sent): no key decrypts: `bad_mac`.",
            |ctx| { let i = initiator(ctx, ctx.cfg.suite)?; let mut f = i.hello().to_vec(); f[14 + 32 + 5] ^= 0x01; refused_silently(ctx, &f) }),
        case!("R3-3.2/9", Must, SuiteDials, Tcp, false, "A HELLO2 whose ephemeral key was altered is refused silently (bad_mac)",
            "WIRE-v2.md §3.2: no key decrypts: `bad_mac` (silent close). The ephemeral is mixed into the handshake hash before payload 1 is encrypted.",
            |ctx| { let i = initiator(ctx, ctx.cfg.suite)?; let mut f = i.hello().to_vec(); f[14] ^= 0x80; refused_silently(ctx, &f) }),
        case!("R3-3.2/10", Must, SuiteDials, Tcp, false, "A HELLO2 under another API key's PSK is refused silently (bad_mac)",
            "WIRE-v2.md §1: PSK = HKDF-SHA256(API key, info `asoc/2 psk`). §3.2: no key decrypts: `bad_mac` (silent close).",
            |ctx| { let i = Initiator::new(b"not-the-key-0123456789abcdef", ctx.cfg.suite, link::ephemeral(), &uuid_v4(), unix_ms()).map_err(Finding::error)?; refused_silently(ctx, i.hello()) }),
        case!("R3-3.2/11", Must, SuiteDials, Tcp, false, "A HELLO2 keyed with the raw API key instead of its HKDF PSK is refused",
            "WIRE-v2.md §1: PSK | HKDF-SHA256 (RFC 5869): IKM = the API key's UTF-8 bytes, salt absent, info = ASCII `asoc/2 psk`, L = 32.",
            raw_key_as_psk),
        case!("R3-3.2/12", Must, SuiteDials, Tcp, false, "A HELLO2 dated past the window is refused silently (stale)",
            "WIRE-v2.md §3.2: timestamp more than 60 s (configurable) from the server's wall clock, in either direction: `stale`.",
            |ctx| stale(ctx, false)),
        case!("R3-3.2/13", Must, SuiteDials, Tcp, false, "A HELLO2 dated beyond the window in the future is refused silently (stale)",
            "WIRE-v2.md §3.2: timestamp more than 60 s (configurable) from the server's wall clock, in either direction: `stale`.",
            |ctx| stale(ctx, true)),
        case!("R3-3.2/14", Must, SuiteDials, Tcp, false, "A HELLO2 dated half the window ago is accepted",
            "WIRE-v2.md §3.2: [only a] timestamp more than 60 s ... from the server's wall clock [is stale].",
            |ctx| { let w = ctx.cfg.timestamp_window.as_millis() as u64; let i = initiator_as(ctx, ctx.cfg.suite, &uuid_v4(), unix_ms() - w / 2)?; let mut s = link::connect_with(ctx, i)?; usable(ctx, &mut s) }),
        case!("R3-3.2/15", Must, SuiteDials, Tcp, false, "A replayed HELLO2 is refused while the first connection is open (replay)",
            "WIRE-v2.md §3.2: `e.pub` already seen within the window: `replay` (silent close).",
            |ctx| replay(ctx, false)),
        case!("R3-3.2/16", Must, SuiteDials, Tcp, false, "A replayed HELLO2 is refused after the first connection closed (replay)",
            "WIRE-v2.md §3.2: The cache keeps each `e.pub` until its timestamp + 61 s ... `replay`.",
            |ctx| replay(ctx, true)),
        case!("R3-3.2/17", Must, SuiteDials, Tcp, false, "The same node id with a fresh ephemeral is accepted again",
            "WIRE-v2.md §3.1: A fresh ephemeral key for every HELLO2. §3.2: [the replay rule is on] `e.pub`.",
            |ctx| { let n = uuid_v4(); let a = initiator_as(ctx, ctx.cfg.suite, &n, unix_ms())?; let _first = link::connect_with(ctx, a)?; let b = initiator_as(ctx, ctx.cfg.suite, &n, unix_ms())?; let mut s = link::connect_with(ctx, b)?; usable(ctx, &mut s) }),
        case!("R3-3.2/18", Must, SuiteDials, Tcp, false, "A HELLO2 claiming the server's own node id is refused silently (reflection)",
            "WIRE-v2.md §3.2: the client node id is the server's own ...: `reflection` (silent close).",
            own_node_id),
        case!("R3-3.2/19", Must, SuiteDials, Udp, false, "The implementation's own HELLO2, reflected back to it, is refused silently (reflection)",
            "WIRE-v2.md §3.2: the client node id is the server's own, or `e.pub` is one of this node's own pending outbound ephemerals: `reflection`.",
            reflected),
        case!("R3-3.3/1", Must, SuiteDials, Tcp, false, "The ACCEPT2 has the exact header and carries the server's node id and a session id",
            "WIRE-v2.md §3.3: ACCEPT2, server → client: header `02 05 00000000 <suite> 00000048`, then Noise message 2 (72 bytes) = `e.pub(32) | ENCRYPT(payload2)(24 + 16)` with `payload2 = server_node_id(16) | session_id(8 random bytes)`.",
            accept2_shape),
        case!("R3-3.3/2", Must, SuiteDials, Tcp, false, "Eight connections get eight distinct session ids and server ephemerals",
            "WIRE-v2.md §3.3: session_id(8 random bytes). §1: ephemeral keys and session ids from the injected CSPRNG.",
            distinct_sessions),
        case!("R3-3.5/1", Must, SuiteDials, Tcp, true, "Frames sealed with the first split key are accepted; the server seals with the second",
            "WIRE-v2.md §3.5: Both sides call Noise `Split()`: the first key protects client → server frames, the second server → client.",
            |ctx| { let mut s = established(ctx)?; usable(ctx, &mut s) }),
        case!("R3-3.5/2", Must, SuiteDials, Tcp, false, "A frame sealed with the server → client key is refused (bad_frame_mac)",
            "WIRE-v2.md §3.5: the first key protects client → server frames, the second server → client. §4: A bad tag closes the connection with `bad_frame_mac`.",
            wrong_direction_key),
        case!("R3-3.6/1", Must, SuiteDials, Tcp, false, "The server sends nothing after ACCEPT2 while CONFIRM is withheld",
            "WIRE-v2.md §3.6: The server is established only once it has decrypted CONFIRM; until then it sends nothing after ACCEPT2 and reports no peer.",
            silent_until_confirm),
        case!("R3-3.6/2", Must, SuiteDials, Tcp, true, "A stream sent in place of CONFIRM is not delivered and closes the connection",
            "WIRE-v2.md §3.6: CONFIRM: the client's first transport frame is a CONTROL frame on stream 0 with seq 0 and empty plaintext. The server is established only once it has decrypted CONFIRM.",
            stream_instead_of_confirm),
        case!("R3-3.6/3", Must, SuiteDials, Tcp, true, "A CONFIRM whose tag does not verify closes the connection; nothing after it is delivered",
            "WIRE-v2.md §3.6: The server is established only once it has decrypted CONFIRM. §4: A bad tag closes the connection with `bad_frame_mac`.",
            bad_confirm),
        case!("R3-3.6/4", Must, SuiteDials, Tcp, true, "A replayed HELLO2 with the recorded CONFIRM and stream yields no data and no connection",
            "WIRE-v2.md §3.6: ... so a replayed HELLO2 never yields a connection, a node-id claim or an event beyond the auth failure of its timeout.",
            replayed_session),
        case!("R3-3.7/1", Must, SuiteDials, Tcp, false, "A connection that sends nothing is closed at the handshake deadline",
            "WIRE-v2.md §3.7: Deadlines as v1: HELLO2 and CONFIRM within the handshake timeout (10 s) of TCP accept.",
            |ctx| { let mut c = Conn::connect(ctx)?; let d = deadline_slack(ctx); c.expect_silent_close(d) }),
        case!("R3-3.7/2", Must, SuiteDials, Tcp, false, "A client that never sends CONFIRM is closed at the handshake deadline",
            "WIRE-v2.md §3.7: HELLO2 and CONFIRM within the handshake timeout (10 s) of TCP accept.",
            no_confirm_deadline),
    ]
}

fn hello2_byte_by_byte(ctx: &mut Ctx<'_>) -> CaseResult {
    let i = initiator(ctx, ctx.cfg.suite)?;
    let mut c = Conn::connect(ctx)?;
    let gap = (ctx.cfg.handshake_timeout / 200).min(Duration::from_millis(5));
    c.send_slowly(i.hello(), gap)?;
    expect_accept2(&mut c, ctx, i)?;
    Ok("accepted".into())
}

fn frames_are_v2(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.require_echo()?;
    let mut s = established(ctx)?;
    let p = wire::pattern(50, 3000);
    s.send_stream(1, &[&p[..1000], &p[1000..]])?;
    let deadline = Instant::now() + ctx.cfg.timeout;
    let mut frames = 0;
    loop {
        match s.next(deadline.saturating_duration_since(Instant::now()))? {
            Seen::Frame(o) => {
                frames += 1;
                let len = u32::from_be_bytes(o.header[10..14].try_into().unwrap_or([0; 4]));
                if len as usize != o.plaintext.len() + v2::TAG_LEN {
                    return Err(Finding::fail(
                        "length = plaintext + 16",
                        format!("length {len} for {} plaintext bytes", o.plaintext.len()),
                    ));
                }
                if o.ty() == ty::END {
                    return Ok(format!(
                        "{frames} frames, version 2, length = plaintext + 16"
                    ));
                }
            }
            other => {
                return Err(Finding::fail(
                    "the stream echoed back",
                    format!("{other:?} after {frames} frames"),
                ))
            }
        }
    }
}

fn valid_suite(ctx: &mut Ctx<'_>, suite: Suite) -> CaseResult {
    if !ctx.cfg.accepted_suites.contains(&suite) {
        return Err(Finding::Skip(format!(
            "the target is configured to accept only {:?}",
            ctx.cfg.accepted_suites
        )));
    }
    let i = initiator(ctx, suite)?;
    let mut s = link::connect_with(ctx, i)?;
    let r = usable(ctx, &mut s)?;
    Ok(format!("{}: ACCEPT2 verified; {r}", suite.protocol_name()))
}

fn every_header_byte(ctx: &mut Ctx<'_>) -> CaseResult {
    let h = handshake_header(ty::HELLO, ctx.cfg.suite);
    for i in 0..h.len() {
        let mut bad = h[..=i].to_vec();
        // 0x03 at the version byte (neither v2 nor v1) and at the suite
        // byte (no suite); elsewhere one flipped bit.
        bad[i] = match i {
            0 | 9 => 0x03,
            _ => h[i] ^ 0x01,
        };
        refused_at_once(ctx, &bad).map_err(|e| match e {
            Finding::Fail { expected, actual } => Finding::fail(
                format!("{expected} (header byte {i} wrong: {})", hex(&bad)),
                actual,
            ),
            other => other,
        })?;
    }
    Ok("refused at each of the 14 header bytes".into())
}

fn unaccepted_suite(ctx: &mut Ctx<'_>) -> CaseResult {
    let Some(suite) = Suite::ALL
        .into_iter()
        .find(|s| !ctx.cfg.accepted_suites.contains(s))
    else {
        return Err(Finding::Skip(
            "the target accepts both suites (configure it with one, and tell the suite with --suite)"
                .into(),
        ));
    };
    let i = initiator(ctx, suite)?;
    refused_at_once(ctx, &i.hello()[..10])
}

fn raw_key_as_psk(ctx: &mut Ctx<'_>) -> CaseResult {
    // The key's bytes, cut or repeated to the 32 bytes a Noise PSK takes.
    let mut raw = [0u8; 32];
    for (d, s) in raw.iter_mut().zip(ctx.cfg.key.iter().cycle()) {
        *d = *s;
    }
    let payload = v2::hello_payload(&uuid_v4(), unix_ms());
    let i = Initiator::with_payload(&raw, ctx.cfg.suite, link::ephemeral(), &payload)
        .map_err(Finding::error)?;
    refused_silently(ctx, i.hello())
}

fn stale(ctx: &mut Ctx<'_>, future: bool) -> CaseResult {
    let off = (ctx.cfg.timestamp_window + Duration::from_secs(30)).as_millis() as u64;
    let at = if future {
        unix_ms() + off
    } else {
        unix_ms() - off
    };
    let i = initiator_as(ctx, ctx.cfg.suite, &uuid_v4(), at)?;
    refused_silently(ctx, i.hello())
}

fn replay(ctx: &mut Ctx<'_>, close_first: bool) -> CaseResult {
    let i = initiator(ctx, ctx.cfg.suite)?;
    let hello = i.hello().to_vec();
    let first = link::connect_with(ctx, i)?;
    if close_first {
        drop(first);
        std::thread::sleep(Duration::from_millis(100));
        refused_silently(ctx, &hello)
    } else {
        let r = refused_silently(ctx, &hello);
        drop(first);
        r
    }
}

fn own_node_id(ctx: &mut Ctx<'_>) -> CaseResult {
    let Some(own) = ctx.endpoint()?.node_id else {
        return Err(Finding::Skip(
            "the implementation's node id is not known (--node-id)".into(),
        ));
    };
    let i = initiator_as(ctx, ctx.cfg.suite, &own, unix_ms())?;
    refused_silently(ctx, i.hello())
}

fn reflected(ctx: &mut Ctx<'_>) -> CaseResult {
    let to = ctx.udp_target()?;
    let tcp = ctx.endpoint()?.tcp;
    let ip = if to.ip().is_loopback() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let l = Listener::bind(ip)?;
    let sock = wire::udp_from(ip)?;
    let a = Announcement::new(
        &ctx.cfg.community,
        wire::high_uuid(),
        l.addr()?.port(),
        unix_ms(),
    );
    wire::send_datagram(&sock, &a.encode(&v2::discovery_key(&ctx.cfg.key)), to)?;
    let Some(mut dialed) = l.accept_within(ctx.cfg.timeout)? else {
        return Err(Finding::Error(
            "inconclusive: the implementation did not dial a valid v2 announcement (see R3-5/4)"
                .into(),
        ));
    };
    let (_, hello) = link::read_hello2(&mut dialed, ctx)?;
    // Its dial stays pending (no ACCEPT2) while its own HELLO2 comes back.
    let mut c = Conn::connect_from(tcp, ctx.source_for(tcp), ctx.cfg.timeout)
        .map_err(|e| Finding::error(format!("connect to {tcp}: {e}")))?;
    c.send(&hello)?;
    let r = c.expect_silent_close(ctx.cfg.timeout);
    drop(dialed);
    r.map(|r| format!("its own HELLO2 refused: {r}"))
}

fn accept2_shape(ctx: &mut Ctx<'_>) -> CaseResult {
    let s = established(ctx)?;
    if s.session_id == [0; 8] {
        return Err(Finding::fail("8 random bytes of session id", "all zero"));
    }
    match ctx.endpoint()?.node_id {
        Some(id) if id != s.peer => Err(Finding::fail(
            format!("server_node_id {id}"),
            format!("server_node_id {}", s.peer),
        )),
        Some(id) => Ok(format!(
            "ACCEPT2 verified; server node id {id}, session id {}",
            hex(&s.session_id)
        )),
        None => Ok(format!(
            "ACCEPT2 verified; server node id {} (not checked: unknown), session id {}",
            s.peer,
            hex(&s.session_id)
        )),
    }
}

fn distinct_sessions(ctx: &mut Ctx<'_>) -> CaseResult {
    let mut ids = HashSet::new();
    let mut eph = HashSet::new();
    let mut open = Vec::new();
    for _ in 0..8 {
        let s = established(ctx)?;
        if !ids.insert(s.session_id) {
            return Err(Finding::fail(
                "a fresh session id per connection",
                format!("session id {} twice", hex(&s.session_id)),
            ));
        }
        let e = s.accept[14..46].to_vec();
        if !eph.insert(e.clone()) {
            return Err(Finding::fail(
                "a fresh ephemeral per ACCEPT2",
                format!("ephemeral {} twice", hex(&e)),
            ));
        }
        open.push(s);
    }
    Ok("8 distinct session ids and ephemerals".into())
}

fn wrong_direction_key(ctx: &mut Ctx<'_>) -> CaseResult {
    let mut s = established(ctx)?;
    let (_, s2c) = s.session.keys;
    let mut wrong = v2::Session::from_keys(ctx.cfg.suite, &s2c, &s2c);
    // Nonce 1: the one the server expects after CONFIRM.
    let _ = wrong.tx.confirm();
    let f = wrong
        .tx
        .stream(1, &[b"sealed with the wrong direction's key"]);
    s.conn.send(&f)?;
    s.expect_close_delivering_nothing(ctx.cfg.timeout)
}

fn silent_until_confirm(ctx: &mut Ctx<'_>) -> CaseResult {
    let i = initiator(ctx, ctx.cfg.suite)?;
    let mut c = Conn::connect(ctx)?;
    c.send(i.hello())?;
    expect_accept2(&mut c, ctx, i)?;
    let watch = ctx.cfg.quiet.min(ctx.cfg.handshake_timeout / 2);
    match c.next(watch)? {
        Observed::Silent { partial: 0 } => Ok(format!("nothing for {watch:?} after ACCEPT2")),
        other => Err(Finding::fail(
            "nothing after ACCEPT2 until CONFIRM",
            format!("{other:?}"),
        )),
    }
}

fn stream_instead_of_confirm(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.require_echo()?;
    let i = initiator(ctx, ctx.cfg.suite)?;
    let mut c = Conn::connect(ctx)?;
    c.send(i.hello())?;
    let (a, accept) = expect_accept2(&mut c, ctx, i)?;
    let mut s = link::Secure {
        conn: c,
        session: a.session,
        peer: a.server_node,
        session_id: a.session_id,
        hello: Vec::new(),
        accept,
        confirm: Vec::new(),
    };
    s.send_stream(1, &[b"before CONFIRM"])?;
    s.expect_close_delivering_nothing(ctx.cfg.timeout)
}

fn bad_confirm(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.require_echo()?;
    let i = initiator(ctx, ctx.cfg.suite)?;
    let mut c = Conn::connect(ctx)?;
    c.send(i.hello())?;
    let (a, _) = expect_accept2(&mut c, ctx, i)?;
    let mut session = a.session;
    let mut confirm = session.tx.confirm();
    confirm[14 + 3] ^= 0x10;
    c.send(&confirm)?;
    c.send(&session.tx.stream(1, &[b"after a bad CONFIRM"]))?;
    let mut s = link::Secure {
        conn: c,
        session,
        peer: a.server_node,
        session_id: a.session_id,
        hello: Vec::new(),
        accept: Vec::new(),
        confirm,
    };
    s.expect_close_delivering_nothing(ctx.cfg.timeout)
}

fn replayed_session(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.require_echo()?;
    let p = wire::pattern(51, 500);
    let mut first = established(ctx)?;
    let stream = first.session.tx.stream(1, &[&p]);
    first.conn.send(&stream)?;
    first.collect(1, ctx.cfg.timeout)?.expect_payloads(&[&p])?;
    let mut recorded = first.hello.clone();
    recorded.extend_from_slice(&first.confirm);
    recorded.extend_from_slice(&stream);
    drop(first);
    let mut c = Conn::connect(ctx)?;
    c.send(&recorded)?;
    let deadline = Instant::now() + deadline_slack(ctx);
    let mut seen = Vec::new();
    loop {
        match c.next(deadline.saturating_duration_since(Instant::now()))? {
            Observed::Frame(f) if seen.is_empty() && f.version == 2 && f.ty == ty::ACCEPT => {
                seen.push("an ACCEPT2".to_string());
            }
            Observed::Frame(f) => {
                return Err(Finding::fail(
                    "nothing beyond (at most) an ACCEPT2, then a close",
                    format!("{} after {seen:?}", f.describe()),
                ))
            }
            Observed::Closed { .. } => {
                return Ok(format!(
                    "closed after {}",
                    seen.first().map_or("nothing", |s| s)
                ))
            }
            Observed::Silent { .. } => {
                return Err(Finding::fail(
                    "a close by the handshake deadline",
                    "still open",
                ))
            }
        }
    }
}

fn no_confirm_deadline(ctx: &mut Ctx<'_>) -> CaseResult {
    let i = initiator(ctx, ctx.cfg.suite)?;
    let mut c = Conn::connect(ctx)?;
    let t = Instant::now();
    c.send(i.hello())?;
    expect_accept2(&mut c, ctx, i)?;
    let left = deadline_slack(ctx).saturating_sub(t.elapsed());
    c.expect_close(left)
        .map(|_| format!("closed {:?} after the accept", t.elapsed()))
}
