//! Cross-check of every p2p message against `tendermint-proto` 0.41 (v0.38 protos) and prost's
//! own `google.protobuf.BytesValue` (`impl Message for Vec<u8>`): on randomized values our
//! encoding equals theirs byte for byte, plain and length-delimited, and each side decodes the
//! other's bytes to equal values.

use std::fmt::Debug;

use bytes::Bytes;
use cometmesh_core::wire::codec::{decode_delimited, encode_delimited_to_vec};
use cometmesh_core::wire::proto as ours;
use proptest::prelude::*;
use prost::Message;
use tendermint_proto::v0_38::crypto as tm_crypto;
use tendermint_proto::v0_38::p2p as tm;

/// The full check for one pair of equal values.
fn check<O, T>(our: &O, their: &T) -> Result<(), TestCaseError>
where
    O: Message + Default + PartialEq + Debug,
    T: Message + Default + PartialEq + Debug,
{
    let our_bytes = our.encode_to_vec();
    let their_bytes = their.encode_to_vec();
    prop_assert_eq!(&our_bytes, &their_bytes);
    prop_assert_eq!(&O::decode(their_bytes.as_slice())?, our);
    prop_assert_eq!(&T::decode(our_bytes.as_slice())?, their);

    let our_delimited = encode_delimited_to_vec(our);
    let their_delimited = their.encode_length_delimited_to_vec();
    prop_assert_eq!(&our_delimited, &their_delimited);
    let decoded = decode_delimited::<O>(&their_delimited, their_delimited.len())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        decoded,
        Some((O::decode(their_bytes.as_slice())?, their_delimited.len()))
    );
    prop_assert_eq!(
        &T::decode_length_delimited(our_delimited.as_slice())?,
        their
    );
    Ok(())
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn arb_string() -> impl Strategy<Value = String> {
    // Any Unicode, including multi-byte characters and the empty string.
    "\\PC{0,24}"
}

fn arb_public_key() -> impl Strategy<Value = ours::PublicKey> {
    prop_oneof![
        Just(None),
        arb_bytes(40).prop_map(|k| Some(ours::public_key::Sum::Ed25519(k))),
        arb_bytes(40).prop_map(|k| Some(ours::public_key::Sum::Secp256k1(k))),
    ]
    .prop_map(|sum| ours::PublicKey { sum })
}

fn tm_public_key(key: &ours::PublicKey) -> tm_crypto::PublicKey {
    tm_crypto::PublicKey {
        sum: key.sum.as_ref().map(|sum| match sum {
            ours::public_key::Sum::Ed25519(k) => tm_crypto::public_key::Sum::Ed25519(k.clone()),
            ours::public_key::Sum::Secp256k1(k) => tm_crypto::public_key::Sum::Secp256k1(k.clone()),
        }),
    }
}

fn arb_protocol_version() -> impl Strategy<Value = ours::ProtocolVersion> {
    (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(p2p, block, app)| ours::ProtocolVersion {
        p2p,
        block,
        app,
    })
}

fn tm_protocol_version(v: &ours::ProtocolVersion) -> tm::ProtocolVersion {
    tm::ProtocolVersion {
        p2p: v.p2p,
        block: v.block,
        app: v.app,
    }
}

fn arb_other() -> impl Strategy<Value = ours::DefaultNodeInfoOther> {
    (arb_string(), arb_string()).prop_map(|(tx_index, rpc_address)| ours::DefaultNodeInfoOther {
        tx_index,
        rpc_address,
    })
}

fn tm_other(o: &ours::DefaultNodeInfoOther) -> tm::DefaultNodeInfoOther {
    tm::DefaultNodeInfoOther {
        tx_index: o.tx_index.clone(),
        rpc_address: o.rpc_address.clone(),
    }
}

prop_compose! {
    fn arb_node_info()(
        protocol_version in prop::option::of(arb_protocol_version()),
        strings in prop::array::uniform5(arb_string()),
        channels in arb_bytes(20),
        other in prop::option::of(arb_other()),
    ) -> ours::DefaultNodeInfo {
        let [default_node_id, listen_addr, network, version, moniker] = strings;
        ours::DefaultNodeInfo {
            protocol_version,
            default_node_id,
            listen_addr,
            network,
            version,
            channels,
            moniker,
            other,
        }
    }
}

fn tm_node_info(n: &ours::DefaultNodeInfo) -> tm::DefaultNodeInfo {
    tm::DefaultNodeInfo {
        protocol_version: n.protocol_version.as_ref().map(tm_protocol_version),
        default_node_id: n.default_node_id.clone(),
        listen_addr: n.listen_addr.clone(),
        network: n.network.clone(),
        version: n.version.clone(),
        channels: n.channels.clone(),
        moniker: n.moniker.clone(),
        other: n.other.as_ref().map(tm_other),
    }
}

fn arb_packet_msg() -> impl Strategy<Value = ours::PacketMsg> {
    (
        prop_oneof![0..=255i32, any::<i32>()],
        any::<bool>(),
        arb_bytes(1100),
    )
        .prop_map(|(channel_id, eof, data)| ours::PacketMsg {
            channel_id,
            eof,
            data: Bytes::from(data),
        })
}

fn tm_packet_msg(m: &ours::PacketMsg) -> tm::PacketMsg {
    tm::PacketMsg {
        channel_id: m.channel_id,
        eof: m.eof,
        data: m.data.to_vec(),
    }
}

fn arb_packet() -> impl Strategy<Value = ours::Packet> {
    prop_oneof![
        Just(None),
        Just(Some(ours::packet::Sum::PacketPing(ours::PacketPing {}))),
        Just(Some(ours::packet::Sum::PacketPong(ours::PacketPong {}))),
        arb_packet_msg().prop_map(|m| Some(ours::packet::Sum::PacketMsg(m))),
    ]
    .prop_map(|sum| ours::Packet { sum })
}

fn tm_packet(p: &ours::Packet) -> tm::Packet {
    tm::Packet {
        sum: p.sum.as_ref().map(|sum| match sum {
            ours::packet::Sum::PacketPing(_) => tm::packet::Sum::PacketPing(tm::PacketPing {}),
            ours::packet::Sum::PacketPong(_) => tm::packet::Sum::PacketPong(tm::PacketPong {}),
            ours::packet::Sum::PacketMsg(m) => tm::packet::Sum::PacketMsg(tm_packet_msg(m)),
        }),
    }
}

fn arb_net_address() -> impl Strategy<Value = ours::NetAddress> {
    (arb_string(), arb_string(), any::<u32>()).prop_map(|(id, ip, port)| ours::NetAddress {
        id,
        ip,
        port,
    })
}

fn tm_net_address(a: &ours::NetAddress) -> tm::NetAddress {
    tm::NetAddress {
        id: a.id.clone(),
        ip: a.ip.clone(),
        port: a.port,
    }
}

fn arb_pex_addrs() -> impl Strategy<Value = ours::PexAddrs> {
    prop::collection::vec(arb_net_address(), 0..8).prop_map(|addrs| ours::PexAddrs { addrs })
}

fn tm_pex_addrs(a: &ours::PexAddrs) -> tm::PexAddrs {
    tm::PexAddrs {
        addrs: a.addrs.iter().map(tm_net_address).collect(),
    }
}

fn arb_pex_message() -> impl Strategy<Value = ours::PexMessage> {
    prop_oneof![
        Just(None),
        Just(Some(ours::pex_message::Sum::PexRequest(
            ours::PexRequest {}
        ))),
        arb_pex_addrs().prop_map(|a| Some(ours::pex_message::Sum::PexAddrs(a))),
    ]
    .prop_map(|sum| ours::PexMessage { sum })
}

fn tm_pex_message(m: &ours::PexMessage) -> tm::Message {
    tm::Message {
        sum: m.sum.as_ref().map(|sum| match sum {
            ours::pex_message::Sum::PexRequest(_) => {
                tm::message::Sum::PexRequest(tm::PexRequest {})
            }
            ours::pex_message::Sum::PexAddrs(a) => tm::message::Sum::PexAddrs(tm_pex_addrs(a)),
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn bytes_value(value in arb_bytes(64)) {
        check(&ours::BytesValue { value: value.clone() }, &value)?;
    }

    #[test]
    fn public_key(key in arb_public_key()) {
        check(&key, &tm_public_key(&key))?;
    }

    #[test]
    fn auth_sig_message(pub_key in prop::option::of(arb_public_key()), sig in arb_bytes(80)) {
        let our = ours::AuthSigMessage { pub_key, sig };
        let their = tm::AuthSigMessage {
            pub_key: our.pub_key.as_ref().map(tm_public_key),
            sig: our.sig.clone(),
        };
        check(&our, &their)?;
    }

    #[test]
    fn protocol_version(v in arb_protocol_version()) {
        check(&v, &tm_protocol_version(&v))?;
    }

    #[test]
    fn default_node_info_other(o in arb_other()) {
        check(&o, &tm_other(&o))?;
    }

    #[test]
    fn default_node_info(n in arb_node_info()) {
        check(&n, &tm_node_info(&n))?;
    }

    #[test]
    fn packet_msg(m in arb_packet_msg()) {
        check(&m, &tm_packet_msg(&m))?;
    }

    #[test]
    fn packet(p in arb_packet()) {
        check(&p, &tm_packet(&p))?;
    }

    #[test]
    fn net_address(a in arb_net_address()) {
        check(&a, &tm_net_address(&a))?;
    }

    #[test]
    fn pex_addrs(a in arb_pex_addrs()) {
        check(&a, &tm_pex_addrs(&a))?;
    }

    #[test]
    fn pex_message(m in arb_pex_message()) {
        check(&m, &tm_pex_message(&m))?;
    }
}

#[test]
fn empty_messages() {
    check(&ours::PacketPing {}, &tm::PacketPing {}).unwrap();
    check(&ours::PacketPong {}, &tm::PacketPong {}).unwrap();
    check(&ours::PexRequest {}, &tm::PexRequest {}).unwrap();
    check(&ours::BytesValue::default(), &Vec::<u8>::new()).unwrap();
}

#[test]
fn ephemeral_key_message_matches_the_derived_kat() {
    // Party A's `wire_step1_ephemeral_msg` of secret_connection_handshake_kat.derived.json.
    let key: Vec<u8> = (0..32)
        .map(|i| {
            let hex = "b5b629af0a1250474f6d7159d6af8c902b160f0ce8e7ac2ab0c40f3dec22fa55";
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    let ours = encode_delimited_to_vec(&ours::BytesValue { value: key.clone() });
    let mut want = vec![0x22, 0x0a, 0x20];
    want.extend_from_slice(&key);
    assert_eq!(ours, want);
    assert_eq!(ours, key.encode_length_delimited_to_vec());
}
