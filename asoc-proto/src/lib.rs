//! # asoc-proto
//!
//! The ASoc v1 protocol (RFC-0001) and its security model (RFC-0002) as
//! sans-IO state machines: bytes and time go in, frames, events and timer
//! deadlines come out. Nothing in this crate reads a clock, touches a socket,
//! asks the OS for randomness, spawns, sleeps or locks.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

pub mod auth;
pub mod discovery;
pub mod replay;
pub mod rng;
pub mod wire;
