//! The PEX reactor's per-peer rules (spec 5.2): message encoding, request rate limiting and
//! the "one outstanding request" bookkeeping. The engine owns one `PexPeer` per connected
//! peer and drives it with decoded messages and injected time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;

use crate::addr::NetAddr;
use crate::ids::NodeId;
use crate::wire::CodecError;
use crate::wire::limits::MAX_PEX_ADDRS;
use crate::wire::messages::{WireError, decode_pex_message};
use crate::wire::proto::{NetAddress, PexAddrs, PexMessage, PexRequest, pex_message};

/// A peer's provable PEX misbehaviour; each one bans the peer and disconnects it (G14).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PexViolation {
    /// A request arrived less than the minimum interval after the previous one.
    #[error("pex requests too frequent")]
    TooFrequentRequests,
    /// Addresses arrived without an outstanding request.
    #[error("unsolicited pex addresses")]
    UnsolicitedAddrs,
    /// A reply carried more than 250 addresses.
    #[error("pex reply with {0} addresses (at most 250)")]
    TooManyAddrs(usize),
    /// A message exceeded 64000 bytes.
    #[error("pex message of {0} bytes (at most 64000)")]
    TooLarge(usize),
    /// A reply carried an invalid IP or port.
    #[error("pex address with invalid ip or port")]
    BadAddress,
    /// The message did not decode, or was an empty wrapper.
    #[error("malformed pex message")]
    Malformed,
}

/// A decoded PEX message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PexMsg {
    /// `PexRequest`.
    Request,
    /// `PexAddrs`, already converted; entries with a bad node id are dropped (spec 5.2).
    Addrs(Vec<NetAddr>),
}

/// Decodes one PEX channel message.
pub(crate) fn decode(bytes: &[u8]) -> Result<PexMsg, PexViolation> {
    let sum = decode_pex_message(bytes).map_err(|e| match e {
        WireError::TooManyPexAddrs { count, .. } => PexViolation::TooManyAddrs(count),
        WireError::Codec(CodecError::TooLarge { .. }) => PexViolation::TooLarge(bytes.len()),
        _ => PexViolation::Malformed,
    })?;
    match sum {
        pex_message::Sum::PexRequest(_) => Ok(PexMsg::Request),
        pex_message::Sum::PexAddrs(addrs) => {
            let mut out = Vec::with_capacity(addrs.addrs.len());
            for a in &addrs.addrs {
                let ip: IpAddr = a.ip.parse().map_err(|_| PexViolation::BadAddress)?;
                let port = u16::try_from(a.port).map_err(|_| PexViolation::BadAddress)?;
                if let Ok(id) = a.id.parse::<NodeId>() {
                    out.push(NetAddr::new(id, SocketAddr::new(ip, port)));
                }
            }
            Ok(PexMsg::Addrs(out))
        }
    }
}

/// Encodes a `PexRequest` (`0a 00`).
pub(crate) fn encode_request() -> Bytes {
    let msg = PexMessage {
        sum: Some(pex_message::Sum::PexRequest(PexRequest {})),
    };
    Bytes::from(msg.encode_to_vec())
}

/// Encodes a `PexAddrs` with at most 250 of `addrs`.
pub(crate) fn encode_addrs(addrs: &[NetAddr]) -> Bytes {
    let addrs = addrs
        .iter()
        .take(MAX_PEX_ADDRS)
        .map(|a| NetAddress {
            id: a.id.to_string(),
            ip: a.addr.ip().to_string(),
            port: u32::from(a.addr.port()),
        })
        .collect();
    let msg = PexMessage {
        sum: Some(pex_message::Sum::PexAddrs(PexAddrs { addrs })),
    };
    Bytes::from(msg.encode_to_vec())
}

/// PEX state kept for one connected peer; dropped with the peer (spec 5.2 `RemovePeer`).
#[derive(Debug, Default, Clone)]
pub(crate) struct PexPeer {
    /// We sent a request and wait for its reply.
    pub(crate) outstanding: bool,
    /// Requests received so far (saturating).
    requests: u32,
    /// Time of the last accepted request (from the second one on).
    last_request: Option<Instant>,
    /// Seed mode: we already answered this inbound peer.
    pub(crate) answered: bool,
    /// When we last sent this peer a request.
    last_sent: Option<Instant>,
}

/// The least time between two requests we send one peer. A CometBFT receiver allows its own
/// `ensurePeersPeriod / 3` (10 s) whatever our period is, and disconnects and bans a peer that
/// asks sooner (spec 5.2, 12.6), so this does not follow our configured period.
pub(crate) const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(10);

impl PexPeer {
    /// Applies the request rate limit: the first two requests are always accepted, later ones
    /// must be at least `min_interval` after the previous accepted one.
    pub(crate) fn on_request(
        &mut self,
        now: Instant,
        min_interval: Duration,
    ) -> Result<(), PexViolation> {
        self.requests = self.requests.saturating_add(1);
        if self.requests >= 3
            && let Some(last) = self.last_request
            && now.saturating_duration_since(last) < min_interval
        {
            return Err(PexViolation::TooFrequentRequests);
        }
        if self.requests >= 2 {
            self.last_request = Some(now);
        }
        Ok(())
    }

    /// Accepts a reply only if a request is outstanding, and clears the flag.
    pub(crate) fn on_addrs(&mut self) -> Result<(), PexViolation> {
        if !self.outstanding {
            return Err(PexViolation::UnsolicitedAddrs);
        }
        self.outstanding = false;
        Ok(())
    }

    /// Whether a request may go to this peer now: none outstanding, and the last one at least
    /// [`MIN_REQUEST_INTERVAL`] ago.
    pub(crate) fn can_request(&self, now: Instant) -> bool {
        !self.outstanding
            && self
                .last_sent
                .is_none_or(|last| now.saturating_duration_since(last) >= MIN_REQUEST_INTERVAL)
    }

    /// We asked this peer and it answered (no request outstanding).
    pub(crate) fn replied(&self) -> bool {
        self.last_sent.is_some() && !self.outstanding
    }

    /// Marks a request as sent; false (and nothing is to be sent) if one is already outstanding
    /// or the last one went out less than [`MIN_REQUEST_INTERVAL`] ago.
    pub(crate) fn start_request(&mut self, now: Instant) -> bool {
        if !self.can_request(now) {
            return false;
        }
        self.outstanding = true;
        self.last_sent = Some(now);
        true
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test needs some Instant as its origin
mod tests {
    use super::*;

    #[test]
    fn request_encodes_as_spec() {
        assert_eq!(&encode_request()[..], &[0x0a, 0x00]);
        assert_eq!(decode(&[0x0a, 0x00]), Ok(PexMsg::Request));
    }

    #[test]
    fn addrs_round_trip_and_match_spec_bytes() {
        let id: NodeId = "7627de929814c7484dc6bf94f60166ab3115b316".parse().unwrap();
        let a = NetAddr::new(id, "1.2.3.4:26656".parse().unwrap());
        let bytes = encode_addrs(&[a]);
        assert_eq!(&bytes[..4], &[0x12, 0x39, 0x0a, 0x37]);
        assert_eq!(&bytes[bytes.len() - 4..], &[0x18, 0xa0, 0xd0, 0x01]);
        assert_eq!(bytes.len(), 2 + 0x39);
        assert_eq!(decode(&bytes), Ok(PexMsg::Addrs(vec![a])));
    }

    #[test]
    fn bad_entries() {
        let enc = |addrs: Vec<NetAddress>| {
            PexMessage {
                sum: Some(pex_message::Sum::PexAddrs(PexAddrs { addrs })),
            }
            .encode_to_vec()
        };
        let good_id = "7627de929814c7484dc6bf94f60166ab3115b316".to_owned();
        let bad_ip = enc(vec![NetAddress {
            id: good_id.clone(),
            ip: "example.com".into(),
            port: 1,
        }]);
        assert_eq!(decode(&bad_ip), Err(PexViolation::BadAddress));
        let bad_port = enc(vec![NetAddress {
            id: good_id.clone(),
            ip: "1.1.1.1".into(),
            port: 70000,
        }]);
        assert_eq!(decode(&bad_port), Err(PexViolation::BadAddress));
        let bad_id = enc(vec![NetAddress {
            id: "zz".into(),
            ip: "1.1.1.1".into(),
            port: 1,
        }]);
        assert_eq!(decode(&bad_id), Ok(PexMsg::Addrs(vec![])));
        let many = enc((0..251)
            .map(|_| NetAddress {
                id: good_id.clone(),
                ip: "1.1.1.1".into(),
                port: 1,
            })
            .collect());
        assert_eq!(decode(&many), Err(PexViolation::TooManyAddrs(251)));
        assert_eq!(decode(&[0xff, 0xff]), Err(PexViolation::Malformed));
        assert_eq!(decode(&[]), Err(PexViolation::Malformed));
        assert_eq!(
            decode(&vec![0u8; 64_001]),
            Err(PexViolation::TooLarge(64_001))
        );
    }

    #[test]
    fn rate_limit_follows_spec() {
        let t0 = Instant::now();
        let min = Duration::from_secs(10);
        let mut p = PexPeer::default();
        assert!(p.on_request(t0, min).is_ok());
        assert!(p.on_request(t0, min).is_ok());
        assert_eq!(
            p.on_request(t0 + Duration::from_secs(9), min),
            Err(PexViolation::TooFrequentRequests)
        );
        let mut p = PexPeer::default();
        for i in 0..5u64 {
            assert!(p.on_request(t0 + Duration::from_secs(10 * i), min).is_ok());
        }
    }

    #[test]
    fn one_outstanding_request() {
        let mut p = PexPeer::default();
        assert_eq!(p.on_addrs(), Err(PexViolation::UnsolicitedAddrs));
        let t0 = Instant::now();
        assert!(p.start_request(t0));
        assert!(
            !p.start_request(t0 + Duration::from_secs(60)),
            "one outstanding at a time"
        );
        p.on_addrs().unwrap();
        assert!(
            !p.start_request(t0 + MIN_REQUEST_INTERVAL - Duration::from_millis(1)),
            "a CometBFT peer bans a request sooner than 10 s after the previous one"
        );
        assert!(p.start_request(t0 + MIN_REQUEST_INTERVAL));
        assert!(p.on_addrs().is_ok());
        assert_eq!(p.on_addrs(), Err(PexViolation::UnsolicitedAddrs));
    }
}
