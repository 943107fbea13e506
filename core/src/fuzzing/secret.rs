//! Fuzz entry points for `secret`. Under `cfg(fuzzing)` the crypto is the insecure shim of
//! `crypto` (identity AEAD with an all-zero tag, accept-all signatures, XOR "DH", public key =
//! secret), so inputs get past the MAC and into the AuthSig decoding and the session. Nothing
//! here may panic on any input; a failed `assert!` is a finding.

use bytes::BytesMut;

use crate::identity::NodeKey;
use crate::secret::{Handshake, Opener, Sealer};

/// Splits `data` into pieces of 1 to 1100 bytes, sizes drawn from a sequence seeded by `seed`.
fn pieces<'a>(data: &'a [u8], seed: u8) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut step = usize::from(seed);
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        step = step.wrapping_mul(13).wrapping_add(7) % 1100 + 1;
        let (head, tail) = rest.split_at(step.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

/// Runs one side's handshake over the peer bytes `data`, fed in pieces chosen by `seed`.
fn run_handshake(ephemeral_secret: [u8; 32], data: &[u8], seed: u8) {
    let key = NodeKey::from_seed([0x42; 32]);
    let mut hs = Handshake::new(&key, ephemeral_secret);
    let mut whole = hs.clone();
    let mut sent = 0;
    let mut result = Ok(());
    for piece in pieces(data, seed) {
        while let Some(bytes) = hs.poll_transmit() {
            assert!(bytes.len() == 35 || bytes.len() == 1044);
            sent += 1;
        }
        result = hs.handle_received(piece);
        if result.is_err() {
            break;
        }
    }
    // The same input in one piece gives the same verdict.
    let whole_result = whole.handle_received(data);
    assert_eq!(
        result.is_ok(),
        whole_result.is_ok(),
        "chunking changed the verdict"
    );
    while hs.poll_transmit().is_some() {
        sent += 1;
    }
    assert!(sent <= 2);
    if result.is_err() || !hs.is_complete() {
        return;
    }
    let Ok(mut session) = hs.into_session() else {
        panic!("a complete handshake must yield a session");
    };
    let mut out = BytesMut::new();
    let _ = session.opener.open(&[], &mut out);
    let _ = session.opener.finish();
    let mut wire = BytesMut::new();
    if session.sealer.seal(&out, &mut wire).is_ok() {
        assert_eq!(wire.len() % 1044, 0);
    }
}

/// The handshake fed arbitrary peer bytes, from both roles: once with an ephemeral key that
/// sorts low and once with one that sorts high (so `loc_is_least` takes both values), each
/// fed in input-chosen chunks and compared with feeding everything at once.
pub fn handshake(data: &[u8]) {
    let seed = data.first().copied().unwrap_or(0);
    let mut low = [0x01; 32];
    low[0] = 0;
    run_handshake(low, data, seed);
    run_handshake([0xfe; 32], data, seed);
}

/// Frame opening of arbitrary bytes in input-chosen chunks (compared with one piece), then a
/// seal/open round trip of the recovered plaintext.
pub fn frames(data: &[u8]) {
    let key = [0x33; 32];
    let seed = data.first().copied().unwrap_or(0);
    let mut opener = Opener::new(&key);
    let mut out = BytesMut::new();
    let mut result = Ok(());
    for piece in pieces(data, seed) {
        result = opener.open(piece, &mut out);
        if result.is_err() {
            break;
        }
        assert!(opener.buffered() < 1044);
    }
    let mut whole = Opener::new(&key);
    let mut whole_out = BytesMut::new();
    let whole_result = whole.open(data, &mut whole_out);
    assert_eq!(result, whole_result, "chunking changed the verdict");
    if result.is_ok() {
        assert_eq!(out, whole_out);
        assert_eq!(opener.finish(), whole.finish());
    }
    let mut sealer = Sealer::new(&key);
    let mut wire = BytesMut::new();
    let Ok(()) = sealer.seal(data, &mut wire) else {
        panic!("sealing from nonce 0 cannot fail");
    };
    let mut round = BytesMut::new();
    let Ok(()) = Opener::new(&key).open(&wire, &mut round) else {
        panic!("our own frames must open");
    };
    assert_eq!(&round[..], data);
}
