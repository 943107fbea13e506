//! `node_key.json` compatibility and its typed errors.

use cometmesh_core::identity::{NodeKey, NodeKeyError};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Party A of `core/tests/data/secret_connection_handshake_kat.derived.json`.
const SEED_A: &str = "a62d75665a4ade0ff35b9f9601f252f41be5a1fd6e1fbbd9221865a9c9ff44e6";
const PUBKEY_A: &str = "8d548d4162d1a817924d13880d8afe60751966f829ede740e19b2d7b24f888df";
const ID_A: &str = "7627de929814c7484dc6bf94f60166ab3115b316";
const VALUE_A: &str =
    "pi11ZlpK3g/zW5+WAfJS9Bvlof1uH7vZIhhlqcn/ROaNVI1BYtGoF5JNE4gNiv5gdRlm+Cnt50Dhmy17JPiI3w==";

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).expect("64 hex characters");
    out
}

fn file_with(key_type: &str, value: &str) -> String {
    format!(r#"{{"priv_key":{{"type":"{key_type}","value":"{value}"}}}}"#)
}

#[test]
fn writes_exactly_what_go_writes() {
    let key = NodeKey::from_seed(hex32(SEED_A));
    assert_eq!(key.public_key(), hex32(PUBKEY_A));
    assert_eq!(key.node_id().to_string(), ID_A);
    // cmtjson.Marshal: compact, no newline.
    let want =
        format!(r#"{{"priv_key":{{"type":"tendermint/PrivKeyEd25519","value":"{VALUE_A}"}}}}"#);
    assert_eq!(key.to_json(), want);
}

#[test]
fn reads_the_kat_file_with_any_whitespace() {
    // The derived KAT stores the file with Python's spacing; Go's decoder accepts it too.
    let spaced = format!(
        "{{\"priv_key\": {{\"type\": \"tendermint/PrivKeyEd25519\", \"value\": \"{VALUE_A}\"}}}}\n"
    );
    let key = NodeKey::from_json(spaced.as_bytes()).unwrap();
    assert_eq!(key.node_id().to_string(), ID_A);
    // Key order and unknown fields do not matter either.
    let reordered = format!(
        r#"{{"extra":1,"priv_key":{{"value":"{VALUE_A}","type":"tendermint/PrivKeyEd25519"}}}}"#
    );
    assert_eq!(
        NodeKey::from_json(reordered.as_bytes()).unwrap().seed(),
        hex32(SEED_A)
    );
}

#[test]
fn round_trips_generated_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for _ in 0..8 {
        let key = NodeKey::generate(&mut rng);
        let json = key.to_json();
        assert_eq!(json.len(), 148);
        let back = NodeKey::from_json(json.as_bytes()).unwrap();
        assert_eq!(back.seed(), key.seed());
        assert_eq!(back.to_json(), json);
    }
}

#[test]
fn generate_uses_the_injected_rng() {
    let a = NodeKey::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let b = NodeKey::generate(&mut ChaCha20Rng::seed_from_u64(1));
    let c = NodeKey::generate(&mut ChaCha20Rng::seed_from_u64(2));
    assert_eq!(a.seed(), b.seed());
    assert_ne!(a.seed(), c.seed());
}

#[test]
fn not_json() {
    for input in [&b"priv_key=abc"[..], b"{\"priv_key\":", &[0xff, 0xfe], b""] {
        assert!(
            matches!(NodeKey::from_json(input), Err(NodeKeyError::NotJson(_))),
            "{input:?}"
        );
    }
}

#[test]
fn bad_shape() {
    for input in [
        "{}",
        "[]",
        r#"{"priv_key":"abc"}"#,
        r#"{"priv_key":{"type":"tendermint/PrivKeyEd25519"}}"#,
        r#"{"priv_key":{"type":1,"value":"x"}}"#,
    ] {
        assert!(
            matches!(
                NodeKey::from_json(input.as_bytes()),
                Err(NodeKeyError::BadShape(_))
            ),
            "{input}"
        );
    }
}

#[test]
fn wrong_key_type() {
    let input = file_with("tendermint/PrivKeySecp256k1", VALUE_A);
    assert_eq!(
        NodeKey::from_json(input.as_bytes()).unwrap_err(),
        NodeKeyError::WrongKeyType("tendermint/PrivKeySecp256k1".to_owned())
    );
}

#[test]
fn bad_base64() {
    let input = file_with("tendermint/PrivKeyEd25519", "not base64!");
    assert!(matches!(
        NodeKey::from_json(input.as_bytes()),
        Err(NodeKeyError::BadBase64(_))
    ));
}

#[test]
fn wrong_length() {
    // 32 bytes: only the seed.
    let input = file_with(
        "tendermint/PrivKeyEd25519",
        "pi11ZlpK3g/zW5+WAfJS9Bvlof1uH7vZIhhlqcn/ROY=",
    );
    assert_eq!(
        NodeKey::from_json(input.as_bytes()).unwrap_err(),
        NodeKeyError::WrongLength(32)
    );
}

#[test]
fn public_key_mismatch() {
    // Party A's seed with the last public-key byte changed from 0xdf to 0xde.
    let mut value = VALUE_A.to_owned();
    value.replace_range(84..86, "3g");
    let input = file_with("tendermint/PrivKeyEd25519", &value);
    assert_eq!(
        NodeKey::from_json(input.as_bytes()).unwrap_err(),
        NodeKeyError::PublicKeyMismatch
    );
}

#[test]
fn errors_read_well() {
    assert_eq!(
        NodeKeyError::WrongLength(32).to_string(),
        "node key value has 32 bytes, expected 64 (seed and public key)"
    );
}
