//! The v2 peer on a raw [`Conn`]: the suite's client half of the handshake
//! against a serving implementation, its server half against a dialing
//! one, and sealed frames both ways, each step reported as the cases need
//! it (a frame, a close, silence, or a finding).

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{Accepted, Hello, Initiator, Session, Suite};
use crate::case::Finding;
use crate::target::Ctx;
use crate::wire::{self, ty, Conn, Observed, RawFrame, Streams};

/// A fresh ephemeral private key from the suite's RNG.
#[must_use]
pub fn ephemeral() -> [u8; 32] {
    wire::random()
}

/// A fresh HELLO2 of `suite` for a random node id at the suite's clock.
pub fn initiator(ctx: &Ctx<'_>, suite: Suite) -> Result<Initiator, Finding> {
    initiator_as(ctx, suite, &wire::uuid_v4(), super::unix_ms())
}

/// A HELLO2 of `suite` for `node` at `unix_ms`.
pub fn initiator_as(
    ctx: &Ctx<'_>,
    suite: Suite,
    node: &Uuid,
    unix_ms: u64,
) -> Result<Initiator, Finding> {
    Initiator::new(&ctx.cfg.key, suite, ephemeral(), node, unix_ms).map_err(Finding::error)
}

/// The bytes of a frame as it came off the wire.
#[must_use]
pub fn frame_bytes(f: &RawFrame) -> Vec<u8> {
    let mut v = wire::header(f.version, f.ty, f.stream, f.seq, f.len).to_vec();
    v.extend_from_slice(&f.payload);
    v
}

/// Requires the next frame to be an ACCEPT2 that `init` verifies.
pub fn expect_accept2(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    init: Initiator,
) -> Result<(Accepted, Vec<u8>), Finding> {
    let expected = "an ACCEPT2 (02 05 00000000 <suite> 00000048, then Noise message 2) that ReadMessage accepts";
    match conn.next(ctx.cfg.timeout)? {
        Observed::Frame(f) => {
            let bytes = frame_bytes(&f);
            init.accept(&bytes)
                .map(|a| (a, bytes))
                .map_err(|e| Finding::fail(expected, format!("{}: {e}", f.describe())))
        }
        Observed::Closed { .. } => Err(Finding::fail(expected, "connection closed")),
        Observed::Silent { .. } => Err(Finding::fail(
            expected,
            format!("nothing within {:?}", ctx.cfg.timeout),
        )),
    }
}

/// An established v2 connection of the suite to the implementation, or of
/// the implementation to the suite.
#[derive(Debug)]
#[non_exhaustive]
pub struct Secure {
    /// The socket.
    pub conn: Conn,
    /// The keys.
    pub session: Session,
    /// The peer's node id (the server's, when the suite is the client).
    pub peer: Uuid,
    /// The session id of the ACCEPT2.
    pub session_id: [u8; 8],
    /// The HELLO2 as sent.
    pub hello: Vec<u8>,
    /// The ACCEPT2 as received or sent.
    pub accept: Vec<u8>,
    /// The CONFIRM as sent or received.
    pub confirm: Vec<u8>,
}

/// An opened transport frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Opened {
    /// Header as received.
    pub header: [u8; 14],
    /// Decrypted plaintext.
    pub plaintext: Vec<u8>,
}

impl Opened {
    /// The frame type.
    #[must_use]
    pub fn ty(&self) -> u8 {
        self.header[1]
    }

    /// The frame as a v1-shaped frame (version 1, length = plaintext), for
    /// the stream checks of [`Streams`].
    #[must_use]
    pub fn as_plain(&self) -> RawFrame {
        let h = &self.header;
        RawFrame {
            version: 1,
            ty: h[1],
            stream: u32::from_be_bytes([h[2], h[3], h[4], h[5]]),
            seq: u32::from_be_bytes([h[6], h[7], h[8], h[9]]),
            len: self.plaintext.len() as u32,
            payload: self.plaintext.clone(),
        }
    }
}

/// What the suite saw on an established v2 connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Seen {
    /// A frame whose tag verified.
    Frame(Opened),
    /// The peer closed.
    Closed,
    /// Nothing within the time given.
    Silent,
}

/// The handshake as the suite's client: HELLO2, ACCEPT2 verified, CONFIRM
/// sent.
pub fn connect(ctx: &mut Ctx<'_>) -> Result<Secure, Finding> {
    let suite = ctx.cfg.suite;
    let init = initiator(ctx, suite)?;
    connect_with(ctx, init)
}

/// [`connect`] with a prepared HELLO2.
pub fn connect_with(ctx: &mut Ctx<'_>, init: Initiator) -> Result<Secure, Finding> {
    let mut conn = Conn::connect(ctx)?;
    let hello = init.hello().to_vec();
    conn.send(&hello)?;
    let (a, accept) = expect_accept2(&mut conn, ctx, init)?;
    let mut session = a.session;
    let confirm = session.tx.confirm();
    conn.send(&confirm)?;
    Ok(Secure {
        conn,
        session,
        peer: a.server_node,
        session_id: a.session_id,
        hello,
        accept,
        confirm,
    })
}

/// Reads the implementation's HELLO2 as a server of either suite would and
/// checks its header and that it decrypts.
pub fn read_hello2(conn: &mut Conn, ctx: &mut Ctx<'_>) -> Result<(Hello, Vec<u8>), Finding> {
    let expected = "a HELLO2 (02 04 00000000 <suite 1 or 2> 00000048, then a Noise message 1 that decrypts under the key's PSK)";
    match conn.next(ctx.cfg.timeout)? {
        Observed::Frame(f) => {
            let bytes = frame_bytes(&f);
            Hello::read(&ctx.cfg.key, &Suite::ALL, ephemeral(), &bytes)
                .map(|h| (h, bytes))
                .map_err(|e| Finding::fail(expected, format!("{}: {e}", f.describe())))
        }
        other => Err(ctx
            .imp
            .explain_silence()
            .unwrap_or_else(|| Finding::fail(expected, format!("{other:?}")))),
    }
}

/// The suite's server half after [`read_hello2`]: ACCEPT2 out, the
/// client's CONFIRM read and checked.
pub fn serve(mut conn: Conn, ctx: &mut Ctx<'_>, hello: Hello) -> Result<Secure, Finding> {
    let server = wire::uuid_v4();
    let hello_bytes = Vec::new();
    let (accept, session) = hello
        .accept(&server, wire::random())
        .map_err(Finding::error)?;
    conn.send(&accept)?;
    let mut s = Secure {
        conn,
        session,
        peer: server,
        session_id: [0; 8],
        hello: hello_bytes,
        accept,
        confirm: Vec::new(),
    };
    let expected = "CONFIRM: header 02 03 00000000 00000000 00000010 and a tag that opens with nonce 0 to an empty plaintext";
    match s.conn.next(ctx.cfg.timeout)? {
        Observed::Frame(f) => {
            let bytes = frame_bytes(&f);
            let want = super::header(ty::CONTROL, 0, 0, 16);
            if bytes[..14] != want {
                return Err(Finding::fail(expected, f.describe()));
            }
            let h: [u8; 14] = want;
            match s.session.rx.open(&h, &f.payload) {
                Ok(p) if p.is_empty() => {
                    s.confirm = bytes;
                    Ok(s)
                }
                Ok(p) => Err(Finding::fail(
                    expected,
                    format!("a CONFIRM of {} plaintext bytes", p.len()),
                )),
                Err(e) => Err(Finding::fail(expected, e.to_string())),
            }
        }
        other => Err(Finding::fail(expected, format!("{other:?}"))),
    }
}

impl Secure {
    /// Sends a sealed frame with the true length.
    pub fn send(&mut self, t: u8, stream: u32, seq: u32, plaintext: &[u8]) -> Result<(), Finding> {
        let f = self.session.tx.seal(t, stream, seq, plaintext);
        self.conn.send(&f)
    }

    /// Sends a sealed stream.
    pub fn send_stream(&mut self, stream: u32, chunks: &[&[u8]]) -> Result<(), Finding> {
        let f = self.session.tx.stream(stream, chunks);
        self.conn.send(&f)
    }

    /// The next frame, opened; a tag that does not verify is a failure of
    /// the implementation (its frames must verify in order).
    pub fn next(&mut self, within: Duration) -> Result<Seen, Finding> {
        match self.conn.next(within)? {
            Observed::Frame(f) => {
                let bytes = frame_bytes(&f);
                let h: [u8; 14] = bytes[..14].try_into().unwrap_or([0; 14]);
                if f.version != super::VERSION {
                    return Err(Finding::fail(
                        "transport frames with version 2",
                        f.describe(),
                    ));
                }
                let n = self.session.rx.next_nonce();
                match self.session.rx.open(&h, &f.payload) {
                    Ok(plaintext) => Ok(Seen::Frame(Opened {
                        header: h,
                        plaintext,
                    })),
                    Err(e) => Err(Finding::fail(
                        format!("a frame sealed with the next nonce ({n}) and its header as associated data"),
                        format!("{}: {e}", f.describe()),
                    )),
                }
            }
            Observed::Closed { .. } => Ok(Seen::Closed),
            Observed::Silent { .. } => Ok(Seen::Silent),
        }
    }

    /// Reads until `n` streams completed; every frame must open.
    pub fn collect(&mut self, n: usize, within: Duration) -> Result<Streams, Finding> {
        let mut s = Streams::default();
        let deadline = Instant::now() + within;
        while s.done.len() < n {
            match self.next(deadline.saturating_duration_since(Instant::now()))? {
                Seen::Frame(o) => {
                    if o.ty() == ty::END && o.header[10..14] != [0, 0, 0, 16] {
                        s.violations.push(format!(
                            "END with wire length {} (must be 16)",
                            u32::from_be_bytes(o.header[10..14].try_into().unwrap_or([0; 4]))
                        ));
                    }
                    s.feed(o.as_plain());
                }
                Seen::Closed => {
                    return Err(Finding::fail(
                        format!("{n} stream(s) echoed back"),
                        format!("connection closed after {} stream(s)", s.done.len()),
                    ))
                }
                Seen::Silent => {
                    return Err(Finding::fail(
                        format!("{n} stream(s) echoed back"),
                        format!("{} stream(s) within {within:?}", s.done.len()),
                    ))
                }
            }
        }
        Ok(s)
    }

    /// Requires a close within `within` and no frame of any stream before
    /// it (frames that do not open count as nothing delivered, they are
    /// only counted); returns how many frames came first.
    pub fn expect_close_delivering_nothing(&mut self, within: Duration) -> Result<String, Finding> {
        let deadline = Instant::now() + within;
        loop {
            match self
                .conn
                .next(deadline.saturating_duration_since(Instant::now()))?
            {
                Observed::Closed { .. } => return Ok("connection closed, nothing delivered".into()),
                Observed::Frame(f) => {
                    let bytes = frame_bytes(&f);
                    let h: [u8; 14] = bytes[..14].try_into().unwrap_or([0; 14]);
                    if let Ok(p) = self.session.rx.open(&h, &f.payload) {
                        let o = Opened {
                            header: h,
                            plaintext: p,
                        };
                        if matches!(o.ty(), ty::DATA | ty::END) {
                            return Err(Finding::fail(
                                "close, with nothing of the bad frame delivered",
                                format!(
                                    "the implementation sent back {} ({} plaintext bytes)",
                                    o.as_plain().describe(),
                                    o.plaintext.len()
                                ),
                            ));
                        }
                    }
                }
                Observed::Silent { .. } => {
                    return Err(Finding::fail(
                        "connection closed",
                        format!("still open after {within:?}"),
                    ))
                }
            }
        }
    }
}
