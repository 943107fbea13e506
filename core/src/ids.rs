//! Identifier newtypes shared by every layer: [`NodeId`], [`ConnId`] and [`ChannelId`].

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A node's identity: the first 20 bytes of SHA-256 of its Ed25519 public key (spec 1.1).
///
/// Displayed and parsed as 40 lower-case hex characters; parsing also accepts upper case,
/// as Go's decoder does, but printing is always lower case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    /// Derives the id of an Ed25519 public key.
    #[must_use]
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let mut id = [0u8; 20];
        id.copy_from_slice(&digest[..20]);
        NodeId(id)
    }

    /// The 20 raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The id as 40 lower-case hex characters, the form used on the wire and in files.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// The 40 lower-case hex characters, without an allocation.
    #[must_use]
    pub fn hex(&self) -> [u8; 40] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 40];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0x0f)];
        }
        out
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of the 40 characters, not 20 formatted bytes: PEX replies print up to
        // 250 ids each.
        let hex = self.hex();
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Why a string is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIdError {
    /// The string is empty.
    #[error("node id is empty")]
    Empty,
    /// The string is not hex.
    #[error("node id {0:?} is not hexadecimal")]
    NotHex(String),
    /// The string decodes to the wrong number of bytes.
    #[error("node id {id:?} has {len} bytes, expected 20 (40 hex characters)")]
    WrongLength {
        /// The offending string.
        id: String,
        /// How many bytes it decodes to.
        len: usize,
    },
}

/// Marks a byte that is not a hex digit in [`HEX`].
const NOT_HEX: u8 = 0xf0;

/// The value of each hex digit (either case); [`NOT_HEX`] for any other byte.
const HEX: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NodeIdError::Empty);
        }
        let bytes = s.as_bytes();
        let mut id = [0u8; 20];
        // The common case in one pass: 40 characters that decode (an even length, so any error
        // is a non-hex character, as below).
        if bytes.len() == 40 {
            // A table and no branch per character: every PEX address carries one, and a seed
            // or a crawler decodes hundreds of thousands a minute.
            let mut bad = 0u8;
            for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
                let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
                bad |= hi | lo;
                *out = (hi << 4) | (lo & 0x0f);
            }
            return if bad & NOT_HEX == 0 {
                Ok(NodeId(id))
            } else {
                Err(NodeIdError::NotHex(s.to_owned()))
            };
        }
        if !bytes.len().is_multiple_of(2) || !bytes.iter().all(u8::is_ascii_hexdigit) {
            return Err(NodeIdError::NotHex(s.to_owned()));
        }
        Err(NodeIdError::WrongLength {
            id: s.to_owned(),
            len: bytes.len() / 2,
        })
    }
}

/// Serialized as its 40 hex characters (as in CometBFT's JSON files).
impl serde::Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One connection's handle, allocated by the engine, increasing and never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// An MConnection channel id (spec 4.2): one byte, 0x00 is PEX.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct ChannelId(pub u8);

impl ChannelId {
    /// The PEX reactor's channel.
    pub const PEX: ChannelId = ChannelId(0x00);
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_and_prints_lower_case() {
        let id: NodeId = "7627DE929814C7484DC6BF94F60166AB3115B316".parse().unwrap();
        assert_eq!(id.to_string(), "7627de929814c7484dc6bf94f60166ab3115b316");
        assert_eq!(id.to_string().parse::<NodeId>().unwrap(), id);
    }

    #[test]
    fn node_id_rejects_malformed_strings() {
        assert_eq!("".parse::<NodeId>(), Err(NodeIdError::Empty));
        assert!(matches!(
            "zz".parse::<NodeId>(),
            Err(NodeIdError::NotHex(_))
        ));
        assert!(matches!(
            "abc".parse::<NodeId>(),
            Err(NodeIdError::NotHex(_))
        ));
        assert!(matches!(
            "abcd".parse::<NodeId>(),
            Err(NodeIdError::WrongLength { len: 2, .. })
        ));
    }

    /// The table decoder agrees with the `hex` crate on every byte at every position.
    #[test]
    fn forty_characters_decode_as_hex_does() {
        let base = *b"0123456789abcdefABCDEF0123456789abcdef00";
        for pos in 0..40 {
            for b in 0..=255u8 {
                let mut s = base;
                s[pos] = b;
                let Ok(text) = std::str::from_utf8(&s) else {
                    continue;
                };
                let mut want = [0u8; 20];
                let want = hex::decode_to_slice(text, &mut want).map(|()| NodeId(want));
                match text.parse::<NodeId>() {
                    Ok(id) => assert_eq!(Ok(id), want, "{text}"),
                    Err(e) => {
                        assert!(want.is_err(), "{text}");
                        assert_eq!(e, NodeIdError::NotHex(text.to_owned()));
                    }
                }
            }
        }
    }
}
