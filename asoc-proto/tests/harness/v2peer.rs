//! A v2 peer built from the crate's public building blocks rather than from
//! a `Connection`: it writes and reads handshake messages and seals frames
//! of any shape, valid or not, so that tests can send what a correct
//! implementation never would (frames that break receiver rules, replays,
//! forged tags) and inspect exactly what the other side wrote.
#![allow(dead_code)]

use asoc_proto::auth::ApiKey;
use asoc_proto::connection::v2_handshake_header;
use asoc_proto::v2::noise::{
    AcceptPayload, HelloPayload, Initiator, Message, Responder, Session, MESSAGE_LEN,
};
use asoc_proto::v2::seal::{Opener, Sealer, TAG_LEN};
use asoc_proto::v2::{derive_psk, Suite};
use asoc_proto::wire::{FrameType, Header, HEADER_LEN};
use bytes::BytesMut;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Length of a HELLO2 or ACCEPT2 frame on the wire.
pub(crate) const HANDSHAKE_FRAME_LEN: usize = HEADER_LEN + MESSAGE_LEN;

/// A whole HELLO2 or ACCEPT2 frame for `message`.
pub(crate) fn handshake_frame(suite: Suite, accept: bool, message: &Message) -> Vec<u8> {
    let mut v = v2_handshake_header(suite, accept).encode().to_vec();
    v.extend_from_slice(message);
    v
}

/// The two directions' frame keys, once a handshake split them.
pub(crate) struct Keys {
    pub suite: Suite,
    pub sealer: Sealer,
    pub opener: Opener,
    pub handshake_hash: [u8; 32],
}

impl Keys {
    fn new(session: &Session, client: bool) -> Self {
        let (send, receive) = if client {
            (&session.client_to_server, &session.server_to_client)
        } else {
            (&session.server_to_client, &session.client_to_server)
        };
        Self {
            suite: session.suite,
            sealer: Sealer::new(session.suite, send),
            opener: Opener::new(session.suite, receive),
            handshake_hash: session.handshake_hash,
        }
    }

    /// A whole sealed frame: a v2 header whose length counts the tag, then
    /// `plaintext` encrypted under the next nonce.
    pub(crate) fn seal(
        &mut self,
        frame_type: FrameType,
        stream: u32,
        seq: u32,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let header = v2_header(frame_type, stream, seq, (plaintext.len() + TAG_LEN) as u32);
        let mut v = header.encode().to_vec();
        v.extend_from_slice(&self.sealer.seal(&header.encode(), plaintext).unwrap());
        v
    }

    /// CONFIRM: the first client frame, an empty CONTROL on stream 0.
    pub(crate) fn confirm(&mut self) -> Vec<u8> {
        self.seal(FrameType::Control, 0, 0, b"")
    }

    /// Opens every whole frame in `wire`, in order; `None` at the first
    /// frame whose tag does not verify.
    pub(crate) fn open_all(&mut self, mut wire: &[u8]) -> Option<Vec<(Header, Vec<u8>)>> {
        let mut out = Vec::new();
        while wire.len() >= HEADER_LEN {
            let header = Header::peek(wire)?;
            let end = HEADER_LEN + header.length as usize;
            let mut body = BytesMut::from(wire.get(HEADER_LEN..end)?);
            self.opener.open(&header.encode(), &mut body).ok()?;
            out.push((
                Header {
                    length: body.len() as u32,
                    ..header
                },
                body.to_vec(),
            ));
            wire = &wire[end..];
        }
        Some(out)
    }
}

/// A header with version byte 2.
pub(crate) fn v2_header(frame_type: FrameType, stream: u32, seq: u32, length: u32) -> Header {
    Header {
        version: 2,
        ..Header::new(frame_type, stream, seq, length)
    }
}

/// A hand-driven v2 client.
pub(crate) struct RawClient {
    pub suite: Suite,
    initiator: Option<Initiator>,
    /// The whole HELLO2 frame.
    pub hello: Vec<u8>,
    pub keys: Option<Keys>,
}

impl RawClient {
    /// A HELLO2 under `key` claiming `node` at wall-clock time `unix_ms`,
    /// with an ephemeral private key made from `ephemeral` (distinct
    /// numbers, distinct keys).
    pub(crate) fn new(
        key: &ApiKey,
        suite: Suite,
        node: Uuid,
        unix_ms: u64,
        ephemeral: u32,
    ) -> Self {
        let mut private = Zeroizing::new([0x5a; 32]);
        private[..4].copy_from_slice(&ephemeral.to_be_bytes());
        let payload = HelloPayload {
            node_id: node,
            unix_ms,
        };
        let (initiator, message) =
            Initiator::start(suite, &derive_psk(key), private, &payload).unwrap();
        Self {
            suite,
            initiator: Some(initiator),
            hello: handshake_frame(suite, false, &message),
            keys: None,
        }
    }

    /// Reads the ACCEPT2 frame at the start of `wire`; on success the frame
    /// keys are installed and CONFIRM is returned.
    pub(crate) fn finish(&mut self, wire: &[u8]) -> Option<(AcceptPayload, Vec<u8>)> {
        let accepted = self.finish_keys(wire)?;
        let confirm = self.keys().confirm();
        Some((accepted, confirm))
    }

    /// Reads the ACCEPT2 frame at the start of `wire` and installs the
    /// frame keys without sealing CONFIRM: nonce 0 is still unused.
    pub(crate) fn finish_keys(&mut self, wire: &[u8]) -> Option<AcceptPayload> {
        let message: Message = wire.get(HEADER_LEN..HANDSHAKE_FRAME_LEN)?.try_into().ok()?;
        let (accepted, session) = self.initiator.take()?.finish(&message).ok()?;
        self.keys = Some(Keys::new(&session, true));
        Some(accepted)
    }

    /// The installed keys; panics before [`finish`](Self::finish).
    pub(crate) fn keys(&mut self) -> &mut Keys {
        self.keys.as_mut().expect("handshake finished")
    }
}

/// A hand-driven v2 server.
pub(crate) struct RawServer {
    pub keys: Option<Keys>,
    /// The client's HELLO2 payload, once read.
    pub hello: Option<HelloPayload>,
}

impl RawServer {
    /// Reads the HELLO2 frame at the start of `wire` under `key` and
    /// answers as `node` with `session_id`, ephemeral `[ephemeral; 32]`:
    /// returns the whole ACCEPT2 frame and installs the frame keys.
    pub(crate) fn answer(
        key: &ApiKey,
        wire: &[u8],
        node: Uuid,
        session_id: [u8; 8],
        ephemeral: u8,
    ) -> Option<(Self, Vec<u8>)> {
        let header = Header::peek(wire)?;
        let suite = Suite::from_seq(header.seq)?;
        let message: Message = wire.get(HEADER_LEN..HANDSHAKE_FRAME_LEN)?.try_into().ok()?;
        let (responder, hello) = Responder::read_hello(
            suite,
            &derive_psk(key),
            Zeroizing::new([ephemeral; 32]),
            &message,
        )
        .ok()?;
        let (accept, session) = responder
            .reply(&AcceptPayload {
                node_id: node,
                session_id,
            })
            .ok()?;
        Some((
            Self {
                keys: Some(Keys::new(&session, false)),
                hello: Some(hello),
            },
            handshake_frame(suite, true, &accept),
        ))
    }

    /// The installed keys.
    pub(crate) fn keys(&mut self) -> &mut Keys {
        self.keys.as_mut().expect("handshake answered")
    }
}
