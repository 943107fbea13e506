//! Every bad input of the SecretConnection has its own typed error.

use bytes::BytesMut;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::secret::{
    FrameError, Handshake, HandshakeError, KeySchedule, MAX_EARLY_DATA, MAX_HANDSHAKE_MSG_SIZE,
    Opener, SEALED_FRAME_SIZE, Sealer, SecretSession, ephemeral_message,
};
use cometmesh_core::wire::codec::write_uvarint;
use cometmesh_core::wire::proto::{AuthSigMessage, PublicKey, public_key};
use prost::Message;

fn node(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

/// Runs a full honest handshake between two in-memory nodes.
fn pair() -> (SecretSession, SecretSession) {
    let mut a = Handshake::new(&node(1), [11; 32]);
    let mut b = Handshake::new(&node(2), [22; 32]);
    for _ in 0..4 {
        while let Some(bytes) = a.poll_transmit() {
            b.handle_received(&bytes).unwrap();
        }
        while let Some(bytes) = b.poll_transmit() {
            a.handle_received(&bytes).unwrap();
        }
    }
    assert!(a.is_complete() && b.is_complete());
    (a.into_session().unwrap(), b.into_session().unwrap())
}

/// A handshake `victim` that has received the ephemeral key of an attacker, plus the key
/// schedule the attacker derives (so it can seal any AuthSig it likes).
fn victim_and_attacker_keys() -> (Handshake, KeySchedule) {
    let mut victim = Handshake::new(&node(1), [11; 32]);
    let mut attacker = Handshake::new(&node(2), [22; 32]);
    let victim_eph = victim.poll_transmit().unwrap();
    let attacker_eph = attacker.poll_transmit().unwrap();
    attacker.handle_received(&victim_eph).unwrap();
    victim.handle_received(&attacker_eph).unwrap();
    let victim_auth = victim.poll_transmit().unwrap();
    assert_eq!(victim_auth.len(), SEALED_FRAME_SIZE);
    let keys = attacker.key_schedule().unwrap().clone();
    (victim, keys)
}

/// Feeds the victim the attacker's delimited AuthSig plaintext, sealed properly.
fn victim_result(auth_plaintext: &[u8]) -> Result<(), HandshakeError> {
    let (mut victim, keys) = victim_and_attacker_keys();
    let mut frame = BytesMut::new();
    Sealer::new(&keys.send_key)
        .seal(auth_plaintext, &mut frame)
        .unwrap();
    victim.handle_received(&frame)
}

fn auth_msg(key: Option<public_key::Sum>, sig: Vec<u8>) -> Vec<u8> {
    AuthSigMessage {
        pub_key: Some(PublicKey { sum: key }),
        sig,
    }
    .encode_length_delimited_to_vec()
}

fn honest_auth(keys: &KeySchedule) -> (Vec<u8>, [u8; 64]) {
    let attacker = node(2);
    (
        attacker.public_key().to_vec(),
        attacker.sign(&keys.challenge),
    )
}

#[test]
fn tampered_frame() {
    let (mut a, mut b) = pair();
    let mut wire = BytesMut::new();
    a.sealer.seal(b"hello", &mut wire).unwrap();
    wire[100] ^= 0x40;
    let mut out = BytesMut::new();
    assert_eq!(
        b.opener.open(&wire, &mut out),
        Err(FrameError::Tampered { nonce: 1 })
    );
    // The opener stays failed.
    assert!(b.opener.open(&[], &mut out).is_err());
}

#[test]
fn reordered_frame() {
    let (mut a, mut b) = pair();
    let (mut first, mut second) = (BytesMut::new(), BytesMut::new());
    a.sealer.seal(b"one", &mut first).unwrap();
    a.sealer.seal(b"two", &mut second).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(
        b.opener.open(&second, &mut out),
        Err(FrameError::Reordered {
            expected: 1,
            found: 2
        })
    );
    assert!(out.is_empty());
}

#[test]
fn replayed_frame() {
    let (mut a, mut b) = pair();
    let mut wire = BytesMut::new();
    a.sealer.seal(b"once", &mut wire).unwrap();
    let mut out = BytesMut::new();
    b.opener.open(&wire, &mut out).unwrap();
    assert_eq!(&out[..], b"once");
    assert_eq!(
        b.opener.open(&wire, &mut out),
        Err(FrameError::Replayed {
            expected: 2,
            found: 1
        })
    );
}

#[test]
fn truncated_frame() {
    let (mut a, mut b) = pair();
    let mut wire = BytesMut::new();
    a.sealer.seal(b"cut short", &mut wire).unwrap();
    let mut out = BytesMut::new();
    b.opener.open(&wire[..1000], &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(b.opener.buffered(), 1000);
    assert_eq!(
        b.opener.finish(),
        Err(FrameError::Truncated { buffered: 1000 })
    );
    // Once the rest arrives the frame opens and the stream may end.
    b.opener.open(&wire[1000..], &mut out).unwrap();
    assert_eq!(&out[..], b"cut short");
    assert_eq!(b.opener.finish(), Ok(()));
}

#[test]
fn stream_ends_during_handshake() {
    let mut a = Handshake::new(&node(1), [11; 32]);
    a.handle_received(&[0x22, 0x0a]).unwrap();
    assert_eq!(a.handle_eof(), Err(HandshakeError::UnexpectedEof));
    // AuthSig frame cut short.
    let (mut victim, _) = victim_and_attacker_keys();
    victim.handle_received(&[0u8; 500]).unwrap();
    assert_eq!(victim.handle_eof(), Err(HandshakeError::UnexpectedEof));
}

#[test]
fn handshake_frame_tampered() {
    let (mut victim, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    let mut frame = BytesMut::new();
    Sealer::new(&keys.send_key)
        .seal(
            &auth_msg(Some(public_key::Sum::Ed25519(key)), sig.to_vec()),
            &mut frame,
        )
        .unwrap();
    frame[5] ^= 1;
    assert_eq!(
        victim.handle_received(&frame),
        Err(HandshakeError::Frame(FrameError::Tampered { nonce: 0 }))
    );
    assert_eq!(
        victim.handle_received(&[]),
        Err(HandshakeError::AlreadyFailed)
    );
}

#[test]
fn honest_auth_sig_is_accepted() {
    // The baseline the bad-AuthSig tests below differ from.
    let (mut victim, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    let mut frame = BytesMut::new();
    Sealer::new(&keys.send_key)
        .seal(
            &auth_msg(Some(public_key::Sum::Ed25519(key.clone())), sig.to_vec()),
            &mut frame,
        )
        .unwrap();
    victim.handle_received(&frame).unwrap();
    assert!(victim.is_complete());
    assert_eq!(
        victim.into_session().unwrap().remote_public_key[..],
        key[..]
    );
}

#[test]
fn all_zero_dh_low_order_point() {
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert_eq!(
        a.handle_received(&ephemeral_message(&[0u8; 32])),
        Err(HandshakeError::LowOrderPoint)
    );
    // Another low-order point: u = 1.
    let mut one = [0u8; 32];
    one[0] = 1;
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert_eq!(
        a.handle_received(&ephemeral_message(&one)),
        Err(HandshakeError::LowOrderPoint)
    );
}

#[test]
fn secp256k1_public_key_is_rejected() {
    let (_, keys) = victim_and_attacker_keys();
    let (_, sig) = honest_auth(&keys);
    let mut k1 = vec![0x02];
    k1.extend([7u8; 32]);
    assert_eq!(
        victim_result(&auth_msg(
            Some(public_key::Sum::Secp256k1(k1)),
            sig.to_vec()
        )),
        Err(HandshakeError::UnsupportedKeyType("secp256k1"))
    );
}

#[test]
fn missing_public_key() {
    let (_, keys) = victim_and_attacker_keys();
    let (_, sig) = honest_auth(&keys);
    assert_eq!(
        victim_result(&auth_msg(None, sig.to_vec())),
        Err(HandshakeError::MissingPublicKey)
    );
}

#[test]
fn bad_signature() {
    let (_, keys) = victim_and_attacker_keys();
    let (key, _) = honest_auth(&keys);
    let wrong = node(2).sign(b"not the challenge");
    assert_eq!(
        victim_result(&auth_msg(
            Some(public_key::Sum::Ed25519(key)),
            wrong.to_vec()
        )),
        Err(HandshakeError::BadSignature)
    );
    // A valid signature by another key than the one presented.
    let (_, keys) = victim_and_attacker_keys();
    let other = node(3).sign(&keys.challenge);
    assert_eq!(
        victim_result(&auth_msg(
            Some(public_key::Sum::Ed25519(node(2).public_key().to_vec())),
            other.to_vec()
        )),
        Err(HandshakeError::BadSignature)
    );
}

#[test]
fn wrong_key_and_signature_lengths() {
    let (_, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    assert_eq!(
        victim_result(&auth_msg(
            Some(public_key::Sum::Ed25519(key[..31].to_vec())),
            sig.to_vec()
        )),
        Err(HandshakeError::PublicKeyLength(31))
    );
    assert_eq!(
        victim_result(&auth_msg(
            Some(public_key::Sum::Ed25519(key.clone())),
            sig[..63].to_vec()
        )),
        Err(HandshakeError::SignatureLength(63))
    );
    let mut long = sig.to_vec();
    long.push(0);
    assert_eq!(
        victim_result(&auth_msg(Some(public_key::Sum::Ed25519(key)), long)),
        Err(HandshakeError::SignatureLength(65))
    );
}

#[test]
fn malformed_auth_sig_message() {
    // Field 1 with wire type 5 (fixed32): not a valid AuthSigMessage.
    assert!(matches!(
        victim_result(&[5, 0x0d, 1, 2, 3, 4]),
        Err(HandshakeError::MalformedAuthSig(_))
    ));
    // A length prefix over 1 MiB inside the frames.
    assert_eq!(
        victim_result(&[0x81, 0x80, 0x40]),
        Err(HandshakeError::MessageTooLong {
            what: "auth signature",
            len: (1 << 20) + 1
        })
    );
}

/// Seals a raw 1028-byte plaintext frame with RustCrypto (independent of our sealer).
fn raw_frame(key: &[u8; 32], nonce: u64, plaintext: &[u8; 1028]) -> Vec<u8> {
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(key.into());
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&nonce.to_le_bytes());
    let mut body = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(&n.into(), b"", &mut body)
        .unwrap();
    body.extend_from_slice(&tag);
    body
}

#[test]
fn frame_length_above_1024() {
    let key = [5u8; 32];
    let mut plain = [0u8; 1028];
    plain[..4].copy_from_slice(&1025u32.to_le_bytes());
    let mut opener = Opener::new(&key);
    let mut out = BytesMut::new();
    assert_eq!(
        opener.open(&raw_frame(&key, 0, &plain), &mut out),
        Err(FrameError::ChunkTooLong(1025))
    );
    // 1024 itself is fine, as is 0.
    let mut opener = Opener::new(&key);
    plain[..4].copy_from_slice(&1024u32.to_le_bytes());
    opener.open(&raw_frame(&key, 0, &plain), &mut out).unwrap();
    assert_eq!(out.len(), 1024);
    plain[..4].copy_from_slice(&0u32.to_le_bytes());
    opener.open(&raw_frame(&key, 1, &plain), &mut out).unwrap();
    assert_eq!(out.len(), 1024);
}

#[test]
fn nonce_exhaustion_is_an_error_not_a_wrap() {
    let key = [6u8; 32];
    let mut sealer = Sealer::with_nonce_counter(&key, u64::MAX - 2);
    let mut out = BytesMut::new();
    // Two frames would need nonces MAX-2 and MAX-1: allowed.
    sealer.seal(&[1u8; 2048], &mut out).unwrap();
    assert_eq!(sealer.nonce_counter(), u64::MAX);
    assert_eq!(out.len(), 2 * SEALED_FRAME_SIZE);
    assert_eq!(sealer.seal(b"x", &mut out), Err(FrameError::NonceExhausted));
    assert_eq!(out.len(), 2 * SEALED_FRAME_SIZE, "nothing appended");
    // Three frames from MAX-2 would need MAX itself: refused before any output.
    let mut sealer = Sealer::with_nonce_counter(&key, u64::MAX - 2);
    let mut out2 = BytesMut::new();
    assert_eq!(
        sealer.seal(&[1u8; 3000], &mut out2),
        Err(FrameError::NonceExhausted)
    );
    assert!(out2.is_empty());
    // The receive side too.
    let mut opener = Opener::with_nonce_counter(&key, u64::MAX - 2);
    let mut plain = BytesMut::new();
    opener.open(&out, &mut plain).unwrap();
    assert_eq!(plain.len(), 2048);
    assert_eq!(
        opener.open(&[0u8; SEALED_FRAME_SIZE], &mut plain),
        Err(FrameError::NonceExhausted)
    );
}

#[test]
fn ephemeral_key_not_32_bytes() {
    let mut msg = vec![0x21, 0x0a, 0x1f];
    msg.extend([9u8; 31]);
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert_eq!(
        a.handle_received(&msg),
        Err(HandshakeError::EphemeralKeyLength(31))
    );
    let mut msg = vec![0x23, 0x0a, 0x21];
    msg.extend([9u8; 33]);
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert_eq!(
        a.handle_received(&msg),
        Err(HandshakeError::EphemeralKeyLength(33))
    );
}

#[test]
fn ephemeral_message_bad_protobuf() {
    // Field 1 with wire type 5: Go's "wrong wireType" case.
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert!(matches!(
        a.handle_received(&[5, 0x0d, 1, 2, 3, 4]),
        Err(HandshakeError::MalformedEphemeral(_))
    ));
    // A length field running past the body.
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert!(matches!(
        a.handle_received(&[3, 0x0a, 0x20, 1]),
        Err(HandshakeError::MalformedEphemeral(_))
    ));
}

#[test]
fn ephemeral_message_over_1_mib() {
    let mut a = Handshake::new(&node(1), [11; 32]);
    // uvarint 1048577, checked before anything is allocated.
    assert_eq!(
        a.handle_received(&[0x81, 0x80, 0x40]),
        Err(HandshakeError::MessageTooLong {
            what: "ephemeral key",
            len: (1 << 20) + 1
        })
    );
    // A uvarint longer than 64 bits.
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert_eq!(
        a.handle_received(&[0xff; 11]),
        Err(HandshakeError::MalformedLength("ephemeral key"))
    );
    // Exactly 1 MiB is accepted as a length (the body is then awaited).
    let mut a = Handshake::new(&node(1), [11; 32]);
    a.handle_received(&[0x80, 0x80, 0x40]).unwrap();
}

#[test]
fn equal_ephemeral_keys() {
    let mut a = Handshake::new(&node(1), [11; 32]);
    let own = a.poll_transmit().unwrap();
    assert_eq!(
        a.handle_received(&own),
        Err(HandshakeError::EqualEphemeralKeys)
    );
}

#[test]
fn session_taken_too_early() {
    let mut a = Handshake::new(&node(1), [11; 32]);
    assert!(!a.is_complete());
    let _ = a.poll_transmit();
    assert!(matches!(a.into_session(), Err(HandshakeError::Incomplete)));
}

#[test]
fn data_right_after_the_auth_sig_reaches_the_session() {
    // The peer's first data frame arrives in the same read as its AuthSig frame.
    let (mut victim, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    let mut sealer = Sealer::new(&keys.send_key);
    let mut wire = BytesMut::new();
    sealer
        .seal(
            &auth_msg(Some(public_key::Sum::Ed25519(key)), sig.to_vec()),
            &mut wire,
        )
        .unwrap();
    sealer.seal(b"node info follows", &mut wire).unwrap();
    victim.handle_received(&wire[..1500]).unwrap();
    victim.handle_received(&wire[1500..]).unwrap();
    let mut session = victim.into_session().unwrap();
    let mut out = BytesMut::new();
    session.opener.open(&[], &mut out).unwrap();
    assert_eq!(&out[..], b"node info follows");
}

#[test]
fn auth_sig_packed_with_data_in_one_frame() {
    // Go accepts an AuthSig packed with more data in its first frame; so do we.
    let (mut victim, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    let mut plain = auth_msg(Some(public_key::Sum::Ed25519(key)), sig.to_vec());
    plain.extend_from_slice(b"packed");
    let mut wire = BytesMut::new();
    Sealer::new(&keys.send_key).seal(&plain, &mut wire).unwrap();
    victim.handle_received(&wire).unwrap();
    let mut session = victim.into_session().unwrap();
    let mut out = BytesMut::new();
    session.opener.open(&[], &mut out).unwrap();
    assert_eq!(&out[..], b"packed");
}

#[test]
fn too_much_early_data() {
    let (mut victim, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    let mut sealer = Sealer::new(&keys.send_key);
    let mut wire = BytesMut::new();
    sealer
        .seal(
            &auth_msg(Some(public_key::Sum::Ed25519(key)), sig.to_vec()),
            &mut wire,
        )
        .unwrap();
    victim.handle_received(&wire).unwrap();
    // Exactly MAX_EARLY_DATA (1 MiB) is kept for the session ...
    let mut more = BytesMut::new();
    sealer.seal(&vec![0u8; MAX_EARLY_DATA], &mut more).unwrap();
    victim.handle_received(&more).unwrap();
    // ... one byte more is refused.
    let mut one = BytesMut::new();
    sealer.seal(&[0u8], &mut one).unwrap();
    assert_eq!(
        victim.handle_received(&one),
        Err(HandshakeError::TooMuchEarlyData)
    );
}

/// The AuthSigMessage limit (1 MiB, spec 2.1), crossed by one: a prefix claiming one byte
/// more is refused before any body arrives; an honest AuthSig padded to exactly 1 MiB with an
/// unknown field (which Go skips too) is accepted.
#[test]
fn auth_sig_message_limit_is_crossed_by_one() {
    assert_eq!(
        victim_result(&[0x81, 0x80, 0x40]),
        Err(HandshakeError::MessageTooLong {
            what: "auth signature",
            len: (MAX_HANDSHAKE_MSG_SIZE + 1) as u64
        })
    );

    let (mut victim, keys) = victim_and_attacker_keys();
    let (key, sig) = honest_auth(&keys);
    let mut body = AuthSigMessage {
        pub_key: Some(PublicKey {
            sum: Some(public_key::Sum::Ed25519(key)),
        }),
        sig: sig.to_vec(),
    }
    .encode_to_vec();
    // Field 15, length-delimited (`7a`), a 3-byte length, then padding up to the limit.
    let pad = MAX_HANDSHAKE_MSG_SIZE - body.len() - 1 - 3;
    body.push(0x7a);
    write_uvarint(pad as u64, &mut body);
    body.resize(MAX_HANDSHAKE_MSG_SIZE, 0);
    assert_eq!(body.len(), MAX_HANDSHAKE_MSG_SIZE);
    let mut plain = Vec::new();
    write_uvarint(body.len() as u64, &mut plain);
    plain.extend_from_slice(&body);
    let mut wire = BytesMut::new();
    Sealer::new(&keys.send_key).seal(&plain, &mut wire).unwrap();
    victim.handle_received(&wire).unwrap();
    assert!(victim.is_complete());
    assert_eq!(
        victim.into_session().unwrap().remote_node_id(),
        node(2).node_id()
    );
}

/// Regression: `KeySchedule`'s derived `Debug` printed the DH secret, both frame keys and the
/// challenge, so logging a handshake's key schedule leaked the session keys.
#[test]
fn key_schedule_debug_shows_no_secret() {
    let (_, keys) = victim_and_attacker_keys();
    let printed = format!("{keys:?}");
    for secret in [
        &keys.dh_secret,
        &keys.send_key,
        &keys.recv_key,
        &keys.challenge,
    ] {
        assert!(!printed.contains(&format!("{secret:?}")), "{printed}");
    }
    assert!(
        !printed.contains(&format!("{:?}", &keys.okm[..])),
        "{printed}"
    );
}
