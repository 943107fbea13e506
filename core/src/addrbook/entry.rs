//! One entry of the book, packed: the entry slab is the largest part of a book, and a simulator
//! holds thousands of books (100 000 books of ~1 400 entries each at 100 000 simulated nodes).
//!
//! An entry's IP takes 4 bytes: an IPv4 address itself, an IPv6 one as a handle into the book's
//! pool ([`super::v6pool`]), so reading it back takes the pool. Its source IP takes 4 bytes the
//! same way. Times are `u32` seconds (until 2106; later times saturate). Of its new-table
//! references the entry keeps only their count and one of their buckets, the *anchor*: most
//! entries have one reference, and the others are found in the table when they are needed
//! (see [`super::AddrBook::new_buckets`]). 60 bytes where the unpacked form took 144.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::v6pool::{OWN, V6Pool};
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

/// An IP in the entries' packed form: an IPv4 address, or the pool handle of an IPv6 one. An
/// IPv6 address is interned once, so two packed IPs are equal exactly when their IPs are
/// (IPv4 and IPv4-mapped IPv6 differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PackedIp {
    bits: u32,
    v4: bool,
}

impl PackedIp {
    /// The packed form of `ip` if the pool can give it without a new slot (always for IPv4;
    /// `None` for an IPv6 address the pool does not hold, which no entry has then).
    #[inline]
    pub(super) fn find(ip: IpAddr, pool: &V6Pool) -> Option<PackedIp> {
        match ip {
            IpAddr::V4(v4) => Some(PackedIp {
                bits: u32::from(v4),
                v4: true,
            }),
            IpAddr::V6(v6) => pool.find(v6).map(|bits| PackedIp { bits, v4: false }),
        }
    }

    /// The packed form of `ip`, interning an IPv6 address (one more user of its slot, given
    /// back by [`PackedIp::release`]).
    pub(super) fn intern(ip: IpAddr, pool: &mut V6Pool) -> PackedIp {
        match ip {
            IpAddr::V4(v4) => PackedIp {
                bits: u32::from(v4),
                v4: true,
            },
            IpAddr::V6(v6) => PackedIp {
                bits: pool.intern(v6),
                v4: false,
            },
        }
    }

    /// Gives back the user [`PackedIp::intern`] counted.
    pub(super) fn release(self, pool: &mut V6Pool) {
        if !self.v4 {
            pool.release(self.bits);
        }
    }

    /// The IP (the unspecified IPv6 address for a handle the pool does not hold, which `check`
    /// rules out for a live entry).
    #[inline]
    pub(super) fn unpack(self, pool: &V6Pool) -> IpAddr {
        if self.v4 {
            IpAddr::V4(Ipv4Addr::from(self.bits))
        } else {
            IpAddr::V6(
                pool.get(self.bits)
                    .unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
            )
        }
    }

    /// The pool handle of an IPv6 address.
    pub(super) fn handle(self) -> Option<u32> {
        (!self.v4).then_some(self.bits)
    }
}

/// A book entry (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The node id expected at the address.
    pub(super) id: NodeId,
    /// With [`ADDR_V4`]: the IPv4 address; else its handle in the book's pool.
    ip: u32,
    /// With [`SOURCE_V4`]: the IPv4 source; else its handle in the book's pool, or [`OWN`].
    source: u32,
    port: u16,
    /// [`ADDR_V4`] and [`SOURCE_V4`].
    flags: u8,
    refs: u8,
    tried: bool,
    /// Failed attempts counted (see [`Entry::attempts`]), saturating.
    attempts: u8,
    /// A new bucket referencing the entry, when `refs > 0` (see the module documentation).
    anchor: u16,
    /// Last time we heard of the address (add) or connected to it.
    pub(super) last_seen: Stamp,
    pub(super) last_attempt: Stamp,
    pub(super) last_success: Stamp,
    pub(super) last_count_attempt: Stamp,
    /// Position in `new_list` or `tried_list`.
    pub(super) list_pos: u32,
    /// Next entry with the same IP, or `EMPTY` (see [`super::index`]).
    pub(super) next_same_ip: u32,
}

impl Entry {
    /// A fresh entry for node `id` at `port`, in neither table yet, never attempted; the book
    /// sets its IP ([`Entry::set_ip`]) and its source (its own IP until then).
    pub(super) fn new(id: NodeId, port: u16, last_seen: UnixTime) -> Entry {
        Entry {
            id,
            ip: 0,
            source: OWN,
            port,
            flags: ADDR_V4,
            refs: 0,
            tried: false,
            attempts: 0,
            anchor: 0,
            last_seen: Stamp::at(last_seen),
            last_attempt: Stamp::NEVER,
            last_success: Stamp::NEVER,
            last_count_attempt: Stamp::NEVER,
            list_pos: 0,
            next_same_ip: super::EMPTY,
        }
    }

    /// The IP in packed form.
    #[inline]
    pub(super) fn packed_ip(&self) -> PackedIp {
        PackedIp {
            bits: self.ip,
            v4: self.flags & ADDR_V4 != 0,
        }
    }

    /// Sets the IP, which the book interned for the entry.
    pub(super) fn set_ip(&mut self, ip: PackedIp) {
        self.ip = ip.bits;
        self.flags = (self.flags & !ADDR_V4) | if ip.v4 { ADDR_V4 } else { 0 };
    }

    /// The node id and address.
    #[inline]
    pub(super) fn addr(&self, pool: &V6Pool) -> NetAddr {
        NetAddr {
            id: self.id,
            addr: self.socket(pool),
        }
    }

    /// The IP:port.
    #[inline]
    pub(super) fn socket(&self, pool: &V6Pool) -> SocketAddr {
        SocketAddr::new(self.ip(pool), self.port)
    }

    /// The IP.
    #[inline]
    pub(super) fn ip(&self, pool: &V6Pool) -> IpAddr {
        self.packed_ip().unpack(pool)
    }

    /// The port.
    #[inline]
    pub(super) fn port(&self) -> u16 {
        self.port
    }

    /// Whether the entry is at `ip` (packed) and `port`.
    #[inline]
    pub(super) fn is_at(&self, ip: PackedIp, port: u16) -> bool {
        self.port == port && self.packed_ip() == ip
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

    /// Sets the attempt count (saturating at `u8::MAX`, far above every threshold).
    pub(super) fn set_attempts(&mut self, n: u32) {
        self.attempts = u8::try_from(n).unwrap_or(u8::MAX);
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

    /// The source IP (the entry's own IP for a self-announcement, or for a handle the pool
    /// does not hold, which `check` rules out).
    pub(super) fn source_ip(&self, pool: &V6Pool) -> IpAddr {
        match self.source() {
            Ok(v4) => IpAddr::V4(v4),
            Err(h) if h == OWN => self.ip(pool),
            Err(h) => pool.get(h).map_or_else(|| self.ip(pool), IpAddr::V6),
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
        assert_eq!(std::mem::size_of::<Entry>(), 60);
        assert_eq!(std::mem::size_of::<Option<Entry>>(), 60);
    }

    /// Every family reads back as given, IPv4-mapped IPv6 included, and packed IPs are equal
    /// exactly when the IPs are.
    #[test]
    fn addresses_read_back() {
        let ips: [IpAddr; 5] = [
            "1.2.3.4".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "::ffff:1.2.3.4".parse().unwrap(),
            "::".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
        ];
        let mut pool = V6Pool::default();
        for &ip in &ips {
            let a = NetAddr {
                id: id(7),
                addr: SocketAddr::new(ip, 26656),
            };
            let packed = PackedIp::intern(ip, &mut pool);
            let mut e = Entry::new(a.id, a.addr.port(), 5);
            e.set_ip(packed);
            assert_eq!(e.addr(&pool), a);
            assert_eq!(PackedIp::find(ip, &pool), Some(packed));
            assert!(e.is_at(packed, 26656));
            assert!(!e.is_at(packed, 26657));
            for &other in ips.iter().filter(|&&o| o != ip) {
                let o = PackedIp::intern(other, &mut pool);
                assert_ne!(o, packed, "{ip} is not {other}");
                o.release(&mut pool);
            }
        }
        assert_eq!(pool.len(), 3, "the IPv6 addresses only, each once");
        let v6 = ips[1];
        let p = PackedIp::find(v6, &pool).unwrap();
        assert_eq!(PackedIp::intern(v6, &mut pool), p, "interned once");
        p.release(&mut pool);
        p.release(&mut pool);
        assert_eq!(PackedIp::find(v6, &pool), None, "freed with its last user");
        assert_eq!(p.unpack(&pool), IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
    }

    /// A source reads back from the entry, the pool or the entry's own IP.
    #[test]
    fn sources_read_back() {
        let mut pool = V6Pool::default();
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let packed = PackedIp::intern(ip, &mut pool);
        let mut e = Entry::new(id(3), 1, 0);
        e.set_ip(packed);
        assert_eq!(e.source_ip(&pool), ip, "a fresh entry names itself");
        e.set_source_v4("8.8.8.8".parse().unwrap());
        assert_eq!(e.source_ip(&pool), "8.8.8.8".parse::<IpAddr>().unwrap());
        let src: std::net::Ipv6Addr = "2001:db8::9".parse().unwrap();
        e.set_source_handle(pool.intern(src));
        assert_eq!(e.source_ip(&pool), IpAddr::V6(src));
        e.set_source_handle(OWN);
        assert_eq!(e.source_ip(&pool), ip);
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
        let ip = PackedIp::find("1.2.3.4".parse().unwrap(), &V6Pool::default()).unwrap();
        let mut e = Entry::new(id(2), 1, 0);
        e.set_ip(ip);
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
