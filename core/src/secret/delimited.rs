//! Incremental reader of one uvarint-length-delimited message with a size limit, for the two
//! handshake messages. The length prefix is parsed by the wire codec
//! ([`read_length_prefix`]); this reader only adds what the handshake needs on top of it: it is
//! fed in arbitrary pieces, it never takes a byte past its message (spec 2.5), and the body
//! buffer grows with the bytes that actually arrive, so a peer that claims 1 MiB and sends
//! three bytes costs three bytes.

use crate::wire::codec::{CodecError, MAX_UVARINT_LEN, read_length_prefix};

/// Reads one delimited message fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub(crate) struct DelimitedReader {
    limit: usize,
    /// The bytes of the length prefix received so far (a prefix is at most 10 bytes).
    prefix: [u8; MAX_UVARINT_LEN],
    prefix_len: usize,
    /// `Some(len)` once the prefix is complete.
    len: Option<usize>,
    body: Vec<u8>,
}

impl DelimitedReader {
    /// A reader for one message of at most `limit` bytes (the prefix not counted).
    pub(crate) fn new(limit: usize) -> Self {
        DelimitedReader {
            limit,
            prefix: [0; MAX_UVARINT_LEN],
            prefix_len: 0,
            len: None,
            body: Vec::new(),
        }
    }

    /// Consumes what it needs of `data`; returns how many bytes it took and, once complete,
    /// the message body. After completion it must not be fed again.
    ///
    /// Errors are those of [`read_length_prefix`]: [`CodecError::VarintOverflow`] for a prefix
    /// that is not a uvarint, [`CodecError::TooLarge`] as soon as a complete prefix claims more
    /// than the limit.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Vec<u8>>), CodecError> {
        let mut used = 0;
        let len = loop {
            if let Some(len) = self.len {
                break len;
            }
            let Some(&byte) = data.get(used) else {
                return Ok((used, None));
            };
            // `read_length_prefix` ends or fails by the 10th byte, so the array never overflows.
            let Some(slot) = self.prefix.get_mut(self.prefix_len) else {
                return Err(CodecError::VarintOverflow);
            };
            *slot = byte;
            self.prefix_len += 1;
            used += 1;
            if let Some((len, _)) = read_length_prefix(&self.prefix[..self.prefix_len], self.limit)?
            {
                self.len = Some(len);
            }
        };
        let rest = data.get(used..).unwrap_or_default();
        let take = len.saturating_sub(self.body.len()).min(rest.len());
        self.body.extend_from_slice(&rest[..take]);
        used += take;
        if self.body.len() == len {
            Ok((used, Some(std::mem::take(&mut self.body))))
        } else {
            Ok((used, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::write_uvarint;

    #[test]
    fn reads_exactly_one_message() {
        let mut r = DelimitedReader::new(100);
        assert_eq!(r.feed(&[3, 1]).unwrap(), (2, None));
        assert_eq!(r.feed(&[2, 3, 9, 9]).unwrap(), (2, Some(vec![1, 2, 3])));
    }

    #[test]
    fn multi_byte_prefix_and_limits() {
        let limit = 1 << 20;
        let mut prefix = Vec::new();
        write_uvarint(limit as u64 + 1, &mut prefix);
        let mut r = DelimitedReader::new(limit);
        assert_eq!(
            r.feed(&prefix),
            Err(CodecError::TooLarge {
                len: limit as u64 + 1,
                max: limit
            })
        );
        // The same prefix one byte at a time.
        let mut r = DelimitedReader::new(limit);
        for &b in &prefix[..prefix.len() - 1] {
            assert_eq!(r.feed(&[b]), Ok((1, None)));
        }
        assert!(matches!(
            r.feed(&prefix[prefix.len() - 1..]),
            Err(CodecError::TooLarge { .. })
        ));
        let mut r = DelimitedReader::new(limit);
        assert_eq!(r.feed(&[0xff; 11]), Err(CodecError::VarintOverflow));
        let mut r = DelimitedReader::new(10);
        assert_eq!(r.feed(&[0]).unwrap(), (1, Some(vec![])));
    }

    /// Regression: the reader used to reserve the claimed length as soon as the prefix was
    /// complete, so three bytes claiming 1 MiB allocated 1 MiB per pending handshake.
    #[test]
    fn a_claimed_length_allocates_nothing_until_bytes_arrive() {
        let limit = 1 << 20;
        let mut prefix = Vec::new();
        write_uvarint(limit as u64, &mut prefix);
        let mut r = DelimitedReader::new(limit);
        assert_eq!(r.feed(&prefix), Ok((prefix.len(), None)));
        assert_eq!(r.body.capacity(), 0);
        assert_eq!(r.feed(&[7; 100]), Ok((100, None)));
        assert!(r.body.capacity() < 4096, "{}", r.body.capacity());
    }
}
