//! The p2p wire format: protobuf messages ([`proto`]) and the uvarint length-delimited codec
//! with the size limits of spec section 9, enforced before any allocation of a claimed size.

pub mod proto;
