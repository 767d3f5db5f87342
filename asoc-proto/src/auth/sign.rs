//! Signing and checking the MAC-carrying messages: HELLO, the v1
//! announcement (under the API key) and the v2 announcement (under the
//! key's discovery key, WIRE-v2.md §5).

use uuid::Uuid;

use super::mac::{ct_eq, truncated_mac};
use super::ApiKey;
use crate::wire::{Announcement, AnnouncementV2, Hello};

/// Builds a signed HELLO for `node_id` with `challenge`.
#[must_use]
pub fn sign_hello(key: &ApiKey, node_id: Uuid, challenge: u32) -> Hello {
    let signed = Hello::signed_bytes(&node_id, challenge);
    Hello {
        node_id,
        mac: truncated_mac::<16>(key.expose_secret(), &[&signed]),
        challenge,
    }
}

/// Whether `hello`'s MAC is valid under `key` (constant-time).
#[must_use]
pub fn verify_hello(key: &ApiKey, hello: &Hello) -> bool {
    let signed = Hello::signed_bytes(&hello.node_id, hello.challenge);
    let expected = truncated_mac::<16>(key.expose_secret(), &[&signed]);
    ct_eq(&expected, &hello.mac)
}

/// Fills in `announcement.mac` under `key`; every other field is kept.
#[must_use]
pub fn sign_announcement(key: &ApiKey, mut announcement: Announcement) -> Announcement {
    announcement.mac = truncated_mac::<16>(key.expose_secret(), &[&announcement.signed_bytes()]);
    announcement
}

/// Whether the announcement's MAC is valid under `key` (constant-time).
#[must_use]
pub fn verify_announcement(key: &ApiKey, announcement: &Announcement) -> bool {
    let expected = truncated_mac::<16>(key.expose_secret(), &[&announcement.signed_bytes()]);
    ct_eq(&expected, &announcement.mac)
}

/// Fills in `announcement.mac` under `discovery_key` (see
/// [`crate::v2::derive_discovery_key`]); every other field is kept.
#[must_use]
pub fn sign_announcement_v2(
    discovery_key: &[u8; 32],
    mut announcement: AnnouncementV2,
) -> AnnouncementV2 {
    announcement.mac = truncated_mac::<16>(discovery_key, &[&announcement.signed_bytes()]);
    announcement
}

/// Whether the v2 announcement's MAC is valid under `discovery_key`
/// (constant-time).
#[must_use]
pub fn verify_announcement_v2(discovery_key: &[u8; 32], announcement: &AnnouncementV2) -> bool {
    let expected = truncated_mac::<16>(discovery_key, &[&announcement.signed_bytes()]);
    ct_eq(&expected, &announcement.mac)
}
