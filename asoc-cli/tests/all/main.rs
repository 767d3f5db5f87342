//! The `asoc` binary's tests, one test binary: each test runs `asoc`
//! processes and checks their output.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod cli;
mod conformance;
mod discovery;
mod events;
mod keys;
mod netns_discovery;
mod received;
mod restart;
mod rotation;
mod secrets;
mod transfer;
