//! SecretConnection (spec 2), sans-IO: the handshake state machine and the frame sealer/opener.
//!
//! [`Handshake`] turns received bytes into bytes to send and, once the peer has proven its
//! Ed25519 key, into a [`SecretSession`]: the authenticated remote key, a [`Sealer`] and an
//! [`Opener`] for the 1044-byte ChaCha20-Poly1305 frames. No I/O, clock or OS randomness: the
//! ephemeral secret comes from the caller.

mod delimited;
mod frame;
mod handshake;

/// Largest accepted delimited handshake message, each of the two (1 MiB, spec 2.1).
pub use crate::wire::limits::MAX_HANDSHAKE_MSG_SIZE;
pub use frame::{DATA_MAX_SIZE, FrameError, Opener, SEALED_FRAME_SIZE, Sealer, TOTAL_FRAME_SIZE};
pub use handshake::{
    Handshake, HandshakeError, KeySchedule, MAX_EARLY_DATA, SecretSession, auth_sig_message,
    ephemeral_message, split_keys,
};

/// HKDF-SHA256 of a DH secret into 96 bytes, as the handshake does (spec 2.2 step 7); public
/// for the upstream golden-file test.
#[must_use]
pub fn hkdf_okm(dh_secret: &[u8; 32]) -> [u8; 96] {
    crate::crypto::hkdf96(dh_secret)
}
