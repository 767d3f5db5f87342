//! The implementation under test, as the cases see it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use uuid::Uuid;

use crate::case::Finding;
use crate::v2::Suite;

/// What the suite knows about the implementation under test: its key and
/// community, and the settings it runs with. Defaults follow WIRE.md §6.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TargetConfig {
    /// The API key as bytes (WIRE.md §1: the key string's UTF-8 bytes).
    pub key: Vec<u8>,
    /// The community string.
    pub community: String,
    /// The implementation's handshake deadline (default 10 s).
    pub handshake_timeout: Duration,
    /// The implementation's maximum frame payload (default 16 MiB).
    pub max_payload: u32,
    /// How long an open incoming stream may go without data before the
    /// implementation closes the connection (default 30 s).
    pub idle_timeout: Duration,
    /// How long the implementation's sending may make no progress before it
    /// closes the connection (default 10 s).
    pub stall_timeout: Duration,
    /// The implementation's cap on concurrent connections, when the suite is
    /// told it (the 1024 default is not worth opening in a case).
    pub max_connections: Option<u32>,
    /// Shortest first re-dial delay (default 1 s).
    pub retry_min: Duration,
    /// Longest first re-dial delay (default 5 s).
    pub retry_max: Duration,
    /// Longest wait between two dials of one peer (default 60 s).
    pub max_backoff: Duration,
    /// Consecutive failed dials after which a discovered peer is dropped
    /// (default 3).
    pub dial_failures: u32,
    /// How long a discovered peer is kept without a valid message (default
    /// 15 s).
    pub peer_expiry: Duration,
    /// Failed authentications per IP before the IP is refused (default 5).
    pub lockout_threshold: u32,
    /// Connection attempts per IP per hour (default 100).
    pub attempts_per_hour: u32,
    /// Discovery announce interval (default 3 s).
    pub announce_interval: Duration,
    /// Whether the implementation echoes every completed stream back on a
    /// stream of its own.
    pub echo: bool,
    /// How long the suite waits for something that should happen "at once"
    /// (a close, an ACCEPT, a dial); default 3 s.
    pub timeout: Duration,
    /// How long the suite watches for something that must not happen (a
    /// dial after a bad datagram); default 1 s.
    pub quiet: Duration,
    /// The suite the suite's v2 client offers (default AES-GCM).
    pub suite: Suite,
    /// The suites the target accepts as a server (default both).
    pub accepted_suites: Vec<Suite>,
    /// The target's HELLO2 timestamp window (default 60 s).
    pub timestamp_window: Duration,
    /// Whether the target also accepts v1 (`allow_v1`); default not.
    pub allow_v1: bool,
}

impl TargetConfig {
    /// A target with `key` and `community` and WIRE.md §6 defaults.
    pub fn new(key: impl Into<Vec<u8>>, community: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            community: community.into(),
            handshake_timeout: Duration::from_secs(10),
            max_payload: 16 * 1024 * 1024,
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(10),
            max_connections: None,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            dial_failures: 3,
            peer_expiry: Duration::from_secs(15),
            lockout_threshold: 5,
            attempts_per_hour: 100,
            announce_interval: Duration::from_secs(3),
            echo: false,
            timeout: Duration::from_secs(3),
            quiet: Duration::from_secs(1),
            suite: Suite::AesGcm,
            accepted_suites: Suite::ALL.to_vec(),
            timestamp_window: Duration::from_secs(60),
            allow_v1: false,
        }
    }
}

/// Where a serving implementation can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// Its TCP listener.
    pub tcp: SocketAddr,
    /// Its discovery socket, when discovery is on and reachable.
    pub udp: Option<SocketAddr>,
    /// Its node id, when known (never on the wire in v1).
    pub node_id: Option<Uuid>,
}

impl Endpoint {
    /// An implementation reachable at `tcp`, with no discovery socket and
    /// no known node id.
    #[must_use]
    pub fn new(tcp: SocketAddr) -> Self {
        Self {
            tcp,
            udp: None,
            node_id: None,
        }
    }

    /// The same endpoint with its discovery socket.
    #[must_use]
    pub fn with_udp(mut self, udp: Option<SocketAddr>) -> Self {
        self.udp = udp;
        self
    }

    /// The same endpoint with its node id.
    #[must_use]
    pub fn with_node_id(mut self, node_id: Option<Uuid>) -> Self {
        self.node_id = node_id;
        self
    }
}

/// An implementation the suite can drive. One value serves one case: the
/// in-process runner builds a fresh node for each.
pub trait Implementation {
    /// Makes the implementation listen (if it does not already) and says
    /// where. Called at most once per case that needs it.
    fn serve(&mut self) -> Result<Endpoint, Finding>;

    /// Makes the implementation dial `to` once as a client and, when
    /// `payload` is given, send it as one stream after the handshake.
    fn dial(&mut self, to: SocketAddr, payload: Option<&[u8]>) -> Result<(), Finding>;

    /// [`dial`](Self::dial), telling the implementation the node id the
    /// server must prove (WIRE-v2.md §3.4: a static peer whose id is
    /// configured). Implementations that cannot be told one say
    /// `unsupported`.
    fn dial_expecting(
        &mut self,
        to: SocketAddr,
        payload: Option<&[u8]>,
        node_id: Uuid,
    ) -> Result<(), Finding> {
        let _ = (to, payload, node_id);
        Err(Finding::Unsupported(
            "the implementation's client cannot be told the server's node id".into(),
        ))
    }

    /// The socket the implementation's discovery announcements arrive on,
    /// when the suite can see them.
    fn announcements(&mut self) -> Option<&UdpSocket>;

    /// A second socket the implementation's announcements arrive on (a
    /// second unicast destination), when the suite has one: the v2 rule
    /// that every destination gets the same bytes needs two.
    fn announcement_copies(&mut self) -> Option<&UdpSocket> {
        None
    }

    /// Called when the implementation did not do what a client-role case
    /// waited for: a client program that exited saying it does not support
    /// the case turns into `unsupported` here.
    fn explain_silence(&mut self) -> Option<Finding> {
        None
    }

    /// Like [`explain_silence`](Self::explain_silence) but without waiting:
    /// polled while the suite waits for a dial, so that a client program
    /// that already gave up (exit 89) does not cost the whole wait.
    fn gave_up(&mut self) -> Option<Finding> {
        None
    }

    /// Called by a client-role case after the suite played a valid server
    /// to the end and closed the connection: a client program must then
    /// exit with success within `within` (89 still means `unsupported`).
    /// Nodes in the same process have no exit status to judge.
    fn expect_clean_exit(&mut self, within: Duration) -> Result<(), Finding> {
        let _ = within;
        Ok(())
    }
}

/// Hands out distinct loopback source addresses (127.a.b.c) so that cases
/// that fail authentications on purpose never lock each other out.
#[derive(Debug)]
pub struct Sources {
    next: AtomicU32,
}

impl Sources {
    /// Starts at a random point of 127/8, so that two runs against the same
    /// live target within its lockout period use different addresses.
    #[must_use]
    pub fn new() -> Self {
        Self {
            next: AtomicU32::new(u32::from_be_bytes(crate::wire::random()) % 0x00f0_0000),
        }
    }

    /// The next address, never 127.0.0.1 and never a .0 or .255 host.
    pub fn next(&self) -> IpAddr {
        loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed) % 0x00ff_ffff;
            let [_, a, b, c] = n.to_be_bytes();
            if c == 0 || c == 255 || (a == 0 && b == 0 && c <= 1) {
                continue;
            }
            return IpAddr::V4(Ipv4Addr::new(127, a, b, c));
        }
    }
}

impl Default for Sources {
    fn default() -> Self {
        Self::new()
    }
}

/// What a case function gets.
pub struct Ctx<'a> {
    /// The target's settings.
    pub cfg: &'a TargetConfig,
    /// The implementation.
    pub imp: &'a mut dyn Implementation,
    /// Loopback source addresses.
    pub sources: &'a Sources,
    endpoint: Option<Endpoint>,
}

impl<'a> Ctx<'a> {
    /// A context for one case.
    pub fn new(
        cfg: &'a TargetConfig,
        imp: &'a mut dyn Implementation,
        sources: &'a Sources,
    ) -> Self {
        Self {
            cfg,
            imp,
            sources,
            endpoint: None,
        }
    }

    /// The serving implementation (started on first use).
    pub fn endpoint(&mut self) -> Result<Endpoint, Finding> {
        if let Some(e) = self.endpoint {
            return Ok(e);
        }
        let e = self.imp.serve()?;
        self.endpoint = Some(e);
        Ok(e)
    }

    /// The implementation's discovery address, or `unsupported`.
    pub fn udp_target(&mut self) -> Result<SocketAddr, Finding> {
        self.endpoint()?
            .udp
            .ok_or_else(|| Finding::Unsupported("no UDP discovery target".into()))
    }

    /// A fresh source address for a connection to `to`: a distinct
    /// 127.a.b.c when `to` is on loopback, else the system's choice.
    pub fn source_for(&self, to: SocketAddr) -> Option<IpAddr> {
        to.ip().is_loopback().then(|| self.sources.next())
    }

    /// Fails with `unsupported` when the target has no echo mode.
    pub fn require_echo(&self) -> Result<(), Finding> {
        if self.cfg.echo {
            Ok(())
        } else {
            Err(Finding::Unsupported(
                "needs the implementation's echo mode".into(),
            ))
        }
    }
}
