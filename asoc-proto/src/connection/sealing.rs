//! A connection's v2 state: the client's pending Noise handshake, the
//! server's verdict waiting for CONFIRM, and the two directions' AEAD.

use uuid::Uuid;

use super::SessionInfo;
use crate::auth::KeyId;
use crate::v2::noise::{Initiator, Session};
use crate::v2::seal::{Opener, Sealer};
use crate::v2::Suite;

/// What a v2 connection holds between its first frame and its last.
#[derive(Debug)]
pub(super) struct V2 {
    pub(super) suite: Suite,
    /// The key the handshake ran under.
    pub(super) key: KeyId,
    /// Client: HELLO2's handshake state, until ACCEPT2 arrives.
    pub(super) initiator: Option<Initiator>,
    /// Client: the node id the server must prove.
    pub(super) expected_peer: Option<Uuid>,
    /// The peer's node id, once proven.
    pub(super) peer: Option<Uuid>,
    /// The session, once split.
    pub(super) info: Option<SessionInfo>,
    pub(super) sealer: Option<Sealer>,
    pub(super) opener: Option<Opener>,
}

impl V2 {
    pub(super) fn client(initiator: Initiator, key: KeyId, expected_peer: Option<Uuid>) -> Self {
        Self {
            suite: initiator.suite(),
            key,
            initiator: Some(initiator),
            expected_peer,
            peer: None,
            info: None,
            sealer: None,
            opener: None,
        }
    }

    pub(super) fn server(suite: Suite, key: KeyId, peer: Uuid) -> Self {
        Self {
            suite,
            key,
            initiator: None,
            expected_peer: None,
            peer: Some(peer),
            info: None,
            sealer: None,
            opener: None,
        }
    }

    /// Installs the split keys for `role_is_client`'s directions.
    pub(super) fn split(&mut self, session: &Session, session_id: [u8; 8], role_is_client: bool) {
        let (send, receive) = if role_is_client {
            (&session.client_to_server, &session.server_to_client)
        } else {
            (&session.server_to_client, &session.client_to_server)
        };
        self.sealer = Some(Sealer::new(self.suite, send));
        self.opener = Some(Opener::new(self.suite, receive));
        self.info = Some(SessionInfo::v2(
            self.suite,
            session_id,
            session.handshake_hash,
        ));
    }
}
