//! Connection scenarios on the virtual-clock pair harness. Every scenario
//! runs twice: with whole writes delivered at once and one byte at a time.

use crate::harness;

use std::time::{Duration, Instant};

use asoc_proto::auth::{sign_hello, ApiKey, AuthFailure, KeyId};
use asoc_proto::connection::v2_handshake_header;
use asoc_proto::connection::{
    CloseReason, ConnectionConfig, Event, ProtocolError, SendError, StreamId,
};
use asoc_proto::handshake::HandshakeOutcome;
use asoc_proto::v2::{Suite, WireVersion};
use asoc_proto::wire::{FrameError, FrameType, Header, HEADER_LEN};
use bytes::Bytes;
use harness::v2peer::{v2_header, Keys, RawServer};
use harness::{authenticator, key, pattern, Pair, CHUNKINGS, KEY, UNIX_START, VERSIONS};
use uuid::Uuid;

/// Every version with every delivery granularity.
fn cases() -> impl Iterator<Item = (WireVersion, usize)> {
    VERSIONS
        .into_iter()
        .flat_map(|v| CHUNKINGS.into_iter().map(move |c| (v, c)))
}

fn frame(t: FrameType, stream: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Header::new(t, stream, seq, payload.len() as u32)
        .encode()
        .to_vec();
    v.extend_from_slice(payload);
    v
}

/// Sends `data` on a new stream of `side` in `chunk`-byte pieces, driving
/// the pair whenever the send queue pushes back.
fn send_stream(pair: &mut Pair, from_client: bool, data: &[u8], chunk: usize) -> StreamId {
    let data = Bytes::copy_from_slice(data);
    let stream = if from_client {
        pair.client.conn.open_stream()
    } else {
        pair.server.conn.open_stream()
    }
    .unwrap();
    let mut off = 0;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        let now = pair.now;
        let conn = if from_client {
            &mut pair.client.conn
        } else {
            &mut pair.server.conn
        };
        match conn.send(now, stream, data.slice(off..end)) {
            Ok(()) => off = end,
            Err(SendError::WouldBlock { .. }) => pair.drive(),
            Err(e) => panic!("send: {e}"),
        }
    }
    let now = pair.now;
    let conn = if from_client {
        &mut pair.client.conn
    } else {
        &mut pair.server.conn
    };
    conn.finish(now, stream).unwrap();
    stream
}

fn stream_end(events: &[Event], stream: StreamId) -> Option<(u32, u64)> {
    events.iter().find_map(|e| match e {
        Event::StreamEnd {
            stream: s,
            frames,
            bytes,
        } if *s == stream => Some((*frames, *bytes)),
        _ => None,
    })
}

#[test]
fn handshake_establishes_both_sides_with_the_same_session_token() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.handshake();
        let session = |events: &[Event]| {
            events.iter().find_map(|e| match e {
                Event::Established {
                    session,
                    peer_node,
                    key,
                } => Some((*session, *peer_node, *key)),
                _ => None,
            })
        };
        let (cs, cpeer, ckey) = session(&p.client.events).unwrap();
        let (ss, speer, skey) = session(&p.server.events).unwrap();
        assert_eq!(cs, ss);
        assert!(cs.token.unwrap().verify(&key(KEY)));
        assert_eq!(cpeer, None, "v1 carries no server node id");
        assert_eq!(speer, Some(Uuid::from_bytes([1; 16])));
        assert_eq!((ckey, skey), (KeyId(0), KeyId(0)));
        assert_eq!(p.client.wire_log.len(), 50, "HELLO is 50 bytes on the wire");
        assert_eq!(
            p.server.wire_log.len(),
            30,
            "ACCEPT is 30 bytes on the wire"
        );
    }
}

#[test]
fn v2_handshake_establishes_both_sides_with_the_same_session() {
    for suite in Suite::ALL {
        for chunk in CHUNKINGS {
            let config = ConnectionConfig::builder().suite(suite).build().unwrap();
            let mut p = Pair::version(WireVersion::V2, config, key(KEY), key(KEY), chunk);
            p.handshake();
            let established = |events: &[Event]| {
                events.iter().find_map(|e| match e {
                    Event::Established {
                        session,
                        peer_node,
                        key,
                    } => Some((*session, *peer_node, *key)),
                    _ => None,
                })
            };
            let (cs, cpeer, ckey) = established(&p.client.events).unwrap();
            let (ss, speer, skey) = established(&p.server.events).unwrap();
            assert_eq!(cs, ss, "both sides report the same session");
            assert_eq!(cs.version, WireVersion::V2);
            assert_eq!(cs.suite, Some(suite));
            assert!(cs.handshake_hash.is_some());
            assert_eq!(cs.token, None, "v2 issues no v1 token");
            assert_eq!(cpeer, Some(Uuid::from_bytes([2; 16])), "server proved");
            assert_eq!(speer, Some(Uuid::from_bytes([1; 16])), "client proved");
            assert_eq!((ckey, skey), (KeyId(0), KeyId(0)));
            assert_eq!(p.client.conn.session(), Some(cs));
            assert_eq!(
                p.client.wire_log.len(),
                86 + 30,
                "HELLO2 is 86 bytes, CONFIRM 30"
            );
            assert_eq!(&p.client.wire_log[86..100], &CONFIRM_HEADER);
            assert_eq!(p.server.wire_log.len(), 86, "ACCEPT2 is 86 bytes");
            assert_eq!(
                &p.server.wire_log[..14],
                &v2_handshake_header(suite, true).encode()
            );
        }
    }
}

/// CONFIRM's header on the wire: CONTROL on stream 0, seq 0, only a tag.
const CONFIRM_HEADER: [u8; 14] = [2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16];

#[test]
fn v2_empty_tensor_is_a_lone_sealed_end_with_seq_zero() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V2, chunk);
        p.handshake();
        let before = p.client.wire_log.len();
        let s = p.client.conn.open_stream().unwrap();
        p.client.conn.finish(p.now, s).unwrap();
        p.drive();
        let sent = &p.client.wire_log[before..];
        assert_eq!(sent.len(), 30, "an END is its header and a tag");
        assert_eq!(
            &sent[..14],
            &v2_header(FrameType::End, s.get(), 0, 16).encode()
        );
        assert_eq!(stream_end(&p.server.events, s), Some((0, 0)));
        assert!(!p
            .server
            .events
            .iter()
            .any(|e| matches!(e, Event::Data { .. })));
    }
}

#[test]
fn v2_data_behind_confirm_in_the_same_read_is_not_lost() {
    let mut p = Pair::defaults(WireVersion::V2, usize::MAX);
    let now = p.now;
    let mut hello = Vec::new();
    p.client.conn.write_to(now, &mut hello).unwrap();
    p.server.conn.handle_read(now, &hello);
    assert_eq!(
        p.server.auth.drive(now, UNIX_START, &mut p.server.conn),
        Some(HandshakeOutcome::AwaitingConfirm)
    );
    assert!(
        p.server.conn.open_stream().is_err(),
        "nothing may be sent before CONFIRM"
    );
    let mut accept = Vec::new();
    p.server.conn.write_to(now, &mut accept).unwrap();
    assert_eq!(accept.len(), 86, "only ACCEPT2");
    p.client.conn.handle_read(now, &accept);
    assert!(matches!(
        p.client.auth.drive(now, UNIX_START, &mut p.client.conn),
        Some(HandshakeOutcome::Accepted { .. })
    ));
    let s = p.client.conn.open_stream().unwrap();
    p.client
        .conn
        .send(now, s, Bytes::from_static(b"early"))
        .unwrap();
    p.client.conn.finish(now, s).unwrap();
    let mut all = Vec::new();
    p.client.conn.write_to(now, &mut all).unwrap();
    assert_eq!(
        all.len(),
        30 + 35 + 30,
        "CONFIRM, DATA and END in one write"
    );
    p.server.read_buf.extend_from_slice(&all);
    p.server.conn.handle_input(now, &mut p.server.read_buf);
    p.drive();
    assert!(p.server.is_established());
    assert_eq!(p.server.received(s), b"early");
    assert_eq!(stream_end(&p.server.events, s), Some((1, 5)));
}

#[test]
fn one_stream_of_64_mib_arrives_intact() {
    let data = pattern(64 << 20, 7);
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        let stream = send_stream(&mut p, true, &data, 1 << 20);
        p.drive();
        assert_eq!(stream_end(&p.server.events, stream), Some((64, 64 << 20)));
        assert!(
            p.server.received(stream) == data,
            "payload differs (chunk {chunk})"
        );
    }
}

#[test]
fn one_stream_delivered_byte_by_byte_arrives_intact() {
    for version in VERSIONS {
        let data = pattern(256 << 10, 8);
        let mut p = Pair::defaults(version, 1);
        p.handshake();
        let stream = send_stream(&mut p, true, &data, 64 << 10);
        p.drive();
        assert_eq!(stream_end(&p.server.events, stream), Some((4, 256 << 10)));
        assert!(p.server.received(stream) == data);
    }
}

#[test]
fn hundred_interleaved_streams_in_both_directions() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        let now = p.now;
        let mut plans = Vec::new();
        for i in 0..100u32 {
            let from_client = i % 2 == 0;
            let len = (i as usize * 977) % 20_000;
            let conn = if from_client {
                &mut p.client.conn
            } else {
                &mut p.server.conn
            };
            let id = conn.open_stream().unwrap();
            plans.push((from_client, id, pattern(len, i), 0usize));
        }
        // Round-robin 1000-byte chunks across all streams so frames interleave.
        loop {
            let mut any = false;
            for (from_client, id, data, off) in plans.iter_mut() {
                if *off >= data.len() {
                    continue;
                }
                let end = (*off + 1000).min(data.len());
                let conn = if *from_client {
                    &mut p.client.conn
                } else {
                    &mut p.server.conn
                };
                conn.send(now, *id, Bytes::copy_from_slice(&data[*off..end]))
                    .unwrap();
                *off = end;
                any = true;
            }
            if !any {
                break;
            }
        }
        for (from_client, id, _, _) in &plans {
            let conn = if *from_client {
                &mut p.client.conn
            } else {
                &mut p.server.conn
            };
            conn.finish(now, *id).unwrap();
        }
        p.drive();
        for (from_client, id, data, _) in &plans {
            let rx = if *from_client { &p.server } else { &p.client };
            assert_eq!(
                stream_end(&rx.events, *id).map(|(_, b)| b),
                Some(data.len() as u64)
            );
            assert!(rx.received(*id) == *data, "stream {id}");
            assert_eq!(
                id.get() % 2,
                u32::from(*from_client),
                "client ids odd, server ids even"
            );
        }
    }
}

#[test]
fn empty_tensor_is_a_lone_end_with_seq_zero() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.handshake();
        let before = p.client.wire_log.len();
        let s = p.client.conn.open_stream().unwrap();
        p.client.conn.finish(p.now, s).unwrap();
        p.drive();
        assert_eq!(
            &p.client.wire_log[before..],
            &frame(FrameType::End, s.get(), 0, b"")[..]
        );
        assert_eq!(stream_end(&p.server.events, s), Some((0, 0)));
        assert!(!p
            .server
            .events
            .iter()
            .any(|e| matches!(e, Event::Data { .. })));
    }
}

#[test]
fn stream_ids_are_reusable_after_end() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.handshake();
        let a = send_stream(&mut p, true, b"first", 100);
        p.drive();
        // The receiver accepts seq 0 again on the same id once END closed it.
        p.inject_to_server(&frame(FrameType::Data, a.get(), 0, b"again"));
        p.inject_to_server(&frame(FrameType::End, a.get(), 1, b""));
        let ends = p
            .server
            .events
            .iter()
            .filter(|e| matches!(e, Event::StreamEnd { stream, .. } if *stream == a))
            .count();
        assert_eq!(ends, 2, "chunk {chunk}");
        assert!(p.server.closed_reason().is_none());
    }
}

#[test]
fn data_behind_accept_in_the_same_read_is_not_lost() {
    let mut p = Pair::defaults(WireVersion::V1, usize::MAX);
    // Let the server see the HELLO and answer, then have it send a whole
    // stream before the client reads anything.
    p.client
        .conn
        .write_to(p.now, &mut p.client.in_flight)
        .unwrap();
    let hello = std::mem::take(&mut p.client.in_flight);
    p.server.read_buf.extend_from_slice(&hello);
    p.server.conn.handle_input(p.now, &mut p.server.read_buf);
    assert!(matches!(
        p.server.auth.drive(p.now, UNIX_START, &mut p.server.conn),
        Some(HandshakeOutcome::Accepted { .. })
    ));
    let s = p.server.conn.open_stream().unwrap();
    p.server
        .conn
        .send(p.now, s, Bytes::from_static(b"early"))
        .unwrap();
    p.server.conn.finish(p.now, s).unwrap();
    let mut all = Vec::new();
    p.server.conn.write_to(p.now, &mut all).unwrap();
    p.client.read_buf.extend_from_slice(&all);
    p.client.conn.handle_input(p.now, &mut p.client.read_buf);
    p.drive();
    assert!(p.client.is_established());
    assert_eq!(p.client.received(s), b"early");
    assert_eq!(stream_end(&p.client.events, s), Some((1, 5)));
}

// ----- timeouts ---------------------------------------------------------

#[test]
fn server_closes_when_no_byte_arrives_within_the_2_s_first_byte_deadline() {
    // Once a byte has arrived the whole 10 s handshake deadline applies
    // (`slow_hello_one_byte_per_second_hits_the_deadline`).
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        // The client's HELLO never leaves: drop it.
        p.client.write_capacity = Some(0);
        p.advance(Duration::from_millis(1_999));
        assert!(p.server.closed_reason().is_none());
        p.advance(Duration::from_millis(1));
        assert_eq!(
            p.server.closed_reason(),
            Some(&CloseReason::HandshakeTimeout)
        );
        assert_eq!(
            p.server.conn.stats().bytes_out,
            0,
            "nothing is sent on a timeout"
        );
    }
}

#[test]
fn first_byte_deadline_is_configurable_up_to_the_handshake_timeout() {
    use asoc_proto::connection::ConfigError;
    let c = ConnectionConfig::default();
    assert_eq!(c.first_byte_timeout(), Duration::from_secs(2));
    let short = ConnectionConfig::builder()
        .handshake_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(short.first_byte_timeout(), Duration::from_secs(1));
    let set = ConnectionConfig::builder()
        .first_byte_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(set.first_byte_timeout(), Duration::from_secs(5));
    assert_eq!(
        ConnectionConfig::builder()
            .first_byte_timeout(Duration::from_secs(11))
            .build(),
        Err(ConfigError::FirstByteAfterHandshake {
            first_byte: Duration::from_secs(11),
            handshake: Duration::from_secs(10),
        })
    );
    assert_eq!(
        ConnectionConfig::builder()
            .first_byte_timeout(Duration::ZERO)
            .build(),
        Err(ConfigError::ZeroDuration {
            field: "first_byte_timeout"
        })
    );
}

#[test]
fn slow_hello_one_byte_per_second_hits_the_deadline() {
    for version in VERSIONS {
        let mut p = Pair::defaults(version, 1);
        p.client
            .conn
            .write_to(p.now, &mut p.client.in_flight)
            .unwrap();
        let hello = std::mem::take(&mut p.client.in_flight);
        for b in &hello[..9] {
            p.inject_to_server(&[*b]);
            p.advance(Duration::from_secs(1));
        }
        p.inject_to_server(&hello[9..10]);
        assert_eq!(p.server.closed_reason(), None, "9 s in, still waiting");
        p.advance(Duration::from_secs(1));
        assert_eq!(
            p.server.closed_reason(),
            Some(&CloseReason::HandshakeTimeout)
        );
    }
}

#[test]
fn client_closes_when_no_accept_arrives_within_10_s() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.server.write_capacity = Some(0);
        p.advance(Duration::from_secs(10));
        assert_eq!(
            p.client.closed_reason(),
            Some(&CloseReason::HandshakeTimeout)
        );
    }
}

#[test]
fn send_stall_closes_after_10_s_without_progress() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        p.client.write_capacity = Some(1000);
        let s = p.client.conn.open_stream().unwrap();
        p.client
            .conn
            .send(p.now, s, Bytes::from(vec![1u8; 100_000]))
            .unwrap();
        p.drive();
        p.advance(Duration::from_millis(9_999));
        assert!(p.client.closed_reason().is_none());
        p.advance(Duration::from_millis(1));
        assert_eq!(p.client.closed_reason(), Some(&CloseReason::SendStall));
        assert!(p.client.events.contains(&Event::SendAborted { stream: s }));
    }
}

#[test]
fn progress_resets_the_send_stall_clock() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        let s = p.client.conn.open_stream().unwrap();
        p.client
            .conn
            .send(p.now, s, Bytes::from(vec![1u8; 100_000]))
            .unwrap();
        for _ in 0..20 {
            p.client.write_capacity = Some(1000);
            p.advance(Duration::from_secs(5));
        }
        assert!(
            p.client.closed_reason().is_none(),
            "{:?}",
            p.client.closed_reason()
        );
    }
}

#[test]
fn open_stream_idle_for_30_s_closes_and_is_incomplete() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        let s = p.client.conn.open_stream().unwrap();
        p.client
            .conn
            .send(p.now, s, Bytes::from_static(b"part"))
            .unwrap();
        p.drive();
        p.advance(Duration::from_millis(29_999));
        assert!(p.server.closed_reason().is_none());
        p.advance(Duration::from_millis(1));
        assert_eq!(
            p.server.closed_reason(),
            Some(&CloseReason::ReceiveIdle { stream: s })
        );
        assert!(p.server.events.contains(&Event::StreamIncomplete {
            stream: s,
            frames: 1,
            bytes: 4,
            reason: CloseReason::ReceiveIdle { stream: s },
        }));
        assert!(stream_end(&p.server.events, s).is_none());
    }
}

#[test]
fn established_connection_without_open_streams_has_no_idle_timer() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        assert_eq!(p.next_timeout(), None);
        p.advance(Duration::from_secs(3600));
        assert!(p.server.closed_reason().is_none());
    }
}

// ----- receiver rules (WIRE.md §4) ----------------------------------------

fn violation(bytes: &[u8]) -> Vec<(usize, Option<CloseReason>, Vec<Event>)> {
    CHUNKINGS
        .iter()
        .map(|&chunk| {
            let mut p = Pair::defaults(WireVersion::V1, chunk);
            p.handshake();
            let sent_before = p.server.conn.stats().bytes_out;
            p.inject_to_server(bytes);
            assert_eq!(
                p.server.conn.stats().bytes_out,
                sent_before,
                "nothing is sent in reply"
            );
            (
                chunk,
                p.server.closed_reason().cloned(),
                p.server.events.clone(),
            )
        })
        .collect()
}

fn assert_protocol_error(bytes: &[u8], expected: ProtocolError) {
    for (chunk, reason, _) in violation(bytes) {
        assert_eq!(
            reason,
            Some(CloseReason::Protocol(expected.clone())),
            "chunk {chunk}"
        );
    }
}

#[test]
fn bad_version_closes() {
    let mut f = frame(FrameType::Data, 1, 0, b"x");
    f[0] = 2;
    assert_protocol_error(
        &f,
        ProtocolError::Frame(FrameError::UnsupportedVersion {
            version: 2,
            expected: 1,
        }),
    );
}

#[test]
fn data_or_end_on_stream_zero_closes() {
    assert_protocol_error(
        &frame(FrameType::Data, 0, 0, b"x"),
        ProtocolError::DataOnStreamZero,
    );
    assert_protocol_error(
        &frame(FrameType::End, 0, 0, b""),
        ProtocolError::EndOnStreamZero,
    );
}

#[test]
fn hello_or_accept_after_the_handshake_closes() {
    for t in [FrameType::Hello, FrameType::Accept] {
        assert_protocol_error(
            &frame(t, 0, 0, &[0; 16]),
            ProtocolError::UnexpectedHandshake { frame_type: t },
        );
    }
}

#[test]
fn sequence_gaps_close() {
    assert_protocol_error(
        &frame(FrameType::Data, 1, 1, b"x"),
        ProtocolError::SequenceGap {
            stream: StreamId::new(1),
            frame_type: FrameType::Data,
            expected: 0,
            got: 1,
        },
    );
    let mut bytes = frame(FrameType::Data, 1, 0, b"x");
    bytes.extend(frame(FrameType::Data, 1, 2, b"x"));
    assert_protocol_error(
        &bytes,
        ProtocolError::SequenceGap {
            stream: StreamId::new(1),
            frame_type: FrameType::Data,
            expected: 1,
            got: 2,
        },
    );
    let mut bytes = frame(FrameType::Data, 1, 0, b"x");
    bytes.extend(frame(FrameType::End, 1, 5, b""));
    assert_protocol_error(
        &bytes,
        ProtocolError::SequenceGap {
            stream: StreamId::new(1),
            frame_type: FrameType::End,
            expected: 1,
            got: 5,
        },
    );
}

#[test]
fn oversized_payload_closes_before_any_payload_is_buffered() {
    let head = Header::new(FrameType::Data, 1, 0, (16 << 20) + 1).encode();
    for (_, reason, _) in violation(&head) {
        assert_eq!(
            reason,
            Some(CloseReason::Protocol(ProtocolError::Frame(
                FrameError::PayloadTooLarge {
                    declared: (16 << 20) + 1,
                    max: 16 << 20
                }
            )))
        );
    }
}

#[test]
fn end_with_payload_closes_from_its_header() {
    let head = Header::new(FrameType::End, 3, 0, 5).encode();
    assert_protocol_error(
        &head,
        ProtocolError::EndWithPayload {
            stream: StreamId::new(3),
            length: 5,
        },
    );
}

#[test]
fn too_many_open_incoming_streams_close() {
    for chunk in CHUNKINGS {
        let config = ConnectionConfig::builder()
            .max_incoming_streams(2)
            .build()
            .unwrap();
        let mut p = Pair::version(WireVersion::V1, config, key(KEY), key(KEY), chunk);
        p.handshake();
        let mut bytes = frame(FrameType::Data, 1, 0, b"a");
        bytes.extend(frame(FrameType::Data, 3, 0, b"b"));
        bytes.extend(frame(FrameType::Data, 5, 0, b"c"));
        p.inject_to_server(&bytes);
        assert_eq!(
            p.server.closed_reason(),
            Some(&CloseReason::Protocol(ProtocolError::TooManyStreams {
                max: 2
            }))
        );
        let incomplete: Vec<u32> = p
            .server
            .events
            .iter()
            .filter_map(|e| match e {
                Event::StreamIncomplete { stream, .. } => Some(stream.get()),
                _ => None,
            })
            .collect();
        assert_eq!(incomplete, vec![1, 3]);
    }
}

#[test]
fn violation_reports_open_streams_incomplete_never_complete() {
    let mut bytes = frame(FrameType::Data, 7, 0, b"abc");
    bytes.extend(frame(FrameType::Data, 0, 0, b"x"));
    for (chunk, _, events) in violation(&bytes) {
        assert!(
            events.contains(&Event::StreamIncomplete {
                stream: StreamId::new(7),
                frames: 1,
                bytes: 3,
                reason: CloseReason::Protocol(ProtocolError::DataOnStreamZero),
            }),
            "chunk {chunk}"
        );
        assert!(stream_end(&events, StreamId::new(7)).is_none());
    }
}

#[test]
fn unknown_types_and_control_frames_are_skipped_whole() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.handshake();
        let mut bytes = frame(FrameType::Unknown(6), 0, 9, b"ignored payload");
        bytes.extend(frame(FrameType::Unknown(255), 77, 0, &[0xff; 300]));
        bytes.extend(frame(FrameType::Control, 0, 0, b"\x01\x02"));
        bytes.extend(frame(FrameType::Data, 1, 0, b"kept"));
        bytes.extend(frame(FrameType::End, 1, 1, b""));
        p.inject_to_server(&bytes);
        assert!(p.server.closed_reason().is_none(), "chunk {chunk}");
        let skipped = p
            .server
            .events
            .iter()
            .filter(|e| matches!(e, Event::FrameSkipped { .. }))
            .count();
        assert_eq!(skipped, 3);
        assert_eq!(p.server.received(StreamId::new(1)), b"kept");
        assert_eq!(stream_end(&p.server.events, StreamId::new(1)), Some((1, 4)));
    }
}

#[test]
fn receiver_accepts_any_stream_id_parity() {
    let mut bytes = frame(FrameType::Data, 2, 0, b"even from client");
    bytes.extend(frame(FrameType::End, 2, 1, b""));
    for (_, reason, events) in violation(&bytes) {
        assert_eq!(reason, None);
        assert_eq!(stream_end(&events, StreamId::new(2)), Some((1, 16)));
    }
}

// ----- receiver rules on v2 (WIRE-v2.md §4): sealed frames from a raw client

/// Frames `build` seals with a raw client's keys (after its CONFIRM), sent
/// to an established v2 server, once per delivery granularity: what the
/// server reported, checking that it sent nothing in reply.
fn violation_v2(
    config: ConnectionConfig,
    build: impl Fn(&mut Keys) -> Vec<u8>,
) -> Vec<(usize, Option<CloseReason>, Vec<Event>)> {
    CHUNKINGS
        .iter()
        .map(|&chunk| {
            let (mut p, mut raw) = Pair::with_raw_client(config, chunk);
            let sent_before = p.server.conn.stats().bytes_out;
            let bytes = build(raw.keys());
            p.inject_to_server(&bytes);
            assert_eq!(
                p.server.conn.stats().bytes_out,
                sent_before,
                "nothing is sent in reply"
            );
            (
                chunk,
                p.server.closed_reason().cloned(),
                p.server.events.clone(),
            )
        })
        .collect()
}

fn assert_protocol_error_v2(build: impl Fn(&mut Keys) -> Vec<u8>, expected: ProtocolError) {
    for (chunk, reason, events) in violation_v2(ConnectionConfig::default(), build) {
        assert_eq!(
            reason,
            Some(CloseReason::Protocol(expected.clone())),
            "chunk {chunk}"
        );
        assert!(
            !events.iter().any(|e| matches!(e, Event::StreamEnd { .. })),
            "chunk {chunk}: {events:?}"
        );
    }
}

#[test]
fn v2_frame_with_version_1_closes_before_its_body() {
    // A v1 header on a v2 connection: refused at its first byte.
    let f = frame(FrameType::Data, 1, 0, &[0; 17]);
    assert_protocol_error_v2(
        |_| f.clone(),
        ProtocolError::Frame(FrameError::UnsupportedVersion {
            version: 1,
            expected: 2,
        }),
    );
}

#[test]
fn v2_data_or_end_on_stream_zero_closes() {
    assert_protocol_error_v2(
        |k| k.seal(FrameType::Data, 0, 0, b"x"),
        ProtocolError::DataOnStreamZero,
    );
    assert_protocol_error_v2(
        |k| k.seal(FrameType::End, 0, 0, b""),
        ProtocolError::EndOnStreamZero,
    );
}

#[test]
fn v2_hello_or_accept_after_the_handshake_closes() {
    for t in [FrameType::Hello, FrameType::Accept] {
        assert_protocol_error_v2(
            |k| k.seal(t, 0, 1, &[0; 72]),
            ProtocolError::UnexpectedHandshake { frame_type: t },
        );
    }
}

#[test]
fn v2_sequence_gaps_close() {
    assert_protocol_error_v2(
        |k| k.seal(FrameType::Data, 1, 1, b"x"),
        ProtocolError::SequenceGap {
            stream: StreamId::new(1),
            frame_type: FrameType::Data,
            expected: 0,
            got: 1,
        },
    );
    assert_protocol_error_v2(
        |k| {
            let mut v = k.seal(FrameType::Data, 1, 0, b"x");
            v.extend(k.seal(FrameType::Data, 1, 2, b"x"));
            v
        },
        ProtocolError::SequenceGap {
            stream: StreamId::new(1),
            frame_type: FrameType::Data,
            expected: 1,
            got: 2,
        },
    );
    assert_protocol_error_v2(
        |k| {
            let mut v = k.seal(FrameType::Data, 1, 0, b"x");
            v.extend(k.seal(FrameType::End, 1, 5, b""));
            v
        },
        ProtocolError::SequenceGap {
            stream: StreamId::new(1),
            frame_type: FrameType::End,
            expected: 1,
            got: 5,
        },
    );
}

#[test]
fn v2_end_with_plaintext_closes_after_its_tag_verified() {
    assert_protocol_error_v2(
        |k| k.seal(FrameType::End, 3, 0, b"extra"),
        ProtocolError::EndWithPayload {
            stream: StreamId::new(3),
            length: 5,
        },
    );
}

#[test]
fn v2_length_outside_tag_and_limit_closes_before_any_body_byte() {
    let max = 1024u32;
    let config = ConnectionConfig::builder()
        .max_payload(max)
        .build()
        .unwrap();
    let cases = [
        (
            max + 17,
            // Reported as payloads: the tag is not counted.
            FrameError::PayloadTooLarge {
                declared: max + 1,
                max,
            },
        ),
        (
            u32::MAX,
            FrameError::PayloadTooLarge {
                declared: u32::MAX - 16,
                max,
            },
        ),
        (
            15,
            FrameError::ShorterThanTag {
                declared: 15,
                tag: 16,
            },
        ),
        (
            0,
            FrameError::ShorterThanTag {
                declared: 0,
                tag: 16,
            },
        ),
    ];
    for (length, expected) in cases {
        // Only the header: the verdict comes before any body byte.
        let head = v2_header(FrameType::Data, 1, 0, length).encode();
        for (chunk, reason, _) in violation_v2(config, |_| head.to_vec()) {
            assert_eq!(
                reason,
                Some(CloseReason::Protocol(ProtocolError::Frame(
                    expected.clone()
                ))),
                "length {length}, chunk {chunk}"
            );
        }
    }
    // The largest frame allowed, max + 16, is accepted.
    for (chunk, reason, events) in violation_v2(config, |k| {
        k.seal(FrameType::Data, 1, 0, &vec![7; max as usize])
    }) {
        assert_eq!(reason, None, "chunk {chunk}");
        assert_eq!(
            harness::received(&events, StreamId::new(1)),
            vec![7; max as usize]
        );
    }
}

/// A v2 client established with a hand-driven server (the pair's own
/// server is muted), and that server.
fn client_with_raw_server(config: ConnectionConfig, chunk: usize) -> (Pair, RawServer) {
    let mut p = Pair::version(WireVersion::V2, config, key(KEY), key(KEY), chunk);
    p.server.write_capacity = Some(0);
    p.drive();
    let (server, accept) = RawServer::answer(
        &key(KEY),
        &p.client.wire_log,
        Uuid::from_bytes([2; 16]),
        [3; 8],
        0x52,
    )
    .expect("the client's HELLO2 decrypts");
    p.inject_to_client(&accept);
    assert!(p.client.is_established(), "{:?}", p.client.events);
    (p, server)
}

#[test]
fn v2_client_applies_the_receiver_rules_too() {
    let max = 1024u32;
    let config = ConnectionConfig::builder()
        .max_payload(max)
        .build()
        .unwrap();
    type Build = fn(&mut Keys) -> Vec<u8>;
    let cases: [(Build, CloseReason); 5] = [
        (
            |_| {
                v2_header(FrameType::Data, 2, 0, 1024 + 17)
                    .encode()
                    .to_vec()
            },
            CloseReason::Protocol(ProtocolError::Frame(FrameError::PayloadTooLarge {
                declared: 1024 + 1,
                max: 1024,
            })),
        ),
        (
            |_| v2_header(FrameType::Data, 2, 0, 15).encode().to_vec(),
            CloseReason::Protocol(ProtocolError::Frame(FrameError::ShorterThanTag {
                declared: 15,
                tag: 16,
            })),
        ),
        (
            |k| k.seal(FrameType::Data, 0, 0, b"x"),
            CloseReason::Protocol(ProtocolError::DataOnStreamZero),
        ),
        (
            |k| {
                let mut v = k.seal(FrameType::Data, 2, 0, b"x");
                v.extend(k.seal(FrameType::Data, 2, 2, b"y"));
                v
            },
            CloseReason::Protocol(ProtocolError::SequenceGap {
                stream: StreamId::new(2),
                frame_type: FrameType::Data,
                expected: 1,
                got: 2,
            }),
        ),
        // An unsealed ACCEPT2 after the handshake is read as a sealed frame
        // whose tag does not verify.
        (
            |_| {
                let mut v = v2_handshake_header(Suite::AesGcm, true).encode().to_vec();
                v.extend([0; 72]);
                v
            },
            CloseReason::BadFrameMac,
        ),
    ];
    for (build, expected) in cases {
        for chunk in CHUNKINGS {
            let (mut p, mut server) = client_with_raw_server(config, chunk);
            let sent = p.client.wire_log.len();
            let bytes = build(server.keys());
            p.inject_to_client(&bytes);
            assert_eq!(p.client.closed_reason(), Some(&expected), "chunk {chunk}");
            assert_eq!(p.client.wire_log.len(), sent, "nothing sent in reply");
            assert!(stream_end(&p.client.events, StreamId::new(2)).is_none());
        }
    }
    // And accepts what the rules allow: a full-size frame, then END.
    for chunk in CHUNKINGS {
        let (mut p, mut server) = client_with_raw_server(config, chunk);
        let mut bytes = server
            .keys()
            .seal(FrameType::Data, 2, 0, &vec![9; max as usize]);
        bytes.extend(server.keys().seal(FrameType::End, 2, 1, b""));
        p.inject_to_client(&bytes);
        assert_eq!(p.client.closed_reason(), None);
        assert_eq!(
            stream_end(&p.client.events, StreamId::new(2)),
            Some((1, u64::from(max)))
        );
    }
}

#[test]
fn v2_too_many_open_incoming_streams_close() {
    let config = ConnectionConfig::builder()
        .max_incoming_streams(2)
        .build()
        .unwrap();
    let build = |k: &mut Keys| {
        let mut v = k.seal(FrameType::Data, 1, 0, b"a");
        v.extend(k.seal(FrameType::Data, 3, 0, b"b"));
        v.extend(k.seal(FrameType::Data, 5, 0, b"c"));
        v
    };
    for (chunk, reason, events) in violation_v2(config, build) {
        assert_eq!(
            reason,
            Some(CloseReason::Protocol(ProtocolError::TooManyStreams {
                max: 2
            })),
            "chunk {chunk}"
        );
        let incomplete: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::StreamIncomplete { stream, .. } => Some(stream.get()),
                _ => None,
            })
            .collect();
        assert_eq!(incomplete, vec![1, 3]);
    }
}

#[test]
fn v2_violation_reports_open_streams_incomplete_never_complete() {
    let build = |k: &mut Keys| {
        let mut v = k.seal(FrameType::Data, 7, 0, b"abc");
        v.extend(k.seal(FrameType::Data, 0, 0, b"x"));
        v
    };
    for (chunk, _, events) in violation_v2(ConnectionConfig::default(), build) {
        assert!(
            events.contains(&Event::StreamIncomplete {
                stream: StreamId::new(7),
                frames: 1,
                bytes: 3,
                reason: CloseReason::Protocol(ProtocolError::DataOnStreamZero),
            }),
            "chunk {chunk}"
        );
        assert!(stream_end(&events, StreamId::new(7)).is_none());
    }
}

#[test]
fn v2_unknown_types_and_control_frames_are_skipped_after_their_tag() {
    let build = |k: &mut Keys| {
        let mut v = k.seal(FrameType::Unknown(6), 0, 9, b"ignored payload");
        v.extend(k.seal(FrameType::Unknown(255), 77, 0, &[0xff; 300]));
        v.extend(k.seal(FrameType::Control, 0, 0, b"\x01\x02"));
        v.extend(k.seal(FrameType::Data, 1, 0, b"kept"));
        v.extend(k.seal(FrameType::End, 1, 1, b""));
        v
    };
    for (chunk, reason, events) in violation_v2(ConnectionConfig::default(), build) {
        assert_eq!(reason, None, "chunk {chunk}");
        let skipped: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                Event::FrameSkipped { length, .. } => Some(*length),
                _ => None,
            })
            .collect();
        assert_eq!(skipped, vec![15, 300, 2], "plaintext lengths");
        assert_eq!(harness::received(&events, StreamId::new(1)), b"kept");
        assert_eq!(stream_end(&events, StreamId::new(1)), Some((1, 4)));
    }
}

#[test]
fn v2_receiver_accepts_any_stream_id_parity_and_reuses_ids_after_end() {
    let build = |k: &mut Keys| {
        let mut v = k.seal(FrameType::Data, 2, 0, b"even from client");
        v.extend(k.seal(FrameType::End, 2, 1, b""));
        v.extend(k.seal(FrameType::Data, 2, 0, b"again"));
        v.extend(k.seal(FrameType::End, 2, 1, b""));
        v
    };
    for (chunk, reason, events) in violation_v2(ConnectionConfig::default(), build) {
        assert_eq!(reason, None, "chunk {chunk}");
        let ends: Vec<(u32, u64)> = events
            .iter()
            .filter_map(|e| match e {
                Event::StreamEnd { frames, bytes, .. } => Some((*frames, *bytes)),
                _ => None,
            })
            .collect();
        assert_eq!(ends, vec![(1, 16), (1, 5)]);
    }
}

// ----- authentication failures -------------------------------------------

#[test]
fn bad_mac_closes_silently() {
    for (version, chunk) in cases() {
        let mut p = Pair::version(
            version,
            ConnectionConfig::default(),
            key("another-key-0123456789"),
            key(KEY),
            chunk,
        );
        p.drive();
        assert_eq!(
            p.server.closed_reason(),
            Some(&CloseReason::AuthFailed(AuthFailure::BadMac))
        );
        assert_eq!(
            p.server.outcomes,
            vec![HandshakeOutcome::Rejected(AuthFailure::BadMac)]
        );
        assert!(
            p.server.wire_log.is_empty(),
            "no byte may be sent after a bad MAC"
        );
        assert!(!p.client.is_established());
        p.deliver_eof_to_client();
        assert_eq!(p.client.closed_reason(), Some(&CloseReason::PeerClosed));
    }
}

#[test]
fn wrong_first_frame_or_length_fails_at_once_without_buffering() {
    let mut wrong_len = Header::new(FrameType::Hello, 0, 0, 37).encode().to_vec();
    wrong_len.extend([0u8; 37]);
    let cases: Vec<(Vec<u8>, usize)> = vec![
        (wrong_len, 13),
        (frame(FrameType::Data, 1, 0, &[0; 36]), 1),
        (frame(FrameType::Hello, 1, 0, &[0; 36]), 5),
        (frame(FrameType::Hello, 0, 1, &[0; 36]), 9),
        // Version 2 is HELLO2's: that header differs at its suite (seq).
        (
            {
                let mut f = frame(FrameType::Hello, 0, 0, &[0; 36]);
                f[0] = 2;
                f
            },
            9,
        ),
        (
            {
                let mut f = frame(FrameType::Hello, 0, 0, &[0; 36]);
                f[0] = 3;
                f
            },
            0,
        ),
    ];
    for (bytes, offset) in cases {
        for chunk in CHUNKINGS {
            let mut p = Pair::defaults(WireVersion::V1, chunk);
            p.client.write_capacity = Some(0);
            p.drive();
            p.inject_to_server(&bytes);
            match p.server.closed_reason() {
                Some(CloseReason::MalformedHandshake(FrameError::UnexpectedFirstFrame {
                    offset: o,
                    ..
                })) => {
                    assert_eq!(*o, offset)
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(
                p.server.conn.stats().bytes_in,
                0,
                "nothing was consumed as a frame"
            );
            assert!(p.server.wire_log.is_empty());
        }
    }
}

#[test]
fn v2_wrong_first_frame_fails_at_the_first_wrong_byte_without_buffering() {
    let hello2 = |f: &dyn Fn(&mut Header)| {
        let mut h = v2_handshake_header(Suite::AesGcm, false);
        f(&mut h);
        let mut v = h.encode().to_vec();
        v.extend([0u8; 72]);
        v
    };
    let only_aes = ConnectionConfig::builder()
        .only_suite(Suite::AesGcm)
        .build()
        .unwrap();
    let cases: Vec<(ConnectionConfig, Vec<u8>, usize)> = vec![
        (
            ConnectionConfig::default(),
            hello2(&|h| h.frame_type = FrameType::Accept),
            1,
        ),
        (ConnectionConfig::default(), hello2(&|h| h.stream_id = 1), 5),
        (ConnectionConfig::default(), hello2(&|h| h.seq = 3), 9),
        (ConnectionConfig::default(), hello2(&|h| h.seq = 0x100), 8),
        (ConnectionConfig::default(), hello2(&|h| h.length = 73), 13),
        (ConnectionConfig::default(), hello2(&|h| h.length = 71), 13),
        (
            ConnectionConfig::default(),
            hello2(&|h| h.length = 0x0100_0048),
            10,
        ),
        // A suite the server does not accept fails where the suite is named.
        (only_aes, hello2(&|h| h.seq = Suite::ChaChaPoly.seq()), 9),
    ];
    for (config, bytes, offset) in cases {
        for chunk in CHUNKINGS {
            let mut p = Pair::version(WireVersion::V2, config, key(KEY), key(KEY), chunk);
            p.client.write_capacity = Some(0);
            p.drive();
            // Byte by byte, the close comes with the wrong byte, never later.
            p.inject_to_server(&bytes[..=offset]);
            match p.server.closed_reason() {
                Some(CloseReason::MalformedHandshake(FrameError::UnexpectedFirstFrame {
                    offset: o,
                    expected: FrameType::Hello,
                    expected_len: 72,
                    ..
                })) => assert_eq!(*o, offset, "chunk {chunk}"),
                other => panic!("offset {offset}, chunk {chunk}: {other:?}"),
            }
            if chunk == 1 {
                let mut q = Pair::version(WireVersion::V2, config, key(KEY), key(KEY), chunk);
                q.client.write_capacity = Some(0);
                q.drive();
                q.inject_to_server(&bytes[..offset]);
                assert_eq!(q.server.closed_reason(), None, "offset {offset}: too early");
            }
            p.inject_to_server(&bytes[offset + 1..]);
            assert_eq!(p.server.conn.stats().bytes_in, 0, "nothing consumed");
            assert!(p.server.wire_log.is_empty());
            assert!(p.server.outcomes.is_empty(), "no verdict was asked for");
        }
    }
}

#[test]
fn v2_client_refuses_a_wrong_first_frame_at_the_first_wrong_byte() {
    let accept2 = |f: &dyn Fn(&mut Header)| {
        let mut h = v2_handshake_header(Suite::AesGcm, true);
        f(&mut h);
        let mut v = h.encode().to_vec();
        v.extend([0u8; 72]);
        v
    };
    let cases: Vec<(Vec<u8>, usize)> = vec![
        // A v1 ACCEPT answering a HELLO2.
        (frame(FrameType::Accept, 0, 0, &[0; 16]), 0),
        (accept2(&|h| h.frame_type = FrameType::Hello), 1),
        (accept2(&|h| h.frame_type = FrameType::Data), 1),
        (accept2(&|h| h.stream_id = 2), 5),
        // Another suite than the one offered.
        (accept2(&|h| h.seq = Suite::ChaChaPoly.seq()), 9),
        (accept2(&|h| h.length = 73), 13),
        (accept2(&|h| h.length = 16), 13),
    ];
    for (bytes, offset) in cases {
        for chunk in CHUNKINGS {
            let mut p = Pair::defaults(WireVersion::V2, chunk);
            p.server.write_capacity = Some(0);
            p.drive();
            p.inject_to_client(&bytes[..=offset]);
            match p.client.closed_reason() {
                Some(CloseReason::MalformedHandshake(FrameError::UnexpectedFirstFrame {
                    offset: o,
                    expected: FrameType::Accept,
                    expected_len: 72,
                    ..
                })) => assert_eq!(*o, offset, "chunk {chunk}"),
                other => panic!("offset {offset}, chunk {chunk}: {other:?}"),
            }
            assert_eq!(p.client.conn.stats().bytes_in, 0, "nothing consumed");
            assert!(!p.client.is_established());
            assert_eq!(p.client.wire_log.len(), 86, "nothing after HELLO2");
        }
    }
}

#[test]
fn v2_client_refuses_an_accept2_that_does_not_decrypt() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V2, chunk);
        p.server.write_capacity = Some(0);
        p.drive();
        let mut accept = v2_handshake_header(Suite::AesGcm, true).encode().to_vec();
        accept.extend([0x5a; 72]);
        p.inject_to_client(&accept);
        assert_eq!(
            p.client.closed_reason(),
            Some(&CloseReason::AuthFailed(AuthFailure::BadMac))
        );
        assert_eq!(
            p.client.outcomes,
            vec![HandshakeOutcome::Rejected(AuthFailure::BadMac)]
        );
        assert!(!p.client.is_established());
        assert_eq!(p.client.wire_log.len(), 86, "no CONFIRM");
        assert_eq!(p.client.auth.counters().bad_mac, 1);
    }
}

#[test]
fn replayed_hello_is_refused() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.handshake();
        let hello = p.client.wire_log.clone();
        // A second connection to the same server node carrying the recorded HELLO.
        let mut replay = Pair::defaults(WireVersion::V1, chunk);
        std::mem::swap(&mut replay.server.auth, &mut p.server.auth);
        replay.client.write_capacity = Some(0);
        replay.drive();
        replay.inject_to_server(&hello);
        assert_eq!(
            replay.server.closed_reason(),
            Some(&CloseReason::AuthFailed(AuthFailure::Replay))
        );
        assert!(replay.server.wire_log.is_empty());
    }
}

#[test]
fn reflected_hello_is_refused() {
    for chunk in CHUNKINGS {
        // A HELLO carrying the server's own node id, correctly signed.
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.client.write_capacity = Some(0);
        p.drive();
        let own = sign_hello(&key(KEY), Uuid::from_bytes([2; 16]), 42);
        p.inject_to_server(&own.encode_frame());
        assert_eq!(
            p.server.closed_reason(),
            Some(&CloseReason::AuthFailed(AuthFailure::Reflection))
        );
        // And the HELLO this node itself sent as a client, bounced back to it.
        let mut q = Pair::defaults(WireVersion::V1, chunk);
        q.client.write_capacity = Some(0);
        q.drive();
        let mine = q.server.auth.make_hello(q.now);
        q.inject_to_server(&mine.encode_frame());
        assert_eq!(
            q.server.closed_reason(),
            Some(&CloseReason::AuthFailed(AuthFailure::Reflection))
        );
    }
}

#[test]
fn client_refuses_an_accept_with_a_bad_mac() {
    for chunk in CHUNKINGS {
        let mut p = Pair::defaults(WireVersion::V1, chunk);
        p.server.write_capacity = Some(0);
        p.drive();
        let mut accept = frame(FrameType::Accept, 0, 0, &[0u8; 16]);
        accept[HEADER_LEN] = 1;
        p.inject_to_client(&accept);
        assert_eq!(
            p.client.closed_reason(),
            Some(&CloseReason::AuthFailed(AuthFailure::BadMac))
        );
        assert!(!p.client.is_established());
    }
}

#[test]
fn client_refuses_a_wrong_first_frame_or_length_at_once_without_buffering() {
    let mut wrong_len = Header::new(FrameType::Accept, 0, 0, 17).encode().to_vec();
    wrong_len.extend([0u8; 17]);
    let mut short = Header::new(FrameType::Accept, 0, 0, 15).encode().to_vec();
    short.extend([0u8; 15]);
    let cases: Vec<(Vec<u8>, usize)> = vec![
        (wrong_len, 13),
        (short, 13),
        (frame(FrameType::Data, 2, 0, b"too early"), 1),
        (frame(FrameType::Hello, 0, 0, &[0; 16]), 1),
        (frame(FrameType::Accept, 2, 0, &[0; 16]), 5),
        (frame(FrameType::Accept, 0, 1, &[0; 16]), 9),
    ];
    for (bytes, offset) in cases {
        for chunk in CHUNKINGS {
            let mut p = Pair::defaults(WireVersion::V1, chunk);
            p.server.write_capacity = Some(0);
            p.drive();
            p.inject_to_client(&bytes);
            match p.client.closed_reason() {
                Some(CloseReason::MalformedHandshake(FrameError::UnexpectedFirstFrame {
                    offset: o,
                    expected: FrameType::Accept,
                    expected_len: 16,
                    ..
                })) => assert_eq!(*o, offset, "chunk {chunk}"),
                other => panic!("chunk {chunk}: {other:?}"),
            }
            assert_eq!(p.client.conn.stats().bytes_in, 0, "nothing consumed");
            assert!(!p.client.is_established());
        }
    }
}

#[test]
fn streams_cannot_be_opened_before_established() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        assert_eq!(p.client.conn.open_stream(), Err(SendError::NotEstablished));
        p.handshake();
        assert!(p.client.conn.open_stream().is_ok());
    }
}

// ----- key rotation -------------------------------------------------------

#[test]
fn previous_key_is_accepted_until_its_deadline_only() {
    let old = key("old-key-0123456789abcdef");
    let new = key("new-key-0123456789abcdef");
    let grace = Duration::from_secs(60);
    // The key the server's verdict named, and the client it proved.
    let accepted = |outcomes: &[HandshakeOutcome]| {
        outcomes.iter().find_map(|o| match o {
            HandshakeOutcome::Accepted { key, peer_node, .. } => Some((*key, *peer_node)),
            _ => None,
        })
    };
    let client_id = Some(Uuid::from_bytes([1; 16]));
    for version in VERSIONS {
        for chunk in CHUNKINGS {
            let t0 = Instant::now();
            // One server across every connection: it rotated from `old` to
            // `new` at t0 and accepts `old` for another 60 s.
            let mut server = authenticator(2, old.clone(), 22);
            assert_eq!(server.keys_mut().rotate(new.clone(), t0, grace), KeyId(1));
            let mut connect = |client_key: &ApiKey, at: Instant, seed: u8| {
                let config = ConnectionConfig::default();
                let mut p = Pair::at_version(
                    version,
                    config,
                    client_key.clone(),
                    key(KEY),
                    chunk,
                    at,
                    seed,
                );
                std::mem::swap(&mut p.server.auth, &mut server);
                p.drive();
                std::mem::swap(&mut p.server.auth, &mut server);
                p
            };
            for (at, seed) in [(t0, 1), (t0 + grace - Duration::from_millis(1), 2)] {
                let p = connect(&old, at, seed);
                assert_eq!(
                    accepted(&p.server.outcomes),
                    Some((KeyId(0), client_id)),
                    "{version}: old key {:?} in",
                    at - t0
                );
                assert!(p.client.is_established());
            }
            for (at, seed) in [(t0, 3), (t0 + grace, 4)] {
                let p = connect(&new, at, seed);
                assert_eq!(
                    accepted(&p.server.outcomes),
                    Some((KeyId(1), client_id)),
                    "{version}: new key {:?} in",
                    at - t0
                );
                assert!(p.client.is_established());
            }
            for (at, seed) in [(t0 + grace, 5), (t0 + grace * 10, 6)] {
                let p = connect(&old, at, seed);
                assert_eq!(
                    p.server.outcomes,
                    vec![HandshakeOutcome::Rejected(AuthFailure::BadMac)],
                    "{version}: old key {:?} in",
                    at - t0
                );
                assert_eq!(
                    p.server.closed_reason(),
                    Some(&CloseReason::AuthFailed(AuthFailure::BadMac))
                );
                assert!(p.server.wire_log.is_empty());
            }
        }
    }
}

// ----- closing and backpressure -------------------------------------------

#[test]
fn graceful_close_flushes_queued_frames_first() {
    for (version, chunk) in cases() {
        let mut p = Pair::defaults(version, chunk);
        p.handshake();
        let s = p.client.conn.open_stream().unwrap();
        p.client
            .conn
            .send(p.now, s, Bytes::from_static(b"last words"))
            .unwrap();
        p.client.conn.finish(p.now, s).unwrap();
        let open = p.client.conn.open_stream().unwrap();
        p.client
            .conn
            .send(p.now, open, Bytes::from_static(b"cut"))
            .unwrap();
        p.client.conn.close(p.now);
        assert_eq!(
            p.client.conn.send(p.now, open, Bytes::new()),
            Err(SendError::Closed)
        );
        p.drive();
        assert_eq!(p.client.closed_reason(), Some(&CloseReason::Local));
        assert!(p
            .client
            .events
            .contains(&Event::SendAborted { stream: open }));
        assert_eq!(stream_end(&p.server.events, s), Some((1, 10)));
        p.deliver_eof_to_server();
        assert_eq!(p.server.closed_reason(), Some(&CloseReason::PeerClosed));
        assert!(p.server.events.contains(&Event::StreamIncomplete {
            stream: open,
            frames: 1,
            bytes: 3,
            reason: CloseReason::PeerClosed,
        }));
    }
}

#[test]
fn send_refuses_above_the_high_water_mark_and_memory_stays_bounded() {
    for (version, chunk) in cases() {
        let config = ConnectionConfig::builder()
            .send_high_water(1 << 20)
            .build()
            .unwrap();
        let mut p = Pair::version(version, config, key(KEY), key(KEY), chunk);
        p.handshake();
        p.client.write_capacity = Some(0);
        let s = p.client.conn.open_stream().unwrap();
        let chunk = Bytes::from(vec![0u8; 256 << 10]);
        let mut accepted = 0;
        loop {
            match p.client.conn.send(p.now, s, chunk.clone()) {
                Ok(()) => accepted += 1,
                Err(SendError::WouldBlock { high_water }) => {
                    assert_eq!(high_water, 1 << 20);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(accepted < 100, "send never pushed back");
        }
        assert!(!p.client.conn.can_send());
        assert!(p.client.conn.pending_output() < (1 << 20) + (256 << 10) + 1024);
        p.client.write_capacity = None;
        p.drive();
        assert!(p.client.conn.can_send());
    }
}

#[test]
fn oversized_chunks_are_refused_locally() {
    for version in VERSIONS {
        let config = ConnectionConfig::builder()
            .max_payload(1024)
            .build()
            .unwrap();
        let mut p = Pair::version(version, config, key(KEY), key(KEY), usize::MAX);
        p.handshake();
        let s = p.client.conn.open_stream().unwrap();
        assert_eq!(
            p.client.conn.send(p.now, s, Bytes::from(vec![0u8; 1025])),
            Err(SendError::PayloadTooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(
            p.client.conn.send(p.now, StreamId::new(99), Bytes::new()),
            Err(SendError::UnknownStream {
                stream: StreamId::new(99)
            })
        );
    }
}

#[test]
fn a_refused_chunk_poisons_its_stream_and_nothing_more_of_it_is_written() {
    for (version, chunk) in cases() {
        let config = ConnectionConfig::builder()
            .max_payload(1024)
            .build()
            .unwrap();
        let mut p = Pair::version(version, config, key(KEY), key(KEY), chunk);
        p.handshake();
        let s = p.client.conn.open_stream().unwrap();
        let now = p.now;
        let conn = &mut p.client.conn;
        conn.send(now, s, Bytes::from_static(b"before")).unwrap();
        let too_large = SendError::PayloadTooLarge {
            len: 1025,
            max: 1024,
        };
        assert_eq!(
            conn.send(now, s, Bytes::from(vec![0u8; 1025])),
            Err(too_large.clone())
        );
        let poisoned = SendError::Poisoned {
            stream: s,
            refused: Box::new(too_large),
        };
        assert_eq!(conn.poisoned(s), Some(poisoned.clone()));
        assert_eq!(
            conn.send(now, s, Bytes::from_static(b"after")),
            Err(poisoned.clone())
        );
        assert_eq!(conn.finish(now, s), Err(poisoned.clone()));
        // The poisoned stream keeps its id: the peer still holds it open.
        let other = conn.open_stream().unwrap();
        assert_ne!(other, s);
        assert_eq!(conn.poisoned(other), None);
        conn.send(now, other, Bytes::from_static(b"fine")).unwrap();
        conn.finish(now, other).unwrap();
        p.drive();
        assert_eq!(p.server.received(s), b"before");
        assert_eq!(stream_end(&p.server.events, s), None);
        assert_eq!(stream_end(&p.server.events, other), Some((1, 4)));
        // Still refused once everything was written.
        let now = p.now;
        assert_eq!(p.client.conn.finish(now, s), Err(poisoned));
        p.client.conn.close(now);
        p.drive();
        assert!(p.client.events.contains(&Event::SendAborted { stream: s }));
        p.deliver_eof_to_server();
        assert!(p.server.events.contains(&Event::StreamIncomplete {
            stream: s,
            frames: 1,
            bytes: 6,
            reason: CloseReason::PeerClosed,
        }));
    }
}

#[test]
fn backpressure_does_not_poison_a_stream() {
    for version in VERSIONS {
        let config = ConnectionConfig::builder()
            .send_high_water(1024)
            .build()
            .unwrap();
        let mut p = Pair::version(version, config, key(KEY), key(KEY), usize::MAX);
        p.handshake();
        p.client.write_capacity = Some(0);
        let s = p.client.conn.open_stream().unwrap();
        let piece = Bytes::from(vec![5u8; 600]);
        let now = p.now;
        p.client.conn.send(now, s, piece.clone()).unwrap();
        p.client.conn.send(now, s, piece.clone()).unwrap();
        assert_eq!(
            p.client.conn.send(now, s, piece.clone()),
            Err(SendError::WouldBlock { high_water: 1024 })
        );
        assert_eq!(p.client.conn.poisoned(s), None);
        p.client.write_capacity = None;
        p.drive();
        let now = p.now;
        p.client.conn.send(now, s, piece).unwrap();
        p.client.conn.finish(now, s).unwrap();
        p.drive();
        assert_eq!(stream_end(&p.server.events, s), Some((3, 1800)));
    }
}

#[test]
fn fixed_seeds_give_byte_identical_wire_output() {
    for version in VERSIONS {
        let run = |chunk| {
            let mut p = Pair::defaults(version, chunk);
            p.handshake();
            send_stream(&mut p, true, &pattern(10_000, 3), 999);
            send_stream(&mut p, false, &pattern(5_000, 4), 777);
            p.drive();
            (p.client.wire_log, p.server.wire_log)
        };
        let whole = run(usize::MAX);
        assert_eq!(whole, run(usize::MAX));
        // How the input was cut into reads changes nothing on the wire.
        assert!(run(1) == whole, "byte-by-byte delivery changed the output");
    }
}

#[test]
fn absurd_timeouts_do_not_overflow_the_clock() {
    for version in VERSIONS {
        let config = ConnectionConfig::builder()
            .handshake_timeout(Duration::MAX)
            .send_stall_timeout(Duration::MAX)
            .receive_idle_timeout(Duration::MAX)
            .build()
            .unwrap();
        let mut p = Pair::version(version, config, key(KEY), key(KEY), usize::MAX);
        p.handshake();
        let s = p.client.conn.open_stream().unwrap();
        p.client
            .conn
            .send(p.now, s, Bytes::from_static(b"x"))
            .unwrap();
        p.drive();
        assert!(p.next_timeout().unwrap() > p.now + Duration::from_secs(86_400 * 365 * 100));
        p.advance(Duration::from_secs(3600));
        assert!(p.server.closed_reason().is_none());
    }
}
