//! Byte-exact codecs for ASoc v1 (WIRE.md §2, §3 and §7) and the v2
//! discovery announcement (WIRE-v2.md §5).
//!
//! Nothing here decides whether a frame is allowed in the current state of a
//! connection; that is [`crate::connection`]'s job. The decoder does enforce
//! the limits that must hold before a payload is buffered: the version byte,
//! the payload limit and, during the handshake, the exact first header.

mod announcement2;
mod decoder;
mod header;
mod messages;

pub use announcement2::{
    AnnouncementV2, ANNOUNCEMENT_V2_LEN, ANNOUNCEMENT_V2_SIGNED_LEN, ANNOUNCEMENT_V2_VERSION,
    FLAG_ACCEPTS_V1,
};
pub use decoder::{Frame, FrameDecoder, FrameError, DEFAULT_MAX_PAYLOAD};
pub use header::{FrameType, Header, HEADER_LEN, VERSION};
pub use messages::{
    Accept, Announcement, Hello, ACCEPT_HEADER, ACCEPT_LEN, ANNOUNCEMENT_LEN,
    ANNOUNCEMENT_SIGNED_LEN, HELLO_HEADER, HELLO_LEN,
};
