//! A server connection fed arbitrary bytes, optionally behind a valid
//! HELLO so that the fuzzer reaches the established state.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Instant;

use asoc_proto::connection::Connection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let t0 = Instant::now();
    let mut server_auth = common::authenticator(2);
    let mut input = Vec::new();
    if mode & 1 == 1 {
        let mut client_auth = common::authenticator(1);
        input.extend_from_slice(&client_auth.make_hello(t0).encode_frame());
    }
    input.extend_from_slice(rest);
    let mut conn = Connection::server(common::config(), t0);
    common::feed(&mut conn, &mut server_auth, &input, usize::from(mode >> 1), t0);
});
