//! Address groups (the unit of bucket confinement) and routability (spec 6.3, 6.10).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The network group of an IP address: all addresses of one group share the same few buckets.
///
/// IPv4 (and IPv4 embedded in IPv6 by RFC 6145/6052, 6to4 or Teredo) is grouped by its first
/// `ipv4_group_bits` bits (default /16), other IPv6 by its first `ipv6_group_bits` (default /32).
/// In strict mode every loopback or `0.0.0.0/8` address is in the single group [`Group::Local`]
/// and every other non-routable one in [`Group::Unroutable`] (as CometBFT's `groupKey`). Outside
/// strict mode (a private or local network) a non-routable address is a group of its own, the
/// whole host address: there is no network-level adversary to confine there, and a /16 would put
/// a whole private LAN in one group, leaving it one automatic outbound peer (G7).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Group {
    /// Loopback or `0.0.0.0/8` (strict mode only).
    Local,
    /// Any other non-routable address (strict mode only).
    Unroutable,
    /// An IPv4 prefix (host bits zeroed).
    V4([u8; 4]),
    /// An IPv6 prefix (host bits zeroed).
    V6([u8; 16]),
}

impl Group {
    /// The group as two integers, ordered as the group itself: a tag, then the prefix read
    /// big-endian. Sorting by it compares integers where comparing groups compares bytes.
    pub(crate) fn sort_key(&self) -> (u8, u128) {
        match self {
            Group::Local => (0, 0),
            Group::Unroutable => (1, 0),
            Group::V4(p) => (2, u128::from(u32::from_be_bytes(*p))),
            Group::V6(p) => (3, u128::from_be_bytes(*p)),
        }
    }

    /// Bytes fed to the keyed placement hash: a tag, then the prefix.
    pub(crate) fn hash_bytes(&self, out: &mut [u8; 17]) -> usize {
        match self {
            Group::Local => {
                out[0] = 0;
                1
            }
            Group::Unroutable => {
                out[0] = 1;
                1
            }
            Group::V4(p) => {
                out[0] = 4;
                out[1..5].copy_from_slice(p);
                5
            }
            Group::V6(p) => {
                out[0] = 6;
                out[1..17].copy_from_slice(p);
                17
            }
        }
    }
}

fn mask<const N: usize>(bytes: [u8; N], bits: u8) -> [u8; N] {
    let mut out = [0u8; N];
    let bits = usize::from(bits).min(N * 8);
    for (i, b) in bytes.iter().enumerate() {
        let lo = i * 8;
        if bits >= lo + 8 {
            out[i] = *b;
        } else if bits > lo {
            let keep = bits - lo;
            out[i] = b & (0xffu8 << (8 - keep));
        }
    }
    out
}

/// The IPv4 address carried inside an IPv6 one (mapped, RFC 6052, 6to4, Teredo), if any.
fn embedded_v4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    let o = ip.octets();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    // RFC 6145 ::ffff:0:0:0/96 and RFC 6052 64:ff9b::/96.
    let rfc6145 = o[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0];
    let rfc6052 = o[..12] == [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
    if rfc6145 || rfc6052 {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if o[0] == 0x20 && o[1] == 0x02 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    if o[..4] == [0x20, 0x01, 0, 0] {
        return Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]));
    }
    None
}

/// The group of `ip` (see [`Group`]).
pub(crate) fn group_of(ip: &IpAddr, strict: bool, v4_bits: u8, v6_bits: u8) -> Group {
    if strict {
        if is_local(ip) {
            return Group::Local;
        }
        if !is_routable(ip) {
            return Group::Unroutable;
        }
    } else if !is_routable(ip) {
        return match ip {
            IpAddr::V4(v4) => Group::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Group::V4(v4.octets()),
                None => Group::V6(v6.octets()),
            },
        };
    }
    match ip {
        IpAddr::V4(v4) => Group::V4(mask(v4.octets(), v4_bits)),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => Group::V4(mask(v4.octets(), v4_bits)),
            None => Group::V6(mask(v6.octets(), v6_bits)),
        },
    }
}

fn is_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local(&IpAddr::V4(v4)),
            None => v6.is_loopback(),
        },
    }
}

/// CometBFT's `Valid()`: not unspecified, not 2001:db8::/32 (documentation), not broadcast.
pub(crate) fn is_valid(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_valid(&IpAddr::V4(v4));
            }
            let o = v6.octets();
            !v6.is_unspecified() && o[..4] != [0x20, 0x01, 0x0d, 0xb8]
        }
    }
}

/// Spec 6.10: valid and outside RFC 1918, 3927, 4862, 4193, 4843, loopback and `0.0.0.0/8`.
/// CGNAT (100.64/10) and multicast are routable, as in CometBFT.
pub(crate) fn is_routable(ip: &IpAddr) -> bool {
    if !is_valid(ip) || is_local(ip) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let rfc1918 =
                o[0] == 10 || (o[0] == 172 && (o[1] & 0xf0) == 16) || (o[0] == 192 && o[1] == 168);
            let rfc3927 = o[0] == 169 && o[1] == 254;
            !rfc1918 && !rfc3927
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_routable(&IpAddr::V4(v4));
            }
            let o = v6.octets();
            let rfc4862 = o[..8] == [0xfe, 0x80, 0, 0, 0, 0, 0, 0];
            let rfc4193 = (o[0] & 0xfe) == 0xfc;
            let rfc4843 = o[0] == 0x20 && o[1] == 0x01 && o[2] == 0x00 && (o[3] & 0xf0) == 0x10;
            !rfc4862 && !rfc4193 && !rfc4843
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn routability_follows_spec_6_10() {
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.1",
            "192.168.1.1",
            "169.254.3.4",
            "127.0.0.1",
            "0.1.2.3",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "2001:10::1",
            "::1",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::",
        ] {
            assert!(!is_routable(&ip(s)), "{s} must not be routable");
        }
        for s in [
            "1.2.3.4",
            "100.64.0.1",
            "172.32.0.1",
            "224.0.0.1",
            "2a01::1",
            "2001:470::1",
        ] {
            assert!(is_routable(&ip(s)), "{s} must be routable");
        }
    }

    #[test]
    fn private_hosts_are_their_own_group_outside_strict_mode() {
        let g = |s: &str, strict| group_of(&s.parse().unwrap(), strict, 16, 32);
        assert_ne!(g("10.0.0.1", false), g("10.0.0.2", false));
        assert_ne!(g("127.0.0.1", false), g("127.0.0.2", false));
        assert_ne!(g("fd00::1", false), g("fd00::2", false));
        assert_eq!(g("10.0.0.1", true), g("10.0.0.2", true));
        assert_eq!(g("127.0.0.1", true), g("127.0.0.2", true));
        // Routable addresses keep their prefix groups whatever the mode.
        assert_eq!(g("8.8.4.4", false), g("8.8.8.8", false));
        assert_eq!(g("8.8.4.4", false), g("8.8.4.4", true));
    }

    #[test]
    fn groups_are_prefixes() {
        let g = |s: &str| group_of(&ip(s), true, 16, 32);
        assert_eq!(g("1.2.3.4"), g("1.2.200.9"));
        assert_ne!(g("1.2.3.4"), g("1.3.3.4"));
        assert_eq!(g("1.2.3.4"), g("::ffff:1.2.9.9"));
        assert_eq!(g("1.2.3.4"), g("2002:0102:0304::1"));
        assert_eq!(g("2a01:1:2::1"), g("2a01:1:ffff::1"));
        assert_ne!(g("2a01:1::1"), g("2a01:2::1"));
        assert_eq!(g("127.0.0.1"), Group::Local);
        assert_eq!(g("10.0.0.1"), Group::Unroutable);
        assert_eq!(
            group_of(&ip("10.1.2.3"), false, 16, 32),
            Group::V4([10, 1, 2, 3])
        );
        assert_eq!(
            group_of(&ip("1.2.3.4"), true, 8, 32),
            Group::V4([1, 0, 0, 0])
        );
        assert_eq!(
            group_of(&ip("1.2.3.4"), true, 12, 32),
            Group::V4([1, 0, 0, 0])
        );
        assert_eq!(
            group_of(&ip("1.18.3.4"), true, 12, 32),
            Group::V4([1, 16, 0, 0])
        );
    }
}
