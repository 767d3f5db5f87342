//! asoc-mio's tests, one binary: the shared scenarios on `Mio`, the
//! blocking node and connection, the `Driver` pieces in a user-owned
//! `mio::Poll`, TLS, and mio talking to tokio and smol. The floods and the
//! stalled reader (`floods.rs`, `backpressure.rs`) are binaries of their
//! own: they measure the whole process's resident memory.

mod common;
mod cross;
mod node;
mod pieces;
mod scenarios;
mod tcp;
mod tls;
