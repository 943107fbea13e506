//! The uvarint length-delimited protobuf codec (Go's `protoio` delimited reader and writer).
//!
//! Every stream message of the p2p layer is `uvarint(len) || protobuf bytes`. The decoder here is
//! streaming and sans-IO: it is handed whatever bytes have arrived and answers "need more",
//! "here is a message and how many bytes it used", or a typed error. The length limit is checked
//! as soon as the length prefix is complete, so a peer claiming a huge length is rejected before
//! any byte of the body is buffered or allocated.

use bytes::BufMut;

use super::limits::uvarint_len;

/// The most bytes a uvarint of a `u64` takes.
pub const MAX_UVARINT_LEN: usize = 10;

/// Why a delimited message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The length prefix runs past 10 bytes or above `u64::MAX`.
    #[error("length prefix is not a valid uvarint (too long or above 2^64)")]
    VarintOverflow,
    /// The length prefix claims more than the limit for this message.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The claimed length (or the actual length of an undelimited message).
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// The body is not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Reads a uvarint from the front of `buf`.
///
/// Returns `Ok(None)` if `buf` ends inside the varint, `Ok(Some((value, bytes_used)))` once it is
/// complete, and [`CodecError::VarintOverflow`] for more than 10 bytes or a value above
/// `u64::MAX` (as Go's `binary.ReadUvarint`).
pub fn read_uvarint(buf: &[u8]) -> Result<Option<(u64, usize)>, CodecError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if i == MAX_UVARINT_LEN - 1 && byte > 1 {
            return Err(CodecError::VarintOverflow);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Ok(None)
}

/// Appends the uvarint encoding of `value` to `out`.
pub fn write_uvarint(mut value: u64, out: &mut impl BufMut) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Reads and checks the length prefix of a delimited message.
///
/// Returns `Ok(None)` while the prefix is incomplete, `Ok(Some((body_len, prefix_len)))` once it
/// is complete and `body_len <= max_len`, and [`CodecError::TooLarge`] as soon as a complete
/// prefix claims more than `max_len`, whether or not any of the body has arrived.
pub fn read_length_prefix(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(usize, usize)>, CodecError> {
    let Some((len, prefix_len)) = read_uvarint(buf)? else {
        return Ok(None);
    };
    match usize::try_from(len) {
        Ok(body_len) if body_len <= max_len => Ok(Some((body_len, prefix_len))),
        _ => Err(CodecError::TooLarge { len, max: max_len }),
    }
}

/// Decodes one delimited message from the front of `buf`.
///
/// Returns `Ok(None)` if more bytes are needed (the prefix or the body is incomplete),
/// `Ok(Some((message, consumed)))` where `consumed` counts the prefix and the body, or a typed
/// error. The limit `max_len` applies to the body (as in Go's delimited reader) and is checked
/// before the body is looked at. Unknown fields are skipped, as in Go.
pub fn decode_delimited<M: prost::Message + Default>(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(M, usize)>, CodecError> {
    let Some((body_len, prefix_len)) = read_length_prefix(buf, max_len)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(prefix_len..).and_then(|rest| rest.get(..body_len)) else {
        return Ok(None);
    };
    let message = M::decode(body)?;
    Ok(Some((message, prefix_len + body_len)))
}

/// Decodes an undelimited message (a channel message after reassembly) of at most `max_len`
/// bytes; a longer input is [`CodecError::TooLarge`] without being parsed.
pub fn decode_bounded<M: prost::Message + Default>(
    buf: &[u8],
    max_len: usize,
) -> Result<M, CodecError> {
    if buf.len() > max_len {
        return Err(CodecError::TooLarge {
            len: buf.len() as u64,
            max: max_len,
        });
    }
    Ok(M::decode(buf)?)
}

/// Appends `uvarint(len) || message` to `out`, growing it as needed.
pub fn encode_delimited<M: prost::Message>(message: &M, out: &mut impl BufMut) {
    let len = message.encoded_len();
    write_uvarint(len as u64, out);
    message.encode_raw(out);
}

/// `uvarint(len) || message` as a fresh vector.
#[must_use]
pub fn encode_delimited_to_vec<M: prost::Message>(message: &M) -> Vec<u8> {
    let mut out = Vec::with_capacity(delimited_len(message));
    encode_delimited(message, &mut out);
    out
}

/// The number of bytes [`encode_delimited`] writes for `message`.
#[must_use]
pub fn delimited_len<M: prost::Message>(message: &M) -> usize {
    let len = message.encoded_len();
    uvarint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::proto::BytesValue;

    #[test]
    fn uvarint_round_trips_at_boundaries() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_uvarint(value, &mut out);
            assert_eq!(out.len(), uvarint_len(value));
            assert_eq!(read_uvarint(&out), Ok(Some((value, out.len()))));
            for cut in 0..out.len() {
                assert_eq!(read_uvarint(&out[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn uvarint_overflow_is_typed() {
        // 10th byte above 1: the value exceeds 64 bits.
        let mut too_big = vec![0xff; 9];
        too_big.push(0x02);
        assert_eq!(read_uvarint(&too_big), Err(CodecError::VarintOverflow));
        // 11 bytes: too long.
        let too_long = vec![0x80; 11];
        assert_eq!(read_uvarint(&too_long), Err(CodecError::VarintOverflow));
        // u64::MAX itself is fine.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(read_uvarint(&max), Ok(Some((u64::MAX, 10))));
    }

    #[test]
    fn limit_is_enforced_on_the_prefix_alone() {
        // Claims 1025 bytes with a limit of 1024; no body present.
        let mut buf = Vec::new();
        write_uvarint(1025, &mut buf);
        assert_eq!(
            decode_delimited::<BytesValue>(&buf, 1024),
            Err(CodecError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        // Exactly at the limit: just needs more bytes.
        let mut buf = Vec::new();
        write_uvarint(1024, &mut buf);
        assert_eq!(decode_delimited::<BytesValue>(&buf, 1024), Ok(None));
        // A u64::MAX claim is too large, not a panic or a huge allocation.
        let mut buf = Vec::new();
        write_uvarint(u64::MAX, &mut buf);
        assert!(matches!(
            decode_delimited::<BytesValue>(&buf, crate::wire::limits::MAX_HANDSHAKE_MSG_SIZE),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_protobuf_is_a_decode_error() {
        // Length 2, body `0b 00`: field 1 with wire type 3 (start group) is invalid.
        assert!(matches!(
            decode_delimited::<BytesValue>(&[0x02, 0x0b, 0x00], 16),
            Err(CodecError::Decode(_))
        ));
        // Truncated inner length: `0a 05 01` claims 5 bytes, has 1.
        assert!(matches!(
            decode_delimited::<BytesValue>(&[0x03, 0x0a, 0x05, 0x01], 16),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn decode_is_streaming_at_every_split() {
        let message = BytesValue { value: vec![7; 32] };
        let mut stream = encode_delimited_to_vec(&message);
        let first_len = stream.len();
        stream.extend_from_slice(&[0x00]); // an empty message follows
        for cut in 0..first_len {
            assert_eq!(decode_delimited::<BytesValue>(&stream[..cut], 64), Ok(None));
        }
        let (decoded, used) = decode_delimited::<BytesValue>(&stream, 64)
            .unwrap()
            .unwrap();
        assert_eq!((decoded, used), (message, first_len));
        let (empty, used) = decode_delimited::<BytesValue>(&stream[first_len..], 64)
            .unwrap()
            .unwrap();
        assert_eq!((empty, used), (BytesValue::default(), 1));
    }

    #[test]
    fn bounded_decode_checks_length_first() {
        let body = [0x0a, 0x01, 0x05];
        assert_eq!(
            decode_bounded::<BytesValue>(&body, 3),
            Ok(BytesValue { value: vec![5] })
        );
        assert_eq!(
            decode_bounded::<BytesValue>(&body, 2),
            Err(CodecError::TooLarge { len: 3, max: 2 })
        );
    }
}
