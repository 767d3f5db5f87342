//! The id of a stream within one connection.

use core::fmt;

/// The id of a stream within one connection (WIRE.md §3): the number in
/// its frames' headers. The side that opens a stream picks it, client odd,
/// server even; 0 is the handshake's and never a stream's. Shown as the
/// number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u32);

impl StreamId {
    /// The stream with number `id` as it appears on the wire.
    #[must_use]
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    /// The number on the wire.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for StreamId {
    fn from(id: u32) -> Self {
        Self(id)
    }
}

impl From<StreamId> for u32 {
    fn from(id: StreamId) -> Self {
        id.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::StreamId;

    #[test]
    fn a_stream_id_shows_as_its_number() {
        let id = StreamId::new(42);
        assert_eq!(id.to_string(), "42");
        assert_eq!(format!("{id:>4}"), "  42");
        assert_eq!(u32::from(id), 42);
        assert_eq!(StreamId::from(7).get(), 7);
    }
}
