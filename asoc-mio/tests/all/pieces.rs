//! The `Driver` pieces in a `mio::Poll` loop owned by the test.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use asoc_mio::{AuthHandle, Driver};
use asoc_proto::auth::{ApiKey, AuthFailure, KeyRing};
use asoc_proto::connection::{CloseReason, ConnectionConfig, Event, SendError, StreamId};
use asoc_proto::handshake::{Authenticator, AuthenticatorConfig};
use bytes::Bytes;
use mio::event::Source;
use mio::{Events, Poll, Token};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::common::Holding;

const KEY: &str = "0123456789abcdef0123456789abcdef";

type LocalAuth = Rc<RefCell<Authenticator>>;

fn auth(node: u8, key: &str) -> LocalAuth {
    let config = AuthenticatorConfig::new(
        Uuid::from_bytes([node; 16]),
        KeyRing::new(ApiKey::new(key).unwrap()),
    );
    Rc::new(RefCell::new(Authenticator::new(config, [node; 32])))
}

/// One side of a test: a tensor to send once established, what arrived,
/// and how it ended.
#[derive(Default)]
struct Side {
    to_send: Option<(Vec<u8>, usize)>,
    sending: Option<(StreamId, usize)>,
    received: HashMap<StreamId, Sha256>,
    complete: HashMap<StreamId, (u32, Vec<u8>)>,
    established: bool,
    closed: Option<CloseReason>,
    close_when_received: usize,
}

impl Side {
    fn sending(tensor: Vec<u8>, chunk: usize) -> Self {
        Self {
            to_send: Some((tensor, chunk)),
            ..Self::default()
        }
    }

    /// Sends as much as the connection takes; `WouldBlock` is backpressure.
    fn pump<S: Source + Read + Write, A: AuthHandle>(&mut self, d: &mut Driver<S, A>) {
        let Some((data, chunk)) = &self.to_send else {
            return;
        };
        let Some((stream, off)) = self.sending.as_mut() else {
            return;
        };
        while *off < data.len() {
            let end = data.len().min(*off + chunk);
            match d.send(*stream, Bytes::copy_from_slice(&data[*off..end])) {
                Ok(()) => *off = end,
                Err(SendError::WouldBlock { .. }) => return,
                Err(e) => panic!("send: {e}"),
            }
        }
        d.finish(*stream).unwrap();
        self.to_send = None;
    }

    /// Closes once everything was sent and the expected streams arrived.
    fn maybe_close<S: Source + Read + Write, A: AuthHandle>(&mut self, d: &mut Driver<S, A>) {
        if self.to_send.is_none() && self.complete.len() == self.close_when_received {
            self.close_when_received = usize::MAX;
            d.close();
        }
    }

    fn on_event<S: Source + Read + Write, A: AuthHandle>(
        &mut self,
        d: &mut Driver<S, A>,
        event: Event,
    ) {
        match event {
            Event::Established { .. } => {
                self.established = true;
                if self.to_send.is_some() {
                    self.sending = Some((d.open_stream().unwrap(), 0));
                }
            }
            Event::Data {
                stream, payload, ..
            } => self.received.entry(stream).or_default().update(&payload),
            Event::StreamEnd { stream, frames, .. } => {
                let digest = self.received.remove(&stream).unwrap_or_default();
                self.complete
                    .insert(stream, (frames, digest.finalize().to_vec()));
            }
            Event::Closed { reason } => self.closed = Some(reason),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// Runs a user-owned poll loop over `drivers` (token = index) until every
/// driver reported `Closed`, dropping each driver's transport when it did.
fn run<S: Source + Read + Write, A: AuthHandle>(
    poll: &mut Poll,
    drivers: &mut [Option<Driver<S, A>>],
    sides: &mut [Side],
) {
    let mut events = Events::with_capacity(16);
    // Bounded: a hang fails the test instead of running forever.
    for _ in 0..1_000_000 {
        let now = Instant::now();
        for (d, side) in drivers.iter_mut().zip(sides.iter_mut()) {
            let Some(driver) = d else { continue };
            if driver.wants_read() {
                driver.on_readable(now);
            }
            if driver.next_deadline().is_some_and(|t| t <= now) {
                driver.on_timeout(now);
            }
            while let Some(event) = driver.poll_event() {
                side.on_event(driver, event);
            }
            side.pump(driver);
            side.maybe_close(driver);
            while let Some(event) = driver.poll_event() {
                side.on_event(driver, event);
            }
            if side.closed.is_some() {
                *d = None; // closes the transport
            }
        }
        if drivers.iter().all(Option::is_none) {
            return;
        }
        let busy = drivers.iter().flatten().any(Driver::wants_read);
        let deadline = drivers
            .iter()
            .flatten()
            .filter_map(Driver::next_deadline)
            .min();
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            deadline.map(|t| t.saturating_duration_since(Instant::now()))
        };
        poll.poll(&mut events, timeout).unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            let Some(Some(d)) = drivers.get_mut(ev.token().0) else {
                continue;
            };
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                d.on_readable(now);
            }
            if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
                d.on_writable(now);
            }
        }
    }
    panic!("the loop did not finish");
}

fn pattern(len: usize, salt: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(salt).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[test]
fn unix_socket_pair_with_the_driver_pieces_both_directions() {
    let (a, b) = mio::net::UnixStream::pair().unwrap();
    let mut poll = Poll::new().unwrap();
    let now = Instant::now();
    let config = ConnectionConfig::default();
    let mut drivers = [
        Some(Driver::client(a, auth(1, KEY), config, now)),
        Some(Driver::server(b, auth(2, KEY), config, now)),
    ];
    for (i, d) in drivers.iter_mut().enumerate() {
        d.as_mut()
            .unwrap()
            .register(poll.registry(), Token(i))
            .unwrap();
    }
    let (up, down) = (pattern(24 << 20, 1), pattern(16 << 20, 2));
    let (up_digest, down_digest) = (Sha256::digest(&up).to_vec(), Sha256::digest(&down).to_vec());
    let mut client = Side::sending(up, 1 << 20);
    let mut server = Side::sending(down, 256 << 10);
    // The client closes once the server's tensor arrived; the server then
    // sees its peer close.
    client.close_when_received = 1;
    server.close_when_received = usize::MAX;
    let mut sides = [client, server];
    run(&mut poll, &mut drivers, &mut sides);
    let [client, server] = sides;
    assert!(client.established && server.established);
    assert_eq!(
        server.complete,
        HashMap::from([(StreamId::new(1), (24, up_digest))])
    );
    assert_eq!(
        client.complete,
        HashMap::from([(StreamId::new(2), (64, down_digest))])
    );
    assert_eq!(client.closed, Some(CloseReason::Local));
    assert_eq!(server.closed, Some(CloseReason::PeerClosed));
}

#[test]
fn tcp_in_a_user_owned_poll_loop() {
    let mut listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut poll = Poll::new().unwrap();
    const LISTENER: Token = Token(100);
    poll.registry()
        .register(&mut listener, LISTENER, mio::Interest::READABLE)
        .unwrap();
    // Non-blocking connect: the HELLO is written once the socket is writable.
    let now = Instant::now();
    let config = ConnectionConfig::default();
    let server_auth = auth(2, KEY);
    let mut client = Driver::client(
        mio::net::TcpStream::connect(addr).unwrap(),
        auth(1, KEY),
        config,
        now,
    );
    client.register(poll.registry(), Token(0)).unwrap();
    // Accept in the same loop.
    let mut events = Events::with_capacity(4);
    let stream = loop {
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        // Every edge must be handled: mio reports readiness once.
        for ev in events.iter().filter(|e| e.token() == Token(0)) {
            if ev.is_writable() {
                client.on_writable(Instant::now());
            }
        }
        if events.iter().any(|e| e.token() == LISTENER) {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
        }
    };
    let mut server = Driver::server(stream, server_auth.clone(), config, Instant::now());
    server.register(poll.registry(), Token(1)).unwrap();
    let mut drivers = [Some(client), Some(server)];
    let tensor = pattern(8 << 20, 3);
    let digest = Sha256::digest(&tensor).to_vec();
    let mut sides = [Side::sending(tensor, 1 << 20), Side::default()];
    sides[1].close_when_received = 1;
    sides[0].close_when_received = usize::MAX;
    run(&mut poll, &mut drivers, &mut sides);
    assert_eq!(
        sides[1].complete,
        HashMap::from([(StreamId::new(1), (8, digest))])
    );
    assert_eq!(sides[1].closed, Some(CloseReason::Local));
    assert_eq!(sides[0].closed, Some(CloseReason::PeerClosed));
    assert_eq!(server_auth.borrow().counters().hellos_accepted, 1);
}

#[test]
fn wrong_key_in_the_pieces_server_writes_nothing() {
    let (a, b) = mio::net::UnixStream::pair().unwrap();
    let mut poll = Poll::new().unwrap();
    let now = Instant::now();
    let config = ConnectionConfig::default();
    let mut client = Driver::client(a, auth(1, "a-completely-different-key"), config, now);
    let mut server = Driver::server(b, auth(2, KEY), config, now);
    client.register(poll.registry(), Token(0)).unwrap();
    server.register(poll.registry(), Token(1)).unwrap();
    let mut events = Events::with_capacity(4);
    while !server.is_closed() {
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            let d = if ev.token() == Token(0) {
                &mut client
            } else {
                &mut server
            };
            if ev.is_readable() {
                d.on_readable(now);
            }
            if ev.is_writable() {
                d.on_writable(now);
            }
        }
    }
    assert_eq!(
        server.poll_event(),
        Some(Event::Closed {
            reason: CloseReason::AuthFailed(AuthFailure::BadMac)
        })
    );
    assert_eq!(server.connection().stats().bytes_out, 0);
    assert_eq!(server.connection().pending_output(), 0);
    drop(server);
    // The client reads EOF and nothing else.
    let mut client_closed = None;
    while client_closed.is_none() {
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        client.on_readable(Instant::now());
        while let Some(event) = client.poll_event() {
            if let Event::Closed { reason } = event {
                client_closed = Some(reason);
            }
        }
    }
    assert_eq!(client_closed, Some(CloseReason::PeerClosed));
    assert_eq!(client.connection().stats().bytes_in, 0);
}

#[test]
fn a_graceful_close_waits_for_output_the_transport_still_holds() {
    let (a, b) = mio::net::UnixStream::pair().unwrap();
    let mut poll = Poll::new().unwrap();
    let now = Instant::now();
    let config = ConnectionConfig::default();
    let mut drivers = [
        Some(Driver::client(Holding::new(a), auth(1, KEY), config, now)),
        Some(Driver::server(Holding::new(b), auth(2, KEY), config, now)),
    ];
    for (i, d) in drivers.iter_mut().enumerate() {
        d.as_mut()
            .unwrap()
            .register(poll.registry(), Token(i))
            .unwrap();
    }
    // The client closes as soon as its tensor is queued, with most of it
    // still in the transport's buffer: `run` drops the transport on
    // `Closed`, so the tensor arrives whole only if `Closed` waited.
    let tensor = pattern(16 << 20, 4);
    let digest = Sha256::digest(&tensor).to_vec();
    let mut sides = [Side::sending(tensor, 1 << 20), Side::default()];
    sides[0].close_when_received = 0;
    sides[1].close_when_received = usize::MAX;
    run(&mut poll, &mut drivers, &mut sides);
    assert_eq!(sides[0].closed, Some(CloseReason::Local));
    assert_eq!(
        sides[1].complete,
        HashMap::from([(StreamId::new(1), (16, digest))])
    );
    assert_eq!(sides[1].closed, Some(CloseReason::PeerClosed));
}

#[test]
fn the_driver_forwards_the_protocols_poisoning_of_a_refused_stream() {
    let (a, b) = mio::net::UnixStream::pair().unwrap();
    let mut poll = Poll::new().unwrap();
    let now = Instant::now();
    let config = ConnectionConfig::builder()
        .max_payload(1024)
        .build()
        .unwrap();
    let mut client = Driver::client(a, auth(1, KEY), config, now);
    let mut server = Driver::server(b, auth(2, KEY), config, now);
    client.register(poll.registry(), Token(0)).unwrap();
    server.register(poll.registry(), Token(1)).unwrap();
    let mut events = Events::with_capacity(4);
    let mut server_events = Vec::new();
    let mut stream = None;
    // Bounded: a hang fails the test instead of running forever.
    for _ in 0..10_000 {
        if server_events
            .iter()
            .any(|e| matches!(e, Event::StreamEnd { .. }))
        {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            let d = if ev.token() == Token(0) {
                &mut client
            } else {
                &mut server
            };
            d.on_readable(now);
            d.on_writable(now);
        }
        while let Some(event) = server.poll_event() {
            server_events.push(event);
        }
        while let Some(event) = client.poll_event() {
            if !matches!(event, Event::Established { .. }) {
                continue;
            }
            let s = client.open_stream().unwrap();
            client.send(s, Bytes::from_static(b"head")).unwrap();
            assert!(matches!(
                client.send(s, Bytes::from(vec![0u8; 1025])),
                Err(SendError::PayloadTooLarge { .. })
            ));
            let poisoned = client.connection().poisoned(s).unwrap();
            assert!(matches!(&poisoned, SendError::Poisoned { stream, .. } if *stream == s));
            assert_eq!(
                client.send(s, Bytes::from_static(b"tail")),
                Err(poisoned.clone())
            );
            assert_eq!(client.finish(s), Err(poisoned));
            let fine = client.open_stream().unwrap();
            client.send(fine, Bytes::from_static(b"fine")).unwrap();
            client.finish(fine).unwrap();
            stream = Some((s, fine));
        }
    }
    let (s, fine) = stream.expect("established");
    let data = |id: StreamId| -> Vec<u8> {
        server_events
            .iter()
            .filter_map(|e| match e {
                Event::Data {
                    stream, payload, ..
                } if *stream == id => Some(payload.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    };
    assert_eq!(data(s), b"head");
    assert_eq!(data(fine), b"fine");
    assert!(server_events
        .iter()
        .all(|e| !matches!(e, Event::StreamEnd { stream, .. } if *stream == s)));
}
