//! asoc-tokio's tests, one binary: the shared scenarios on tokio,
//! connections, readers and writers, TLS as a layer over an in-memory pipe. The floods, the stalled reader and the
//! idle-memory checks (`floods.rs`, `backpressure.rs`, `idle_heap.rs`,
//! `idle_memory.rs`) are binaries of their own: they measure the whole
//! process's memory.

mod connection;
mod node;
mod scenarios;
mod tls_layer;
