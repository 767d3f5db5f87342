//! Per-stream bookkeeping for both directions.

use std::collections::HashMap;
use std::time::Instant;

use super::{SendError, StreamId};

/// An incoming stream that has received DATA but no END yet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Incoming {
    pub(crate) next_seq: u32,
    pub(crate) bytes: u64,
    pub(crate) last_activity: Instant,
}

/// An outgoing stream that has not been finished.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub(crate) next_seq: u32,
    /// Why a chunk of this stream was refused, once one was: the stream is
    /// then poisoned. Nothing more of it is written, or the peer would get
    /// bytes after a hole, and it is never finished, or the peer would take
    /// a shortened tensor for a complete one. It stays open (its id is not
    /// reused: the peer still holds it open) until the connection closes.
    pub(crate) refused: Option<Box<SendError>>,
}

/// Stream ids this side chose and has not finished, and the allocator for
/// new ones: client odd, server even (RFC-0001 §6.3), never 0, never an id
/// still open.
#[derive(Debug)]
pub(crate) struct OutgoingStreams {
    open: HashMap<StreamId, Outgoing>,
    next_id: u32,
}

impl OutgoingStreams {
    pub(crate) fn new(first_id: u32) -> Self {
        Self {
            open: HashMap::new(),
            next_id: first_id,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    /// Picks the next free id of our parity. The caller checks the limit on
    /// open streams first, so a free id always exists.
    pub(crate) fn open(&mut self) -> StreamId {
        loop {
            let id = self.next_id;
            // Skipping by two keeps the parity; the wrap skips 0, which is the
            // handshake stream.
            self.next_id = match id.checked_add(2) {
                Some(next) => next,
                None => 2 - (id & 1),
            };
            let id = StreamId::new(id);
            if id.get() != 0 && !self.open.contains_key(&id) {
                self.open.insert(
                    id,
                    Outgoing {
                        next_seq: 0,
                        refused: None,
                    },
                );
                return id;
            }
        }
    }

    pub(crate) fn get(&self, id: StreamId) -> Option<&Outgoing> {
        self.open.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: StreamId) -> Option<&mut Outgoing> {
        self.open.get_mut(&id)
    }

    pub(crate) fn remove(&mut self, id: StreamId) -> Option<Outgoing> {
        self.open.remove(&id)
    }

    pub(crate) fn drain_ids(&mut self) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self.open.drain().map(|(id, _)| id).collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_parity_skip_zero_and_open_ids() {
        let mut s = OutgoingStreams::new(1);
        assert_eq!(s.open().get(), 1);
        assert_eq!(s.open().get(), 3);
        let mut s = OutgoingStreams::new(u32::MAX);
        assert_eq!(s.open().get(), u32::MAX);
        assert_eq!(s.open().get(), 1, "odd ids wrap to 1");
        let mut s = OutgoingStreams::new(u32::MAX - 1);
        assert_eq!(s.open().get(), u32::MAX - 1);
        assert_eq!(s.open().get(), 2, "even ids wrap to 2, never 0");
        let mut s = OutgoingStreams::new(1);
        s.open();
        s.next_id = 1;
        assert_eq!(s.open().get(), 3, "an id still open is skipped");
    }
}
