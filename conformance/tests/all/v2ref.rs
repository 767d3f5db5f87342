//! A reference v2 server and client built from the suite's own v2 peer
//! (`conformance::v2`), written from WIRE-v2.md, each with switches that
//! plant one flaw: the self-check shows that every planted flaw fails the
//! case that judges it while the flawless peer passes.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conformance::case::Finding;
use conformance::target::{Endpoint, Implementation};
use conformance::v2::{self, handshake_header, unix_ms, Hello, Initiator, Session, Suite};
use conformance::wire::{self, ty};
use uuid::Uuid;

/// The key of every reference peer.
pub(crate) const KEY: &str = "v2-reference-key-0123456789abcdef";
/// Their handshake deadline.
pub(crate) const HANDSHAKE: Duration = Duration::from_secs(1);
/// Their maximum plaintext per frame.
pub(crate) const MAX_PAYLOAD: u32 = 2 << 20;
const WINDOW_MS: u64 = 60_000;

/// One planted flaw, or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// As WIRE-v2.md says.
    #[default]
    None,
    /// The server keeps no replay cache of `e.pub`.
    AcceptsReplay,
    /// The server never checks the HELLO2 timestamp.
    NoTimestampCheck,
    /// The server reads the whole 14-byte header before judging it.
    WholeHeaderFirst,
    /// The server takes a frame whose tag fails as if it had verified.
    AcceptsBadTag,
    /// The client goes on after an ACCEPT2 that does not verify.
    AcceptsAnyAccept,
    /// The client retries a failed v2 dial with a v1 HELLO.
    FallsBackToV1,
    /// Discovery checks only the MAC: no window, no per-node timestamp
    /// order, no sticky addresses.
    MacOnlyDiscovery,
    /// Each destination gets an announcement of its own (a later
    /// timestamp for the second).
    PerDestination,
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> bool {
    let mut at = 0;
    while at < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf[at..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => at += n,
        }
    }
    true
}

/// A running reference server.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) node: Uuid,
}

/// Starts a v2-only echo server with `flaw`.
pub(crate) fn server(flaw: Flaw) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let node = wire::uuid_v4();
    let seen: Arc<Mutex<HashSet<[u8; 32]>>> = Arc::default();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || serve(s, node, flaw, &seen));
        }
    });
    Server { addr, node }
}

fn serve(mut s: TcpStream, node: Uuid, flaw: Flaw, seen: &Mutex<HashSet<[u8; 32]>>) {
    let _ = s.set_nodelay(true);
    let deadline = Instant::now() + HANDSHAKE;
    // The header byte by byte, refused at the first byte no HELLO2 of
    // either suite has there.
    let mut h = [0u8; 14];
    let want = handshake_header(ty::HELLO, Suite::AesGcm);
    if flaw == Flaw::WholeHeaderFirst && !read_by(&mut s, &mut h, deadline) {
        return;
    }
    for i in 0..14 {
        if flaw != Flaw::WholeHeaderFirst && !read_by(&mut s, &mut h[i..=i], deadline) {
            return;
        }
        let ok = if i == 9 {
            matches!(h[9], 1 | 2)
        } else {
            h[i] == want[i]
        };
        if !ok {
            return;
        }
    }
    let mut frame = h.to_vec();
    frame.resize(v2::HANDSHAKE_FRAME_LEN, 0);
    if !read_by(&mut s, &mut frame[14..], deadline) {
        return;
    }
    let Ok(hello) = Hello::read(KEY.as_bytes(), &Suite::ALL, wire::random(), &frame) else {
        return;
    };
    if flaw != Flaw::NoTimestampCheck && hello.unix_ms.abs_diff(unix_ms()) > WINDOW_MS {
        return;
    }
    if flaw != Flaw::AcceptsReplay && !seen.lock().unwrap().insert(hello.ephemeral) {
        return;
    }
    if hello.node == node {
        return;
    }
    let Ok((accept, mut session)) = hello.accept(&node, wire::random()) else {
        return;
    };
    if s.write_all(&accept).is_err() {
        return;
    }
    let mut c = [0u8; 30];
    if !read_by(&mut s, &mut c, deadline) {
        return;
    }
    let ch: [u8; 14] = c[..14].try_into().unwrap();
    if ch != v2::header(ty::CONTROL, 0, 0, 16) || session.rx.open(&ch, &c[14..]) != Ok(Vec::new()) {
        return;
    }
    transport(s, session, flaw);
}

/// Receiver rules after the handshake, and the echo.
fn transport(mut s: TcpStream, mut session: Session, flaw: Flaw) {
    let far = Instant::now() + Duration::from_secs(30);
    let mut open: HashMap<u32, (u32, Vec<u8>)> = HashMap::new();
    let mut next_id = 2;
    loop {
        let mut h = [0u8; 14];
        if !read_by(&mut s, &mut h, far) {
            return;
        }
        let len = u32::from_be_bytes(h[10..14].try_into().unwrap());
        if h[0] != 2 || !(16..=MAX_PAYLOAD + 16).contains(&len) {
            return;
        }
        let mut body = vec![0u8; len as usize];
        if !read_by(&mut s, &mut body, far) {
            return;
        }
        let plain = match session.rx.open(&h, &body) {
            Ok(p) => p,
            Err(_) if flaw == Flaw::AcceptsBadTag => {
                // Planted: the frame is taken as it came, and the counter
                // moves on as if it had verified.
                session.rx.skip();
                body[..body.len() - 16].to_vec()
            }
            Err(_) => return,
        };
        let stream = u32::from_be_bytes(h[2..6].try_into().unwrap());
        let seq = u32::from_be_bytes(h[6..10].try_into().unwrap());
        match h[1] {
            ty::DATA | ty::END if stream == 0 => return,
            ty::DATA => {
                let (next, buf) = open.entry(stream).or_default();
                if seq != *next {
                    return;
                }
                *next += 1;
                buf.extend_from_slice(&plain);
            }
            ty::END => {
                let (next, buf) = open.remove(&stream).unwrap_or_default();
                if seq != next || !plain.is_empty() {
                    return;
                }
                let chunks: Vec<&[u8]> = buf.chunks(1 << 20).collect();
                let f = session.tx.stream(next_id, &chunks);
                next_id += 2;
                if s.write_all(&f).is_err() {
                    return;
                }
            }
            ty::HELLO | ty::ACCEPT => return,
            _ => {}
        }
    }
}

/// The reference server as the suite's target.
pub(crate) struct Served(pub(crate) Server);

impl Implementation for Served {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(Endpoint::new(self.0.addr).with_node_id(Some(self.0.node)))
    }
    fn dial(&mut self, _: SocketAddr, _: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported("server only".into()))
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }
}

/// The reference client as the suite's target: every dial runs on a
/// thread of its own; a failed dial is retried twice, 200 ms apart.
pub(crate) struct Client(pub(crate) Flaw);

impl Implementation for Client {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Err(Finding::Unsupported("client only".into()))
    }
    fn dial(&mut self, to: SocketAddr, payload: Option<&[u8]>) -> Result<(), Finding> {
        let (flaw, payload) = (self.0, payload.map(<[u8]>::to_vec));
        std::thread::spawn(move || dial_loop(to, payload, None, flaw));
        Ok(())
    }
    fn dial_expecting(
        &mut self,
        to: SocketAddr,
        payload: Option<&[u8]>,
        node_id: Uuid,
    ) -> Result<(), Finding> {
        let (flaw, payload) = (self.0, payload.map(<[u8]>::to_vec));
        std::thread::spawn(move || dial_loop(to, payload, Some(node_id), flaw));
        Ok(())
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        None
    }
}

fn dial_loop(to: SocketAddr, payload: Option<Vec<u8>>, expect: Option<Uuid>, flaw: Flaw) {
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let Ok(mut s) = TcpStream::connect_timeout(&to, HANDSHAKE) else {
            continue;
        };
        let _ = s.set_nodelay(true);
        if attempt > 0 && flaw == Flaw::FallsBackToV1 {
            let _ = s.write_all(&wire::hello_frame(
                KEY.as_bytes(),
                &wire::uuid_v4(),
                wire::challenge(),
            ));
            let mut sink = [0u8; 256];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            continue;
        }
        match client_once(s, payload.as_deref(), expect, flaw) {
            Dial::Done => return,
            Dial::Failed => {}
        }
    }
}

enum Dial {
    Done,
    Failed,
}

fn client_once(mut s: TcpStream, payload: Option<&[u8]>, expect: Option<Uuid>, flaw: Flaw) -> Dial {
    client_as(&mut s, wire::uuid_v4(), payload, expect, flaw)
}

fn client_as(
    s: &mut TcpStream,
    me: Uuid,
    payload: Option<&[u8]>,
    expect: Option<Uuid>,
    flaw: Flaw,
) -> Dial {
    let Ok(init) = Initiator::new(
        KEY.as_bytes(),
        Suite::AesGcm,
        wire::random(),
        &me,
        unix_ms(),
    ) else {
        return Dial::Failed;
    };
    if s.write_all(init.hello()).is_err() {
        return Dial::Failed;
    }
    let deadline = Instant::now() + HANDSHAKE;
    let mut h = [0u8; 14];
    if !read_by(s, &mut h, deadline) {
        return Dial::Failed;
    }
    let len = u32::from_be_bytes(h[10..14].try_into().unwrap()).min(1024) as usize;
    let mut frame = h.to_vec();
    frame.resize(14 + len, 0);
    if !read_by(s, &mut frame[14..], deadline) {
        return Dial::Failed;
    }
    let mut session = match init.accept(&frame) {
        Ok(a) if expect.is_some_and(|e| e != a.server_node) => return Dial::Done,
        Ok(a) => a.session,
        Err(_) if flaw == Flaw::AcceptsAnyAccept => {
            // Planted: it streams anyway, under keys of its own.
            let mut bogus = Session::from_keys(Suite::AesGcm, &[1; 32], &[2; 32]);
            let _ = s.write_all(&bogus.tx.confirm());
            let _ = s.write_all(&bogus.tx.stream(1, &[payload.unwrap_or_default()]));
            return Dial::Done;
        }
        Err(_) => return Dial::Done,
    };
    if s.write_all(&session.tx.confirm()).is_err() {
        return Dial::Failed;
    }
    if let Some(p) = payload {
        let chunks: Vec<&[u8]> = if p.is_empty() {
            Vec::new()
        } else {
            p.chunks(1 << 20).collect()
        };
        if s.write_all(&session.tx.stream(1, &chunks)).is_err() {
            return Dial::Done;
        }
    }
    // Receiver rules until the suite closes.
    let far = Instant::now() + Duration::from_secs(30);
    loop {
        let mut h = [0u8; 14];
        if !read_by(s, &mut h, far) {
            return Dial::Done;
        }
        let len = u32::from_be_bytes(h[10..14].try_into().unwrap());
        if h[0] != 2 || !(16..=MAX_PAYLOAD + 16).contains(&len) {
            return Dial::Done;
        }
        let mut body = vec![0u8; len as usize];
        if !read_by(s, &mut body, far) || session.rx.open(&h, &body).is_err() {
            return Dial::Done;
        }
        let stream = u32::from_be_bytes(h[2..6].try_into().unwrap());
        if matches!(h[1], ty::DATA | ty::END | ty::HELLO | ty::ACCEPT) && stream == 0 {
            return Dial::Done;
        }
    }
}

/// The community of the reference node's discovery.
pub(crate) const COMMUNITY: &str = "self-check-v2";

/// A reference v2 node with discovery: the reference server, a UDP socket
/// that validates announcements as WIRE-v2.md §5 says and dials (and
/// re-dials, 200 ms after every drop, up to 3 times) the peers it records,
/// and announcements every 300 ms to the suite's socket.
pub(crate) struct Discovering {
    server: Server,
    udp: SocketAddr,
    ann: UdpSocket,
    copies: UdpSocket,
}

struct Peer {
    addr: SocketAddr,
    last_ms: u64,
    /// When the current address last sent a valid announcement.
    heard: Instant,
}

const INTERVAL: Duration = Duration::from_millis(300);

impl Discovering {
    pub(crate) fn start(flaw: Flaw) -> Self {
        let server = server(Flaw::None);
        let node = server.node;
        let port = server.addr.port();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ann = UdpSocket::bind("127.0.0.1:0").unwrap();
        let copies = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (udp_addr, target) = (udp.local_addr().unwrap(), ann.local_addr().unwrap());
        let target2 = copies.local_addr().unwrap();
        let key = v2::discovery_key(KEY.as_bytes());
        let out = udp.try_clone().unwrap();
        let stop = Instant::now() + Duration::from_secs(30);
        std::thread::spawn(move || {
            let mut last = 0;
            while Instant::now() < stop {
                let ms = unix_ms().max(last + 1);
                last = ms;
                let a = v2::Announcement::new(COMMUNITY, node, port, ms);
                let d = a.encode(&key);
                let mut d2 = d;
                if flaw == Flaw::PerDestination {
                    last += 1;
                    d2 = v2::Announcement::new(COMMUNITY, node, port, last).encode(&key);
                }
                if out.send_to(&d, target).is_err() || out.send_to(&d2, target2).is_err() {
                    return;
                }
                std::thread::sleep(INTERVAL);
            }
        });
        let peers: Arc<Mutex<HashMap<Uuid, Peer>>> = Arc::default();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            while Instant::now() < stop {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let Some(a) = v2::Announcement::decode(&key, &buf[..n]) else {
                    continue;
                };
                let lax = flaw == Flaw::MacOnlyDiscovery;
                if a.hash != v2::community_hash(COMMUNITY)
                    || a.node == node
                    || (!lax && a.unix_ms.abs_diff(unix_ms()) > WINDOW_MS)
                {
                    continue;
                }
                let addr = SocketAddr::new(from.ip(), a.port);
                let mut map = peers.lock().unwrap();
                match map.get_mut(&a.node) {
                    Some(p) if !lax && a.unix_ms <= p.last_ms => {}
                    Some(p) => {
                        p.last_ms = a.unix_ms;
                        // Sticky: another address takes over only once the
                        // current one has been silent for two intervals.
                        if lax || p.addr.ip() == addr.ip() || p.heard.elapsed() > INTERVAL * 2 {
                            p.addr = addr;
                            p.heard = Instant::now();
                        }
                    }
                    None => {
                        map.insert(
                            a.node,
                            Peer {
                                addr,
                                last_ms: a.unix_ms,
                                heard: Instant::now(),
                            },
                        );
                        let (peers, id) = (Arc::clone(&peers), a.node);
                        std::thread::spawn(move || redial(&peers, id, node));
                    }
                }
            }
        });
        Self {
            server,
            udp: udp_addr,
            ann,
            copies,
        }
    }
}

/// Dials the recorded address of `id`, again 200 ms after every drop.
fn redial(peers: &Mutex<HashMap<Uuid, Peer>>, id: Uuid, me: Uuid) {
    for _ in 0..4 {
        let Some(to) = peers.lock().unwrap().get(&id).map(|p| p.addr) else {
            return;
        };
        if let Ok(mut s) = TcpStream::connect_timeout(&to, HANDSHAKE) {
            let _ = client_as(&mut s, me, None, Some(id), Flaw::None);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Implementation for Discovering {
    fn serve(&mut self) -> Result<Endpoint, Finding> {
        Ok(Endpoint::new(self.server.addr)
            .with_udp(Some(self.udp))
            .with_node_id(Some(self.server.node)))
    }
    fn dial(&mut self, _: SocketAddr, _: Option<&[u8]>) -> Result<(), Finding> {
        Err(Finding::Unsupported("server only".into()))
    }
    fn announcements(&mut self) -> Option<&UdpSocket> {
        Some(&self.ann)
    }
    fn announcement_copies(&mut self) -> Option<&UdpSocket> {
        Some(&self.copies)
    }
}
