//! Signing and checking the two MAC-carrying messages, HELLO and discovery.

use uuid::Uuid;

use super::mac::{ct_eq, truncated_mac};
use super::ApiKey;
use crate::wire::{Announcement, Hello};

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
