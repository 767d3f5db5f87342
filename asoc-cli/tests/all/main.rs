//! The `asoc` binary's tests, one test binary: each test runs `asoc`
//! processes and checks their output.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod bench;
mod cli;
mod conformance;
mod discovery;
mod events;
mod keys;
mod metrics;
mod netns_discovery;
mod peers_from;
mod python_peer;
mod received;
mod received_bounds;
mod restart;
mod rotation;
mod secrets;
mod transfer;
