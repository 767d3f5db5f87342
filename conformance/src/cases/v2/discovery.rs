//! v2 discovery (WIRE-v2.md §5): the implementation's 52-byte
//! announcements, and how it validates the suite's, judged by whether it
//! dials the announced port with a HELLO2. Unicast only, never broadcast.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::hex;
use crate::case::{Case, CaseResult, Finding};
use crate::cases::case;
use crate::target::Ctx;
use crate::v2::link::read_hello2;
use crate::v2::{self, community_hash, discovery_key, unix_ms, Announcement};
use crate::wire::{self, send_datagram, udp_from, Conn, Datagram, Listener};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R3-5/1", Must, ImplDials, Udp, false, "Announcements are 52 bytes, start with 2 and their MAC verifies under the discovery key",
            "WIRE-v2.md §5: An announcement is 52 bytes: `0x02 | community_hash(8) | node_id(16) | tcp_port(2) | unix_ms(8) | flags(1) | MAC(16)`, `MAC = HMAC-SHA256(discovery key, the 36 bytes before it)[0..16]`.",
            shape),
        case!("R3-5/2", Must, ImplDials, Udp, false, "Announcements carry the community hash, the node's id and TCP port, the current time and no unknown flags",
            "WIRE-v2.md §5: `0x02 | community_hash(8) | node_id(16) | tcp_port(2) | unix_ms(8) | flags(1) | MAC(16)`. Flags bit 0: the node also accepts v1 HELLOs; other bits 0.",
            fields),
        case!("R3-5/3", Must, ImplDials, Udp, false, "Successive announcements carry strictly increasing timestamps",
            "WIRE-v2.md §5: `unix_ms` strictly greater than the last accepted `unix_ms` of that node id [is what receivers accept, so a sender's must increase].",
            increasing),
        case!("R3-5/4", Must, SuiteDials, Udp, false, "A valid v2 announcement makes the implementation dial the announced port with a HELLO2",
            "WIRE-v2.md §5: [A valid announcement records the peer.] §6: v2 is the default everywhere: a node dials with v2.",
            |ctx| { let d = Disc::new(ctx)?; let a = d.fresh(ctx, wire::high_uuid())?; let mut c = d.send_and_accept(ctx, &a.encode(&d.key), ctx.cfg.timeout)?.ok_or_else(|| Finding::fail("a dial to the announced port", "none"))?; read_hello2(&mut c, ctx).map(|(h, _)| format!("HELLO2 from {}", h.node)) }),
        case!("R3-5/5", Must, SuiteDials, Udp, false, "A 51-byte and a 53-byte datagram are dropped",
            "WIRE-v2.md §5: Validation, in order, each drop counted under its reason: length 52 and first byte 0x02.",
            |ctx| { no_dial(ctx, |a, k| a.encode(k)[..51].to_vec())?; no_dial(ctx, |a, k| { let mut v = a.encode(k).to_vec(); v.push(0); v }) }),
        case!("R3-5/6", Must, SuiteDials, Udp, false, "A 52-byte datagram whose first byte is not 2 is dropped",
            "WIRE-v2.md §5: Validation, in order: length 52 and first byte 0x02.",
            |ctx| no_dial(ctx, |a, k| { let mut v = a.encode(k); v[0] = 1; v.to_vec() })),
        case!("R3-5/7", Must, SuiteDials, Udp, false, "An announcement of another community is dropped",
            "WIRE-v2.md §5: Validation, in order: ... community hash.",
            |ctx| { let other = format!("{}-other", ctx.cfg.community); no_dial(ctx, move |a, k| { let mut a = *a; a.hash = community_hash(&other); a.encode(k).to_vec() }) }),
        case!("R3-5/8", Must, SuiteDials, Udp, false, "An announcement with its MAC wrong in the last byte is dropped",
            "WIRE-v2.md §5: Validation, in order: ... MAC under any accepted discovery key.",
            |ctx| no_dial(ctx, |a, k| { let mut v = a.encode(k); v[51] ^= 1; v.to_vec() })),
        case!("R3-5/9", Must, SuiteDials, Udp, false, "An announcement whose port was changed after signing is dropped",
            "WIRE-v2.md §5: `MAC = HMAC-SHA256(discovery key, the 36 bytes before it)[0..16]`; validation: MAC under any accepted discovery key.",
            |ctx| no_dial(ctx, |a, k| { let mut other = *a; other.port = a.port.wrapping_add(1); let mut v = other.encode(k); v[25..27].copy_from_slice(&a.port.to_be_bytes()); v.to_vec() })),
        case!("R3-5/10", Must, SuiteDials, Udp, false, "An announcement MACed with the API key itself instead of the discovery key is dropped",
            "WIRE-v2.md §1: discovery key | the same HKDF with info = ASCII `asoc/2 discovery`. §5: MAC under any accepted discovery key.",
            |ctx| { let key = ctx.cfg.key.clone(); no_dial(ctx, move |a, _| { let s = a.signed(); let mut v = s.to_vec(); v.extend_from_slice(&v2::announcement_mac(&key, &s)); v }) }),
        case!("R3-5/11", Must, SuiteDials, Udp, false, "An announcement carrying the implementation's own node id is dropped",
            "WIRE-v2.md §5: Validation, in order: ... own node id.",
            |ctx| { let Some(own) = ctx.endpoint()?.node_id else { return Err(Finding::Skip("the implementation's node id is not known (--node-id)".into())) }; no_dial(ctx, move |a, k| { let mut a = *a; a.node = own; a.encode(k).to_vec() }) }),
        case!("R3-5/12", Must, SuiteDials, Udp, false, "An announcement dated past the window is dropped",
            "WIRE-v2.md §5: `unix_ms` within 60 s of local wall-clock time in either direction.",
            |ctx| { let off = window_plus(ctx); no_dial(ctx, move |a, k| { let mut a = *a; a.unix_ms -= off; a.encode(k).to_vec() }) }),
        case!("R3-5/13", Must, SuiteDials, Udp, false, "An announcement dated beyond the window in the future is dropped",
            "WIRE-v2.md §5: `unix_ms` within 60 s of local wall-clock time in either direction.",
            |ctx| { let off = window_plus(ctx); no_dial(ctx, move |a, k| { let mut a = *a; a.unix_ms += off; a.encode(k).to_vec() }) }),
        case!("R3-5/14", Must, SuiteDials, Udp, false, "An announcement whose timestamp is not above the node's last accepted one is dropped",
            "WIRE-v2.md §5: `unix_ms` strictly greater than the last accepted `unix_ms` of that node id (replay and reordering; per-node state instead of a per-message cache).",
            not_increasing),
        case!("R3-5/15", Must, SuiteDials, Udp, false, "A v1 (50-byte) announcement is dropped by a node without v1",
            "WIRE-v2.md §6: v2 is the default everywhere: a node dials with v2, accepts only v2, and announces only v2. [v1 announcements are accepted only] with v1 enabled.",
            v1_announcement),
        case!("R3-5/16", Must, ImplDials, Udp, false, "One announce round sends the same bytes to every destination",
            "WIRE-v2.md §5: Sending: one datagram per announce round, the same bytes to every destination (the broadcast address, or every unicast target).",
            same_bytes_everywhere),
        case!("R3-5/17", Must, SuiteDials, Udp, false, "A known peer's address does not move to the source of a relayed announcement",
            "WIRE-v2.md §5: A known peer's address changes only when its current address has sent no valid announcement for two announce intervals (sticky addresses).",
            sticky),
    ]
}

fn window_plus(ctx: &Ctx<'_>) -> u64 {
    (ctx.cfg.timestamp_window + Duration::from_secs(30)).as_millis() as u64
}

/// The next datagram the implementation sends to the suite.
fn datagram(ctx: &mut Ctx<'_>) -> Result<Vec<u8>, Finding> {
    ctx.endpoint()?;
    let wait = ctx.cfg.announce_interval * 2 + ctx.cfg.timeout;
    let sock = ctx.imp.announcements().ok_or_else(|| {
        Finding::Unsupported(
            "the suite does not receive this implementation's announcements".into(),
        )
    })?;
    sock.set_read_timeout(Some(wait)).map_err(Finding::error)?;
    let mut buf = [0u8; 2048];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Ok(buf[..n].to_vec()),
        Err(e) => Err(Finding::fail(
            format!("an announcement within {wait:?}"),
            format!("none ({e})"),
        )),
    }
}

fn shape(ctx: &mut Ctx<'_>) -> CaseResult {
    let d = datagram(ctx)?;
    if d.len() != v2::ANNOUNCEMENT_LEN || d[0] != v2::VERSION {
        return Err(Finding::fail(
            "52 bytes starting with 0x02",
            format!(
                "{} bytes starting with {:02x}",
                d.len(),
                d.first().unwrap_or(&0)
            ),
        ));
    }
    match Announcement::decode(&discovery_key(&ctx.cfg.key), &d) {
        Some(_) => Ok("52 bytes, MAC verifies under the discovery key".into()),
        None => Err(Finding::fail(
            "HMAC-SHA256(discovery key, bytes 0..36)[0..16]",
            "a MAC that does not verify",
        )),
    }
}

/// The v2 announcements arriving on `sock` within `within`, by unix_ms.
fn collect(sock: &UdpSocket, within: Duration) -> Result<Vec<(u64, Vec<u8>)>, Finding> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(got);
        }
        sock.set_read_timeout(Some(left)).map_err(Finding::error)?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n == v2::ANNOUNCEMENT_LEN && buf[0] == v2::VERSION => {
                let ms = u64::from_be_bytes(buf[27..35].try_into().unwrap_or([0; 8]));
                got.push((ms, buf[..n].to_vec()));
            }
            Ok(_) => {}
            Err(_) => return Ok(got),
        }
    }
}

fn same_bytes_everywhere(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.endpoint()?;
    let within = ctx.cfg.announce_interval * 3;
    let Some(second) = ctx
        .imp
        .announcement_copies()
        .and_then(|s| s.try_clone().ok())
    else {
        return Err(Finding::Unsupported(
            "needs two destinations of the target's announcements (--announce-listen twice)".into(),
        ));
    };
    let other = std::thread::spawn(move || collect(&second, within));
    let first = {
        let sock = ctx.imp.announcements().ok_or_else(|| {
            Finding::Unsupported(
                "the suite does not receive this implementation's announcements".into(),
            )
        })?;
        collect(sock, within)?
    };
    let second = other
        .join()
        .map_err(|_| Finding::error("announcement reader panicked"))??;
    let mut rounds = 0;
    for (ms, bytes) in &first {
        if let Some((_, copy)) = second.iter().find(|(m, _)| m == ms) {
            if copy != bytes {
                return Err(Finding::fail(
                    "the same bytes to every destination of one round",
                    format!("unix_ms {ms}: {} and {}", hex(bytes), hex(copy)),
                ));
            }
            rounds += 1;
        }
    }
    if rounds == 0 {
        return Err(Finding::fail(
            "one datagram per round, the same bytes to every destination",
            format!(
                "{} and {} v2 announcements within {within:?}, none of one round at both",
                first.len(),
                second.len()
            ),
        ));
    }
    Ok(format!(
        "{rounds} round(s) with identical bytes at both destinations"
    ))
}

fn decoded(ctx: &mut Ctx<'_>) -> Result<Announcement, Finding> {
    let d = datagram(ctx)?;
    Announcement::decode(&discovery_key(&ctx.cfg.key), &d).ok_or_else(|| {
        Finding::Error(format!(
            "inconclusive: the announcement does not verify (see R3-5/1): {}",
            hex(&d)
        ))
    })
}

fn fields(ctx: &mut Ctx<'_>) -> CaseResult {
    let a = decoded(ctx)?;
    let ep = ctx.endpoint()?;
    let want = community_hash(&ctx.cfg.community);
    if a.hash != want {
        return Err(Finding::fail(hex(&want), hex(&a.hash)));
    }
    if a.port != ep.tcp.port() {
        return Err(Finding::fail(
            format!("port {}", ep.tcp.port()),
            format!("port {}", a.port),
        ));
    }
    if let Some(id) = ep.node_id {
        if id != a.node {
            return Err(Finding::fail(
                format!("node id {id}"),
                format!("node id {}", a.node),
            ));
        }
    }
    let skew = a.unix_ms as i128 - unix_ms() as i128;
    if skew.abs() > ctx.cfg.timestamp_window.as_millis() as i128 {
        return Err(Finding::fail(
            "unix_ms within the window of the suite's clock",
            format!("skew {skew} ms"),
        ));
    }
    let want_flags = u8::from(ctx.cfg.allow_v1);
    if a.flags != want_flags {
        return Err(Finding::fail(
            format!("flags {want_flags:#04x} (bit 0 set only when v1 is enabled)"),
            format!("flags {:#04x}", a.flags),
        ));
    }
    Ok(format!(
        "node {}, port {}, skew {skew} ms, flags {:#04x}",
        a.node, a.port, a.flags
    ))
}

fn increasing(ctx: &mut Ctx<'_>) -> CaseResult {
    let a = decoded(ctx)?;
    let b = decoded(ctx)?;
    if b.unix_ms > a.unix_ms {
        Ok(format!("{} then {}", a.unix_ms, b.unix_ms))
    } else {
        Err(Finding::fail(
            "a later announcement with a larger unix_ms",
            format!("{} then {}", a.unix_ms, b.unix_ms),
        ))
    }
}

/// A suite address the implementation can dial back, a UDP socket on it,
/// a TCP listener and the discovery key.
struct Disc {
    to: SocketAddr,
    sock: UdpSocket,
    l: Listener,
    key: [u8; 32],
}

impl Disc {
    fn new(ctx: &mut Ctx<'_>) -> Result<Self, Finding> {
        let to = ctx.udp_target()?;
        let ip = if to.ip().is_loopback() {
            ctx.sources.next()
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        Ok(Self {
            to,
            sock: udp_from(ip)?,
            l: Listener::bind(ip)?,
            key: discovery_key(&ctx.cfg.key),
        })
    }

    fn fresh(&self, ctx: &Ctx<'_>, node: Uuid) -> Result<Announcement, Finding> {
        Ok(Announcement::new(
            &ctx.cfg.community,
            node,
            self.l.addr()?.port(),
            unix_ms(),
        ))
    }

    fn send_and_accept(
        &self,
        _ctx: &Ctx<'_>,
        bytes: &[u8],
        within: Duration,
    ) -> Result<Option<Conn>, Finding> {
        send_datagram(&self.sock, bytes, self.to)?;
        self.l.accept_within(within)
    }
}

/// Sends what `make` builds from a fresh valid announcement and requires
/// no dial; then a valid announcement must be dialed, or the case says
/// nothing. The bad datagram is watched for as long as a positive case
/// waits for a dial, and the control announces a listener of its own, so
/// that a late dial to the bad datagram's port is never credited to it.
fn no_dial(
    ctx: &mut Ctx<'_>,
    make: impl FnOnce(&Announcement, &[u8; 32]) -> Vec<u8>,
) -> CaseResult {
    let d = Disc::new(ctx)?;
    let a = d.fresh(ctx, wire::high_uuid())?;
    let watch = ctx.cfg.timeout.max(ctx.cfg.quiet);
    let dialed = || {
        Finding::fail(
            "the datagram dropped (no connection)",
            "the implementation dialed the announced port",
        )
    };
    if d.send_and_accept(ctx, &make(&a, &d.key), watch)?.is_some() {
        return Err(dialed());
    }
    let r = control(ctx, &d, watch)?;
    if d.l.accept_within(Duration::ZERO)?.is_some() {
        return Err(dialed());
    }
    Ok(r)
}

fn control(ctx: &Ctx<'_>, d: &Disc, watched: Duration) -> CaseResult {
    let l = Listener::bind(d.l.addr()?.ip())?;
    let fresh = Announcement::new(
        &ctx.cfg.community,
        wire::high_uuid(),
        l.addr()?.port(),
        unix_ms(),
    );
    send_datagram(&d.sock, &fresh.encode(&d.key), d.to)?;
    match l.accept_within(ctx.cfg.timeout)? {
        Some(_) => Ok(format!(
            "no dial within {watched:?}; a valid announcement afterwards was dialed"
        )),
        None => Err(Finding::Error(
            "inconclusive: a valid announcement afterwards was not dialed either".into(),
        )),
    }
}

fn not_increasing(ctx: &mut Ctx<'_>) -> CaseResult {
    let d = Disc::new(ctx)?;
    let node = wire::high_uuid();
    let first = d.fresh(ctx, node)?;
    let Some(c) = d.send_and_accept(ctx, &first.encode(&d.key), ctx.cfg.timeout)? else {
        return Err(Finding::Error(
            "inconclusive: the first announcement was not dialed (see R3-5/4)".into(),
        ));
    };
    drop(c);
    // The same node at a new port of the same address, with the same and
    // then an older timestamp: if either were accepted, the node would be
    // recorded at the new port and dialed there.
    let l2 = Listener::bind(d.l.addr()?.ip())?;
    let port2 = l2.addr()?.port();
    for back in [0u64, 1000] {
        let mut a = first;
        a.port = port2;
        a.unix_ms = first.unix_ms - back;
        send_datagram(&d.sock, &a.encode(&d.key), d.to)?;
    }
    let watch = ctx.cfg.quiet + Duration::from_secs(1);
    if l2.accept_within(watch)?.is_some() {
        return Err(Finding::fail(
            "announcements with an equal or older unix_ms dropped",
            "the implementation dialed the port they announced",
        ));
    }
    Ok(format!(
        "equal and older timestamps of node {node} not honoured within {watch:?}"
    ))
}

fn v1_announcement(ctx: &mut Ctx<'_>) -> CaseResult {
    if ctx.cfg.allow_v1 {
        return Err(Finding::Skip(
            "the target accepts v1 (--allow-v1): v1 announcements are honoured".into(),
        ));
    }
    let to = ctx.udp_target()?;
    let ip = if to.ip().is_loopback() {
        ctx.sources.next()
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let sock = udp_from(ip)?;
    let l = Listener::bind(ip)?;
    let g = Datagram::new(&ctx.cfg.community, l.addr()?.port());
    send_datagram(&sock, &g.encode(&ctx.cfg.key), to)?;
    let watch = ctx.cfg.timeout.max(ctx.cfg.quiet);
    match l.accept_within(watch)? {
        None => Ok(format!("no dial within {watch:?}")),
        Some(_) => Err(Finding::fail(
            "the v1 announcement dropped",
            "the implementation dialed the port it announced",
        )),
    }
}

fn sticky(ctx: &mut Ctx<'_>) -> CaseResult {
    // The real peer announces from one address; a relayed copy of a later
    // announcement arrives from another. Re-dials must stay with the first.
    let d = Disc::new(ctx)?;
    let node = wire::high_uuid();
    let first = d.fresh(ctx, node)?;
    let Some(c) = d.send_and_accept(ctx, &first.encode(&d.key), ctx.cfg.timeout)? else {
        return Err(Finding::Error(
            "inconclusive: the first announcement was not dialed (see R3-5/4)".into(),
        ));
    };
    let other_ip = if d.to.ip().is_loopback() {
        ctx.sources.next()
    } else {
        return Err(Finding::Skip(
            "needs a loopback target (a second source address)".into(),
        ));
    };
    let relay = udp_from(other_ip)?;
    let l2 = Listener::bind_addr(SocketAddr::new(other_ip, d.l.addr()?.port()))?;
    let mut later = first;
    later.unix_ms = first.unix_ms + 1;
    let t = Instant::now();
    send_datagram(&relay, &later.encode(&d.key), d.to)?;
    // The connection to the real address drops; the node dials again.
    drop(c);
    let watch = ctx.cfg.quiet + ctx.cfg.retry_max * 2;
    if l2.accept_within(watch)?.is_some() {
        return Err(Finding::fail(
            "the peer's address kept while its current address announces",
            format!(
                "dialed the relay's source address {other_ip} {:?} after the relayed announcement",
                t.elapsed()
            ),
        ));
    }
    Ok(format!(
        "no dial to the relay's address {other_ip} within {watch:?}"
    ))
}
