//! Typed constructors and decoders over the raw [`proto`](super::proto) messages: each decoder
//! names its spec limit and turns the protocol errors of an otherwise valid protobuf (an empty
//! `Packet` or PEX wrapper, too many addresses) into typed errors.

use bytes::Bytes;

use super::codec::{CodecError, decode_bounded, decode_delimited, read_uvarint};
use super::limits::{
    MAX_HANDSHAKE_MSG_SIZE, MAX_NODE_INFO_SIZE, MAX_PEX_ADDRS, MAX_PEX_MESSAGE_SIZE,
};
use super::proto::{
    AuthSigMessage, BytesValue, DefaultNodeInfo, NetAddress, Packet, PacketMsg, PacketPing,
    PacketPong, PexAddrs, PexMessage, PexRequest, packet, pex_message,
};
use crate::ids::ChannelId;

/// Why a message was rejected: its encoding, or a rule of the protocol above protobuf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The length prefix, the size limit or the protobuf encoding.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A `Packet` with none of ping, pong or msg set ("unknown message type").
    #[error("packet has no content (unknown message type)")]
    EmptyPacket,
    /// A PEX `Message` with neither request nor addrs set.
    #[error("pex message has no content (unknown message type)")]
    EmptyPexMessage,
    /// A `PexAddrs` with more addresses than any honest node sends.
    #[error("pex reply has {count} addresses, more than the maximum of {max}")]
    TooManyPexAddrs {
        /// How many addresses the reply holds (at least).
        count: usize,
        /// The limit, [`MAX_PEX_ADDRS`].
        max: usize,
    },
}

impl Packet {
    /// A keep-alive request; delimited it is `02 0a 00`.
    #[must_use]
    pub fn ping() -> Self {
        Packet {
            sum: Some(packet::Sum::PacketPing(PacketPing {})),
        }
    }

    /// A keep-alive answer; delimited it is `02 12 00`.
    #[must_use]
    pub fn pong() -> Self {
        Packet {
            sum: Some(packet::Sum::PacketPong(PacketPong {})),
        }
    }

    /// One chunk of a message on `channel`; `eof` marks the last chunk.
    #[must_use]
    pub fn msg(channel: ChannelId, eof: bool, data: Bytes) -> Self {
        Packet {
            sum: Some(packet::Sum::PacketMsg(PacketMsg {
                channel_id: i32::from(channel.0),
                eof,
                data,
            })),
        }
    }
}

impl PacketMsg {
    /// The channel as a one-byte id, or `None` if the peer sent a value outside `0..=255`.
    #[must_use]
    pub fn channel(&self) -> Option<ChannelId> {
        u8::try_from(self.channel_id).ok().map(ChannelId)
    }
}

impl PexMessage {
    /// "Send me addresses"; encoded it is `0a 00`.
    #[must_use]
    pub fn request() -> Self {
        PexMessage {
            sum: Some(pex_message::Sum::PexRequest(PexRequest {})),
        }
    }

    /// A reply carrying `addrs` (callers keep it within [`MAX_PEX_ADDRS`]).
    #[must_use]
    pub fn addrs(addrs: Vec<NetAddress>) -> Self {
        PexMessage {
            sum: Some(pex_message::Sum::PexAddrs(PexAddrs { addrs })),
        }
    }
}

/// Decodes one delimited `Packet` from the front of an MConnection stream.
///
/// `max_len` is [`max_packet_size`](super::limits::max_packet_size) of the configured payload
/// size. Returns `Ok(None)` if more bytes are needed, else the packet content and the bytes used.
pub fn decode_packet(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(packet::Sum, usize)>, WireError> {
    match decode_delimited::<Packet>(buf, max_len)? {
        None => Ok(None),
        Some((Packet { sum: Some(sum) }, used)) => Ok(Some((sum, used))),
        Some((Packet { sum: None }, _)) => Err(WireError::EmptyPacket),
    }
}

/// Decodes the delimited `DefaultNodeInfo` (limit [`MAX_NODE_INFO_SIZE`]); the rules of spec
/// 3.5 are checked by the connection layer.
pub fn decode_node_info(buf: &[u8]) -> Result<Option<(DefaultNodeInfo, usize)>, CodecError> {
    decode_delimited(buf, MAX_NODE_INFO_SIZE)
}

/// Decodes the delimited ephemeral-key `BytesValue` (limit [`MAX_HANDSHAKE_MSG_SIZE`]).
pub fn decode_bytes_value(buf: &[u8]) -> Result<Option<(BytesValue, usize)>, CodecError> {
    decode_delimited(buf, MAX_HANDSHAKE_MSG_SIZE)
}

/// Decodes the delimited `AuthSigMessage` (limit [`MAX_HANDSHAKE_MSG_SIZE`]).
pub fn decode_auth_sig(buf: &[u8]) -> Result<Option<(AuthSigMessage, usize)>, CodecError> {
    decode_delimited(buf, MAX_HANDSHAKE_MSG_SIZE)
}

/// Decodes one reassembled PEX channel message (undelimited, at most [`MAX_PEX_MESSAGE_SIZE`]
/// bytes).
///
/// A reply with more than [`MAX_PEX_ADDRS`] addresses is rejected: the entries are counted in
/// the raw bytes before any of them is decoded. (Go's reactor does not check this count; no
/// honest node sends more than 250.)
pub fn decode_pex_message(buf: &[u8]) -> Result<pex_message::Sum, WireError> {
    if buf.len() > MAX_PEX_MESSAGE_SIZE {
        return Err(CodecError::TooLarge {
            len: buf.len() as u64,
            max: MAX_PEX_MESSAGE_SIZE,
        }
        .into());
    }
    if let Some(count) = count_pex_addrs(buf)
        && count > MAX_PEX_ADDRS
    {
        return Err(WireError::TooManyPexAddrs {
            count,
            max: MAX_PEX_ADDRS,
        });
    }
    let message: PexMessage = decode_bounded(buf, MAX_PEX_MESSAGE_SIZE)?;
    match message.sum {
        None => Err(WireError::EmptyPexMessage),
        Some(pex_message::Sum::PexAddrs(addrs)) if addrs.addrs.len() > MAX_PEX_ADDRS => {
            Err(WireError::TooManyPexAddrs {
                count: addrs.addrs.len(),
                max: MAX_PEX_ADDRS,
            })
        }
        Some(sum) => Ok(sum),
    }
}

/// Counts the `addrs` entries of every `pex_addrs` field of a raw PEX `Message`, without
/// decoding them. `None` if the bytes are not well-formed enough to walk (the full decode then
/// reports the error).
fn count_pex_addrs(buf: &[u8]) -> Option<usize> {
    let mut count = 0usize;
    for_each_field(buf, |field, payload| {
        if let (2, Some(inner)) = (field, payload) {
            for_each_field(inner, |field, _| {
                if field == 1 {
                    count += 1;
                }
                Some(())
            })?;
        }
        Some(())
    })?;
    Some(count)
}

/// Walks the top-level fields of a protobuf message, handing each field number and (for
/// length-delimited fields) its payload to `visit`. `None` on a malformed encoding or a group.
fn for_each_field<'a>(
    mut buf: &'a [u8],
    mut visit: impl FnMut(u64, Option<&'a [u8]>) -> Option<()>,
) -> Option<()> {
    while !buf.is_empty() {
        let (key, used) = read_uvarint(buf).ok()??;
        buf = buf.get(used..)?;
        let skip = match key & 7 {
            0 => read_uvarint(buf).ok()??.1,
            1 => 8,
            2 => {
                let (len, used) = read_uvarint(buf).ok()??;
                let len = usize::try_from(len).ok()?;
                let payload = buf.get(used..)?.get(..len)?;
                visit(key >> 3, Some(payload))?;
                used + len
            }
            5 => 4,
            _ => return None,
        };
        if key & 7 != 2 {
            visit(key >> 3, None)?;
        }
        buf = buf.get(skip..)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::encode_delimited_to_vec;
    use crate::wire::limits::{MAX_PACKET_SIZE, max_packet_size};
    use crate::wire::proto::{DefaultNodeInfoOther, ProtocolVersion};

    const ID: &str = "7627de929814c7484dc6bf94f60166ab3115b316";

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).expect("hex")
    }

    #[test]
    fn kat_ping_pong() {
        assert_eq!(encode_delimited_to_vec(&Packet::ping()), hex("02 0a 00"));
        assert_eq!(encode_delimited_to_vec(&Packet::pong()), hex("02 12 00"));
        assert_eq!(
            decode_packet(&hex("02 0a 00"), MAX_PACKET_SIZE),
            Ok(Some((packet::Sum::PacketPing(PacketPing {}), 3)))
        );
        assert_eq!(
            decode_packet(&hex("02 12 00"), MAX_PACKET_SIZE),
            Ok(Some((packet::Sum::PacketPong(PacketPong {}), 3)))
        );
    }

    #[test]
    fn kat_pex_request_on_channel_zero() {
        let pex = PexMessage::request();
        let pex_bytes = prost::Message::encode_to_vec(&pex);
        assert_eq!(pex_bytes, hex("0a 00"));
        let packet = Packet::msg(ChannelId::PEX, true, Bytes::from(pex_bytes));
        let wire = hex("08 1a 06 10 01 1a 02 0a 00");
        assert_eq!(encode_delimited_to_vec(&packet), wire);
        let (sum, used) = decode_packet(&wire, MAX_PACKET_SIZE).unwrap().unwrap();
        assert_eq!(used, wire.len());
        let packet::Sum::PacketMsg(msg) = sum else {
            panic!("expected a PacketMsg, got {sum:?}");
        };
        assert_eq!(msg.channel(), Some(ChannelId::PEX));
        assert!(msg.eof);
        assert_eq!(
            decode_pex_message(&msg.data),
            Ok(pex_message::Sum::PexRequest(PexRequest {}))
        );
    }

    #[test]
    fn kat_three_byte_message_on_0x20() {
        let packet = Packet::msg(ChannelId(0x20), true, Bytes::from_static(&[0xaa; 3]));
        let wire = hex("0b 1a 09 08 20 10 01 1a 03 aa aa aa");
        assert_eq!(encode_delimited_to_vec(&packet), wire);
        assert_eq!(
            decode_packet(&wire, MAX_PACKET_SIZE),
            Ok(packet.sum.map(|sum| (sum, wire.len())))
        );
    }

    #[test]
    fn kat_protocol_version() {
        let info = DefaultNodeInfo {
            protocol_version: Some(ProtocolVersion {
                p2p: 8,
                block: 11,
                app: 0,
            }),
            ..DefaultNodeInfo::default()
        };
        let bytes = prost::Message::encode_to_vec(&info);
        assert_eq!(&bytes[..6], hex("0a 04 08 08 10 0b").as_slice());
    }

    #[test]
    fn node_info_always_emits_embedded_messages() {
        let info = DefaultNodeInfo {
            protocol_version: Some(ProtocolVersion::default()),
            other: Some(DefaultNodeInfoOther::default()),
            ..DefaultNodeInfo::default()
        };
        // `0a 00` (protocol_version) and `42 00` (other), as gogoproto emits them.
        assert_eq!(prost::Message::encode_to_vec(&info), hex("0a 00 42 00"));
    }

    #[test]
    fn kat_pex_addrs_entry() {
        let reply = PexMessage::addrs(vec![NetAddress {
            id: ID.to_owned(),
            ip: "1.2.3.4".to_owned(),
            port: 26656,
        }]);
        let mut want = hex("12 39 0a 37 0a 28");
        want.extend_from_slice(ID.as_bytes());
        want.extend_from_slice(&hex("12 07"));
        want.extend_from_slice(b"1.2.3.4");
        want.extend_from_slice(&hex("18 a0 d0 01"));
        assert_eq!(prost::Message::encode_to_vec(&reply), want);
        assert_eq!(decode_pex_message(&want), Ok(reply.sum.unwrap()));
    }

    #[test]
    fn max_packet_size_matches_the_encoder() {
        assert_eq!(MAX_PACKET_SIZE, 1034);
        for payload in [
            0, 1, 100, 115, 116, 117, 127, 128, 1023, 1024, 1025, 16372, 16373, 70000,
        ] {
            let packet = Packet::msg(ChannelId(1), true, Bytes::from(vec![0u8; payload]));
            assert_eq!(
                max_packet_size(payload),
                prost::Message::encoded_len(&packet),
                "payload {payload}"
            );
        }
    }

    #[test]
    fn packet_limit_is_crossed_by_one_byte() {
        // Channel 0x80 with a full 1024-byte chunk encodes to 1035 bytes (spec 4.1).
        let full = Packet::msg(ChannelId(0x80), true, Bytes::from(vec![1u8; 1024]));
        let wire = encode_delimited_to_vec(&full);
        assert_eq!(
            decode_packet(&wire, MAX_PACKET_SIZE),
            Err(WireError::Codec(CodecError::TooLarge {
                len: 1035,
                max: 1034
            }))
        );
        let ok = Packet::msg(ChannelId(0x7f), true, Bytes::from(vec![1u8; 1024]));
        let wire = encode_delimited_to_vec(&ok);
        assert_eq!(
            decode_packet(&wire, MAX_PACKET_SIZE),
            Ok(ok.sum.map(|sum| (sum, wire.len())))
        );
    }

    #[test]
    fn empty_packet_and_pex_message_are_typed_errors() {
        assert_eq!(
            decode_packet(&[0x00], MAX_PACKET_SIZE),
            Err(WireError::EmptyPacket)
        );
        assert_eq!(decode_pex_message(&[]), Err(WireError::EmptyPexMessage));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        // Ping followed by unknown field 9 (varint 1).
        assert_eq!(
            decode_packet(&hex("04 0a 00 48 01"), MAX_PACKET_SIZE),
            Ok(Some((packet::Sum::PacketPing(PacketPing {}), 5)))
        );
    }

    #[test]
    fn repeated_oneof_fields_merge() {
        // `packet_msg{channel_id: 5}` then `packet_msg{eof: true}` in one Packet. Protobuf (and
        // prost) merge the two; gogoproto, which Go uses, keeps only the last one, so a Go node
        // would read channel 0. Honest encoders never repeat a field, so only crafted input sees
        // the difference.
        let wire = hex("08 1a 02 08 05 1a 02 10 01");
        let (sum, _) = decode_packet(&wire, MAX_PACKET_SIZE).unwrap().unwrap();
        assert_eq!(
            sum,
            packet::Sum::PacketMsg(PacketMsg {
                channel_id: 5,
                eof: true,
                data: Bytes::new()
            })
        );
    }

    #[test]
    fn out_of_range_channel_is_visible() {
        let msg = PacketMsg {
            channel_id: 256,
            eof: true,
            data: Bytes::new(),
        };
        assert_eq!(msg.channel(), None);
        let msg = PacketMsg {
            channel_id: -1,
            ..msg
        };
        assert_eq!(msg.channel(), None);
    }

    #[test]
    fn pex_limits() {
        let addr = NetAddress {
            id: ID.to_owned(),
            ip: "1.2.3.4".to_owned(),
            port: 26656,
        };
        let at_limit = PexMessage::addrs(vec![addr.clone(); MAX_PEX_ADDRS]);
        let bytes = prost::Message::encode_to_vec(&at_limit);
        assert!(bytes.len() <= MAX_PEX_MESSAGE_SIZE);
        assert_eq!(decode_pex_message(&bytes), Ok(at_limit.sum.unwrap()));

        let over = PexMessage::addrs(vec![addr; MAX_PEX_ADDRS + 1]);
        let bytes = prost::Message::encode_to_vec(&over);
        assert_eq!(
            decode_pex_message(&bytes),
            Err(WireError::TooManyPexAddrs {
                count: MAX_PEX_ADDRS + 1,
                max: MAX_PEX_ADDRS
            })
        );

        // 251 empty entries (`0a 00` each), so small they fit easily in the size limit.
        let empty = PexMessage::addrs(vec![NetAddress::default(); MAX_PEX_ADDRS + 1]);
        let bytes = prost::Message::encode_to_vec(&empty);
        assert!(matches!(
            decode_pex_message(&bytes),
            Err(WireError::TooManyPexAddrs { .. })
        ));

        let too_big = vec![0u8; MAX_PEX_MESSAGE_SIZE + 1];
        assert_eq!(
            decode_pex_message(&too_big),
            Err(WireError::Codec(CodecError::TooLarge {
                len: (MAX_PEX_MESSAGE_SIZE + 1) as u64,
                max: MAX_PEX_MESSAGE_SIZE
            }))
        );
    }

    /// A `DefaultNodeInfo` whose body is exactly `len` bytes (a moniker of `len - 3` bytes).
    fn node_info_of_len(len: usize) -> DefaultNodeInfo {
        let info = DefaultNodeInfo {
            moniker: "m".repeat(len - 3),
            ..DefaultNodeInfo::default()
        };
        assert_eq!(prost::Message::encoded_len(&info), len);
        info
    }

    #[test]
    fn node_info_limit_is_crossed_by_one() {
        let at_limit = node_info_of_len(MAX_NODE_INFO_SIZE);
        let wire = encode_delimited_to_vec(&at_limit);
        assert_eq!(
            decode_node_info(&wire),
            Ok(Some((at_limit, MAX_NODE_INFO_SIZE + 2)))
        );
        let over = node_info_of_len(MAX_NODE_INFO_SIZE + 1);
        let wire = encode_delimited_to_vec(&over);
        assert_eq!(
            decode_node_info(&wire),
            Err(CodecError::TooLarge {
                len: (MAX_NODE_INFO_SIZE + 1) as u64,
                max: MAX_NODE_INFO_SIZE
            })
        );
    }

    #[test]
    fn pex_message_size_limit_is_crossed_by_one() {
        // A request (`0a 00`) followed by unknown field 15 (`7a`, 3-byte length, padding),
        // which protobuf skips: 64000 bytes in all.
        let padded = |total: usize| {
            let mut bytes = hex("0a 00 7a");
            crate::wire::codec::write_uvarint((total - 6) as u64, &mut bytes);
            bytes.resize(total, 0);
            bytes
        };
        assert_eq!(
            decode_pex_message(&padded(MAX_PEX_MESSAGE_SIZE)),
            Ok(pex_message::Sum::PexRequest(PexRequest {}))
        );
        assert_eq!(
            decode_pex_message(&padded(MAX_PEX_MESSAGE_SIZE + 1)),
            Err(WireError::Codec(CodecError::TooLarge {
                len: (MAX_PEX_MESSAGE_SIZE + 1) as u64,
                max: MAX_PEX_MESSAGE_SIZE
            }))
        );
    }
}
