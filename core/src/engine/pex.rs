//! The PEX reactor: message encoding, the per-peer rules (spec 5.2: request rate limiting and
//! the "one outstanding request" bookkeeping, `PexPeer`) and the node-wide part, `Pex`, which
//! owns one `PexPeer` per connection, the seeds and the seed crawler's records, and decides the
//! ensure-peers picks (spec 5.4-5.7). The engine feeds it decoded messages and injected time
//! and carries out the dials and sends it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hashbrown::HashMap;
use prost::Message as _;
use rand_core::RngCore;

use crate::addr::NetAddr;
use crate::addrbook::{AddrBook, Group};
use crate::ids::{ConnId, NodeId};
use crate::wire::CodecError;
use crate::wire::limits::MAX_PEX_ADDRS;
use crate::wire::messages::{WireError, decode_pex_message};
use crate::wire::proto::{PexMessage, PexRequest, pex_message};

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
///
/// Written field by field, as prost writes the `PexMessage` (test
/// `encode_addrs_writes_what_prost_writes`), without two formatted strings per address: a seed
/// writes a reply of up to 250 addresses for every node that asks.
pub(crate) fn encode_addrs(addrs: &[NetAddr]) -> Bytes {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let mut body: Vec<u8> = Vec::with_capacity(addrs.len().min(MAX_PEX_ADDRS) * 64);
    let mut ip = String::with_capacity(45);
    for a in addrs.iter().take(MAX_PEX_ADDRS) {
        ip.clear();
        write_ip(&mut ip, a.addr.ip());
        let port = u64::from(a.addr.port());
        // NetAddress: id (1), ip (2), port (3); proto3 leaves out an empty or zero field.
        let port_len = if port == 0 {
            0
        } else {
            1 + encoded_len_varint(port)
        };
        let ip_len = if ip.is_empty() {
            0
        } else {
            1 + encoded_len_varint(ip.len() as u64) + ip.len()
        };
        let len = 2 + 40 + ip_len + port_len;
        body.push(0x0a); // PexAddrs.addrs (1), length-delimited
        encode_varint(len as u64, &mut body);
        body.extend_from_slice(&[0x0a, 40]);
        body.extend_from_slice(&a.id.hex());
        if !ip.is_empty() {
            body.push(0x12);
            encode_varint(ip.len() as u64, &mut body);
            body.extend_from_slice(ip.as_bytes());
        }
        if port != 0 {
            body.push(0x18);
            encode_varint(port, &mut body);
        }
    }
    // PexMessage.sum = PexAddrs (2), length-delimited.
    let mut out = Vec::with_capacity(1 + encoded_len_varint(body.len() as u64) + body.len());
    out.push(0x12);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// Appends `ip` as `IpAddr`'s `Display` writes it (dotted decimal without a formatter for
/// IPv4, the common case).
fn write_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
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

/// The first early ensure-peers pass after a pass that left the node short of its outbound
/// target; each further one waits twice as long (see [`Pex::next_short_retry`]).
pub(crate) const SHORT_RETRY_FIRST: Duration = Duration::from_secs(2);

/// At most this many early passes follow one another before the node waits for its regular
/// ensure-peers period (2 + 4 + 8 + 16 s: all within CometBFT's 30 s period).
pub(crate) const SHORT_RETRY_MAX: u32 = 4;

/// How soon after a peer's PEX addresses arrive a node short of its outbound target runs an
/// ensure-peers pass (replies that arrive meanwhile are dialled in the same pass).
pub(crate) const ADDRS_PASS_DELAY: Duration = Duration::from_millis(500);

/// At most this many crawl records are kept in seed mode.
pub(crate) const MAX_CRAWL_RECORDS: usize = 65_536;

/// The PEX reactor's node-wide state and decisions (spec 5.4-5.7): the per-peer PEX state of
/// every connection, the seeds, the seed crawler's records, and the ensure-peers choices. It
/// does not dial or send: its decisions return the addresses to dial or the connection to ask,
/// and the engine carries them out.
#[derive(Debug)]
pub(crate) struct Pex {
    /// Per-connection PEX state, from the connection's start to its end.
    peers: BTreeMap<ConnId, PexPeer>,
    /// The configured seeds (dialled in a fresh random order each time).
    seeds: Vec<NetAddr>,
    /// The outbound target (`max_num_outbound_peers`).
    max_outbound: usize,
    /// Seed mode: the least time between two crawls of one address.
    min_time_between_crawls: Duration,
    /// Seed mode: when each address was last crawled. Only looked up and pruned, never
    /// iterated for a decision, so a hash map (a seed asks it about every candidate it walks).
    crawled: HashMap<SocketAddr, Instant>,
    /// Early ensure-peers passes run since the node last had its outbound target.
    short_retries: u32,
    /// When a seed last answered us (node side).
    seed_answered_at: Option<Instant>,
    /// Seed mode: the dials in progress when the engine last looked (see
    /// [`Pex::dials_dropped`]).
    seen_dials: usize,
    /// Groups where a peer broke a PEX rule provably, with the end of their suspicion (the
    /// ban's end): ensure-peers dials them only when no other group offers a candidate (G17).
    /// At most [`MAX_SUSPECT_GROUPS`].
    suspect: BTreeMap<Group, Instant>,
}

/// Most groups [`Pex`] keeps as suspect; when full, the one whose suspicion ends first goes.
pub(crate) const MAX_SUSPECT_GROUPS: usize = 64;

impl Pex {
    /// A reactor with `seeds`, the outbound target and the crawl spacing.
    pub(crate) fn new(
        seeds: Vec<NetAddr>,
        max_outbound: usize,
        min_time_between_crawls: Duration,
    ) -> Pex {
        Pex {
            peers: BTreeMap::new(),
            seeds,
            max_outbound,
            min_time_between_crawls,
            crawled: HashMap::new(),
            short_retries: 0,
            seed_answered_at: None,
            seen_dials: 0,
            suspect: BTreeMap::new(),
        }
    }

    /// Starts the PEX state of a new connection.
    pub(crate) fn add_conn(&mut self, id: ConnId) {
        self.peers.insert(id, PexPeer::default());
    }

    /// Drops the PEX state of a connection that is gone.
    pub(crate) fn remove_conn(&mut self, id: ConnId) {
        self.peers.remove(&id);
    }

    /// The PEX state of connection `id`.
    pub(crate) fn peer(&self, id: ConnId) -> Option<&PexPeer> {
        self.peers.get(&id)
    }

    /// The PEX state of connection `id`, mutable.
    pub(crate) fn peer_mut(&mut self, id: ConnId) -> Option<&mut PexPeer> {
        self.peers.get_mut(&id)
    }

    /// How many automatic dials ensure-peers wants: the outbound target less the outbound
    /// peers (`out`) and the dials in progress.
    pub(crate) fn need(&self, out: usize, dialing: usize) -> usize {
        self.max_outbound.saturating_sub(out + dialing)
    }

    /// Marks `group` suspect until `until`: a peer there broke a PEX rule provably (G17). An
    /// attacker's stealthy nodes share its groups with its misbehaving ones, and G7 already
    /// keeps a second outbound peer out of the group; this keeps the group's other addresses
    /// last in line for the rest of the ban. The caller passes routable groups only (peers on
    /// loopback or a LAN share one group).
    pub(crate) fn suspect_group(&mut self, group: Group, until: Instant) {
        if let Some(u) = self.suspect.get_mut(&group) {
            *u = (*u).max(until);
            return;
        }
        if self.suspect.len() >= MAX_SUSPECT_GROUPS {
            let first = self
                .suspect
                .iter()
                .min_by_key(|(_, u)| **u)
                .map(|(g, _)| *g);
            if let Some(g) = first {
                self.suspect.remove(&g);
            }
        }
        self.suspect.insert(group, until);
    }

    /// Forgets suspicions that ended by `now`; returns the groups still suspect.
    pub(crate) fn suspect_groups(&mut self, now: Instant) -> BTreeSet<Group> {
        self.suspect.retain(|_, u| *u > now);
        self.suspect.keys().copied().collect()
    }

    /// [`pick_dials`](Self::pick_dials) that avoids the groups in `suspect` first: only when
    /// fewer than `need` picks come from other groups does a second pass allow them.
    pub(crate) fn pick_dials_avoiding(
        book: &AddrBook,
        rng: &mut impl RngCore,
        unix: u64,
        need: usize,
        groups: BTreeSet<Group>,
        suspect: &BTreeSet<Group>,
        dialable: impl Fn(&NetAddr) -> bool,
    ) -> Vec<NetAddr> {
        if suspect.is_subset(&groups) {
            return Self::pick_dials(book, rng, unix, need, groups, dialable);
        }
        let mut avoid = groups.clone();
        avoid.extend(suspect.iter().copied());
        let mut picked = Self::pick_dials(book, rng, unix, need, avoid, &dialable);
        if picked.len() < need {
            let mut taken = groups;
            taken.extend(picked.iter().map(|a| book.group_of(&a.addr.ip())));
            let more = Self::pick_dials(book, rng, unix, need - picked.len(), taken, &dialable);
            picked.extend(more);
        }
        picked
    }

    /// Picks up to `need` addresses from `book` to dial (spec 5.4, G7): each from a group not
    /// in `groups` (the groups of automatic peers and dials, extended with each pick), none
    /// sharing a node id or an IP with another pick, every one accepted by `dialable`; at most
    /// `3 * need + 16` draws.
    pub(crate) fn pick_dials(
        book: &AddrBook,
        rng: &mut impl RngCore,
        unix: u64,
        need: usize,
        mut groups: BTreeSet<Group>,
        dialable: impl Fn(&NetAddr) -> bool,
    ) -> Vec<NetAddr> {
        let mut picked: Vec<NetAddr> = Vec::new();
        let tries = 3 * need + 16;
        for _ in 0..tries {
            if picked.len() >= need {
                break;
            }
            let picked_ref = &picked;
            let Some(a) = book.pick(unix, rng, |a: &NetAddr| {
                let ip = a.addr.ip();
                !picked_ref.iter().any(|p| p.id == a.id || p.addr.ip() == ip) && dialable(a)
            }) else {
                continue;
            };
            if !groups.insert(book.group_of(&a.addr.ip())) {
                continue;
            }
            picked.push(a);
        }
        picked
    }

    /// The one peer ensure-peers asks for addresses: drawn uniformly among `askable`.
    pub(crate) fn choose_request(askable: &[ConnId], rng: &mut impl RngCore) -> Option<ConnId> {
        if askable.is_empty() {
            return None;
        }
        let n = askable.len() as u64;
        let i = usize::try_from(rng.next_u64() % n).unwrap_or(0);
        askable.get(i).copied()
    }

    /// The seeds in a fresh random order (spec 5.6: dialled in this order until one dial
    /// starts or one is connected or being dialled already).
    pub(crate) fn seed_order(&self, rng: &mut impl RngCore) -> Vec<NetAddr> {
        let mut seeds = self.seeds.clone();
        // Fisher-Yates.
        for i in (1..seeds.len()).rev() {
            let j = usize::try_from(rng.next_u64() % (i as u64 + 1)).unwrap_or(0);
            seeds.swap(i, j);
        }
        seeds
    }

    /// A pass left the node short of its outbound target (a seed answered with too few
    /// addresses, or nothing was left to dial): how long until an early pass, doubling from
    /// [`SHORT_RETRY_FIRST`], or `None` once [`SHORT_RETRY_MAX`] early passes ran (the regular
    /// period takes over). A node starting from young seeds is not held a whole period per
    /// step; one whose seeds have nothing for it dials them at most four more times.
    pub(crate) fn next_short_retry(&mut self) -> Option<Duration> {
        if self.short_retries >= SHORT_RETRY_MAX {
            return None;
        }
        let delay = SHORT_RETRY_FIRST * (1 << self.short_retries);
        self.short_retries += 1;
        Some(delay)
    }

    /// The node has its outbound target: the next shortfall starts again from
    /// [`SHORT_RETRY_FIRST`].
    pub(crate) fn target_reached(&mut self) {
        self.short_retries = 0;
    }

    /// A seed's addresses arrived at `now`.
    pub(crate) fn seed_answered(&mut self, now: Instant) {
        self.seed_answered_at = Some(now);
    }

    /// Whether a seed answered us less than `period` before `now`.
    pub(crate) fn seed_answered_within(&self, now: Instant, period: Duration) -> bool {
        self.seed_answered_at
            .is_some_and(|t| now.saturating_duration_since(t) < period)
    }

    /// Records `dials`, the dials in progress now; true if fewer than when last recorded (a
    /// dial ended since, so the seed's crawler has room for the next one).
    pub(crate) fn dials_dropped(&mut self, dials: usize) -> bool {
        let dropped = dials < self.seen_dials;
        self.seen_dials = dials;
        dropped
    }

    /// The most crawl dials in flight at once.
    pub(crate) fn max_crawl_inflight(&self) -> usize {
        self.max_outbound.max(1) * 3
    }

    /// Whether `addr` may be crawled at `now`: not crawled within `min_time_between_crawls`.
    pub(crate) fn crawl_due(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.crawled
            .get(addr)
            .is_none_or(|t| now.saturating_duration_since(*t) >= self.min_time_between_crawls)
    }

    /// Whether another crawl record fits ([`MAX_CRAWL_RECORDS`]).
    pub(crate) fn crawl_records_full(&self) -> bool {
        self.crawled.len() >= MAX_CRAWL_RECORDS
    }

    /// Records a crawl dial to `addr` at `now`.
    pub(crate) fn record_crawl(&mut self, addr: SocketAddr, now: Instant) {
        self.crawled.insert(addr, now);
    }

    /// Forgets the crawl of `addr` (crawled again at the next pass).
    pub(crate) fn forget_crawl(&mut self, addr: &SocketAddr) {
        self.crawled.remove(addr);
    }

    /// Forgets crawl records older than a day.
    pub(crate) fn expire_crawls(&mut self, now: Instant) {
        let day = Duration::from_secs(24 * 3600);
        self.crawled
            .retain(|_, t| now.saturating_duration_since(*t) < day);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test needs some Instant as its origin
mod tests {
    use super::*;
    use crate::wire::proto::{NetAddress, PexAddrs};

    #[test]
    fn request_encodes_as_spec() {
        assert_eq!(&encode_request()[..], &[0x0a, 0x00]);
        assert_eq!(decode(&[0x0a, 0x00]), Ok(PexMsg::Request));
    }

    /// The hand-written encoder gives prost's bytes: IPv4 and IPv6 (mapped, scoped, short),
    /// ports of one to three varint bytes and zero (left out), none to 300 addresses (250 kept).
    #[test]
    fn encode_addrs_writes_what_prost_writes() {
        let prost_bytes = |addrs: &[NetAddr]| {
            let addrs = addrs
                .iter()
                .take(MAX_PEX_ADDRS)
                .map(|a| NetAddress {
                    id: a.id.to_string(),
                    ip: a.addr.ip().to_string(),
                    port: u32::from(a.addr.port()),
                })
                .collect();
            PexMessage {
                sum: Some(pex_message::Sum::PexAddrs(PexAddrs { addrs })),
            }
            .encode_to_vec()
        };
        let ips = [
            "0.0.0.0",
            "1.2.3.4",
            "10.99.100.255",
            "255.255.255.255",
            "::",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:1.2.3.4",
            "fe80::1",
        ];
        let ports = [0u16, 1, 127, 128, 16_383, 16_384, 26_656, 65_535];
        let mut all = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            for (j, port) in ports.iter().enumerate() {
                let mut id = [0u8; 20];
                id[0] = u8::try_from(i).unwrap();
                id[1] = u8::try_from(j).unwrap();
                id[19] = 0xab;
                let addr = SocketAddr::new(ip.parse().unwrap(), *port);
                all.push(NetAddr::new(NodeId(id), addr));
            }
        }
        let many: Vec<NetAddr> = all.iter().cycle().take(300).copied().collect();
        for addrs in [&[][..], &all[..1], &all[..], &many[..]] {
            assert_eq!(&encode_addrs(addrs)[..], &prost_bytes(addrs)[..]);
        }
        for a in &all {
            assert_eq!(&encode_addrs(&[*a])[..], &prost_bytes(&[*a])[..], "{a:?}");
        }
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod reactor_tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::addrbook::AddrBookConfig;

    fn addr(n: u8, ip: [u8; 4]) -> NetAddr {
        NetAddr::new(NodeId([n; 20]), SocketAddr::from((ip, 26656)))
    }

    fn pex() -> Pex {
        let seeds = (1..=5).map(|n| addr(n, [1, n, 0, 1])).collect();
        Pex::new(seeds, 4, Duration::from_secs(60))
    }

    #[test]
    fn short_retries_double_and_stop_until_the_target_is_reached() {
        let mut p = pex();
        let delays: Vec<Option<Duration>> = (0..6).map(|_| p.next_short_retry()).collect();
        let s = Duration::from_secs;
        assert_eq!(
            delays,
            vec![Some(s(2)), Some(s(4)), Some(s(8)), Some(s(16)), None, None]
        );
        p.target_reached();
        assert_eq!(p.next_short_retry(), Some(SHORT_RETRY_FIRST));
    }

    #[test]
    fn dials_dropped_only_when_fewer_than_last_seen() {
        let mut p = pex();
        assert!(!p.dials_dropped(3));
        assert!(!p.dials_dropped(3));
        assert!(p.dials_dropped(2));
        assert!(!p.dials_dropped(5));
        assert!(p.dials_dropped(0));
    }

    #[test]
    fn need_is_the_outbound_target_less_peers_and_dials() {
        let p = pex();
        assert_eq!(p.need(0, 0), 4);
        assert_eq!(p.need(1, 2), 1);
        assert_eq!(p.need(3, 3), 0);
        assert_eq!(p.max_crawl_inflight(), 12);
    }

    #[test]
    fn per_connection_state_lives_with_the_connection() {
        let mut p = pex();
        let c = ConnId(9);
        assert!(p.peer(c).is_none());
        p.add_conn(c);
        assert!(
            p.peer_mut(c)
                .is_some_and(|s| s.start_request(Instant::now()))
        );
        assert!(p.peer(c).is_some_and(|s| s.outstanding));
        p.remove_conn(c);
        assert!(p.peer(c).is_none());
    }

    #[test]
    fn seed_order_is_a_seeded_permutation() {
        let p = pex();
        let a = p.seed_order(&mut ChaCha20Rng::from_seed([1; 32]));
        let b = p.seed_order(&mut ChaCha20Rng::from_seed([1; 32]));
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_by_key(|s| s.id);
        assert_eq!(sorted, p.seeds);
        // Some seed draws another order (5! orders; three draws all equal would be a bug).
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let others = [
            p.seed_order(&mut rng),
            p.seed_order(&mut rng),
            p.seed_order(&mut rng),
        ];
        assert!(others.iter().any(|o| *o != a));
    }

    #[test]
    fn choose_request_draws_among_the_askable() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        assert_eq!(Pex::choose_request(&[], &mut rng), None);
        let askable = [ConnId(1), ConnId(2), ConnId(3)];
        for _ in 0..20 {
            let c = Pex::choose_request(&askable, &mut rng).expect("one");
            assert!(askable.contains(&c));
        }
    }

    #[test]
    fn crawl_records_space_crawls_and_expire() {
        let now = Instant::now();
        let mut p = pex();
        let a = addr(1, [2, 0, 0, 1]).addr;
        assert!(p.crawl_due(&a, now));
        p.record_crawl(a, now);
        assert!(!p.crawl_due(&a, now + Duration::from_secs(59)));
        assert!(p.crawl_due(&a, now + Duration::from_secs(60)));
        p.forget_crawl(&a);
        assert!(p.crawl_due(&a, now));
        p.record_crawl(a, now);
        p.expire_crawls(now + Duration::from_secs(24 * 3600 - 1));
        assert!(!p.crawl_due(&a, now));
        p.expire_crawls(now + Duration::from_secs(24 * 3600));
        assert!(p.crawl_due(&a, now));
        assert!(!p.crawl_records_full());
    }

    #[test]
    fn suspect_groups_are_dialled_last_expire_and_are_bounded() {
        let unix = 1_700_000_000;
        let t0 = Instant::now();
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let mut book = AddrBook::new(AddrBookConfig::default(), &mut rng);
        // One address in each of four /16 groups.
        for g in 1..=4u8 {
            let a = addr(g, [40 + g, 1, 1, 1]);
            book.add(a, IpAddr::from([9, g, 1, 1]), unix, &mut rng)
                .expect("added");
        }
        let group = |g: u8| book.group_of(&IpAddr::from([40 + g, 1, 1, 1]));
        let mut p = pex();
        p.suspect_group(group(1), t0 + Duration::from_secs(60));
        p.suspect_group(group(2), t0 + Duration::from_secs(60));
        let suspect = p.suspect_groups(t0);
        assert_eq!(suspect, BTreeSet::from([group(1), group(2)]));
        // Two wanted: both come from the groups nobody misbehaved in.
        for _ in 0..20 {
            let picked = Pex::pick_dials_avoiding(
                &book,
                &mut rng,
                unix,
                2,
                BTreeSet::new(),
                &suspect,
                |_| true,
            );
            let got: BTreeSet<Group> = picked.iter().map(|a| book.group_of(&a.addr.ip())).collect();
            assert_eq!(got, BTreeSet::from([group(3), group(4)]));
        }
        // Four wanted: the suspect groups fill what the others cannot.
        let picked =
            Pex::pick_dials_avoiding(&book, &mut rng, unix, 4, BTreeSet::new(), &suspect, |_| {
                true
            });
        assert_eq!(picked.len(), 4);
        // Suspicion ends with the ban.
        assert!(p.suspect_groups(t0 + Duration::from_secs(60)).is_empty());
        // Bounded: the one ending first makes room.
        for n in 0..=MAX_SUSPECT_GROUPS as u16 {
            let g = book.group_of(&IpAddr::from([
                60,
                (n % 250) as u8 + 1,
                1,
                (n / 250) as u8 + 1,
            ]));
            p.suspect_group(g, t0 + Duration::from_secs(100 + u64::from(n)));
        }
        let left = p.suspect_groups(t0);
        assert_eq!(left.len(), MAX_SUSPECT_GROUPS);
        assert!(!left.contains(&book.group_of(&IpAddr::from([60, 1, 1, 1]))));
    }

    #[test]
    fn pick_dials_takes_distinct_groups_and_respects_the_filter() {
        let unix = 1_700_000_000;
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let mut book = AddrBook::new(AddrBookConfig::default(), &mut rng);
        // Two addresses in each of twenty /16 groups (a rare slot collision only drops one).
        let mut added = BTreeSet::new();
        for g in 1..=20u8 {
            for h in 1..=2u8 {
                let a = addr(g * 10 + h, [30 + g, 1, h, 1]);
                let src = IpAddr::from([9, g, h, 1]);
                if book.add(a, src, unix, &mut rng).is_ok() {
                    added.insert(book.group_of(&a.addr.ip()));
                }
            }
        }
        assert!(added.len() >= 10, "the book holds enough groups");
        let banned_group = book.group_of(&IpAddr::from([31, 1, 1, 1]));
        let taken = book.group_of(&IpAddr::from([32, 1, 1, 1]));
        let picked = Pex::pick_dials(&book, &mut rng, unix, 5, BTreeSet::from([taken]), |a| {
            book.group_of(&a.addr.ip()) != banned_group
        });
        assert_eq!(picked.len(), 5);
        let groups: BTreeSet<Group> = picked.iter().map(|a| book.group_of(&a.addr.ip())).collect();
        assert_eq!(groups.len(), 5, "one pick per group");
        assert!(!groups.contains(&banned_group));
        assert!(!groups.contains(&taken));
        // Nothing dialable: nothing picked, within the bounded number of draws.
        let none = Pex::pick_dials(&book, &mut rng, unix, 5, BTreeSet::new(), |_| false);
        assert!(none.is_empty());
    }
}
