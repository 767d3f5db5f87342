//! asoc-smol's tests, one binary: the shared scenarios on smol's executor
//! and async-std's, connections, `Net`, readers and `TcpIo`. The floods
//! and the stalled reader (`floods.rs`, `backpressure.rs`) are binaries of
//! their own: they measure the whole process's resident memory.

mod connection;
mod net;
mod readers;
mod scenarios;
mod tcp_io;
