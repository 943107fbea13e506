//! Fuzz entry points for `wire`, `identity` and `addr`: one per decoder. Each must never panic on
//! any input, and whatever it accepts must re-encode within its limit and decode back to the
//! same value. A failed `assert!` here is a finding.

use crate::addr::{NetAddr, PeerAddr, parse_peer_list};
use crate::identity::NodeKey;
use crate::wire::codec::{delimited_len, encode_delimited_to_vec};
use crate::wire::limits::{
    MAX_HANDSHAKE_MSG_SIZE, MAX_NODE_INFO_SIZE, MAX_PACKET_SIZE, MAX_PEX_ADDRS,
    MAX_PEX_MESSAGE_SIZE,
};
use crate::wire::messages::{
    decode_auth_sig, decode_bytes_value, decode_node_info, decode_packet, decode_pex_message,
};
use crate::wire::proto::{Packet, PexMessage, packet, pex_message};

/// Checks that a message accepted from the front of `data` after `used` bytes is reported as
/// incomplete for shorter prefixes (the streaming contract).
fn check_prefixes<T, E>(data: &[u8], used: usize, decode: impl Fn(&[u8]) -> Result<Option<T>, E>) {
    for cut in [used / 2, used.saturating_sub(1)] {
        if cut < used {
            assert!(
                matches!(decode(data.get(..cut).unwrap_or_default()), Ok(None)),
                "a {cut}-byte prefix of a {used}-byte message was not reported incomplete"
            );
        }
    }
}

/// An MConnection byte stream: a sequence of delimited `Packet`s at the default size limit.
pub fn packet(data: &[u8]) {
    let mut rest = data;
    let mut first = true;
    while let Ok(Some((sum, used))) = decode_packet(rest, MAX_PACKET_SIZE) {
        if first {
            check_prefixes(rest, used, |b| decode_packet(b, MAX_PACKET_SIZE));
            first = false;
        }
        let packet = Packet { sum: Some(sum) };
        let bytes = encode_delimited_to_vec(&packet);
        let reencoded = decode_packet(&bytes, usize::MAX).ok().flatten();
        assert_eq!(reencoded.map(|(sum, _)| sum), packet.sum.clone());
        // A valid channel id (0..=255) re-encodes no longer than it arrived, so within the limit;
        // only a negative int32 can grow (protobuf sign-extends it to 10 bytes).
        if let Some(packet::Sum::PacketMsg(msg)) = &packet.sum
            && msg.channel().is_some()
        {
            assert!(bytes.len() <= used, "{} > {used}", bytes.len());
        }
        rest = rest.get(used..).unwrap_or_default();
    }
}

/// The delimited `DefaultNodeInfo`.
pub fn node_info(data: &[u8]) {
    if let Ok(Some((info, used))) = decode_node_info(data) {
        check_prefixes(data, used, decode_node_info);
        let bytes = encode_delimited_to_vec(&info);
        // Canonical re-encoding is never longer than the input, so it stays within the limit.
        assert!(bytes.len() <= used);
        assert!(delimited_len(&info) == bytes.len() && bytes.len() <= MAX_NODE_INFO_SIZE + 3);
        assert_eq!(decode_node_info(&bytes), Ok(Some((info, bytes.len()))));
    }
}

/// One reassembled PEX channel message; accepted addresses also go through the `NetAddress`
/// conversion.
pub fn pex_message(data: &[u8]) {
    let Ok(sum) = decode_pex_message(data) else {
        return;
    };
    let message = PexMessage { sum: Some(sum) };
    let bytes = prost::Message::encode_to_vec(&message);
    assert!(bytes.len() <= MAX_PEX_MESSAGE_SIZE);
    let again = decode_pex_message(&bytes).ok();
    assert_eq!(again.as_ref(), message.sum.as_ref());
    if let Some(pex_message::Sum::PexAddrs(addrs)) = message.sum {
        assert!(addrs.addrs.len() <= MAX_PEX_ADDRS);
        for wire in &addrs.addrs {
            if let Ok(addr) = NetAddr::from_proto(wire) {
                assert_eq!(NetAddr::from_proto(&addr.to_proto()), Ok(addr));
            }
        }
    }
}

/// The delimited `AuthSigMessage` of the handshake.
pub fn auth_sig(data: &[u8]) {
    if let Ok(Some((message, used))) = decode_auth_sig(data) {
        check_prefixes(data, used, decode_auth_sig);
        let bytes = encode_delimited_to_vec(&message);
        assert!(bytes.len() <= used && bytes.len() <= MAX_HANDSHAKE_MSG_SIZE + 3);
        assert_eq!(decode_auth_sig(&bytes), Ok(Some((message, bytes.len()))));
    }
}

/// The delimited ephemeral-key `BytesValue` of the handshake.
pub fn bytes_value(data: &[u8]) {
    if let Ok(Some((message, used))) = decode_bytes_value(data) {
        check_prefixes(data, used, decode_bytes_value);
        let bytes = encode_delimited_to_vec(&message);
        assert!(bytes.len() <= used);
        assert_eq!(decode_bytes_value(&bytes), Ok(Some((message, bytes.len()))));
    }
}

/// A `node_key.json` file.
pub fn node_key_json(data: &[u8]) {
    if let Ok(key) = NodeKey::from_json(data) {
        let json = key.to_json();
        let again = NodeKey::from_json(json.as_bytes());
        assert_eq!(again.map(|k| k.seed()).ok(), Some(key.seed()));
    }
}

/// An `id@host:port` string and a comma-separated list of them.
pub fn address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = text.parse::<PeerAddr>() {
        let printed = addr.to_string();
        assert_eq!(printed.parse::<PeerAddr>().as_ref(), Ok(&addr));
        if let Some(net) = addr.resolved() {
            assert_eq!(net.to_string(), printed);
            assert_eq!(NetAddr::from_proto(&net.to_proto()), Ok(net));
        }
    }
    if let Ok(list) = parse_peer_list(text) {
        let printed: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(parse_peer_list(&printed.join(",")).as_ref(), Ok(&list));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs at the edges of each decoder: each entry point must accept them without a finding.
    #[test]
    fn edge_inputs_pass_every_entry_point() {
        let inputs: &[&[u8]] = &[
            &[],
            &[0x00],
            &[0x02, 0x0a, 0x00],
            // Non-canonical length prefix (2 as `82 00`) before a ping.
            &[0x82, 0x00, 0x0a, 0x00],
            // PacketMsg with channel -1 as a 5-byte varint: grows to 10 bytes when re-encoded.
            &[
                0x09, 0x1a, 0x07, 0x08, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x10, 0x01,
            ],
            // The same oneof field twice (prost merges the two PacketMsgs).
            &[0x08, 0x1a, 0x02, 0x08, 0x05, 0x1a, 0x02, 0x10, 0x01],
            // A length prefix of u64::MAX and an overlong varint.
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0x80; 12],
            br#"{"priv_key":{"type":"tendermint/PrivKeyEd25519","value":""}}"#,
            b"7627de929814c7484dc6bf94f60166ab3115b316@[::ffff:1.2.3.4]:1,,",
            b"tcp://7627de929814c7484dc6bf94f60166ab3115b316@EXAMPLE.com.:0://x",
        ];
        for input in inputs {
            packet(input);
            node_info(input);
            pex_message(input);
            auth_sig(input);
            bytes_value(input);
            node_key_json(input);
            address(input);
        }
    }
}
