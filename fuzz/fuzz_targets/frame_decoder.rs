//! Arbitrary bytes, split at arbitrary points, into the frame decoder, with
//! and without a required first header: no panic, no payload above the
//! limit, never more than one frame's worth buffered.
#![no_main]

use asoc_proto::wire::{FrameDecoder, ACCEPT_HEADER, HELLO_HEADER};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut dec = FrameDecoder::new(MAX);
    match mode % 3 {
        1 => dec.expect_first(HELLO_HEADER),
        2 => dec.expect_first(ACCEPT_HEADER),
        _ => {}
    }
    let step = usize::from(mode / 3).max(1);
    let mut buf = BytesMut::new();
    for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => assert!(frame.payload.len() <= MAX as usize),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() < 14 + MAX as usize + step);
    }
});
