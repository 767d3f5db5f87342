//! The wall clock, for every adapter: asoc-proto takes wall-clock time as
//! an argument (HELLO2 timestamps, discovery) and never reads a clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// This machine's wall-clock time in unix milliseconds (0 if the clock is
/// set before 1970, which every peer then refuses as stale).
#[must_use]
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
