//! Byte-exact codecs for ASoc v1 (WIRE.md §2, §3 and §7).
//!
//! Nothing here decides whether a frame is allowed in the current state of a
//! connection; that is [`crate::connection`]'s job. The decoder does enforce
//! the limits that must hold before a payload is buffered: the version byte,
//! the payload limit and, during the handshake, the exact first header.

mod decoder;
mod header;
mod messages;

pub use decoder::{Frame, FrameDecoder, FrameError, DEFAULT_MAX_PAYLOAD};
pub use header::{FrameType, Header, HEADER_LEN, VERSION};
pub use messages::{
    Accept, Announcement, Hello, ACCEPT_HEADER, ACCEPT_LEN, ANNOUNCEMENT_LEN,
    ANNOUNCEMENT_SIGNED_LEN, HELLO_HEADER, HELLO_LEN,
};
