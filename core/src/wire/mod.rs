//! The p2p wire format: protobuf messages ([`proto`]), the uvarint length-delimited codec
//! ([`codec`]) with the size limits of spec section 9 ([`limits`]), enforced before any
//! allocation of a claimed size, and typed constructors and decoders ([`messages`]).

pub mod codec;
pub mod limits;
pub mod messages;
pub mod proto;

pub use codec::{CodecError, decode_bounded, decode_delimited, encode_delimited};
pub use messages::{
    WireError, decode_auth_sig, decode_bytes_value, decode_node_info, decode_packet,
    decode_pex_message,
};
