//! The sections cases are keyed to: RFC-0001 (`R1-…`) as WIRE.md reads it,
//! RFC-0002 (`R2-…`), and WIRE-v2.md (`R3-…`).

/// A section a case may name.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Section {
    /// `R1-5.2`, `R2-4.3`, ...
    pub id: &'static str,
    /// Its heading in the RFC.
    pub title: &'static str,
    /// The WIRE.md section that says how this project reads it.
    pub wire: &'static str,
}

/// Every section a case may name, in document order.
pub const SECTIONS: &[Section] = &[
    s("R1-4.2", "Discovery Message Format", "WIRE.md §7"),
    s("R1-4.3", "Discovery Field Descriptions", "WIRE.md §5, §7"),
    s("R1-4.4", "Discovery Protocol", "WIRE.md §7"),
    s("R1-5.2", "HELLO Frame", "WIRE.md §3"),
    s("R1-5.3", "ACCEPT Frame", "WIRE.md §3"),
    s("R1-5.4", "Connection Establishment Flow", "WIRE.md §3"),
    s("R1-6.2", "Stream Lifecycle", "WIRE.md §4"),
    s("R1-6.3", "Stream ID Allocation", "WIRE.md §4"),
    s("R1-7.1", "Frame Header", "WIRE.md §2"),
    s("R1-7.4", "END Frame", "WIRE.md §4"),
    s("R1-8.1", "Connection States", "WIRE.md §3, §4"),
    s("R1-9.1", "Authentication Failures", "WIRE.md §3"),
    s("R1-9.2", "Protocol Violations", "WIRE.md §4"),
    s("R1-9.3", "Timeout Handling", "WIRE.md §3, §6"),
    s("R1-9.4", "Reconnection Strategy", "WIRE.md §6"),
    s("R1-10.4", "Denial of Service", "WIRE.md §6"),
    s("R2-3.3", "Community Hash Function", "WIRE.md §1"),
    s("R2-4.2", "HMAC-Based Authentication", "WIRE.md §1, §3"),
    s("R2-4.3", "Challenge-Response Protocol", "WIRE.md §5"),
    s("R2-4.4", "Truncated HMAC", "WIRE.md §3, §7"),
    s("R2-5.2", "Session Token Format", "WIRE.md §3"),
    s("R2-5.3", "Stateless Operation", "WIRE.md §3"),
    s("R2-6.2.1", "Unauthorized Node Joining", "WIRE.md §3, §7"),
    s("R2-6.2.3", "Man-in-the-Middle", "WIRE.md §3, §7"),
    s("R2-7.3", "Random Number Generation", "WIRE.md §3"),
    s("R2-7.4", "Timing Attack Resistance", "WIRE.md §3"),
    s(
        "R2-10.2",
        "Rate Limiting (a future extension in RFC-0002; the limits are WIRE.md's)",
        "WIRE.md §6",
    ),
    s("R3-2", "Frames", "WIRE-v2.md §2"),
    s("R3-3.1", "HELLO2", "WIRE-v2.md §3.1"),
    s("R3-3.2", "Server Checks of HELLO2", "WIRE-v2.md §3.2"),
    s("R3-3.3", "ACCEPT2", "WIRE-v2.md §3.3"),
    s("R3-3.4", "Client Checks of ACCEPT2", "WIRE-v2.md §3.4"),
    s("R3-3.5", "Split Keys", "WIRE-v2.md §3.5"),
    s("R3-3.6", "CONFIRM", "WIRE-v2.md §3.6"),
    s("R3-3.7", "Handshake Deadlines", "WIRE-v2.md §3.7"),
    s("R3-4", "Transport Frames", "WIRE-v2.md §4"),
    s("R3-5", "Discovery v2", "WIRE-v2.md §5"),
    s("R3-6", "Versions and Downgrade", "WIRE-v2.md §6"),
];

const fn s(id: &'static str, title: &'static str, wire: &'static str) -> Section {
    Section { id, title, wire }
}

/// The section with this id.
#[must_use]
pub fn section(id: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|s| s.id == id)
}

/// `RFC-0001 §5.2` for `R1-5.2`.
#[must_use]
pub fn citation(id: &str) -> String {
    let (doc, num) = id.split_once('-').unwrap_or((id, ""));
    let rfc = match doc {
        "R1" => "RFC-0001",
        "R2" => "RFC-0002",
        "R3" => "WIRE-v2.md",
        other => other,
    };
    format!("{rfc} §{num}")
}
