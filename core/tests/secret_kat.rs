//! Known-answer tests of the SecretConnection: the upstream HKDF golden file (all 32 lines, all 5
//! fields), the derived full-handshake vector field by field (driving the real state machine),
//! and byte-boundary splitting of the received stream.

use bytes::BytesMut;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::ids::NodeId;
use cometmesh_core::secret::{
    Handshake, SecretSession, auth_sig_message, ephemeral_message, hkdf_okm, split_keys,
};

/// Upstream CometBFT's HKDF golden file, copied into the repository (see `data/README.md`).
const GOLDEN_HKDF: &str = include_str!("data/TestDeriveSecretsAndChallengeGolden.golden");
/// The derived full-handshake vector, copied into the repository (see `data/README.md`).
const HANDSHAKE_KAT: &str = include_str!("data/secret_connection_handshake_kat.derived.json");

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn unhex32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

#[test]
fn golden_hkdf_all_32_lines_all_fields() {
    let mut lines = 0;
    for line in GOLDEN_HKDF.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 5, "line {line}");
        let dh = unhex32(fields[0]);
        let loc_is_least = match fields[1] {
            "true" => true,
            "false" => false,
            other => panic!("bad bool {other}"),
        };
        let okm = hkdf_okm(&dh);
        let (recv, send) = split_keys(&okm, loc_is_least);
        assert_eq!(hex(&recv), fields[2], "recv key, line {lines}");
        assert_eq!(hex(&send), fields[3], "send key, line {lines}");
        assert_eq!(
            hex(&okm[64..96]),
            fields[4],
            "legacy challenge, line {lines}"
        );
        lines += 1;
    }
    assert_eq!(lines, 32);
}

struct Party {
    v: serde_json::Value,
}

impl Party {
    fn s(&self, field: &str) -> &str {
        self.v[field]
            .as_str()
            .unwrap_or_else(|| panic!("field {field}"))
    }
    fn b(&self, field: &str) -> Vec<u8> {
        unhex(self.s(field))
    }
    fn key(&self) -> NodeKey {
        NodeKey::from_seed(unhex32(self.s("ed25519_seed")))
    }
    fn handshake(&self) -> Handshake {
        Handshake::new(&self.key(), unhex32(self.s("x25519_ephemeral_private")))
    }
}

fn kat() -> &'static serde_json::Value {
    static KAT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    KAT.get_or_init(|| serde_json::from_str(HANDSHAKE_KAT).expect("kat json"))
}

/// Drives the full handshake of A and B, checking every field of `me` on the way.
fn check_party(me: &Party, peer: &Party) -> SecretSession {
    let key = me.key();
    assert_eq!(hex(&key.public_key()), me.s("ed25519_pubkey"));
    assert_eq!(key.node_id().to_string(), me.s("node_id"));
    let mut hs = me.handshake();
    assert_eq!(
        hex(&hs.ephemeral_public_key()),
        me.s("x25519_ephemeral_public")
    );
    let eph_msg = hs.poll_transmit().expect("ephemeral message");
    assert_eq!(hex(&eph_msg), me.s("wire_step1_ephemeral_msg"));
    assert_eq!(
        eph_msg[..],
        ephemeral_message(&unhex32(me.s("x25519_ephemeral_public")))
    );
    assert!(
        hs.poll_transmit().is_none(),
        "AuthSig before the peer's key"
    );

    hs.handle_received(&peer.b("wire_step1_ephemeral_msg"))
        .unwrap();
    let ks = hs.key_schedule().expect("key schedule").clone();
    assert_eq!(ks.loc_is_least, me.v["loc_is_least"].as_bool().unwrap());
    assert_eq!(hex(&ks.dh_secret), me.s("dh_secret"));
    assert_eq!(hex(&ks.okm), me.s("hkdf_okm_96"));
    assert_eq!(hex(&ks.recv_key), me.s("recv_key"));
    assert_eq!(hex(&ks.send_key), me.s("send_key"));
    assert_eq!(hex(&ks.challenge), me.s("merlin_challenge"));
    let signature: [u8; 64] = me.b("signature_over_challenge").try_into().unwrap();
    assert_eq!(key.sign(&ks.challenge), signature);
    let auth = auth_sig_message(&key.public_key(), &signature);
    assert_eq!(hex(&auth), me.s("authsig_delimited_plaintext"));
    assert_eq!(auth.len(), 103);

    let frame = hs.poll_transmit().expect("AuthSig frame");
    assert_eq!(frame.len(), 1044);
    assert_eq!(hex(&frame), me.s("wire_step2_sealed_frame_nonce0_1044"));
    // Independently (RustCrypto, not our opener): the 1028-byte plaintext is LE32(103), the
    // message and zero padding.
    let first = me.s("authsig_frame_plaintext_1028_first_bytes");
    let first = unhex(first.split_whitespace().next().unwrap());
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&ks.send_key.into());
    let mut body = frame[..1028].to_vec();
    cipher
        .decrypt_in_place_detached(&[0u8; 12].into(), b"", &mut body, frame[1028..].into())
        .expect("frame authenticates");
    assert_eq!(&body[..first.len()], &first[..]);
    assert!(body[first.len()..].iter().all(|b| *b == 0));
    assert!(hs.poll_transmit().is_none());
    assert!(!hs.is_complete());

    hs.handle_received(&peer.b("wire_step2_sealed_frame_nonce0_1044"))
        .unwrap();
    assert!(hs.is_complete());
    let session = hs.into_session().unwrap();
    assert_eq!(hex(&session.remote_public_key), peer.s("ed25519_pubkey"));
    assert_eq!(session.remote_node_id().to_string(), peer.s("node_id"));
    assert_eq!(
        NodeId::from_public_key(&session.remote_public_key).to_string(),
        peer.s("node_id")
    );
    session
}

#[test]
fn derived_handshake_kat_party_a() {
    let kat = kat();
    let a = Party {
        v: kat["parties"]["A"].clone(),
    };
    let b = Party {
        v: kat["parties"]["B"].clone(),
    };
    let mut session = check_party(&a, &b);
    // A's second frame (nonce 1): a PacketPing.
    let ping = &kat["A_second_frame_nonce1_packet_ping"];
    assert_eq!(ping["nonce"].as_str().unwrap(), "000000000100000000000000");
    assert_eq!(session.sealer.nonce_counter(), 1);
    let mut out = BytesMut::new();
    session
        .sealer
        .seal(&unhex(ping["plaintext_data"].as_str().unwrap()), &mut out)
        .unwrap();
    assert_eq!(hex(&out), ping["sealed_frame_1044"].as_str().unwrap());
}

#[test]
fn derived_handshake_kat_party_b() {
    let kat = kat();
    let a = Party {
        v: kat["parties"]["A"].clone(),
    };
    let b = Party {
        v: kat["parties"]["B"].clone(),
    };
    let mut session = check_party(&b, &a);
    // B opens A's ping frame.
    let ping = &kat["A_second_frame_nonce1_packet_ping"];
    let mut plain = BytesMut::new();
    session
        .opener
        .open(
            &unhex(ping["sealed_frame_1044"].as_str().unwrap()),
            &mut plain,
        )
        .unwrap();
    assert_eq!(hex(&plain), ping["plaintext_data"].as_str().unwrap());
}

/// What A ends with: the peer key and all data the session yields.
type Outcome = ([u8; 32], Vec<u8>);

fn party_a() -> Party {
    Party {
        v: kat()["parties"]["A"].clone(),
    }
}

/// Feeds `hs` the pieces (taking its transmissions as a driver would) and returns the outcome.
fn finish_a(mut hs: Handshake, pieces: &[&[u8]]) -> Outcome {
    for piece in pieces {
        while hs.poll_transmit().is_some() {}
        hs.handle_received(piece).unwrap();
    }
    while hs.poll_transmit().is_some() {}
    let mut session = hs.into_session().unwrap();
    let mut out = BytesMut::new();
    session.opener.open(&[], &mut out).unwrap();
    session.opener.finish().unwrap();
    (session.remote_public_key, out.to_vec())
}

/// B's whole stream to A: ephemeral message (35), AuthSig frame (1044), then two data frames.
fn b_stream() -> (Vec<u8>, Vec<u8>) {
    let kat = kat();
    let b = Party {
        v: kat["parties"]["B"].clone(),
    };
    let mut stream = b.b("wire_step1_ephemeral_msg");
    stream.extend(b.b("wire_step2_sealed_frame_nonce0_1044"));
    let ks_send = unhex32(b.s("send_key"));
    let mut sealer = cometmesh_core::secret::Sealer::with_nonce_counter(&ks_send, 1);
    let data: Vec<u8> = (0..1500u32).map(|i| (i * 7) as u8).collect();
    let mut frames = BytesMut::new();
    sealer.seal(&data, &mut frames).unwrap();
    stream.extend_from_slice(&frames);
    (stream, data)
}

/// Splits B's stream in two at every byte boundary. To keep the debug build fast, the
/// handshake is branched (cloned) at the end of the phase before the split point, so each
/// phase (ephemeral message, AuthSig frame, data frames) is split at every one of its bytes.
#[test]
fn every_split_point_gives_the_same_result() {
    let (stream, data) = b_stream();
    let whole = finish_a(party_a().handshake(), &[&stream]);
    assert_eq!(whole.1, data);
    let eph_end = 35;
    let auth_end = 35 + 1044;
    let fresh = party_a().handshake();
    let mut after_eph = fresh.clone();
    after_eph.handle_received(&stream[..eph_end]).unwrap();
    let mut after_auth = after_eph.clone();
    after_auth
        .handle_received(&stream[eph_end..auth_end])
        .unwrap();
    for split in 0..=stream.len() {
        let (base, from) = if split <= eph_end {
            (fresh.clone(), 0)
        } else if split <= auth_end {
            (after_eph.clone(), eph_end)
        } else {
            (after_auth.clone(), auth_end)
        };
        let (x, y) = (&stream[from..split], &stream[split..]);
        assert_eq!(finish_a(base, &[x, y]), whole, "split at {split}");
    }
}

#[test]
fn byte_by_byte_gives_the_same_result() {
    let (stream, data) = b_stream();
    let pieces: Vec<&[u8]> = stream.chunks(1).collect();
    let result = finish_a(party_a().handshake(), &pieces);
    assert_eq!(result.1, data);
    assert_eq!(result, finish_a(party_a().handshake(), &[&stream]));
}
