//! A client connection fed arbitrary bytes, optionally behind a valid
//! ACCEPT so that the fuzzer reaches the established state.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Instant;

use asoc_proto::auth::{ApiKey, SessionToken};
use asoc_proto::handshake::ClientOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let t0 = Instant::now();
    let mut auth = common::authenticator(1);
    let mut conn = auth.client(t0, common::UNIX_START, common::config(), ClientOptions::v1());
    let mut input = Vec::new();
    if mode & 1 == 1 {
        let key = ApiKey::new("fuzz-key-0123456789abcdef").expect("key");
        input.extend_from_slice(&SessionToken::sign(&key, [mode; 8]).to_accept().encode_frame());
    }
    input.extend_from_slice(rest);
    common::feed(&mut conn, &mut auth, &input, usize::from(mode >> 1), t0);
});
