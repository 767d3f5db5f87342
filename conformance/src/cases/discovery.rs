//! Discovery datagrams: the suite sends unicast datagrams to the
//! implementation's UDP port and watches whether it dials the announced TCP
//! port; and, where the suite can see them, it checks the implementation's
//! own announcements. Never broadcast.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use asoc_proto::auth::{community_hash, ct_eq, truncated_mac};

use super::case;
use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::wire::{read_hello, send_datagram, udp_from, unix_now, Datagram, Listener};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R1-4.2/1", Must, ImplDials, Udp, false, "Announcements are 50 bytes and their MAC verifies",
            "RFC-0001 §4.2: Total: 50 bytes. WIRE.md §7: MAC(key, bytes 0..34, 16).",
            announcement_shape),
        case!("R1-4.2/2", Must, SuiteDials, Udp, false, "A 49-byte datagram is dropped",
            "WIRE.md §7: A receiver drops, silently ...: a datagram that is not 50 bytes.",
            |ctx| no_dial(ctx, |d, key| d.encode(key)[..49].to_vec())),
        case!("R1-4.2/3", Must, SuiteDials, Udp, false, "A 51-byte datagram is dropped",
            "WIRE.md §7: A receiver drops, silently ...: a datagram that is not 50 bytes.",
            |ctx| no_dial(ctx, |d, key| { let mut v = d.encode(key); v.push(0); v })),
        case!("R1-4.3/1", Must, ImplDials, Udp, false, "Announcements carry the current unix time",
            "RFC-0001 §4.3: Timestamp: Unix epoch seconds (big-endian uint32), used for message freshness. WIRE.md §5: more than 60 s from local wall-clock time ... is dropped.",
            |ctx| { let (d, _) = announcement(ctx)?; let ts = u32::from_be_bytes([d[26], d[27], d[28], d[29]]); let skew = i64::from(ts) - i64::from(unix_now()); if skew.abs() <= 60 { Ok(format!("skew {skew} s")) } else { Err(Finding::fail("a timestamp within 60 s of the suite's clock", format!("skew {skew} s"))) } }),
        case!("R1-4.3/2", Must, ImplDials, Udp, false, "Two announcements carry different challenges",
            "RFC-0001 §4.3: Challenge: Random 32-bit value ... MUST be unique per message. WIRE.md §7: challenge (fresh random per message).",
            two_announcement_challenges),
        case!("R1-4.3/3", Should, SuiteDials, Udp, false, "A datagram 120 s old is dropped",
            "RFC-0001 §4.3: Messages older than 60 seconds SHOULD be rejected. WIRE.md §5: a message whose timestamp is more than 60 s from local wall-clock time, in either direction, is dropped.",
            |ctx| no_dial(ctx, |d, key| { let mut d = *d; d.timestamp -= 120; d.encode(key) })),
        case!("R1-4.3/4", Must, SuiteDials, Udp, false, "A datagram dated 120 s in the future is dropped",
            "WIRE.md §5: a message whose timestamp is more than 60 s from local wall-clock time, in either direction, is dropped.",
            |ctx| no_dial(ctx, |d, key| { let mut d = *d; d.timestamp += 120; d.encode(key) })),
        case!("R1-4.3/5", Must, SuiteDials, Udp, false, "A datagram 30 s old is still honoured",
            "WIRE.md §5: within that window [±60 s] each (node_uuid, challenge) pair is accepted once.",
            |ctx| dials(ctx, |d| d.timestamp -= 30)),
        case!("R1-4.3/6", Must, ImplDials, Udp, false, "Announcements carry the TCP port the node listens on",
            "RFC-0001 §4.3: Port (2 bytes): TCP port number (big-endian uint16), where node listens for connections.",
            |ctx| { let (d, _) = announcement(ctx)?; let port = u16::from_be_bytes([d[24], d[25]]); let tcp = ctx.endpoint()?.tcp.port(); if port == tcp { Ok(format!("port {port}")) } else { Err(Finding::fail(format!("port {tcp}"), format!("port {port}"))) } }),
        case!("R1-4.3/7", Must, ImplDials, Udp, false, "Announcements carry the node's own id",
            "RFC-0001 §4.3: Node UUID (16 bytes): RFC 4122 UUID in binary form; uniquely identifies the node; generated once per node instance. WIRE.md §1: node id | 16-byte RFC 4122 UUID, in binary on the wire.",
            own_id),
        case!("R1-4.4/1", Must, SuiteDials, Udp, false, "A valid datagram makes the implementation dial the announced port",
            "WIRE.md §7: A valid message records or refreshes the peer as (node uuid, source IP of the datagram, port from the message). RFC-0001 §4.4: Record peer (node_id, ip, port).",
            |ctx| dials(ctx, |_| {})),
        case!("R1-4.4/2", Must, SuiteDials, Udp, false, "A datagram of another community is dropped",
            "RFC-0001 §9.1: Mismatched Community: Discovery message silently dropped. No TCP connection established.",
            |ctx| { let other = format!("{}-other", ctx.cfg.community); no_dial(ctx, move |d, key| { let mut d = *d; d.hash = community_hash(&other); d.encode(key) }) }),
        case!("R1-4.4/3", Must, SuiteDials, Udp, false, "A replayed datagram is dropped, even from another source address",
            "RFC-0001 §4.4: Check challenge not seen before (replay protection). WIRE.md §5: within that window each (node_uuid, challenge) pair is accepted once.",
            replayed),
        case!("R1-4.4/4", Must, SuiteDials, Udp, false, "A datagram carrying the implementation's own node id is dropped",
            "WIRE.md §7: A receiver drops, silently ...: its own node uuid.",
            |ctx| { let Some(own) = ctx.endpoint()?.node_id else { return Err(Finding::Skip("the implementation's node id is not known".into())) }; no_dial(ctx, move |d, key| { let mut d = *d; d.node = own; d.encode(key) }) }),
        case!("R1-4.4/5", Must, SuiteDials, Udp, false, "The connection made after discovery starts with a valid HELLO",
            "RFC-0001 §5.1: Once peers are discovered (or configured), nodes establish TCP connections ... using a two-message handshake.",
            |ctx| { let d = Disc::new(ctx)?; let mut c = d.send_and_accept(ctx, &Datagram::new(&ctx.cfg.community, d.port()?))?.ok_or_else(|| Finding::fail("a dial to the announced port", "no connection"))?; read_hello(&mut c, ctx).map(|(n, _)| format!("HELLO from {n}")) }),
        case!("R1-4.4/7", Must, SuiteDials, Udp, false, "The dial goes to the datagram's source address",
            "WIRE.md §7: A valid message records or refreshes the peer as (node uuid, source IP of the datagram, port from the message).",
            source_address),
        case!("R1-4.4/6", Info, ImplDials, Udp, false, "Interval between two announcements",
            "RFC-0001 §4.4: Node broadcasts discovery message every 3 seconds (default).",
            |ctx| { drain_announcements(ctx)?; announcement(ctx)?; let t = Instant::now(); announcement(ctx)?; Ok(format!("{:?} between announcements", t.elapsed())) }),
        case!("R1-10.4/7", Should, SuiteDials, Udp, false, "A second datagram of the same node within 1 s is not honoured",
            "RFC-0001 §10.4: Ignore discovery messages from same node within 1 second. WIRE.md §6: discovery messages per node honoured | 1 per second.",
            same_node_within_second),
        case!("R2-3.3/1", Must, ImplDials, Udp, false, "Announcements carry SHA-256(community)[0..8]",
            "RFC-0002 §3.3: community_hash = hashlib.sha256(community.encode()).digest()[:8].",
            |ctx| { let (d, _) = announcement(ctx)?; let want = community_hash(&ctx.cfg.community); if d.len() >= 8 && d[..8] == want { Ok("community hash matches".into()) } else { Err(Finding::fail(hex(&want), hex(&d[..d.len().min(8)]))) } }),
        case!("R2-4.4/4", Must, SuiteDials, Udp, false, "A datagram whose MAC is wrong in its last byte is dropped",
            "RFC-0002 §4.4: Truncated: 128 bits (16 bytes) [all of them checked].",
            |ctx| no_dial(ctx, |d, key| { let mut v = d.encode(key); v[49] ^= 1; v })),
        case!("R2-6.2.1/2", Must, SuiteDials, Udp, false, "A datagram signed with another key is dropped",
            "RFC-0002 §6.2.1: Discovery: HMAC signature invalid → message dropped.",
            |ctx| no_dial(ctx, |d, _| d.encode(b"not-the-key-0123456789abcdef"))),
        case!("R2-6.2.3/3", Must, SuiteDials, Udp, false, "A datagram whose port was changed after signing is dropped",
            "RFC-0002 §6.2.3: HMAC signature covers entire message. Any modification invalidates signature.",
            |ctx| no_dial(ctx, |d, key| { let mut other = *d; other.port = d.port.wrapping_add(1); let mut v = other.encode(key); v[24..26].copy_from_slice(&d.port.to_be_bytes()); v })),
        case!("R2-10.2/1", Should, SuiteDials, Udp, false, "At most 10 datagrams per second from one address are honoured",
            "WIRE.md §6: discovery messages per source IP | 10 per second. (RFC-0002 §10.2 sketches this limit under Future Extensions, where it is not a requirement.)",
            per_ip_rate),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The next announcement the implementation sends to the suite.
fn announcement(ctx: &mut Ctx<'_>) -> Result<(Vec<u8>, SocketAddr), Finding> {
    ctx.endpoint()?;
    let wait = ctx.cfg.announce_interval * 2 + ctx.cfg.timeout;
    let allow_v1 = ctx.cfg.allow_v1;
    let sock = ctx.imp.announcements().ok_or_else(|| {
        Finding::Unsupported(
            "the suite does not receive this implementation's announcements".into(),
        )
    })?;
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(Finding::error)?;
        match sock.recv_from(&mut buf) {
            // A v2 node with v1 enabled also sends 52-byte v2 announcements
            // (WIRE-v2.md §6); the v1 cases judge its v1 ones.
            Ok((52, _)) if allow_v1 && buf[0] == 2 => continue,
            Ok((n, from)) => return Ok((buf[..n].to_vec(), from)),
            Err(e) => {
                return Err(Finding::fail(
                    format!("an announcement within {wait:?}"),
                    format!("none ({e})"),
                ))
            }
        }
    }
}

/// Drops the announcements already queued on the suite's socket (a live
/// target keeps announcing while other cases run), so that the next one
/// read is a fresh one.
fn drain_announcements(ctx: &mut Ctx<'_>) -> Result<(), Finding> {
    ctx.endpoint()?;
    let Some(sock) = ctx.imp.announcements() else {
        return Ok(());
    };
    sock.set_nonblocking(true).map_err(Finding::error)?;
    let mut buf = [0u8; 2048];
    while sock.recv_from(&mut buf).is_ok() {}
    sock.set_nonblocking(false).map_err(Finding::error)
}

fn announcement_shape(ctx: &mut Ctx<'_>) -> CaseResult {
    let (d, _) = announcement(ctx)?;
    if d.len() != 50 {
        return Err(Finding::fail("50 bytes", format!("{} bytes", d.len())));
    }
    if !ct_eq(&truncated_mac::<16>(&ctx.cfg.key, &[&d[..34]]), &d[34..]) {
        return Err(Finding::fail(
            "MAC(key, bytes 0..34, 16)",
            "a MAC that does not verify",
        ));
    }
    Ok("50 bytes, MAC verifies".into())
}

fn own_id(ctx: &mut Ctx<'_>) -> CaseResult {
    let Some(own) = ctx.endpoint()?.node_id else {
        return Err(Finding::Skip(
            "the implementation's node id is not known (--node-id)".into(),
        ));
    };
    let (d, _) = announcement(ctx)?;
    match d.get(8..24) {
        Some(id) if id == own.as_bytes() => Ok(format!("node id {own}")),
        Some(id) => Err(Finding::fail(format!("node id {own}"), hex(id))),
        None => Err(Finding::fail(
            format!("node id {own} at bytes 8..24"),
            format!("a datagram of {} bytes", d.len()),
        )),
    }
}

fn source_address(ctx: &mut Ctx<'_>) -> CaseResult {
    let to = ctx.udp_target()?;
    if !to.ip().is_loopback() {
        return Err(Finding::Skip(
            "needs a loopback target (a source address other than 127.0.0.1)".into(),
        ));
    }
    let ip = ctx.sources.next();
    let l = Listener::bind(ip)?;
    let port = l.addr()?.port();
    // The same port on 127.0.0.1 catches a dial to the wrong address.
    let decoy = Listener::bind_addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).ok();
    let sock = udp_from(ip)?;
    let g = Datagram::new(&ctx.cfg.community, port);
    send_datagram(&sock, &g.encode(&ctx.cfg.key), to)?;
    if l.accept_within(ctx.cfg.timeout)?.is_some() {
        return Ok(format!("dialed {ip}:{port}, the datagram's source"));
    }
    let misdialed = match &decoy {
        Some(d) => d.accept_within(Duration::ZERO)?.is_some(),
        None => false,
    };
    Err(Finding::fail(
        format!("a connection to {ip}:{port}"),
        if misdialed {
            format!("a connection to 127.0.0.1:{port} instead")
        } else {
            format!("none within {:?}", ctx.cfg.timeout)
        },
    ))
}

fn two_announcement_challenges(ctx: &mut Ctx<'_>) -> CaseResult {
    let (a, _) = announcement(ctx)?;
    let (b, _) = announcement(ctx)?;
    let ch = |d: &[u8]| d.get(30..34).map(|s| s.to_vec());
    if ch(&a) == ch(&b) {
        Err(Finding::fail(
            "a fresh challenge per message",
            "the same challenge twice",
        ))
    } else {
        Ok("challenges differ".into())
    }
}

/// A suite address the implementation can dial back, a UDP socket on it
/// and a TCP listener.
struct Disc {
    to: SocketAddr,
    sock: UdpSocket,
    l: Listener,
}

impl Disc {
    fn new(ctx: &mut Ctx<'_>) -> Result<Self, Finding> {
        let to = ctx.udp_target()?;
        let ip = if to.ip().is_loopback() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        Ok(Self {
            to,
            sock: udp_from(ip)?,
            l: Listener::bind(ip)?,
        })
    }

    fn port(&self) -> Result<u16, Finding> {
        Ok(self.l.addr()?.port())
    }

    fn send_and_accept(
        &self,
        ctx: &Ctx<'_>,
        d: &Datagram,
    ) -> Result<Option<crate::wire::Conn>, Finding> {
        send_datagram(&self.sock, &d.encode(&ctx.cfg.key), self.to)?;
        self.l.accept_within(ctx.cfg.timeout)
    }
}

fn dials(ctx: &mut Ctx<'_>, tweak: impl FnOnce(&mut Datagram)) -> CaseResult {
    let d = Disc::new(ctx)?;
    let mut g = Datagram::new(&ctx.cfg.community, d.port()?);
    tweak(&mut g);
    let t = Instant::now();
    match d.send_and_accept(ctx, &g)? {
        Some(_) => Ok(format!("dialed after {:?}", t.elapsed())),
        None => Err(Finding::fail(
            "a TCP connection to the announced port",
            format!("none within {:?}", ctx.cfg.timeout),
        )),
    }
}

/// Sends the datagram `make` builds (from a fresh valid one) and requires no
/// dial; then a valid datagram must make it dial, or the case says nothing.
///
/// The bad datagram is watched for as long as a positive case waits for a
/// dial (`--timeout`, or `--quiet` if that is longer), and the control
/// announces a listener of its own: a late dial to the bad datagram's port
/// is never credited to the control.
fn no_dial(ctx: &mut Ctx<'_>, make: impl FnOnce(&Datagram, &[u8]) -> Vec<u8>) -> CaseResult {
    let d = Disc::new(ctx)?;
    let g = Datagram::new(&ctx.cfg.community, d.port()?);
    send_datagram(&d.sock, &make(&g, &ctx.cfg.key), d.to)?;
    let sent = Instant::now();
    let watch = bad_datagram_watch(ctx);
    if d.l.accept_within(watch)?.is_some() {
        return Err(dialed_bad(sent));
    }
    let r = control(ctx, &d)?;
    // The control's wait is more time in which the bad datagram must stay
    // undialed.
    if d.l.accept_within(Duration::ZERO)?.is_some() {
        return Err(dialed_bad(sent));
    }
    Ok(r)
}

/// How long a datagram that must not cause a dial is watched: at least as
/// long as a positive case accepts a dial late.
fn bad_datagram_watch(ctx: &Ctx<'_>) -> Duration {
    ctx.cfg.timeout.max(ctx.cfg.quiet)
}

fn dialed_bad(sent: Instant) -> Finding {
    Finding::fail(
        "the datagram dropped (no connection)",
        format!(
            "the implementation dialed the announced port {:?} after the datagram",
            sent.elapsed()
        ),
    )
}

fn control(ctx: &Ctx<'_>, d: &Disc) -> CaseResult {
    let l = Listener::bind(d.l.addr()?.ip())?;
    let fresh = Datagram::new(&ctx.cfg.community, l.addr()?.port());
    send_datagram(&d.sock, &fresh.encode(&ctx.cfg.key), d.to)?;
    match l.accept_within(ctx.cfg.timeout)? {
        Some(_) => Ok(format!(
            "no dial within {:?}; a valid datagram afterwards was dialed",
            bad_datagram_watch(ctx)
        )),
        None => Err(Finding::Error(
            "inconclusive: a valid control datagram did not make the implementation dial either"
                .into(),
        )),
    }
}

fn replayed(ctx: &mut Ctx<'_>) -> CaseResult {
    let to = ctx.udp_target()?;
    if !to.ip().is_loopback() {
        return Err(Finding::Skip(
            "needs a loopback target (two source addresses)".into(),
        ));
    }
    let (ip1, ip2) = (ctx.sources.next(), ctx.sources.next());
    let l1 = Listener::bind(ip1)?;
    let port = l1.addr()?.port();
    let l2 = Listener::bind_addr(SocketAddr::new(ip2, port))?;
    let (s1, s2) = (udp_from(ip1)?, udp_from(ip2)?);
    let g = Datagram::new(&ctx.cfg.community, port);
    let bytes = g.encode(&ctx.cfg.key);
    let sent = Instant::now();
    send_datagram(&s1, &bytes, to)?;
    let Some(first) = l1.accept_within(ctx.cfg.timeout)? else {
        return Err(Finding::Error(
            "inconclusive: the original datagram was not honoured".into(),
        ));
    };
    drop(first);
    // Re-dials to the old address now fail at once instead of waiting for a
    // handshake deadline.
    drop(l1);
    // Past the per-node rate limit, so only the replay rule can drop it.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(sent.elapsed()));
    send_datagram(&s2, &bytes, to)?;
    // A node that lost its connection re-dials after a random 1–5 s
    // (RFC-0001 §9.4), and a new address may wait for that: watch past it.
    let redial = ctx.cfg.quiet + Duration::from_secs(5);
    if l2.accept_within(redial)?.is_some() {
        return Err(Finding::fail(
            "the replay dropped",
            format!("the implementation dialed {ip2}:{port}, the replay's source"),
        ));
    }
    let mut fresh = g;
    fresh.challenge = g.challenge.wrapping_add(1);
    fresh.timestamp = unix_now();
    send_datagram(&s2, &fresh.encode(&ctx.cfg.key), to)?;
    match l2.accept_within(ctx.cfg.timeout + REDIAL_BACKOFF)? {
        Some(_) => Ok(format!(
            "replay not dialed within {redial:?}; a fresh datagram from the new address was dialed"
        )),
        None => Err(Finding::Skip(
            "inconclusive: the implementation does not re-dial a node at a new address".into(),
        )),
    }
}

fn same_node_within_second(ctx: &mut Ctx<'_>) -> CaseResult {
    let Disc { to, sock, l } = Disc::new(ctx)?;
    let l2 = Listener::bind(l.addr()?.ip())?;
    let g = Datagram::new(&ctx.cfg.community, l.addr()?.port());
    let sent = Instant::now();
    send_datagram(&sock, &g.encode(&ctx.cfg.key), to)?;
    let Some(first) = l.accept_within(ctx.cfg.timeout)? else {
        return Err(Finding::Error(
            "inconclusive: the first datagram was not honoured".into(),
        ));
    };
    drop(first);
    // Re-dials to the first address now fail at once.
    drop(l);
    let mut second = g;
    second.port = l2.addr()?.port();
    second.challenge = g.challenge.wrapping_add(1);
    send_datagram(&sock, &second.encode(&ctx.cfg.key), to)?;
    let second_at = sent.elapsed();
    // Nothing else announces l2's port: a dial to it at any time means the
    // second datagram was honoured (the dial may wait for a re-dial delay of
    // 1–5 s, RFC-0001 §9.4, so watch past it).
    let watch = ctx.cfg.quiet + Duration::from_secs(5);
    if l2.accept_within(watch)?.is_some() {
        return Err(Finding::fail(
            "the second datagram within 1 s ignored",
            format!("the implementation dialed the port of a datagram sent {second_at:?} after the first"),
        ));
    }
    let mut third = second;
    third.challenge = g.challenge.wrapping_add(2);
    third.timestamp = unix_now();
    send_datagram(&sock, &third.encode(&ctx.cfg.key), to)?;
    match l2.accept_within(ctx.cfg.timeout + REDIAL_BACKOFF)? {
        Some(_) => Ok(format!(
            "a datagram {second_at:?} after the first was not honoured; one sent later was"
        )),
        None => Err(Finding::Skip(
            "inconclusive: the implementation does not re-dial a node at a new address".into(),
        )),
    }
}

/// How long a node that lost a peer may wait before it dials it again: a
/// random 1–5 s, doubled after a failed re-dial (RFC-0001 §9.4), plus slack.
const REDIAL_BACKOFF: Duration = Duration::from_secs(15);

fn per_ip_rate(ctx: &mut Ctx<'_>) -> CaseResult {
    let d = Disc::new(ctx)?;
    let ip = d.l.addr()?.ip();
    let mut listeners = Vec::new();
    for _ in 0..15 {
        listeners.push(Listener::bind(ip)?);
    }
    let t = Instant::now();
    for l in &listeners {
        let g = Datagram::new(&ctx.cfg.community, l.addr()?.port());
        send_datagram(&d.sock, &g.encode(&ctx.cfg.key), d.to)?;
    }
    let sent_in = t.elapsed();
    std::thread::sleep(ctx.cfg.timeout.min(Duration::from_secs(2)));
    let mut dialed = 0;
    for l in &listeners {
        if l.accept_within(Duration::ZERO)?.is_some() {
            dialed += 1;
        }
    }
    if dialed == 0 {
        Err(Finding::Error(
            "inconclusive: no datagram was honoured".into(),
        ))
    } else if dialed <= 10 || sent_in > Duration::from_secs(1) {
        Ok(format!("{dialed} of 15 honoured (sent in {sent_in:?})"))
    } else {
        Err(Finding::fail(
            "at most 10 of 15 datagrams sent within 1 s honoured",
            format!("{dialed} honoured"),
        ))
    }
}
