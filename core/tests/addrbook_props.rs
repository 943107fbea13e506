//! Property tests (G23): random operation sequences (24 cases of ≤ 200 ops by default; raise
//! with `PROPTEST_CASES`) with `check()` after every operation, plus
//! invariants a reference model can state: banned addresses are never stored or picked, tried
//! entries never change id, persistent peers are never removed by the book, round trips agree.

mod addrbook_util;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use addrbook_util::*;
use cometmesh_core::NodeId;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{AddrBook, AddrBookConfig};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Add { a: u8, port: u8, id: u8, src: u8 },
    Attempt(u8, u8),
    Fail(u8, u8),
    Good(u8, u8),
    Ban(u8, u8),
    Reinstate(u16),
    Resolve,
    Remove(u8, u8),
    Pick,
    Selection,
    Untested,
    Reload,
    Wait(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0..6u8, 0..8u8, any::<u8>()).prop_map(|(a, port, id, src)| Op::Add { a, port, id, src }),
        1 => (any::<u8>(), 0..6u8).prop_map(|(a, p)| Op::Attempt(a, p)),
        2 => (any::<u8>(), 0..6u8).prop_map(|(a, p)| Op::Fail(a, p)),
        2 => (any::<u8>(), 0..6u8).prop_map(|(a, p)| Op::Good(a, p)),
        1 => (any::<u8>(), 0..6u8).prop_map(|(a, p)| Op::Ban(a, p)),
        1 => any::<u16>().prop_map(Op::Reinstate),
        1 => Just(Op::Resolve),
        1 => (any::<u8>(), 0..6u8).prop_map(|(a, p)| Op::Remove(a, p)),
        1 => Just(Op::Pick),
        1 => Just(Op::Selection),
        1 => Just(Op::Untested),
        1 => Just(Op::Reload),
        1 => any::<u16>().prop_map(Op::Wait),
    ]
}

/// 256 IPs in 16 /16 groups; ids from a small set so id sharing happens.
fn sock(a: u8, port: u8) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(30 + a % 16, 1, a, 9)),
        26_656 + u16::from(port),
    )
}

fn node(id: u8) -> NodeId {
    NodeId([id; 20])
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    #[test]
    fn op_sequences_keep_the_book_consistent(seed in any::<u64>(), ops in prop::collection::vec(op(), 1..200)) {
        let mut r = rng(seed);
        let mut b = AddrBook::new(AddrBookConfig::default(), &mut r);
        let persistent = NetAddr::new(node(7), sock(200, 0));
        b.set_persistent(persistent);
        let mut now = T0;
        let mut tried_ids: Vec<(SocketAddr, NodeId)> = Vec::new();
        for op in ops {
            now += 13;
            match op {
                Op::Add { a, port, id, src } => {
                    let na = NetAddr::new(node(id), sock(a, port));
                    let src = sock(src, 0).ip();
                    let res = b.add(na, src, now, &mut r);
                    if b.is_banned(&na.id, &na.addr.ip(), now) {
                        prop_assert!(res.is_err());
                    }
                }
                Op::Attempt(a, p) => b.mark_attempt(sock(a, p), now),
                Op::Fail(a, p) => b.mark_failed(sock(a, p), now),
                Op::Good(a, p) => { let _ = b.mark_good(sock(a, p), now, &mut r); }
                Op::Ban(a, p) => {
                    let s = sock(a, p);
                    let id = b.get(&s).map_or(node(a), |x| x.id);
                    if b.ban(id, s.ip(), now) {
                        prop_assert!(!b.contains(&s));
                        // Everything with that id or at that IP is gone, except the persistent peer.
                        prop_assert!(b
                            .entries()
                            .all(|(e, _)| (e.id != id && e.addr.ip() != s.ip())
                                || e.id == persistent.id
                                || e.addr == persistent.addr));
                    }
                }
                Op::Reinstate(dt) => {
                    now += u64::from(dt) * 4;
                    let before = b.len_tried();
                    b.reinstate_expired(now, &mut r);
                    prop_assert!(b.len_tried() <= before, "reinstatement entered tried");
                }
                Op::Resolve => { b.resolve_collisions(now); }
                Op::Remove(a, p) => { b.remove(sock(a, p)); prop_assert!(!b.contains(&sock(a, p))); }
                Op::Pick => {
                    if let Some(x) = b.pick(now, &mut r, |_| true) {
                        prop_assert!(b.contains(&x.addr));
                        // Persistent peers are never banned (their entries stay even at a
                        // banned IP); anything else picked is not banned.
                        prop_assert!(
                            x.id == persistent.id
                                || x.addr == persistent.addr
                                || !b.is_banned(&x.id, &x.addr.ip(), now),
                            "picked a banned address: {:?}",
                            x
                        );
                    } else {
                        prop_assert!(b.is_empty());
                    }
                }
                Op::Selection => {
                    let s = b.selection(now, &mut r);
                    prop_assert!(s.len() <= (b.len() * 23 / 100).min(250));
                    let d: BTreeSet<_> = s.iter().map(|x| x.addr).collect();
                    prop_assert_eq!(d.len(), s.len());
                }
                Op::Untested => {
                    // The first call builds the book's index of never-reached entries;
                    // `check_full` below holds it to the entries after every later operation.
                    let u = b.untested(now, 8, |_| true);
                    prop_assert!(u.len() <= 8);
                    prop_assert!(u.iter().all(|x| b.contains(&x.addr) && !b.is_tried(&x.addr)));
                    let d: BTreeSet<_> = u.iter().map(|x| x.addr).collect();
                    prop_assert_eq!(d.len(), u.len());
                }
                Op::Reload => {
                    let bytes = b.encode();
                    let mut d = AddrBook::decode(&bytes, AddrBookConfig::default()).unwrap();
                    prop_assert_eq!(d.encode(), bytes);
                    d.set_persistent(persistent);
                    b = d;
                }
                Op::Wait(dt) => now += u64::from(dt) * 60,
            }
            if let Err(e) = b.check_full() {
                return Err(TestCaseError::fail(format!("{e}")));
            }
            // Tried entries keep their id for as long as they stay tried.
            for (s, id) in &tried_ids {
                if b.is_tried(s) {
                    prop_assert_eq!(b.get(s).map(|x| x.id), Some(*id));
                }
            }
            tried_ids = b.entries().filter(|e| e.1).map(|(e, _)| (e.addr, e.id)).collect();
            prop_assert!(b.len_collisions() <= 10);
        }
    }
}

/// The persistent entry survives any amount of failure and banning (a fixed scenario, so it
/// cannot pass by not exercising the rule).
#[test]
fn persistent_entry_survives() {
    let mut r = rng(1);
    let mut b = book(1);
    let p = NetAddr::new(node(7), sock(200, 0));
    b.set_persistent(p);
    b.add(p, p.addr.ip(), T0, &mut r).unwrap();
    let other = NetAddr::new(node(8), sock(3, 0));
    b.add(other, other.addr.ip(), T0, &mut r).unwrap();
    for k in 0..100 {
        let _ = b.mark_good(other.addr, T0 + 100 * k, &mut r);
        b.mark_failed(p.addr, T0 + 100 * k + 50);
        assert!(!b.ban(p.id, p.addr.ip(), T0 + 100 * k + 60));
    }
    // Flood its bucket from its own source group.
    for i in 0..5000u32 {
        let a = NetAddr::new(
            node(9),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x2d00_0000 + i)), 1),
        );
        let _ = b.add(a, p.addr.ip(), T0 + 20_000, &mut r);
    }
    assert!(b.contains(&p.addr));
    b.check().unwrap();
}
