//! The handshake messages of `core/tests/data/secret_connection_handshake_kat.derived.json`
//! through our codec and node key: ephemeral-key `BytesValue`, `AuthSigMessage`, signatures.

use cometmesh_core::identity::NodeKey;
use cometmesh_core::wire::codec::encode_delimited_to_vec;
use cometmesh_core::wire::proto::{AuthSigMessage, BytesValue, PublicKey, public_key};
use cometmesh_core::wire::{decode_auth_sig, decode_bytes_value};

struct Party {
    seed: &'static str,
    pubkey: &'static str,
    node_id: &'static str,
    eph_pub: &'static str,
    eph_msg: &'static str,
    challenge: &'static str,
    signature: &'static str,
    authsig: &'static str,
}

const PARTIES: [Party; 2] = [
    Party {
        seed: "a62d75665a4ade0ff35b9f9601f252f41be5a1fd6e1fbbd9221865a9c9ff44e6",
        pubkey: "8d548d4162d1a817924d13880d8afe60751966f829ede740e19b2d7b24f888df",
        node_id: "7627de929814c7484dc6bf94f60166ab3115b316",
        eph_pub: "b5b629af0a1250474f6d7159d6af8c902b160f0ce8e7ac2ab0c40f3dec22fa55",
        eph_msg: "220a20b5b629af0a1250474f6d7159d6af8c902b160f0ce8e7ac2ab0c40f3dec22fa55",
        challenge: "2844a88df0a488a21791dbf0db218676a1bfbfa28a1eaf8daf13ec80631c6259",
        signature: "2bb4bb4a124a9475414effe2dadc1ea5b264942a314e8b7ee333f39b765bc0bb\
                    05df4cd5925c0cd8f984b4460fe393ec2b75154aff42f366f47833a5e1ff1c0f",
        authsig: "660a220a208d548d4162d1a817924d13880d8afe60751966f829ede740e19b2d7b24f888df\
                  12402bb4bb4a124a9475414effe2dadc1ea5b264942a314e8b7ee333f39b765bc0bb\
                  05df4cd5925c0cd8f984b4460fe393ec2b75154aff42f366f47833a5e1ff1c0f",
    },
    Party {
        seed: "8892661b4e925d96b1941dbf40b8f86c396a07a25f302b761924e70729ba6c24",
        pubkey: "316082ff252aa2bdb83024f27125bbb597a69499c8dba04a4807b225cb9aaa48",
        node_id: "b270a6f185a79d09f21d193994149623d5fcfcf9",
        eph_pub: "06163376f5efb4743d2305f6cb7a4855e894bfe90e4a305883606043418e2357",
        eph_msg: "220a2006163376f5efb4743d2305f6cb7a4855e894bfe90e4a305883606043418e2357",
        challenge: "2844a88df0a488a21791dbf0db218676a1bfbfa28a1eaf8daf13ec80631c6259",
        signature: "8ca1c4cce02dc1ee9c5a3f6333d19cf5daecf290dbea215e1017a08dda0380bb\
                    74b9053cab3e7832c05ebc4639863d18f4ff09f788e8d93987ab60eebf61230b",
        authsig: "660a220a20316082ff252aa2bdb83024f27125bbb597a69499c8dba04a4807b225cb9aaa48\
                  12408ca1c4cce02dc1ee9c5a3f6333d19cf5daecf290dbea215e1017a08dda0380bb\
                  74b9053cab3e7832c05ebc4639863d18f4ff09f788e8d93987ab60eebf61230b",
    },
];

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("hex")
}

#[test]
fn ephemeral_key_messages() {
    for party in &PARTIES {
        let wire = hex(party.eph_msg);
        assert_eq!(wire.len(), 35);
        let message = BytesValue {
            value: hex(party.eph_pub),
        };
        assert_eq!(encode_delimited_to_vec(&message), wire);
        assert_eq!(decode_bytes_value(&wire), Ok(Some((message, 35))));
    }
}

#[test]
fn auth_sig_messages() {
    for party in &PARTIES {
        let seed: [u8; 32] = hex(party.seed).try_into().unwrap();
        let key = NodeKey::from_seed(seed);
        assert_eq!(key.public_key().to_vec(), hex(party.pubkey));
        assert_eq!(key.node_id().to_string(), party.node_id);
        let signature = key.sign(&hex(party.challenge));
        assert_eq!(signature.to_vec(), hex(party.signature));

        let message = AuthSigMessage {
            pub_key: Some(PublicKey {
                sum: Some(public_key::Sum::Ed25519(key.public_key().to_vec())),
            }),
            sig: signature.to_vec(),
        };
        let wire = hex(party.authsig);
        assert_eq!(wire.len(), 103);
        assert_eq!(encode_delimited_to_vec(&message), wire);
        assert_eq!(decode_auth_sig(&wire), Ok(Some((message, 103))));
    }
}
