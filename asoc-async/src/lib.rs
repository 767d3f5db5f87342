//! # asoc-async
//!
//! The async drive loop of ASoc, written once for every runtime. It binds
//! the sans-IO state machines of [`asoc_proto`] to any transport through two
//! small traits, [`Runtime`] (spawn, sleep) and [`Transport`] (poll-based
//! read, vectored write, flush, shutdown). `asoc-tokio` and `asoc-smol`
//! implement those traits for their runtimes and re-export this API; users
//! normally depend on one of them, not on this crate.
//!
//! Nothing here makes a protocol decision: who may connect, what is valid,
//! when to time out and when to reconnect all come from `asoc-proto`.
// One `unsafe` line, in `runtime::recv_spare`: committing the bytes the
// kernel received into a buffer's spare capacity, so that the TCP reads of
// asoc-smol and asoc-mio need not zero that capacity first.
#![deny(unsafe_code)]
// Public types that may grow are `#[non_exhaustive]`; the rest say why not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

mod clock;
mod connection;
pub mod drive;
mod driver;
mod entropy;
mod error;
mod node;
mod runtime;
mod rxpool;
mod stream;
mod stream_io;
pub mod tls;

pub use asoc_proto::connection::StreamId;
pub use clock::unix_ms;
pub use connection::{Connection, DriverConfig, DriverConfigBuilder, SharedAuthenticator};
pub use driver::Session;
pub use entropy::{os_node_id, os_seed, shared_authenticator};
pub use error::{Error, StreamError};
pub use node::{
    IncomingStream, Node, NodeBuilder, NodeEvent, PeerDirection, PeerInfo, PeerRef, DROP_GRACE,
};
pub use runtime::{
    race, read_room, read_zeroed, recv_spare, BoxFuture, BoxFutureRef, Net, RawSocket, Runtime,
    Transport,
};
pub use stream::{check_declared_len, RecvStream, SendStream};
pub use stream_io::{copy_into, send_reader, ReadInto, StreamBytes};
