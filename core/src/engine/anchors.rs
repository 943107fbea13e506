//! Anchors (G12): up to two outbound peers that were connected for at least 10 min without
//! misbehaving are saved at shutdown and dialled first at the next start, before any address
//! is picked from the book. An attacker who floods the book while we are down (or who owns
//! the book file) then still meets two peers we chose ourselves.
//!
//! [`Engine::anchors`](super::Engine::anchors) says which peers qualify now;
//! [`Engine::dial_anchors`](super::Engine::dial_anchors) dials saved ones at start. This module
//! owns the file format: a small checksummed record, kept beside the address book (the driver
//! writes `<book>.anchors` at shutdown, reads it at start and deletes it, so a crash loop never
//! dials the same anchors forever).
//!
//! | field | size |
//! |---|---|
//! | magic `CMANCHOR` | 8 |
//! | format version (1) | 1 |
//! | count (≤ 2) | 1 |
//! | per anchor: node id, IP tag (4 or 6), IP, port | 20 + 1 + 4/16 + 2 |
//! | SHA-256 of everything above | 32 |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::addr::NetAddr;
use crate::ids::NodeId;

/// Most anchors saved (G12).
pub const MAX_ANCHORS: usize = 2;
/// How long an outbound peer must have been connected to become an anchor (G12).
pub const MIN_ANCHOR_AGE: Duration = Duration::from_secs(600);

const MAGIC: &[u8; 8] = b"CMANCHOR";
const VERSION: u8 = 1;
const CHECKSUM_LEN: usize = 32;

/// Why bytes are not an anchors file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorsError {
    /// Not an anchors file (wrong magic or too short).
    #[error("not a cometmesh anchors file")]
    Foreign,
    /// Written by a newer version.
    #[error("anchors format {0} needs a newer cometmesh")]
    UnsupportedVersion(u8),
    /// The checksum does not match: a partial write or corruption.
    #[error("anchors checksum mismatch")]
    Checksum,
    /// The checksum matches but the content is inconsistent.
    #[error("anchors file is corrupt: {0}")]
    Corrupt(&'static str),
}

/// Encodes up to [`MAX_ANCHORS`] anchors (any beyond are left out).
#[must_use]
pub fn encode(anchors: &[NetAddr]) -> Vec<u8> {
    let anchors = &anchors[..anchors.len().min(MAX_ANCHORS)];
    let mut out = Vec::with_capacity(10 + anchors.len() * 39 + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(anchors.len() as u8);
    for a in anchors {
        out.extend_from_slice(a.id.as_bytes());
        match a.addr.ip() {
            IpAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.octets());
            }
        }
        out.extend_from_slice(&a.addr.port().to_be_bytes());
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Decodes an anchors file; any truncation, bit flip or foreign file is a typed error.
pub fn decode(bytes: &[u8]) -> Result<Vec<NetAddr>, AnchorsError> {
    if bytes.len() < MAGIC.len() + 2 + CHECKSUM_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(AnchorsError::Foreign);
    }
    if bytes[MAGIC.len()] > VERSION {
        return Err(AnchorsError::UnsupportedVersion(bytes[MAGIC.len()]));
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    // Under the fuzzer the checksum is not enforced, so it can reach the parser behind it.
    if !cfg!(fuzzing) && Sha256::digest(body).as_slice() != sum {
        return Err(AnchorsError::Checksum);
    }
    let n = usize::from(body[MAGIC.len() + 1]);
    if n > MAX_ANCHORS {
        return Err(AnchorsError::Corrupt("too many anchors"));
    }
    let mut rest = &body[MAGIC.len() + 2..];
    let mut take = |k: usize| -> Result<&[u8], AnchorsError> {
        if rest.len() < k {
            return Err(AnchorsError::Corrupt("record runs past the end"));
        }
        let (head, tail) = rest.split_at(k);
        rest = tail;
        Ok(head)
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut id = [0u8; 20];
        id.copy_from_slice(take(20)?);
        let ip = match take(1)?[0] {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(take(4)?);
                IpAddr::V4(Ipv4Addr::from(a))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(take(16)?);
                IpAddr::V6(Ipv6Addr::from(a))
            }
            _ => return Err(AnchorsError::Corrupt("bad ip tag")),
        };
        let p = take(2)?;
        let port = u16::from_be_bytes([p[0], p[1]]);
        out.push(NetAddr::new(NodeId(id), SocketAddr::new(ip, port)));
    }
    if !rest.is_empty() {
        return Err(AnchorsError::Corrupt("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::NodeKey;

    fn anchor(n: u8, addr: &str) -> NetAddr {
        NetAddr::new(
            NodeKey::from_seed([n; 32]).node_id(),
            addr.parse().expect("addr"),
        )
    }

    #[test]
    fn round_trip_and_cap() {
        let a = vec![
            anchor(1, "20.1.0.1:26656"),
            anchor(2, "[2001:db8::1]:26657"),
            anchor(3, "20.3.0.1:26656"),
        ];
        assert_eq!(
            decode(&encode(&a)),
            Ok(a[..2].to_vec()),
            "at most two are kept"
        );
        assert_eq!(decode(&encode(&[])), Ok(Vec::new()));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = encode(&[anchor(1, "20.1.0.1:26656"), anchor(2, "20.2.0.1:1")]);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip of bit {bit} of byte {i}");
            }
        }
    }

    #[test]
    fn a_claim_of_three_anchors_is_corrupt() {
        let mut body = encode(&[])[..10].to_vec();
        body[9] = 3;
        let sum = Sha256::digest(&body);
        body.extend_from_slice(&sum);
        assert_eq!(
            decode(&body),
            Err(AnchorsError::Corrupt("too many anchors"))
        );
        let mut newer = encode(&[]);
        newer[8] = 2;
        assert_eq!(decode(&newer), Err(AnchorsError::UnsupportedVersion(2)));
    }
}
