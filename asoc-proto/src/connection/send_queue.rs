//! Output waiting for the transport: whole frames as header plus `Bytes`
//! payload, handed to the adapter as I/O slices so nothing is copied, and
//! retired as the adapter reports bytes written.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

use crate::wire::{Header, HEADER_LEN};

#[derive(Debug)]
struct QueuedFrame {
    header: [u8; HEADER_LEN],
    payload: Bytes,
    /// The payload is the queue's own (a sealed frame): once written its
    /// memory is kept for the next one.
    owned: bool,
}

impl QueuedFrame {
    fn len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// FIFO of frames with a partially written head.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    frames: VecDeque<QueuedFrame>,
    /// Bytes of the front frame already written.
    head_written: usize,
    /// Unwritten bytes in the queue.
    pending: usize,
    /// The memory of the last owned payload written, for the next one.
    spare: Option<BytesMut>,
}

impl SendQueue {
    pub(crate) fn push(&mut self, header: Header, payload: Bytes) {
        self.push_frame(header, payload, false);
    }

    /// Queues a payload this queue may reuse once written.
    pub(crate) fn push_owned(&mut self, header: Header, payload: Bytes) {
        self.push_frame(header, payload, true);
    }

    /// The memory of an owned payload already written, or an empty buffer.
    pub(crate) fn take_spare(&mut self) -> BytesMut {
        self.spare.take().unwrap_or_default()
    }

    fn push_frame(&mut self, header: Header, payload: Bytes, owned: bool) {
        let frame = QueuedFrame {
            header: header.encode(),
            payload,
            owned,
        };
        self.pending = self.pending.saturating_add(frame.len());
        self.frames.push_back(frame);
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    pub(crate) fn clear(&mut self) {
        self.frames.clear();
        self.head_written = 0;
        self.pending = 0;
    }

    /// Fills `out` with slices of the unwritten bytes, in order; returns how
    /// many slots were used.
    pub(crate) fn fill<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut slots = out.iter_mut();
        let mut used = 0;
        let mut skip = self.head_written;
        'frames: for frame in &self.frames {
            for part in [&frame.header[..], &frame.payload[..]] {
                let rest = part.get(skip..).unwrap_or(&[]);
                skip = skip.saturating_sub(part.len());
                if rest.is_empty() {
                    continue;
                }
                let Some(slot) = slots.next() else {
                    break 'frames;
                };
                *slot = IoSlice::new(rest);
                used += 1;
            }
        }
        used
    }

    /// Retires `n` written bytes; returns how many bytes were retired (never
    /// more than were pending).
    pub(crate) fn advance(&mut self, mut n: usize) -> usize {
        let mut retired = 0;
        while n > 0 {
            let Some(front) = self.frames.front_mut() else {
                break;
            };
            let left = front.len() - self.head_written;
            if n < left {
                self.head_written += n;
                retired += n;
                // Release payload memory as soon as it is written, not when
                // the whole frame is.
                if self.head_written > HEADER_LEN {
                    let written_payload = self.head_written - HEADER_LEN;
                    front.payload.advance(written_payload);
                    self.head_written = HEADER_LEN;
                }
                break;
            }
            n -= left;
            retired += left;
            if let Some(done) = self.frames.pop_front().filter(|f| f.owned) {
                // Unique unless the adapter still holds a view of it.
                if let Ok(buf) = done.payload.try_into_mut() {
                    self.spare = Some(buf);
                }
            }
            self.head_written = 0;
        }
        self.pending -= retired;
        retired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameType;

    fn concat(q: &SendQueue) -> Vec<u8> {
        let mut slots = [IoSlice::new(&[]); 8];
        let n = q.fill(&mut slots);
        slots[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn a_written_owned_payload_is_kept_for_the_next_frame_and_a_borrowed_one_is_not() {
        let mut q = SendQueue::default();
        let owned = Bytes::from(vec![7u8; 4096]);
        let at = owned.as_ptr();
        q.push_owned(Header::new(FrameType::Data, 1, 0, 4096), owned);
        let app = Bytes::from(vec![8u8; 4096]);
        q.push(Header::new(FrameType::Data, 1, 1, 4096), app.clone());
        assert_eq!(q.take_spare().capacity(), 0, "nothing written yet");
        // Written in two pieces: the payload is advanced, then retired.
        q.advance(HEADER_LEN + 100);
        q.advance(4096 - 100);
        // Sealing clears and reserves it: the whole allocation is reused.
        let mut spare = q.take_spare();
        spare.clear();
        spare.reserve(4096);
        assert_eq!(spare.as_ptr(), at, "the same memory comes back");
        q.advance(HEADER_LEN + 4096);
        assert_eq!(
            q.take_spare().capacity(),
            0,
            "the application's buffer is not taken"
        );
        assert_eq!(app.len(), 4096);
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = SendQueue::default();
        q.push(
            Header::new(FrameType::Data, 1, 0, 3),
            Bytes::from_static(b"abc"),
        );
        q.push(Header::new(FrameType::End, 1, 1, 0), Bytes::new());
        let all = concat(&q);
        assert_eq!(all.len(), 31);
        assert_eq!(q.pending(), 31);
        for cut in [5usize, 14, 15, 16, 17, 30] {
            let mut q2 = SendQueue::default();
            q2.push(
                Header::new(FrameType::Data, 1, 0, 3),
                Bytes::from_static(b"abc"),
            );
            q2.push(Header::new(FrameType::End, 1, 1, 0), Bytes::new());
            assert_eq!(q2.advance(cut), cut);
            assert_eq!(concat(&q2), all[cut..].to_vec(), "cut at {cut}");
        }
        assert_eq!(q.advance(100), 31);
        assert!(q.is_empty());
    }

    #[test]
    fn fill_stops_when_slots_run_out() {
        let mut q = SendQueue::default();
        for i in 0..10 {
            q.push(
                Header::new(FrameType::Data, 1, i, 1),
                Bytes::from_static(b"x"),
            );
        }
        let mut slots = [IoSlice::new(&[]); 3];
        assert_eq!(q.fill(&mut slots), 3);
    }
}
