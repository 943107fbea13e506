//! The size limits of spec section 9, in one place.
//!
//! Every delimited read names one of these as its maximum; the codec rejects a longer claimed
//! length as soon as the length prefix is read, before any buffer of that size exists.
//!
//! `docs/limits.md` lists every limit of the core (these, the connection's and the address
//! book's), the typed outcome one over it and the tests that cross each one by one.

/// Maximum body length of the two cleartext/handshake delimited messages of the SecretConnection
/// (the ephemeral-key `BytesValue` and the `AuthSigMessage`): 1 MiB. Honest peers send 34 and 102
/// bytes (35 and 103 with the length prefix).
pub const MAX_HANDSHAKE_MSG_SIZE: usize = 1024 * 1024;

/// Maximum body length of the delimited `DefaultNodeInfo` (Go's `maxNodeInfoSize`).
pub const MAX_NODE_INFO_SIZE: usize = 10240;

/// Maximum number of channel ids a `DefaultNodeInfo` may list (Go's `maxNumChannels`).
pub const MAX_NODE_INFO_CHANNELS: usize = 16;

/// The default `max_packet_msg_payload_size`: the data bytes of one `PacketMsg` chunk.
pub const DEFAULT_MAX_PACKET_MSG_PAYLOAD_SIZE: usize = 1024;

/// Maximum size of one PEX channel message (the PEX channel's receive capacity).
pub const MAX_PEX_MESSAGE_SIZE: usize = 64000;

/// Maximum number of addresses in one `PexAddrs` reply (Go's `maxGetSelection`).
pub const MAX_PEX_ADDRS: usize = 250;

/// The PEX channel id.
pub const PEX_CHANNEL: u8 = 0x00;

/// Maximum body length of a delimited `Packet` for a given `max_packet_msg_payload_size`.
///
/// Go computes it as the encoded size of
/// `Packet{PacketMsg{channel_id: 1, eof: true, data: [0; payload]}}`; this function gives the
/// same number without allocating: 1034 for the default payload of 1024. (With a payload of 0
/// the `data` field is omitted, as proto3 omits empty bytes.)
#[must_use]
pub const fn max_packet_size(max_payload: usize) -> usize {
    // PacketMsg: `08 01` (channel_id=1) + `10 01` (eof=true) + `1a len data` (if non-empty).
    let data_field = if max_payload == 0 {
        0
    } else {
        1 + uvarint_len(max_payload as u64) + max_payload
    };
    let msg = 2 + 2 + data_field;
    // Packet: `1a len PacketMsg`.
    1 + uvarint_len(msg as u64) + msg
}

/// [`max_packet_size`] at the default payload size: 1034.
pub const MAX_PACKET_SIZE: usize = max_packet_size(DEFAULT_MAX_PACKET_MSG_PAYLOAD_SIZE);

/// Number of bytes the uvarint encoding of `value` takes (1 to 10).
#[must_use]
pub const fn uvarint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}
