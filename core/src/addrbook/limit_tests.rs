//! Each bound of the book crossed by one: reached and kept in memory, refused one over when
//! loading a file (see `docs/limits.md`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::{
    AddrBook, AddrBookConfig, Ban, DecodeError, GoodOutcome, MAX_BANS, MAX_NEW_REFS,
    MAX_SAVED_PER_BAN, MAX_TRIED_COLLISIONS,
};
use crate::addr::NetAddr;
use crate::ids::NodeId;

const T0: u64 = 1_700_000_000;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A routable IPv4 address derived from `n`, in a distinct /16 group for each `n < 23040`.
fn ip(n: u32) -> IpAddr {
    let (a, b) = (n % 90, n / 90 % 256);
    IpAddr::V4(Ipv4Addr::new(1 + a as u8, b as u8, 0, 7))
}

fn node(n: u32) -> NodeId {
    let mut id = [0u8; 20];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id[19] = 1;
    NodeId(id)
}

fn ban_record(n: u32, until: u64, saved: usize) -> Ban {
    Ban {
        id: node(n),
        ip: Some(ip(n)),
        until,
        saved: (0..saved as u32)
            .map(|k| {
                let a = NetAddr::new(node(n), SocketAddr::new(ip(n + k), 26656));
                (a, ip(n))
            })
            .collect(),
    }
}

fn book_with_bans(bans: impl IntoIterator<Item = Ban>) -> AddrBook {
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut rng(1));
    book.bans = bans.into_iter().collect();
    book.rebuild_ban_maps();
    book
}

#[test]
fn ban_list_is_capped_at_max_bans() {
    let mut book =
        book_with_bans((0..MAX_BANS as u32).map(|n| ban_record(n, T0 + 10 + u64::from(n), 0)));
    book.check().unwrap();
    let newcomer = node(1 << 30);
    assert!(book.ban(newcomer, ip(1 << 30), T0));
    assert_eq!(book.bans.len(), MAX_BANS);
    // The record expiring first made room; every other one holds.
    assert!(!book.is_banned(&node(0), &ip(0), T0));
    assert!(book.is_banned(&node(1), &ip(1), T0));
    assert!(book.is_banned(&newcomer, &ip(7), T0));
    book.check().unwrap();
}

#[test]
fn decode_refuses_more_than_max_bans() {
    let at_limit = book_with_bans((0..MAX_BANS as u32).map(|n| ban_record(n, T0, 0)));
    let loaded = AddrBook::decode(&at_limit.encode(), AddrBookConfig::default()).unwrap();
    assert_eq!(loaded.bans.len(), MAX_BANS);
    let over = book_with_bans((0..=MAX_BANS as u32).map(|n| ban_record(n, T0, 0)));
    assert!(over.check().is_err());
    assert_eq!(
        AddrBook::decode(&over.encode(), AddrBookConfig::default()).err(),
        Some(DecodeError::Corrupt("counts out of range"))
    );
}

#[test]
fn a_ban_saves_at_most_max_saved_per_ban_entries() {
    let mut r = rng(2);
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut r);
    let id = node(42);
    let victims = MAX_SAVED_PER_BAN as u32 + 1;
    for k in 0..victims {
        let a = NetAddr::new(id, SocketAddr::new(ip(1000 + k), 26656));
        book.add(a, ip(1000 + k), T0, &mut r).unwrap();
    }
    assert_eq!(book.len(), victims as usize);
    assert!(book.ban(id, ip(9), T0));
    assert_eq!(book.len(), 0);
    assert_eq!(book.bans[0].saved.len(), MAX_SAVED_PER_BAN);
    book.check().unwrap();
}

#[test]
fn decode_refuses_a_ban_saving_more_than_max_saved_per_ban() {
    let at_limit = book_with_bans([ban_record(5, T0, MAX_SAVED_PER_BAN)]);
    let loaded = AddrBook::decode(&at_limit.encode(), AddrBookConfig::default()).unwrap();
    assert_eq!(loaded.bans[0].saved.len(), MAX_SAVED_PER_BAN);
    let over = book_with_bans([ban_record(5, T0, MAX_SAVED_PER_BAN + 1)]);
    assert!(over.check().is_err());
    assert_eq!(
        AddrBook::decode(&over.encode(), AddrBookConfig::default()).err(),
        Some(DecodeError::Corrupt("too many saved entries in a ban"))
    );
}

#[test]
fn new_references_stop_at_max_new_refs() {
    let mut r = rng(3);
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut r);
    let a = NetAddr::new(node(7), SocketAddr::new(ip(7), 26656));
    for n in 0..20_000 {
        let _ = book.add(a, ip(r.next_u32() | n), T0, &mut r);
    }
    assert_eq!(
        book.new_buckets_of(&a.addr).len(),
        usize::from(MAX_NEW_REFS)
    );
    book.check().unwrap();
}

/// An entry with several references that loses its anchor's slot to a newcomer names another
/// of its buckets as anchor; promoting it then clears every remaining reference.
#[test]
fn losing_the_anchor_slot_keeps_the_other_references() {
    let mut r = rng(3);
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut r);
    let a = NetAddr::new(node(7), SocketAddr::new(ip(7), 26656));
    for n in 0..20_000 {
        let _ = book.add(a, ip(r.next_u32() | n), T0, &mut r);
    }
    let before = book.new_buckets_of(&a.addr);
    assert_eq!(before.len(), usize::from(MAX_NEW_REFS));
    let idx = book.idx_of(&a.addr).unwrap();
    let anchor = usize::from(book.entry(idx).unwrap().anchor().unwrap());
    let target = book.new_pos(anchor, &a.addr);
    // A newcomer whose keyed slot is the anchor's (one position in 65 536: a bounded search).
    let (c, src) = (0..2_000_000u32)
        .map(|n| {
            let c = NetAddr::new(
                node(100_000 + n),
                SocketAddr::new(ip(n % 20_000), 1000 + n as u16 % 50_000),
            );
            (c, ip(r.next_u32() % 20_000))
        })
        .find(|(c, src)| book.new_pos(book.new_bucket(&c.addr, src), &c.addr) == target)
        .expect("a colliding newcomer within the bound");
    book.add(c, src, T0, &mut r).unwrap();
    let after = book.new_buckets_of(&a.addr);
    let expected: Vec<usize> = before.iter().copied().filter(|&b| b != anchor).collect();
    assert_eq!(after, expected, "the anchor's reference alone went");
    let new_anchor = book.entry(idx).unwrap().anchor().map(usize::from);
    assert!(new_anchor.is_some_and(|b| after.contains(&b)));
    book.check_full().unwrap();
    assert_eq!(
        book.mark_good(a.addr, T0 + 1, &mut r),
        GoodOutcome::Promoted
    );
    assert!(book.new_buckets_of(&a.addr).is_empty());
    book.check_full().unwrap();
    assert_eq!(book.new_buckets_of(&c.addr).len(), 1);
}

#[test]
fn tried_collisions_are_capped_at_max_tried_collisions() {
    let mut r = rng(4);
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut r);
    // One /16 group reaches only 8 tried buckets (512 slots): 2000 promotions must collide.
    let mut collisions = 0;
    for n in 0..2000u32 {
        let [_, _, hi, lo] = n.to_be_bytes();
        let a = NetAddr::new(
            node(n),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(5, 5, hi, lo)), 26656),
        );
        if book.add(a, ip(n), T0, &mut r).is_err() {
            continue;
        }
        if let GoodOutcome::Collision { .. } = book.mark_good(a.addr, T0, &mut r) {
            collisions += 1;
        }
    }
    assert!(collisions > MAX_TRIED_COLLISIONS, "{collisions}");
    assert_eq!(book.len_collisions(), MAX_TRIED_COLLISIONS);
    book.check().unwrap();
}

/// A file whose (correctly checksummed) header claims one entry more than it holds is refused
/// before anything is reserved for the claim.
#[test]
fn decode_refuses_an_entry_count_one_above_the_content() {
    use sha2::{Digest, Sha256};
    let mut r = rng(5);
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut r);
    for n in 0..3 {
        let a = NetAddr::new(node(n), SocketAddr::new(ip(100 + n), 26656));
        book.add(a, ip(100 + n), T0, &mut r).unwrap();
    }
    let file = book.encode();
    let reloaded = AddrBook::decode(&file, AddrBookConfig::default()).unwrap();
    assert_eq!(reloaded.len(), 3);
    // The new-entry count sits after magic, versions, key, group map and geometry.
    const N_NEW: usize = 8 + 1 + 1 + 16 + 3 + 6;
    let mut body = file[..file.len() - 32].to_vec();
    assert_eq!(body[N_NEW..N_NEW + 4], 3u32.to_be_bytes());
    body[N_NEW..N_NEW + 4].copy_from_slice(&4u32.to_be_bytes());
    let sum = Sha256::digest(&body);
    body.extend_from_slice(&sum);
    assert!(matches!(
        AddrBook::decode(&body, AddrBookConfig::default()),
        Err(DecodeError::Corrupt(_))
    ));
}
