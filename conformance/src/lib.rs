//! # conformance
//!
//! One suite keyed to the spec (WIRE.md, RFC-0001 as WIRE.md reads it,
//! RFC-0002 §3–§7 and §10.2), run against every adapter in `cargo test` and
//! against any live implementation from the command line.
//!
//! The suite speaks raw bytes over blocking `std::net` sockets: it depends
//! on none of the runtimes it tests and can send any malformed byte. It
//! judges only what is observable from outside: an ACCEPT that verifies, a
//! silent close, a connection that stays usable, a dial after a datagram.
//!
//! - [`case`]: what a case is; [`cases::all`] the library; [`spec`] the
//!   sections cases name.
//! - [`target`]: the [`Implementation`](target::Implementation) trait a
//!   runner provides (serve, dial, announcements).
//! - [`run`]: outcomes, selection, expectations; [`report`]: human, JSON
//!   and JUnit output.
//! - [`v2`]: the suite's own ASoc v2 peer (snow and ring, none of
//!   asoc-proto's v2 code), used by the `R3-…` cases.
//! - [`main_with_args`]: the command line (`server`, `client`, `--list`).

// Public types that may grow are `#[non_exhaustive]`; the rest say why not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

pub mod case;
pub mod cases;
mod cli;
pub mod report;
pub mod run;
pub mod spec;
pub mod target;
pub mod v2;
pub mod wire;

pub use asoc_proto;
pub use cli::{main_named, main_with_args};
