//! The suite dials the implementation and streams: stream integrity
//! (through the implementation's echo mode), protocol errors that close the
//! connection, frames that must be skipped, and the payload limit.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{case, closes_after, echoes, established, skipped_and_usable};
use crate::case::{Case, CaseResult, Finding};
use crate::target::Ctx;
use crate::wire::{frame, header, pattern, stream_frames, ty, Conn, Observed, Streams};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!("R1-6.2/1", Must, SuiteDials, Tcp, true, "A one-chunk stream comes back intact",
            "WIRE.md §4: A stream is a sequence of DATA frames with seq 0, 1, 2, … on one stream id, closed by one END frame whose seq is the number of DATA frames sent.",
            |ctx| { let p = pattern(1, 4096); echoes(ctx, &stream_frames(1, &[&p]), &[&p]).map(|_| "echoed intact".into()) }),
        case!("R1-6.2/2", Must, SuiteDials, Tcp, true, "A multi-chunk stream comes back intact",
            "WIRE.md §4: A stream is a sequence of DATA frames with seq 0, 1, 2, … closed by one END frame.",
            |ctx| { let p = pattern(2, 4 * 65536); let c: Vec<&[u8]> = p.chunks(65536).collect(); echoes(ctx, &stream_frames(3, &c), &[&p]).map(|_| "echoed intact".into()) }),
        case!("R1-6.2/3", Must, SuiteDials, Tcp, true, "An empty tensor (a lone END with seq 0) comes back empty",
            "WIRE.md §4: an empty tensor is a lone END with seq 0.",
            |ctx| echoes(ctx, &stream_frames(5, &[]), &[&[]]).map(|_| "empty stream echoed".into())),
        case!("R1-6.2/4", Must, SuiteDials, Tcp, true, "Two interleaved streams both come back intact",
            "WIRE.md §4: Frames of different streams may interleave on one connection.",
            interleaved),
        case!("R1-6.2/5", Must, SuiteDials, Tcp, true, "The implementation's own streams are well-formed",
            "WIRE.md §4: DATA frames with seq 0, 1, 2, … closed by one END frame whose seq is the number of DATA frames sent ... END has length 0.",
            |ctx| { let p = pattern(5, 3 * 100_000); let c: Vec<&[u8]> = p.chunks(100_000).collect(); let s = echoes(ctx, &stream_frames(7, &c), &[&p])?; let (id, _, n) = &s.done[0]; Ok(format!("stream {id}: {n} DATA frames, END seq {n}, length 0")) }),
        case!("R1-6.2/6", Must, SuiteDials, Tcp, true, "A stream id is free again after its END",
            "WIRE.md §4: An id becomes free again after its END.",
            |ctx| { let (a, b) = (pattern(6, 500), pattern(7, 700)); let mut f = stream_frames(9, &[&a]); f.extend(stream_frames(9, &[&b])); echoes(ctx, &f, &[&a, &b]).map(|_| "both streams on id 9 echoed".into()) }),
        case!("R1-6.2/7", Must, SuiteDials, Tcp, true, "A 1 MiB DATA frame is accepted and comes back intact",
            "RFC-0001 §6.4 / WIRE.md §6: max frame payload 16 MiB; 1 MiB chunks are typical.",
            |ctx| { let p = pattern(8, 1 << 20); echoes(ctx, &stream_frames(11, &[&p]), &[&p]).map(|_| "echoed intact".into()) }),
        case!("R1-6.3/1", Must, SuiteDials, Tcp, true, "An even stream id from the client side is accepted",
            "WIRE.md §4: receivers MUST NOT reject an id for its parity (the Python implementation uses odd ids on both sides).",
            |ctx| { let p = pattern(10, 300); echoes(ctx, &stream_frames(2, &[&p]), &[&p]).map(|_| "stream 2 echoed".into()) }),
        case!("R1-6.3/2", Should, SuiteDials, Tcp, true, "The server side of a connection opens even stream ids",
            "RFC-0001 §6.3: Server-initiated streams: Even numbers (2, 4, 6, ...). WIRE.md §4: this project's senders follow that.",
            |ctx| { let p = pattern(11, 100); let s = echoes(ctx, &stream_frames(1, &[&p]), &[&p])?; let id = s.done[0].0; if id % 2 == 0 { Ok(format!("stream {id}")) } else { Err(Finding::fail("an even stream id", format!("stream {id}"))) } }),
        case!("R1-6.3/3", Must, SuiteDials, Tcp, true, "Stream id 2^32-1 is accepted",
            "WIRE.md §2: stream_id | 0 = handshake; 1..=2^32-1 data streams.",
            |ctx| { let p = pattern(12, 300); echoes(ctx, &stream_frames(u32::MAX, &[&p]), &[&p]).map(|_| "echoed".into()) }),
        case!("R1-7.4/1", Must, SuiteDials, Tcp, false, "END with a payload closes the connection",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... END with a non-zero length.",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"x"); f.extend(frame(ty::END, 1, 1, b"y")); closes_after(ctx, &f) }),
        case!("R1-7.4/2", Should, SuiteDials, Tcp, false, "END whose seq is not the DATA count closes the connection",
            "RFC-0001 §9.2: Invalid Sequence Number: Connection SHOULD be closed. WIRE.md §4: END frame whose seq is the number of DATA frames sent.",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"x"); f.extend(frame(ty::END, 1, 5, &[])); closes_after(ctx, &f) }),
        case!("R1-7.4/3", Should, SuiteDials, Tcp, false, "DATA continuing a stream after its END closes the connection",
            "RFC-0001 §7.4: Receiver MUST close stream after END frame. WIRE.md §4: An id becomes free again after its END; a seq that is not the next expected one for its stream [is a protocol error that closes the connection].",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"a"); f.extend(frame(ty::END, 1, 1, &[])); f.extend(frame(ty::DATA, 1, 1, b"b")); closes_after(ctx, &f) }),
        case!("R1-9.2/1", Must, SuiteDials, Tcp, false, "Version 2 after the handshake closes the connection",
            "RFC-0001 §9.2: Invalid Frame Version: Connection MUST be closed.",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"x"); f[0] = 2; closes_after(ctx, &f) }),
        case!("R1-9.2/2", Must, SuiteDials, Tcp, false, "Version 0 after the handshake closes the connection",
            "RFC-0001 §9.2: Invalid Frame Version: Connection MUST be closed.",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"x"); f[0] = 0; closes_after(ctx, &f) }),
        case!("R1-9.2/3", Must, SuiteDials, Tcp, false, "An unknown frame type (6) with a payload is skipped",
            "RFC-0001 §9.2: Invalid Frame Type: Frame MUST be ignored. Connection remains open. WIRE.md §4: An unknown type (6..=255) is skipped whole.",
            |ctx| skipped_and_usable(ctx, &frame(6, 1, 0, &pattern(3, 64)))),
        case!("R1-9.2/4", Must, SuiteDials, Tcp, false, "Frame type 255 is skipped",
            "WIRE.md §4: An unknown type (6..=255) is skipped whole and the connection stays open (RFC-0001 §9.2).",
            |ctx| skipped_and_usable(ctx, &frame(255, 0, 0, &pattern(4, 16)))),
        case!("R1-9.2/5", Must, SuiteDials, Tcp, false, "An unknown frame type with no payload is skipped",
            "WIRE.md §4: An unknown type (6..=255) is skipped whole and the connection stays open.",
            |ctx| skipped_and_usable(ctx, &frame(6, 0, 0, &[]))),
        case!("R1-9.2/6", Must, SuiteDials, Tcp, false, "A CONTROL frame with a body it does not understand is skipped",
            "WIRE.md §4: CONTROL (3) is reserved: a CONTROL frame whose body this side does not understand is skipped.",
            |ctx| skipped_and_usable(ctx, &frame(ty::CONTROL, 0, 0, b"\xfe\xedunknown-control"))),
        case!("R1-9.2/7", Must, SuiteDials, Tcp, true, "An unknown frame inside a stream does not disturb the stream",
            "WIRE.md §4: An unknown type (6..=255) is skipped whole and the connection stays open.",
            unknown_inside_stream),
        case!("R1-9.2/8", Should, SuiteDials, Tcp, false, "A sequence gap closes the connection",
            "RFC-0001 §9.2: Invalid Sequence Number: Connection SHOULD be closed. WIRE.md §4: a seq that is not the next expected one for its stream.",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"a"); f.extend(frame(ty::DATA, 1, 2, b"c")); closes_after(ctx, &f) }),
        case!("R1-9.2/9", Should, SuiteDials, Tcp, false, "A stream starting at seq 1 closes the connection",
            "RFC-0001 §7.2: Starts at 0 for first DATA frame. §9.2: Invalid Sequence Number: Connection SHOULD be closed.",
            |ctx| closes_after(ctx, &frame(ty::DATA, 1, 1, b"b"))),
        case!("R1-9.2/10", Should, SuiteDials, Tcp, false, "A repeated seq closes the connection",
            "RFC-0001 §7.2: Increments by 1 for each subsequent frame. §9.2: Invalid Sequence Number: Connection SHOULD be closed.",
            |ctx| { let mut f = frame(ty::DATA, 1, 0, b"a"); f.extend(frame(ty::DATA, 1, 0, b"a")); closes_after(ctx, &f) }),
        case!("R1-9.2/11", Must, SuiteDials, Tcp, false, "DATA on stream 0 closes the connection",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... DATA or END on stream 0.",
            |ctx| closes_after(ctx, &frame(ty::DATA, 0, 0, b"x"))),
        case!("R1-9.2/12", Must, SuiteDials, Tcp, false, "END on stream 0 closes the connection",
            "WIRE.md §4: Receiver rules once ESTABLISHED, each a protocol error that closes the connection: ... DATA or END on stream 0.",
            |ctx| closes_after(ctx, &frame(ty::END, 0, 0, &[]))),
        case!("R1-9.2/13", Must, SuiteDials, Tcp, false, "An unknown frame with a 256 KiB payload is skipped whole",
            "WIRE.md §4: An unknown type (6..=255) is skipped whole and the connection stays open.",
            |ctx| skipped_and_usable(ctx, &frame(77, 3, 9, &pattern(13, 256 * 1024)))),
        case!("R1-9.3/6", Should, SuiteDials, Tcp, false, "A stream left without data past the receive idle timeout closes the connection",
            "RFC-0001 §9.3: Receive Timeout: If no data received for >30 seconds on active stream, peer may be dead. Close connection. WIRE.md §6: receive idle timeout on an open stream | 30 s.",
            idle_stream),
        case!("R1-9.3/7", Should, SuiteDials, Tcp, true, "An echo the suite stops reading is closed after the send stall timeout",
            "RFC-0001 §9.3: Send Timeout: If send blocks for >10 seconds, close connection. WIRE.md §6: send stall timeout | 10 s.",
            send_stall),
        case!("R1-10.4/1", Must, SuiteDials, Tcp, false, "A DATA length one above the local maximum closes the connection",
            "RFC-0001 §10.4: Enforce maximum frame size. Close connection if frame exceeds limit. WIRE.md §4: a payload longer than the local maximum.",
            |ctx| { let h = header(1, ty::DATA, 1, 0, above_limit(ctx)?); closes_after(ctx, &h) }),
        case!("R1-10.4/2", Must, SuiteDials, Tcp, false, "A DATA length of 2^32-1 closes the connection without waiting for the payload",
            "RFC-0001 §10.4: Close connection if frame exceeds limit. WIRE.md §2: bounded by the local maximum (§6).",
            |ctx| { above_limit(ctx)?; closes_after(ctx, &header(1, ty::DATA, 1, 0, u32::MAX)) }),
        case!("R1-10.4/3", Must, SuiteDials, Tcp, false, "An unknown frame longer than the local maximum closes the connection",
            "WIRE.md §4: Receiver rules ... a payload longer than the local maximum [is a protocol error, whatever the type].",
            |ctx| { let h = header(1, 9, 1, 0, above_limit(ctx)?); closes_after(ctx, &h) }),
        case!("R2-5.3/1", Must, SuiteDials, Tcp, true, "Data frames carry no session token",
            "RFC-0002 §5.3: Client stores token (but doesn't need to send it). Data frames have NO token overhead.",
            no_token),
    ]
}

/// A length one above the configured maximum. A target whose limit is the
/// wire maximum (2^32-1) has no length above it: every length the header
/// can carry is within its limit, so the oversized cases say nothing of it.
fn above_limit(ctx: &Ctx<'_>) -> Result<u32, Finding> {
    ctx.cfg.max_payload.checked_add(1).ok_or_else(|| {
        Finding::Skip(format!(
            "the configured limit is the wire maximum ({}): no length is above it",
            u32::MAX
        ))
    })
}

fn idle_stream(ctx: &mut Ctx<'_>) -> CaseResult {
    let idle = ctx.cfg.idle_timeout;
    let mut c = established(ctx)?;
    c.send(&frame(ty::DATA, 1, 0, b"one chunk, then nothing"))?;
    let t = Instant::now();
    // Not before its time: open for half the timeout ...
    c.expect_open(idle / 2).map_err(|_| {
        Finding::fail(
            format!("the connection open until the idle timeout ({idle:?})"),
            format!("closed after {:?}", t.elapsed()),
        )
    })?;
    // ... and closed once it has passed.
    c.expect_close(idle - idle / 2 + ctx.cfg.timeout)?;
    Ok(format!(
        "closed {:?} after the stream's last DATA",
        t.elapsed()
    ))
}

/// Bytes of the stream the send-stall case sends: far more than loopback
/// socket buffers on both sides hold (Linux grows a send buffer to 4 MiB by
/// default), so the echo cannot finish while the suite does not read.
const STALL_BYTES: usize = 32 << 20;

fn send_stall(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.require_echo()?;
    let stall = ctx.cfg.stall_timeout;
    let c = established(ctx)?;
    c.limit_receive_buffer(64 * 1024);
    let chunk = pattern(40, 1 << 20);
    let chunks = STALL_BYTES / chunk.len();
    let mut w = c.writer()?;
    let start = Instant::now();
    // Milliseconds since `start` of the writer's last progress.
    let progress = Arc::new(AtomicU64::new(0));
    let writer = {
        let (chunk, progress) = (chunk.clone(), Arc::clone(&progress));
        std::thread::spawn(move || -> bool {
            for seq in 0..chunks {
                let mut f = header(1, ty::DATA, 1, seq as u32, chunk.len() as u32).to_vec();
                f.extend_from_slice(&chunk);
                for piece in f.chunks(64 * 1024) {
                    if w.write_all(piece).is_err() {
                        return false;
                    }
                    progress.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
            }
            let ok = w.write_all(&frame(ty::END, 1, chunks as u32, &[])).is_ok();
            progress.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            ok
        })
    };
    // The implementation's send stalls at the latest once the suite's writes
    // stop making progress (an echo that sends while it reads stops reading
    // when its sending blocks; one that sends after the END starts then).
    // Wait out the stall timeout plus the margin from there, reading nothing.
    let wait = stall + ctx.cfg.timeout;
    let cap = start + wait + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let last = Duration::from_millis(progress.load(Ordering::Relaxed));
        if start.elapsed().saturating_sub(last) >= wait || Instant::now() >= cap {
            break;
        }
    }
    let quiet_since = start + Duration::from_millis(progress.load(Ordering::Relaxed));
    let sent_all = writer.is_finished();
    let r = drain_echo(ctx, c, &chunk, chunks, quiet_since, sent_all);
    let _ = writer.join();
    r
}

/// Reads what the implementation echoes after the suite stopped reading:
/// a close before the echo is complete passes.
fn drain_echo(
    ctx: &Ctx<'_>,
    mut c: Conn,
    chunk: &[u8],
    chunks: usize,
    quiet_since: Instant,
    sent_all: bool,
) -> CaseResult {
    let total = chunk.len() * chunks;
    let mut echoed = 0usize;
    let mut ended = false;
    let result = loop {
        match c.next(ctx.cfg.timeout)? {
            Observed::Frame(f) if f.ty == ty::DATA && f.stream != 0 => {
                let ok = f
                    .payload
                    .iter()
                    .enumerate()
                    .all(|(i, b)| chunk[(echoed + i) % chunk.len()] == *b);
                if !ok {
                    break Err(Finding::fail(
                        "the echo intact up to the close",
                        format!("echoed bytes differ near offset {echoed}"),
                    ));
                }
                echoed += f.payload.len();
            }
            Observed::Frame(f) if f.ty == ty::END && f.stream != 0 => {
                ended = true;
                break Ok(());
            }
            Observed::Frame(_) => {}
            Observed::Closed { .. } => break Ok(()),
            Observed::Silent { .. } => {
                break Err(Finding::Error(format!(
                    "inconclusive: neither a close nor more echo within {:?} of reading again \
                     ({echoed} of {total} bytes echoed)",
                    ctx.cfg.timeout
                )))
            }
        }
    };
    c.shutdown();
    result?;
    let waited = quiet_since.elapsed();
    if ended {
        let how = if c.is_closed() {
            "then closed"
        } else {
            "still open"
        };
        return Err(Finding::fail(
            format!(
                "the connection closed once sending made no progress for {:?}",
                ctx.cfg.stall_timeout
            ),
            format!("the whole {total}-byte echo arrived once the suite read again, {waited:?} after the suite stopped reading ({how})"),
        ));
    }
    Ok(format!(
        "closed before the echo was complete: {echoed} of {total} bytes echoed{}",
        if sent_all {
            ""
        } else {
            "; the implementation had stopped reading the stream"
        }
    ))
}

fn interleaved(ctx: &mut Ctx<'_>) -> CaseResult {
    let (a, b) = (pattern(20, 3000), pattern(21, 5000));
    let mut f = Vec::new();
    f.extend(frame(ty::DATA, 1, 0, &a[..1000]));
    f.extend(frame(ty::DATA, 3, 0, &b[..2500]));
    f.extend(frame(ty::DATA, 1, 1, &a[1000..]));
    f.extend(frame(ty::DATA, 3, 1, &b[2500..]));
    f.extend(frame(ty::END, 3, 2, &[]));
    f.extend(frame(ty::END, 1, 2, &[]));
    echoes(ctx, &f, &[&a, &b]).map(|_| "both echoed intact".into())
}

fn unknown_inside_stream(ctx: &mut Ctx<'_>) -> CaseResult {
    let p = pattern(22, 2000);
    let mut f = frame(ty::DATA, 1, 0, &p[..1000]);
    f.extend(frame(200, 1, 1, b"not part of the stream"));
    f.extend(frame(ty::DATA, 1, 1, &p[1000..]));
    f.extend(frame(ty::END, 1, 2, &[]));
    echoes(ctx, &f, &[&p]).map(|_| "stream intact".into())
}

fn no_token(ctx: &mut Ctx<'_>) -> CaseResult {
    ctx.require_echo()?;
    let mut c = established(ctx)?;
    let p = pattern(23, 777);
    c.send(&stream_frames(1, &[&p]))?;
    let s = Streams::collect(&mut c, 1, ctx.cfg.timeout)?;
    s.expect_payloads(&[&p])?;
    if s.data_bytes == p.len() {
        Ok("DATA payload bytes equal the tensor bytes".into())
    } else {
        Err(Finding::fail(
            format!("{} payload bytes", p.len()),
            format!("{} payload bytes", s.data_bytes),
        ))
    }
}
