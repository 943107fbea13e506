//! One entry of the book, packed: the entry slab is the largest part of a book, and a simulator
//! holds thousands of books (10 000 books of ~850 entries each at 10 000 simulated nodes).
//!
//! An address keeps its 16 IP bytes, its port and a family flag (18 bytes, where a `SocketAddr`
//! takes 32 for its IPv6 flow info and scope id, which the wire never carries); the source IP
//! takes 4 bytes: an IPv4 source itself, an IPv6 one as a handle into the book's pool
//! ([`super::sources`]); times are `u32` seconds
//! (until 2106; later times saturate). Of its new-table
//! references the entry keeps only their count and one of their buckets, the *anchor*: most
//! entries have one reference, and the others are found in the table when they are needed
//! (see [`super::AddrBook::new_buckets`]). 76 bytes where the unpacked form took 144.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{MAX_NEW_REFS, UnixTime};
use crate::addr::NetAddr;
use crate::ids::NodeId;

const ADDR_V4: u8 = 1;
const SOURCE_V4: u8 = 2;

/// A time of the book in 32 bits: [`UnixTime`] seconds, saturating at `u32::MAX` (year 2106).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Stamp(u32);

impl Stamp {
    /// "Never".
    pub(super) const NEVER: Stamp = Stamp(0);

    /// `t`, saturated.
    pub(super) fn at(t: UnixTime) -> Stamp {
        Stamp(u32::try_from(t).unwrap_or(u32::MAX))
    }

    /// The time in seconds (`0`: never).
    pub(super) fn get(self) -> UnixTime {
        UnixTime::from(self.0)
    }
}

/// The 16 bytes of `ip` (IPv4 as IPv4-mapped IPv6) and whether it is IPv4.
#[inline]
fn pack(ip: IpAddr) -> ([u8; 16], bool) {
    match ip {
        IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), true),
        IpAddr::V6(v6) => (v6.octets(), false),
    }
}

#[inline]
fn unpack(octets: [u8; 16], v4: bool) -> IpAddr {
    if v4 {
        let [.., a, b, c, d] = octets;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    } else {
        IpAddr::V6(Ipv6Addr::from(octets))
    }
}
#[inline]
fn octets_of(octets: &[u8; 16], v4: bool) -> &[u8] {
    if v4 { &octets[12..] } else { &octets[..] }
}

/// An IP:port in the entries' packed form, to compare many entries with (IPv6 flow info and
/// scope id are not part of it).
pub(super) struct Spot {
    ip: [u8; 16],
    v4: bool,
    port: u16,
}

impl Spot {
    /// The packed form of `addr`.
    #[inline]
    pub(super) fn of(addr: &SocketAddr) -> Spot {
        let (ip, v4) = pack(addr.ip());
        Spot {
            ip,
            v4,
            port: addr.port(),
        }
    }
}

/// A book entry (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The node id expected at the address.
    pub(super) id: NodeId,
    ip: [u8; 16],
    /// With [`SOURCE_V4`]: the IPv4 source; else its handle in the book's pool.
    source: u32,
    port: u16,
    /// [`ADDR_V4`] and [`SOURCE_V4`].
    flags: u8,
    refs: u8,
    tried: bool,
    /// A new bucket referencing the entry, when `refs > 0` (see the module documentation).
    anchor: u16,
    /// Last time we heard of the address (add) or connected to it.
    pub(super) last_seen: Stamp,
    pub(super) last_attempt: Stamp,
    pub(super) last_success: Stamp,
    pub(super) last_count_attempt: Stamp,
    /// Failed attempts counted (see [`Entry::attempts`]), saturating.
    attempts: u16,
    /// Position in `new_list` or `tried_list`.
    pub(super) list_pos: u32,
    /// Next entry with the same IP, or `EMPTY` (see [`super::index`]).
    pub(super) next_same_ip: u32,
}

impl Entry {
    /// A fresh entry for `addr`, in neither table yet, never attempted; its source is its own
    /// IP until the book sets it.
    pub(super) fn new(addr: NetAddr, last_seen: UnixTime) -> Entry {
        let (ip, ip4) = pack(addr.addr.ip());
        Entry {
            id: addr.id,
            ip,
            source: super::sources::OWN,
            port: addr.addr.port(),
            flags: if ip4 { ADDR_V4 } else { 0 },
            refs: 0,
            tried: false,
            anchor: 0,
            last_seen: Stamp::at(last_seen),
            last_attempt: Stamp::NEVER,
            last_success: Stamp::NEVER,
            last_count_attempt: Stamp::NEVER,
            attempts: 0,
            list_pos: 0,
            next_same_ip: super::EMPTY,
        }
    }

    /// The node id and address.
    #[inline]
    pub(super) fn addr(&self) -> NetAddr {
        NetAddr {
            id: self.id,
            addr: self.socket(),
        }
    }

    /// The IP:port.
    #[inline]
    pub(super) fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.ip(), self.port)
    }

    /// The IP.
    #[inline]
    pub(super) fn ip(&self) -> IpAddr {
        unpack(self.ip, self.flags & ADDR_V4 != 0)
    }

    /// The IP's bytes as persisted: 4 for IPv4, 16 for IPv6.
    #[inline]
    pub(super) fn ip_octets(&self) -> &[u8] {
        octets_of(&self.ip, self.flags & ADDR_V4 != 0)
    }

    /// The port.
    #[inline]
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Whether the entry is at `spot`.
    #[inline]
    pub(super) fn is_at(&self, spot: &Spot) -> bool {
        self.port == spot.port && self.ip == spot.ip && (self.flags & ADDR_V4 != 0) == spot.v4
    }

    /// Whether the entry's IP is `ip`.
    #[inline]
    pub(super) fn has_ip(&self, ip: IpAddr) -> bool {
        let (octets, v4) = pack(ip);
        self.ip == octets && (self.flags & ADDR_V4 != 0) == v4
    }

    /// Whether the entry is in the tried table.
    #[inline]
    pub(super) fn tried(&self) -> bool {
        self.tried
    }

    /// Moves the entry to the tried table's bookkeeping (`true`) or the new one's.
    pub(super) fn set_tried(&mut self, tried: bool) {
        self.tried = tried;
    }

    /// Failed attempts counted since the last success.
    pub(super) fn attempts(&self) -> u32 {
        u32::from(self.attempts)
    }

    /// Sets the attempt count (saturating at `u16::MAX`, far above every threshold).
    pub(super) fn set_attempts(&mut self, n: u32) {
        self.attempts = u16::try_from(n).unwrap_or(u16::MAX);
    }

    /// The source: an IPv4 address, or the handle of an IPv6 one in the book's pool.
    #[inline]
    pub(super) fn source(&self) -> Result<Ipv4Addr, u32> {
        if self.flags & SOURCE_V4 != 0 {
            Ok(Ipv4Addr::from(self.source))
        } else {
            Err(self.source)
        }
    }

    /// Sets an IPv4 source.
    pub(super) fn set_source_v4(&mut self, ip: Ipv4Addr) {
        self.flags |= SOURCE_V4;
        self.source = u32::from(ip);
    }

    /// Sets the pool handle of the source.
    pub(super) fn set_source_handle(&mut self, handle: u32) {
        self.flags &= !SOURCE_V4;
        self.source = handle;
    }

    /// Number of new-table references (0 when tried).
    #[inline]
    pub(super) fn new_refs(&self) -> u8 {
        self.refs
    }

    /// A new bucket referencing the entry, if any.
    #[inline]
    pub(super) fn anchor(&self) -> Option<u16> {
        (self.refs > 0).then_some(self.anchor)
    }

    /// Records a reference from new bucket `b`; `false` (and nothing recorded) when the entry
    /// already holds [`MAX_NEW_REFS`].
    pub(super) fn push_bucket(&mut self, b: u16) -> bool {
        if self.refs >= MAX_NEW_REFS {
            return false;
        }
        if self.refs == 0 {
            self.anchor = b;
        }
        self.refs += 1;
        true
    }

    /// Forgets the reference from new bucket `b`. Returns true when `b` was the anchor and
    /// references remain: the caller then names another with [`Entry::set_anchor`].
    pub(super) fn remove_bucket(&mut self, b: u16) -> bool {
        if self.refs == 0 {
            return false;
        }
        self.refs -= 1;
        self.refs > 0 && self.anchor == b
    }

    /// Names `b`, which references the entry, as its anchor.
    pub(super) fn set_anchor(&mut self, b: u16) {
        self.anchor = b;
    }

    /// Forgets every new-table reference.
    pub(super) fn clear_buckets(&mut self) {
        self.refs = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 20])
    }

    #[test]
    fn packed_size() {
        assert_eq!(std::mem::size_of::<Entry>(), 76);
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 76);
    }

    /// Every family reads back as given, IPv4-mapped IPv6 included.
    #[test]
    fn addresses_read_back() {
        let ips: [IpAddr; 4] = [
            "1.2.3.4".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "::ffff:1.2.3.4".parse().unwrap(),
            "::".parse().unwrap(),
        ];
        for &ip in &ips {
            let a = NetAddr {
                id: id(7),
                addr: SocketAddr::new(ip, 26656),
            };
            let e = Entry::new(a, 5);
            assert_eq!(e.addr(), a);
            assert!(e.is_at(&Spot::of(&a.addr)));
            assert!(e.has_ip(ip));
            for &other in ips.iter().filter(|&&o| o != ip) {
                assert!(!e.has_ip(other), "{ip} is not {other}");
            }
            assert!(!e.is_at(&Spot::of(&SocketAddr::new(ip, 26657))));
        }
    }

    #[test]
    fn scope_and_flow_info_are_not_part_of_the_key() {
        let scoped: SocketAddr = "[fe80::1%3]:26656".parse().unwrap();
        let e = Entry::new(
            NetAddr {
                id: id(1),
                addr: scoped,
            },
            0,
        );
        assert_eq!(e.socket(), SocketAddr::new(scoped.ip(), scoped.port()));
        assert!(e.is_at(&Spot::of(&scoped)));
    }

    #[test]
    fn stamps_saturate_after_2106() {
        const MAX_STAMP: UnixTime = u32::MAX as UnixTime;
        assert_eq!(Stamp::at(1_700_000_000).get(), 1_700_000_000);
        assert_eq!(Stamp::at(MAX_STAMP).get(), MAX_STAMP);
        assert_eq!(Stamp::at(MAX_STAMP + 1).get(), MAX_STAMP);
        assert_eq!(Stamp::at(u64::MAX).get(), MAX_STAMP);
        assert_eq!(Stamp::NEVER.get(), 0);
    }

    /// References count up to the limit; the anchor is the first bucket until it is removed.
    #[test]
    fn references_up_to_the_limit() {
        let mut e = Entry::new(
            NetAddr {
                id: id(2),
                addr: "1.2.3.4:1".parse().unwrap(),
            },
            0,
        );
        assert_eq!(e.anchor(), None);
        for b in 0..u16::from(MAX_NEW_REFS) {
            assert!(e.push_bucket(b * 3 + 1));
        }
        assert!(!e.push_bucket(999), "a ninth reference is refused");
        assert_eq!((e.new_refs(), e.anchor()), (MAX_NEW_REFS, Some(1)));
        assert!(!e.remove_bucket(4), "not the anchor");
        assert!(e.remove_bucket(1), "the anchor, with references left");
        e.set_anchor(7);
        assert_eq!((e.new_refs(), e.anchor()), (MAX_NEW_REFS - 2, Some(7)));
        e.clear_buckets();
        assert_eq!((e.new_refs(), e.anchor()), (0, None));
        assert!(!e.remove_bucket(7));
        assert!(e.push_bucket(9));
        assert!(
            !e.remove_bucket(9),
            "the last reference leaves no anchor to name"
        );
        e.set_tried(true);
        assert!(e.tried());
        e.set_tried(false);
        assert!(!e.tried());
    }
}
