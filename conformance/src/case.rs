//! What a case is: data (id, title, quoted requirement, level, role,
//! transport) plus the function that judges one implementation.

use std::fmt;

use crate::target::Ctx;

/// How binding a requirement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Level {
    /// A failure fails the run.
    Must,
    /// A failure is reported as `non-strict` unless `--strict` is given.
    Should,
    /// Never fails: the case reports what it observed.
    Info,
}

impl Level {
    /// `MUST`, `SHOULD` or `INFO`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Must => "MUST",
            Self::Should => "SHOULD",
            Self::Info => "INFO",
        }
    }
}

/// Who opens the connection (or sends the first datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// The suite dials the implementation under test (or sends it datagrams).
    SuiteDials,
    /// The implementation dials the suite (or announces to it).
    ImplDials,
}

impl Role {
    /// `suite-dials` or `impl-dials`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SuiteDials => "suite-dials",
            Self::ImplDials => "impl-dials",
        }
    }
}

/// The transport a case exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// The framed TCP connection.
    Tcp,
    /// Discovery datagrams.
    Udp,
}

impl Transport {
    /// `TCP` or `UDP`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// Which version of the wire a run tests (`--wire v1|v2`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wire {
    /// WIRE.md: the `R1-…` and `R2-…` cases.
    V1,
    /// WIRE-v2.md: the `R3-…` cases (the default).
    #[default]
    V2,
}

impl Wire {
    /// `v1` or `v2`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

impl std::str::FromStr for Wire {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(Self::V1),
            "v2" | "2" => Ok(Self::V2),
            other => Err(format!("unknown wire version `{other}` (v1, v2)")),
        }
    }
}

/// Why a case did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// The implementation did something the requirement forbids.
    Fail {
        /// What the requirement asks for.
        expected: String,
        /// What the suite observed.
        actual: String,
    },
    /// The case cannot run against this target (no echo mode, no UDP
    /// target, client role without a client hook, ...).
    Unsupported(String),
    /// The case was not run on purpose (not applicable to this target).
    Skip(String),
    /// Harness or connection trouble that says nothing about conformance.
    Error(String),
}

impl Finding {
    /// A failure with what was expected and what happened.
    pub fn fail(expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Self::Fail {
            expected: expected.into(),
            actual: actual.into(),
        }
    }

    /// Harness trouble.
    pub fn error(msg: impl fmt::Display) -> Self {
        Self::Error(msg.to_string())
    }
}

/// What a case function returns: `Ok(observation)` when the requirement
/// held (the observation is what informational cases report), or why not.
pub type CaseResult = Result<String, Finding>;

/// One conformance case.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct Case {
    /// Stable id, `R<rfc>-<section>/<n>`; never renumbered.
    pub id: &'static str,
    /// Short title.
    pub title: &'static str,
    /// The requirement, quoted from WIRE.md or the RFC.
    pub requirement: &'static str,
    /// MUST, SHOULD or informational.
    pub level: Level,
    /// Who dials whom.
    pub role: Role,
    /// TCP or UDP.
    pub transport: Transport,
    /// Whether the case needs the implementation's echo mode.
    pub needs_echo: bool,
    /// The judge.
    pub run: fn(&mut Ctx<'_>) -> CaseResult,
}

impl Case {
    /// The section part of the id (`R1-5.2` of `R1-5.2/3`).
    #[must_use]
    pub fn section(&self) -> &'static str {
        self.id.split_once('/').map_or(self.id, |(s, _)| s)
    }

    /// The wire version the case tests: `R3-…` cases judge WIRE-v2.md,
    /// the others WIRE.md.
    #[must_use]
    pub fn wire(&self) -> Wire {
        if self.id.starts_with("R3-") {
            Wire::V2
        } else {
            Wire::V1
        }
    }

    /// Whether the requirement is WIRE.md's alone: a v1 case whose quoted
    /// requirement cites no section of RFC-0001 or RFC-0002 that states a
    /// requirement (RFC-0002 §10, "Future Extensions", states none).
    /// WIRE-v2.md cases are not counted: that document is their standard.
    #[must_use]
    pub fn wire_only(&self) -> bool {
        self.wire() == Wire::V1 && !cites_rfc_requirement(self.requirement)
    }

    /// The level as reports show it: `MUST`, `SHOULD` or `INFO`, prefixed
    /// `WIRE-` for a requirement of WIRE.md alone.
    #[must_use]
    pub fn level_label(&self) -> &'static str {
        match (self.wire_only(), self.level) {
            (false, l) => l.as_str(),
            (true, Level::Must) => "WIRE-MUST",
            (true, Level::Should) => "WIRE-SHOULD",
            (true, Level::Info) => "WIRE-INFO",
        }
    }

    /// The case number within its section.
    #[must_use]
    pub fn number(&self) -> u32 {
        self.id
            .split_once('/')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0)
    }
}

/// Whether `text` cites a section of RFC-0001 or RFC-0002 (`RFC-0001 §9.1`)
/// other than RFC-0002 §10, whose subsections are future extensions.
fn cites_rfc_requirement(text: &str) -> bool {
    text.match_indices("RFC-000").any(|(i, _)| {
        let rest = &text[i + "RFC-000".len()..];
        let Some((doc, after)) = rest.split_once(' ') else {
            return false;
        };
        let Some(section) = after.strip_prefix('§') else {
            return false;
        };
        match doc {
            "1" => true,
            "2" => !(section.starts_with("10.") || section.starts_with("10 ")),
            _ => false,
        }
    })
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("id", &self.id)
            .field("title", &self.title)
            .field("level", &self.level)
            .field("role", &self.role)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}
