//! The address-book goals of peer-management.md section 4 as deterministic tests.
//!
//! The counts the goals state (10^6 addresses, draws, flips) are used at full scale for one key
//! and scaled down for the others (noted at each test), so the file runs in a few seconds in a
//! debug build.

mod addrbook_util;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use addrbook_util::*;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{
    AddOutcome, AddRejected, AddrBook, AddrBookConfig, GoodOutcome, MAX_SELECTION, NEW_BUCKETS,
};
use rand_core::RngCore;

const KEYS: [u64; 3] = [1, 2, 3];

/// G1: everything learned from one source group lands in ≤ 64 new buckets.
/// 10^6 random addresses for the first key, 40,000 for the others (64 buckets × 64 slots fill up
/// long before).
#[test]
fn g1_source_group_confined_to_64_new_buckets() {
    for key in KEYS {
        let mut r = rng(100 + key);
        let mut b = book(key);
        let mut buckets = BTreeSet::new();
        let n = if key == KEYS[0] { 1_000_000 } else { 40_000 };
        for _ in 0..n {
            let a = netaddr(random_ip(&mut r), &mut r);
            let src = ip_in(77, 7, &mut r);
            if b.add(a, src, T0, &mut r).is_ok() {
                buckets.extend(b.new_buckets_of(&a.addr));
            }
        }
        assert!(buckets.len() <= 64, "key {key}: {} buckets", buckets.len());
        assert!(
            buckets.len() >= 60,
            "key {key}: only {} buckets reached",
            buckets.len()
        );
        assert!(b.len_new() <= 64 * 64);
        b.check().unwrap();
        // Many source groups spread over far more than 64 buckets.
        let mut b = book(key);
        let mut spread = BTreeSet::new();
        for i in 0..2000u32 {
            let a = netaddr(random_ip(&mut r), &mut r);
            let src = ip_in(1 + (i % 250) as u8, (i / 250) as u8, &mut r);
            if b.add(a, src, T0, &mut r).is_ok() {
                spread.extend(b.new_buckets_of(&a.addr));
            }
        }
        assert!(spread.len() > 64 * 4, "key {key}: {} buckets", spread.len());
    }
}

/// G2: one address group reaches ≤ 8 tried buckets; one (address group, source group) pair
/// maps to exactly one new bucket.
#[test]
fn g2_group_confinement() {
    for key in KEYS {
        let mut r = rng(200 + key);
        let b = book(key);
        let mut tried = BTreeSet::new();
        let mut new = BTreeSet::new();
        for _ in 0..5000 {
            let ip = ip_in(88, 9, &mut r);
            let port = 1 + (r.next_u32() % 65535) as u16;
            let a = SocketAddr::new(ip, port);
            tried.insert(b.tried_bucket(&a));
            new.insert(b.new_bucket(&a, &ip_in(99, 1, &mut r)));
        }
        // 8 hash values taken mod 256 may coincide, as in Bitcoin's test (≤ 8).
        assert!((6..=8).contains(&tried.len()), "key {key}: {}", tried.len());
        assert_eq!(new.len(), 1, "key {key}");
        // In an actual book: promote many addresses of one group; ≤ 8 tried buckets used.
        let mut b = book(key);
        let mut used = BTreeSet::new();
        for _ in 0..2000 {
            let a = netaddr(ip_in(88, 9, &mut r), &mut r);
            let src = random_ip(&mut r);
            if b.add(a, src, T0, &mut r).is_ok()
                && b.mark_good(a.addr, T0, &mut r) == GoodOutcome::Promoted
            {
                used.insert(b.tried_bucket_of(&a.addr).unwrap());
            }
        }
        assert!(used.len() <= 8 && b.len_tried() <= 8 * 64, "key {key}");
        b.check().unwrap();
    }
}

/// G3: placement depends on the key (≤ 0.5 % of 10^4 addresses keep their new bucket across
/// keys) and is reproduced exactly after encode/decode.
#[test]
fn g3_key_secrecy_and_reload() {
    let mut r = rng(300);
    let (b1, b2) = (book(1), book(2));
    let mut same = 0;
    for _ in 0..10_000 {
        let a = SocketAddr::new(random_ip(&mut r), 26656);
        let s = random_ip(&mut r);
        if b1.new_bucket(&a, &s) == b2.new_bucket(&a, &s) {
            same += 1;
        }
    }
    assert!(same <= 50, "{same} of 10^4 kept their bucket");
    assert_ne!(b1.key(), b2.key());

    let mut b = book(3);
    let mut addrs = Vec::new();
    for i in 0..3000 {
        let a = netaddr(random_ip(&mut r), &mut r);
        if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
            if i % 3 == 0 {
                let _ = b.mark_good(a.addr, T0 + 1, &mut r);
            }
            // Extra references from other sources.
            for _ in 0..3 {
                let _ = b.add(a, random_ip(&mut r), T0 + 2, &mut r);
            }
            addrs.push(a.addr);
        }
    }
    let d = AddrBook::decode(&b.encode(), AddrBookConfig::default()).unwrap();
    assert_eq!(d.key(), b.key());
    for a in &addrs {
        assert_eq!(d.new_buckets_of(a), b.new_buckets_of(a));
        assert_eq!(d.tried_bucket_of(a), b.tried_bucket_of(a));
    }
    assert_eq!(d.encode(), b.encode());
    d.check().unwrap();
}

/// G4: flooding never deletes a non-terrible honest entry and never touches tried.
/// Full scale for the first key (20,000 honest offers, 10^6 attacker addresses from 1,000 source
/// groups); 8,000 and 200,000 for the other two.
#[test]
fn g4_flooding_deletes_no_honest_entry() {
    for key in KEYS {
        let mut r = rng(400 + key);
        let mut b = book(key);
        let mut honest = Vec::new();
        let (n_honest, n_attack) = if key == KEYS[0] {
            (20_000, 1_000_000)
        } else {
            (8000, 200_000)
        };
        for i in 0..n_honest {
            let a = netaddr(random_ip(&mut r), &mut r);
            if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
                if i % 8 == 0 && b.mark_good(a.addr, T0, &mut r) != GoodOutcome::Promoted {
                    continue;
                }
                honest.push(a.addr);
            }
        }
        let tried_before: Vec<_> = b.entries().filter(|e| e.1).collect();
        let now = T0 + 3600;
        let mut attacker = 0usize;
        for i in 0..n_attack {
            let a = netaddr(IpAddr::V4(Ipv4Addr::from(0x6400_0000 + i * 7)), &mut r);
            let g = (i % 1000) as u16;
            let src = IpAddr::V4(Ipv4Addr::new(150 + (g / 250) as u8, (g % 250) as u8, 1, 1));
            if b.add(a, src, now, &mut r).is_ok() {
                attacker += 1;
            }
        }
        for a in &honest {
            assert!(b.contains(a), "key {key}: honest {a} deleted");
        }
        let tried_after: Vec<_> = b.entries().filter(|e| e.1).collect();
        assert_eq!(tried_before, tried_after, "key {key}: tried changed");
        // The attacker only got slots that were free.
        assert!(attacker <= NEW_BUCKETS * 64 - (honest.len() - tried_after.len()));
        b.check().unwrap();
    }
}

/// G5: one entry per IP:port whatever the announced ids; ≤ 4 ports per IP; an id change never
/// rewrites a tried entry.
#[test]
fn g5_identity_flooding() {
    let mut r = rng(500);
    let mut b = book(1);
    let sock: SocketAddr = "8.8.4.4:26656".parse().unwrap();
    let first = NetAddr::new(id(&mut r), sock);
    assert_eq!(b.add(first, sock.ip(), T0, &mut r), Ok(AddOutcome::Added));
    for _ in 0..10_000 {
        let a = NetAddr::new(id(&mut r), sock);
        assert!(b.add(a, random_ip(&mut r), T0, &mut r).is_ok());
    }
    assert_eq!(b.len(), 1);
    assert_eq!(b.get(&sock), Some(first));
    for port in 2..=4u16 {
        let a = NetAddr::new(id(&mut r), SocketAddr::new(sock.ip(), port));
        assert_eq!(b.add(a, sock.ip(), T0, &mut r), Ok(AddOutcome::Added));
    }
    let fifth = NetAddr::new(id(&mut r), SocketAddr::new(sock.ip(), 5));
    assert_eq!(
        b.add(fifth, sock.ip(), T0, &mut r),
        Err(AddRejected::TooManyPorts)
    );
    assert_eq!(b.mark_good(sock, T0, &mut r), GoodOutcome::Promoted);
    let impostor = NetAddr::new(id(&mut r), sock);
    assert_eq!(
        b.add(impostor, sock.ip(), T0 + 5, &mut r),
        Ok(AddOutcome::Known)
    );
    assert_eq!(b.get(&sock), Some(first));
    assert!(b.is_tried(&sock));
    b.check().unwrap();
}

/// G8: with both tables non-empty, 50 % ± 1 % of 10^5 picks come from tried, whatever the
/// table sizes; the bias is configurable.
#[test]
fn g8_tried_new_balance() {
    for (n_new, n_tried, bias) in [(3000, 50, 50u8), (200, 2000, 50), (1000, 1000, 30)] {
        let mut r = rng(800);
        let cfg = AddrBookConfig {
            tried_bias_percent: bias,
            ..AddrBookConfig::default()
        };
        let mut b = AddrBook::new(cfg, &mut r);
        let mut i = 0;
        while b.len_tried() < n_tried {
            let a = netaddr(random_ip(&mut r), &mut r);
            if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
                let _ = b.mark_good(a.addr, T0 - 5 * 3600, &mut r);
            }
            i += 1;
            assert!(i < 100_000);
        }
        while b.len_new() < n_new {
            let a = netaddr(random_ip(&mut r), &mut r);
            let _ = b.add(a, random_ip(&mut r), T0, &mut r);
        }
        let mut from_tried = 0;
        let draws = 100_000;
        for _ in 0..draws {
            let a = b.pick(T0, &mut r, |_| true).unwrap();
            if b.is_tried(&a.addr) {
                from_tried += 1;
            }
        }
        let share = f64::from(from_tried) / f64::from(draws);
        let want = f64::from(bias) / 100.0;
        assert!(
            (share - want).abs() <= 0.01,
            "{n_new}/{n_tried}: tried share {share}"
        );
    }
}

/// G9: an entry attempted within 10 min is picked ≤ 1/50 as often as an average untried one.
/// (100 recent entries in a 10^4 book and 10^6 draws, so the recent ones get enough draws to
/// measure.)
#[test]
fn g9_recency_penalty() {
    let mut r = rng(900);
    let mut b = book(9);
    let mut all = Vec::new();
    while b.len() < 10_000 {
        let a = netaddr(random_ip(&mut r), &mut r);
        if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
            all.push(a.addr);
        }
    }
    let now = T0 + 3600;
    let recent: BTreeSet<SocketAddr> = all.iter().take(100).copied().collect();
    for a in &recent {
        b.mark_attempt(*a, now - 120);
    }
    let (mut hits_recent, mut hits_other) = (0u64, 0u64);
    for _ in 0..1_000_000 {
        let a = b.pick(now, &mut r, |_| true).unwrap();
        if recent.contains(&a.addr) {
            hits_recent += 1;
        } else {
            hits_other += 1;
        }
    }
    let per_recent = hits_recent as f64 / 100.0;
    let per_other = hits_other as f64 / 9_900.0;
    assert!(
        per_recent <= per_other / 50.0,
        "recent {per_recent} vs other {per_other}"
    );
    // Without the attempt, they are picked like everyone else: the test can fail.
    assert!(per_other > 80.0);
}

/// Finds two addresses whose tried slots collide: promote many from one group.
fn collide(b: &mut AddrBook, r: &mut impl RngCore, t: u64) -> (SocketAddr, SocketAddr) {
    loop {
        let a = netaddr(ip_in(91, 3, r), r);
        if b.add(a, random_ip(r), t, r).is_err() {
            continue;
        }
        if let GoodOutcome::Collision { incumbent } = b.mark_good(a.addr, t, r) {
            return (a.addr, incumbent.addr);
        }
    }
}

/// G11: test-before-evict. A live incumbent is never displaced; a dead one is swapped after a
/// failed test; an unresolved collision is forced after 40 min; ≤ 10 collisions are buffered.
#[test]
fn g11_test_before_evict() {
    let mut r = rng(1100);
    // Live incumbent: succeeded 1 h ago.
    let mut b = book(11);
    let (newcomer, incumbent) = collide(&mut b, &mut r, T0);
    let now = T0 + 3600;
    let _ = b.mark_good(incumbent, now - 60, &mut r);
    for k in 0..100 {
        b.resolve_collisions(now + k * 600);
        assert!(b.is_tried(&incumbent), "live incumbent displaced");
        let _ = b.mark_good(incumbent, now + k * 600, &mut r);
        b.check().unwrap();
    }
    assert!(!b.is_tried(&newcomer));

    // Dead incumbent: last success 5 h ago, tested (failed) 2 min ago: swapped, kept in new.
    let mut b = book(12);
    let (newcomer, incumbent) = collide(&mut b, &mut r, T0);
    let now = T0 + 5 * 3600;
    assert_eq!(
        b.tried_collision_to_test(&mut r).map(|a| a.addr),
        Some(incumbent)
    );
    b.mark_failed(incumbent, now - 120);
    assert_eq!(b.resolve_collisions(now), 1);
    assert!(b.is_tried(&newcomer));
    assert!(b.contains(&incumbent) && !b.is_tried(&incumbent));
    b.check().unwrap();

    // Untested for 40 min and silent for 4 h: forced swap.
    let mut b = book(13);
    let (newcomer, incumbent) = collide(&mut b, &mut r, T0 - 6 * 3600);
    // The incumbent is live at that time: the collision is dropped, nothing moves.
    assert_eq!(b.resolve_collisions(T0 - 6 * 3600 + 1), 0);
    assert_eq!(b.len_collisions(), 0);
    assert_eq!(
        b.mark_good(newcomer, T0, &mut r),
        GoodOutcome::Collision {
            incumbent: b.get(&incumbent).unwrap()
        }
    );
    assert_eq!(b.resolve_collisions(T0 + 30 * 60), 0);
    assert_eq!(b.len_collisions(), 1);
    assert_eq!(b.resolve_collisions(T0 + 41 * 60), 1);
    assert!(b.is_tried(&newcomer));
    b.check().unwrap();

    // Buffer bound.
    let mut b = book(14);
    for _ in 0..40 {
        let _ = collide(&mut b, &mut r, T0);
        assert!(b.len_collisions() <= 10);
    }
    assert_eq!(b.len_collisions(), 10);
}

/// G14: failed dials make an entry terrible and drop it; they never ban. Persistent peers are
/// never dropped or banned. Our own outage does not count (G10 rule).
#[test]
fn g14_failures_never_ban() {
    let mut r = rng(1400);
    let mut b = book(14);
    let a = netaddr(random_ip(&mut r), &mut r);
    b.add(a, a.addr.ip(), T0, &mut r).unwrap();
    // A success elsewhere makes each failure count.
    let other = netaddr(random_ip(&mut r), &mut r);
    b.add(other, other.addr.ip(), T0, &mut r).unwrap();
    for k in 0..2u64 {
        let _ = b.mark_good(other.addr, T0 + 100 * k, &mut r);
        b.mark_failed(a.addr, T0 + 100 * k + 50);
        assert!(b.contains(&a.addr));
    }
    assert_eq!(b.attempts(&a.addr), Some(2));
    // Our uplink is down: failures with no success in between do not count.
    b.mark_failed(a.addr, T0 + 300);
    b.mark_failed(a.addr, T0 + 400);
    assert_eq!(b.attempts(&a.addr), Some(2));
    let _ = b.mark_good(other.addr, T0 + 500, &mut r);
    b.mark_failed(a.addr, T0 + 600);
    assert!(!b.contains(&a.addr), "terrible entry not dropped");
    assert!(!b.is_banned(&a.id, &a.addr.ip(), T0 + 600));
    assert_eq!(b.len_banned(), 0);
    assert!(
        b.add(a, a.addr.ip(), T0 + 700, &mut r).is_ok(),
        "failures must not ban"
    );

    // Persistent: never dropped, never banned.
    let p = netaddr(random_ip(&mut r), &mut r);
    b.set_persistent(p);
    b.add(p, p.addr.ip(), T0, &mut r).unwrap();
    for k in 0..50u64 {
        let _ = b.mark_good(other.addr, T0 + 1000 + 10 * k, &mut r);
        b.mark_failed(p.addr, T0 + 1005 + 10 * k);
    }
    assert!(b.contains(&p.addr) && !b.is_terrible(&p.addr, T0 + 10_000));
    assert!(!b.ban(p.id, p.addr.ip(), T0));
    assert!(b.contains(&p.addr));
    b.check().unwrap();
}

/// G15: a ban covers the id and the IP, removes their entries atomically, blocks re-adding and
/// id rotation, and keeps them out of picks and PEX replies for its whole duration.
#[test]
fn g15_ban_enforcement() {
    let mut r = rng(1500);
    let mut b = book(15);
    let mut all = Vec::new();
    while b.len() < 500 {
        let a = netaddr(random_ip(&mut r), &mut r);
        if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
            all.push(a);
        }
    }
    let bad = all[7];
    let _ = b.mark_good(bad.addr, T0, &mut r);
    let same_ip = NetAddr::new(id(&mut r), SocketAddr::new(bad.addr.ip(), 1234));
    b.add(same_ip, random_ip(&mut r), T0, &mut r).unwrap();
    let same_id = NetAddr::new(bad.id, SocketAddr::new(random_ip(&mut r), 26656));
    b.add(same_id, random_ip(&mut r), T0, &mut r).unwrap();
    let before = b.len();
    assert!(b.ban(bad.id, bad.addr.ip(), T0 + 10));
    b.check().unwrap();
    assert_eq!(b.len(), before - 3);
    for a in [bad, same_ip, same_id] {
        assert!(!b.contains(&a.addr));
    }
    let day = 86_400;
    for t in [T0 + 10, T0 + day / 2, T0 + day + 9] {
        assert!(b.is_banned(&bad.id, &bad.addr.ip(), t));
        assert!(
            b.is_banned(&id(&mut r), &bad.addr.ip(), t),
            "id rotation on a banned ip"
        );
        let rotated = NetAddr::new(id(&mut r), bad.addr);
        assert_eq!(
            b.add(rotated, random_ip(&mut r), t, &mut r),
            Err(AddRejected::Banned)
        );
        let moved = NetAddr::new(bad.id, SocketAddr::new(random_ip(&mut r), 26656));
        assert_eq!(
            b.add(moved, random_ip(&mut r), t, &mut r),
            Err(AddRejected::Banned)
        );
    }
    for _ in 0..20_000 {
        let a = b.pick(T0 + 100, &mut r, |_| true).unwrap();
        assert!(!b.is_banned(&a.id, &a.addr.ip(), T0 + 100));
    }
    for _ in 0..200 {
        for a in b.selection(T0 + 100, &mut r) {
            assert!(!b.is_banned(&a.id, &a.addr.ip(), T0 + 100));
        }
    }
    assert!(!b.is_banned(&bad.id, &bad.addr.ip(), T0 + day + 10));
}

/// G16: an expired ban goes back to *new* only, with attempts reset and its source kept; at
/// most 100 reinstatements per hour.
#[test]
fn g16_reinstatement() {
    let mut r = rng(1600);
    let mut b = book(16);
    let a = netaddr(random_ip(&mut r), &mut r);
    let src = random_ip(&mut r);
    b.add(a, src, T0, &mut r).unwrap();
    let _ = b.mark_good(a.addr, T0, &mut r);
    assert!(b.is_tried(&a.addr));
    assert!(b.ban(a.id, a.addr.ip(), T0));
    assert_eq!(b.reinstate_expired(T0 + 3600, &mut r), 0);
    let later = T0 + 86_400;
    assert_eq!(b.reinstate_expired(later, &mut r), 1);
    assert!(b.contains(&a.addr) && !b.is_tried(&a.addr));
    assert_eq!(b.attempts(&a.addr), Some(0));
    assert_eq!(b.source_of(&a.addr), Some(src));
    assert_eq!(b.new_buckets_of(&a.addr), vec![b.new_bucket(&a.addr, &src)]);
    assert_eq!(b.len_banned(), 0);
    b.check().unwrap();

    // Rate limit.
    let mut b = book(17);
    for _ in 0..250 {
        let a = netaddr(random_ip(&mut r), &mut r);
        if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
            b.ban(a.id, a.addr.ip(), T0);
        }
    }
    let banned = b.len_banned();
    assert!(banned > 200);
    let t = T0 + 86_400;
    assert_eq!(b.reinstate_expired(t, &mut r), 100);
    assert_eq!(b.reinstate_expired(t + 1800, &mut r), 0);
    assert_eq!(b.reinstate_expired(t + 3600, &mut r), 100);
    assert_eq!(b.len_banned(), banned - 200);
    assert_eq!(b.len_tried(), 0);
    b.check().unwrap();
}

/// G19: PEX replies hold ≤ min(23 %, 250) distinct entries and no terrible one.
#[test]
fn g19_selection() {
    let mut r = rng(1900);
    for size in [10usize, 100, 1000, 5000] {
        let mut b = book(19);
        let mut all = Vec::new();
        while b.len() < size {
            let a = netaddr(random_ip(&mut r), &mut r);
            if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
                all.push(a.addr);
            }
        }
        // Make a tenth terrible: three counted failures, no success.
        let other = all[0];
        for a in all.iter().skip(1).step_by(10) {
            for k in 0..3 {
                let _ = b.mark_good(other, T0 + 10 * k, &mut r);
                let t = T0 + 10 * k + 5;
                b.mark_attempt(*a, t);
                if k < 2 {
                    b.mark_failed(*a, t);
                }
            }
        }
        let now = T0 + 7200;
        for _ in 0..20 {
            let s = b.selection(now, &mut r);
            let cap = (b.len() * 23 / 100).min(MAX_SELECTION);
            assert!(s.len() <= cap, "{size}: {} > {cap}", s.len());
            assert!(
                s.len() + 5 >= cap * 8 / 10,
                "{size}: only {} of {cap}",
                s.len()
            );
            let distinct: BTreeSet<_> = s.iter().map(|a| a.addr).collect();
            assert_eq!(distinct.len(), s.len());
            assert!(s.iter().all(|a| !b.is_terrible(&a.addr, now)));
        }
    }
}

/// Own addresses, private ids and (strict) non-routable addresses are never added.
#[test]
fn rejections_are_typed() {
    let mut r = rng(2000);
    let mut b = book(20);
    let own: SocketAddr = "5.5.5.5:26656".parse().unwrap();
    b.add_our_address(own);
    let a = NetAddr::new(id(&mut r), own);
    assert_eq!(b.add(a, own.ip(), T0, &mut r), Err(AddRejected::OwnAddress));
    let private = id(&mut r);
    b.set_private_ids([private]);
    let p = NetAddr::new(private, "6.6.6.6:1".parse().unwrap());
    assert_eq!(
        b.add(p, p.addr.ip(), T0, &mut r),
        Err(AddRejected::PrivateId)
    );
    for s in [
        "10.0.0.1:26656",
        "192.168.1.1:26656",
        "127.0.0.1:26656",
        "[fc00::1]:26656",
    ] {
        let a = NetAddr::new(id(&mut r), s.parse().unwrap());
        assert_eq!(
            b.add(a, a.addr.ip(), T0, &mut r),
            Err(AddRejected::NonRoutable),
            "{s}"
        );
    }
    for s in [
        "0.0.0.0:26656",
        "255.255.255.255:1",
        "[2001:db8::1]:1",
        "1.2.3.4:0",
    ] {
        let a = NetAddr::new(id(&mut r), s.parse().unwrap());
        assert_eq!(
            b.add(a, a.addr.ip(), T0, &mut r),
            Err(AddRejected::Invalid),
            "{s}"
        );
    }
    let mut lax = AddrBook::new(
        AddrBookConfig {
            strict: false,
            ..AddrBookConfig::default()
        },
        &mut r,
    );
    let a = NetAddr::new(id(&mut r), "10.0.0.1:26656".parse().unwrap());
    assert_eq!(lax.add(a, a.addr.ip(), T0, &mut r), Ok(AddOutcome::Added));
    assert!(b.is_empty() && b.needs_more());
    b.check().unwrap();
}

/// G10: six hours with our uplink down (every dial fails, no success anywhere): no tried entry
/// becomes terrible or leaves tried, and attempt counters rise by at most 1 per entry.
#[test]
fn g10_our_outage_is_not_their_failure() {
    let mut r = rng(1000);
    let mut b = book(10);
    let mut all = Vec::new();
    while b.len() < 400 {
        let a = netaddr(random_ip(&mut r), &mut r);
        if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
            let _ = b.mark_good(a.addr, T0, &mut r);
            all.push(a.addr);
        }
    }
    let tried_before: BTreeSet<SocketAddr> =
        all.iter().copied().filter(|a| b.is_tried(a)).collect();
    assert!(tried_before.len() > 300);
    let start = T0 + 60;
    for step in 0..36u64 {
        let now = start + step * 600;
        for a in &all {
            b.mark_attempt(*a, now);
            b.mark_failed(*a, now + 5);
        }
    }
    let end = start + 6 * 3600 + 120;
    for a in &tried_before {
        assert!(b.is_tried(a), "{a} left tried");
        assert!(!b.is_terrible(a, end), "{a} became terrible");
        assert!(b.attempts(a).unwrap() <= 1);
    }
    b.check_full().unwrap();
}
