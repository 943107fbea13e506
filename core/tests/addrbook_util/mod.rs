//! Shared helpers for the address-book tests: deterministic ids, addresses and books.
#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use cometmesh_core::NodeId;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{AddrBook, AddrBookConfig, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A fixed start time (2023-11-14) so "0 = never" never collides with real times.
pub const T0: UnixTime = 1_700_000_000;

/// A seeded RNG.
pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A random node id.
pub fn id(rng: &mut impl RngCore) -> NodeId {
    let mut b = [0u8; 20];
    rng.fill_bytes(&mut b);
    NodeId(b)
}

/// A routable IPv4 address in group `a.b/16` with random host bits.
pub fn ip_in(a: u8, b: u8, rng: &mut impl RngCore) -> IpAddr {
    let h = rng.next_u32().to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(a, b, h[0], h[1]))
}

/// A random routable IPv4 address (first octet 1..=99, avoiding every private range).
pub fn random_ip(rng: &mut impl RngCore) -> IpAddr {
    let h = rng.next_u32().to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(1 + h[0] % 99, h[1], h[2], h[3]))
}

/// A random peer address at `ip` on port 26656.
pub fn netaddr(ip: IpAddr, rng: &mut impl RngCore) -> NetAddr {
    NetAddr::new(id(rng), SocketAddr::new(ip, 26656))
}

/// A book with the default configuration and a key drawn from `seed`.
pub fn book(seed: u64) -> AddrBook {
    AddrBook::new(AddrBookConfig::default(), &mut rng(seed))
}
