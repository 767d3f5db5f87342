//! Deadline arithmetic that cannot panic.

use core::time::Duration;
use std::time::Instant;

/// `now + d`, or the latest representable instant on the way there when the
/// sum overflows. `Instant + Duration` panics on overflow; a deadline that
/// falls short of "never" must still lie in the future, so a lockout computed
/// from an absurd configuration fails closed instead of ending at once.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    if let Some(t) = now.checked_add(d) {
        return t;
    }
    let mut t = now;
    let mut step = d;
    while !step.is_zero() {
        step /= 2;
        if let Some(next) = t.checked_add(step) {
            t = next;
        }
    }
    t
}
