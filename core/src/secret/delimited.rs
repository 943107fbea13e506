//! Incremental reader of one uvarint-length-delimited message with a size limit, for the two
//! handshake messages. It never reads past the message (spec 2.5) and checks the claimed length
//! against the limit before allocating.

/// What went wrong with a length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixError {
    /// The uvarint runs past 10 bytes or past 64 bits.
    Malformed,
    /// The claimed length is above the limit.
    TooLong(u64),
}

/// Reads one delimited message fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub(crate) struct DelimitedReader {
    limit: usize,
    /// The uvarint length read so far.
    len_acc: u64,
    len_shift: u32,
    /// `Some(len)` once the prefix is complete.
    len: Option<usize>,
    body: Vec<u8>,
}

impl DelimitedReader {
    /// A reader for one message of at most `limit` bytes (the prefix not counted).
    pub(crate) fn new(limit: usize) -> Self {
        DelimitedReader {
            limit,
            len_acc: 0,
            len_shift: 0,
            len: None,
            body: Vec::new(),
        }
    }

    /// Consumes what it needs of `data`; returns how many bytes it took and, once complete,
    /// the message body. After completion it must not be fed again.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Vec<u8>>), PrefixError> {
        let mut used = 0;
        while self.len.is_none() {
            let Some(&byte) = data.get(used) else {
                return Ok((used, None));
            };
            used += 1;
            if self.len_shift >= 64 || (self.len_shift == 63 && byte > 1) {
                return Err(PrefixError::Malformed);
            }
            self.len_acc |= u64::from(byte & 0x7f) << self.len_shift;
            self.len_shift += 7;
            if byte & 0x80 == 0 {
                let len = usize::try_from(self.len_acc)
                    .ok()
                    .filter(|len| *len <= self.limit)
                    .ok_or(PrefixError::TooLong(self.len_acc))?;
                self.len = Some(len);
                // Bounded by `limit`, checked just above.
                self.body.reserve_exact(len);
            }
        }
        let len = self.len.unwrap_or(0);
        let take = (len - self.body.len()).min(data.len() - used);
        self.body.extend_from_slice(&data[used..used + take]);
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

    #[test]
    fn reads_exactly_one_message() {
        let mut r = DelimitedReader::new(100);
        assert_eq!(r.feed(&[3, 1]).unwrap(), (2, None));
        assert_eq!(r.feed(&[2, 3, 9, 9]).unwrap(), (2, Some(vec![1, 2, 3])));
    }

    #[test]
    fn multi_byte_prefix_and_limits() {
        let mut r = DelimitedReader::new(1 << 20);
        // 1 MiB + 1 = 0x100001 → 81 80 c0 00? encode properly.
        let mut prefix = Vec::new();
        let mut v: u64 = (1 << 20) + 1;
        while v >= 0x80 {
            prefix.push((v as u8) | 0x80);
            v >>= 7;
        }
        prefix.push(v as u8);
        assert_eq!(r.feed(&prefix), Err(PrefixError::TooLong((1 << 20) + 1)));
        let mut r = DelimitedReader::new(1 << 20);
        assert_eq!(r.feed(&[0xff; 11]), Err(PrefixError::Malformed));
        let mut r = DelimitedReader::new(10);
        assert_eq!(r.feed(&[0]).unwrap(), (1, Some(vec![])));
    }
}
