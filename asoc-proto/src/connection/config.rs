//! Per-connection limits and timers.

use core::time::Duration;

use crate::v2::{Suite, SuiteSet};
use crate::wire::DEFAULT_MAX_PAYLOAD;

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive was zero.
    #[error("{field} must be greater than zero")]
    ZeroDuration {
        /// The offending setting.
        field: &'static str,
    },
    /// A count or size that must be positive was zero.
    #[error("{field} must be greater than zero")]
    ZeroLimit {
        /// The offending setting.
        field: &'static str,
    },
    /// The first-byte deadline is part of the handshake, so it cannot be
    /// later than the handshake deadline.
    #[error("first_byte_timeout ({first_byte:?}) exceeds handshake_timeout ({handshake:?})")]
    FirstByteAfterHandshake {
        /// The configured first-byte timeout.
        first_byte: Duration,
        /// The configured handshake timeout.
        handshake: Duration,
    },
    /// The HELLO replay window is below the 60 s floor of RFC-0002 §4.3.
    #[error("HELLO replay retention is {secs} s; RFC-0002 §4.3 requires at least 60 s")]
    ReplayRetentionTooShort {
        /// The configured retention in whole seconds.
        secs: u64,
    },
}

/// How long an accepted connection may stay silent before its first byte,
/// unless configured otherwise.
pub(crate) const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);

/// Limits and timers of one connection (WIRE.md §6). Build with
/// [`ConnectionConfig::builder`]; [`Default`] gives the WIRE.md defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub(crate) max_payload: u32,
    pub(crate) handshake_timeout: Duration,
    /// `None`: the default, [`DEFAULT_FIRST_BYTE_TIMEOUT`] or the handshake
    /// timeout if that is shorter.
    pub(crate) first_byte_timeout: Option<Duration>,
    pub(crate) send_stall_timeout: Duration,
    pub(crate) receive_idle_timeout: Duration,
    pub(crate) send_high_water: usize,
    pub(crate) max_incoming_streams: usize,
    pub(crate) max_outgoing_streams: usize,
    pub(crate) suite: Suite,
    pub(crate) accept_suites: SuiteSet,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            handshake_timeout: Duration::from_secs(10),
            first_byte_timeout: None,
            send_stall_timeout: Duration::from_secs(10),
            receive_idle_timeout: Duration::from_secs(30),
            send_high_water: 8 * 1024 * 1024,
            max_incoming_streams: 4096,
            max_outgoing_streams: 4096,
            suite: Suite::AesGcm,
            accept_suites: SuiteSet::all(),
        }
    }
}

impl ConnectionConfig {
    /// A builder starting from the defaults.
    #[must_use]
    pub fn builder() -> ConnectionConfigBuilder {
        ConnectionConfigBuilder(Self::default())
    }

    /// Largest payload accepted from the peer, and sent to it (default 16 MiB).
    #[must_use]
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }

    /// Time allowed for the handshake (default 10 s).
    #[must_use]
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Time an accepted (server-side) connection may stay silent before the
    /// first byte of its HELLO arrives (default 2 s, or the handshake
    /// timeout if that is shorter). A peer that means to authenticate sends
    /// its HELLO at once; a silent connection only holds a
    /// pre-authentication place, so it gets a much shorter deadline than
    /// the whole handshake, which must allow for a slow link.
    #[must_use]
    pub fn first_byte_timeout(&self) -> Duration {
        self.first_byte_timeout
            .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT.min(self.handshake_timeout))
    }

    /// Time pending output may go without progress (default 10 s).
    #[must_use]
    pub fn send_stall_timeout(&self) -> Duration {
        self.send_stall_timeout
    }

    /// Time an open incoming stream may go without a frame (default 30 s).
    #[must_use]
    pub fn receive_idle_timeout(&self) -> Duration {
        self.receive_idle_timeout
    }

    /// Queued output, in bytes, above which `send` refuses (default 8 MiB).
    #[must_use]
    pub fn send_high_water(&self) -> usize {
        self.send_high_water
    }

    /// Incoming streams that may be open at once (default 4096).
    #[must_use]
    pub fn max_incoming_streams(&self) -> usize {
        self.max_incoming_streams
    }

    /// Outgoing streams that may be open at once (default 4096).
    #[must_use]
    pub fn max_outgoing_streams(&self) -> usize {
        self.max_outgoing_streams
    }

    /// The v2 suite this side offers when it dials (default AES-GCM).
    #[must_use]
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The v2 suites this side accepts as a server (default both).
    #[must_use]
    pub fn accept_suites(&self) -> SuiteSet {
        self.accept_suites
    }
}

/// Builds a [`ConnectionConfig`]; every setter keeps the other defaults.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionConfigBuilder(ConnectionConfig);

impl ConnectionConfigBuilder {
    /// Largest payload accepted and sent, in bytes.
    #[must_use]
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.0.max_payload = bytes;
        self
    }

    /// Handshake deadline, counted from the connection's creation.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.0.handshake_timeout = timeout;
        self
    }

    /// Server side: deadline for the first byte, counted from the
    /// connection's creation; positive and at most the handshake timeout.
    #[must_use]
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.0.first_byte_timeout = Some(timeout);
        self
    }

    /// How long pending output may make no progress before the connection closes.
    #[must_use]
    pub fn send_stall_timeout(mut self, timeout: Duration) -> Self {
        self.0.send_stall_timeout = timeout;
        self
    }

    /// How long an open incoming stream may go without a frame.
    #[must_use]
    pub fn receive_idle_timeout(mut self, timeout: Duration) -> Self {
        self.0.receive_idle_timeout = timeout;
        self
    }

    /// Queued output above which `send` refuses with `WouldBlock`.
    #[must_use]
    pub fn send_high_water(mut self, bytes: usize) -> Self {
        self.0.send_high_water = bytes;
        self
    }

    /// Incoming streams that may be open at once.
    #[must_use]
    pub fn max_incoming_streams(mut self, n: usize) -> Self {
        self.0.max_incoming_streams = n;
        self
    }

    /// Outgoing streams that may be open at once.
    #[must_use]
    pub fn max_outgoing_streams(mut self, n: usize) -> Self {
        self.0.max_outgoing_streams = n;
        self
    }

    /// The v2 suite offered when dialing.
    #[must_use]
    pub fn suite(mut self, suite: Suite) -> Self {
        self.0.suite = suite;
        self
    }

    /// The v2 suites accepted as a server; a HELLO2 naming another fails
    /// on its suite byte.
    #[must_use]
    pub fn accept_suites(mut self, suites: SuiteSet) -> Self {
        self.0.accept_suites = suites;
        self
    }

    /// Offers `suite` and accepts only `suite`: what `--suite` means.
    #[must_use]
    pub fn only_suite(self, suite: Suite) -> Self {
        self.suite(suite).accept_suites(SuiteSet::only(suite))
    }

    /// Checks the settings.
    pub fn build(self) -> Result<ConnectionConfig, ConfigError> {
        let c = self.0;
        for (field, d) in [
            ("handshake_timeout", c.handshake_timeout),
            ("first_byte_timeout", c.first_byte_timeout()),
            ("send_stall_timeout", c.send_stall_timeout),
            ("receive_idle_timeout", c.receive_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
        }
        if let Some(first_byte) = c.first_byte_timeout {
            if first_byte > c.handshake_timeout {
                return Err(ConfigError::FirstByteAfterHandshake {
                    first_byte,
                    handshake: c.handshake_timeout,
                });
            }
        }
        for (field, n) in [
            ("max_payload", c.max_payload as usize),
            ("send_high_water", c.send_high_water),
            ("max_incoming_streams", c.max_incoming_streams),
            ("max_outgoing_streams", c.max_outgoing_streams),
        ] {
            if n == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        Ok(c)
    }
}
