//! Feelers and test-before-evict run by the engine itself (issue 13.3, G11), on the simulator.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{AddrBook, GoodOutcome};
use cometmesh_core::engine::{EngineConfig, Event};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::sim::{Sim, SimConfig, node_config};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const MIN: Duration = Duration::from_secs(60);

fn sim(seed: u64) -> Sim {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.record_events = true;
    Sim::new(cfg, Instant::now())
}

/// A victim that dials nothing by itself (no outbound slots): every dial it makes is a feeler
/// or the test's own.
fn victim_config() -> EngineConfig {
    let mut c = node_config(0);
    c.max_num_outbound_peers = 0;
    c
}

/// A quiet node at `listen`: PEX on (so it shares a channel with the victim) but it never
/// dials anyone (no outbound slots, no seeds, no feelers).
fn quiet(i: usize, listen: SocketAddr) -> EngineConfig {
    let mut c = node_config(i);
    c.max_num_outbound_peers = 0;
    c.feeler_interval = Duration::ZERO;
    c.listen_addr = listen;
    c
}

fn add(sim: &mut Sim, c: EngineConfig) -> usize {
    let key = sim.gen_key();
    sim.add_node(c, key)
}

/// Runs `d` of virtual time step by step, asserting that the victim (node 0) never has more
/// than one connection open (feelers are one at a time) nor any peer.
fn run_feelers_only(sim: &mut Sim, d: Duration) {
    let end = sim.elapsed() + d;
    for _ in 0..2_000_000u32 {
        if sim.elapsed() >= end || !sim.step() {
            break;
        }
        let e = sim.engine(0).expect("victim");
        assert!(e.num_conns() <= 1, "at most one feeler at a time");
        assert_eq!(e.peers().count(), 0, "a feeler never becomes a peer");
    }
    sim.run_for(end.saturating_sub(sim.elapsed()), 1_000_000)
        .expect("runs");
}

/// About every 2 min (jittered) one feeler tests a new entry; a reachable one moves to tried,
/// the connection closes at once, and the application never sees a peer.
#[test]
fn feelers_move_reachable_new_entries_to_tried_and_hang_up() {
    let mut sim = sim(1);
    let v = add(&mut sim, victim_config());
    let others: Vec<usize> = (1..=4)
        .map(|i| add(&mut sim, quiet(i, cometmesh_core::sim::node_addr(i))))
        .collect();
    let unix = sim.unix_now();
    let addrs: Vec<NetAddr> = others.iter().map(|&o| sim.net_addr(o)).collect();
    let src: IpAddr = "30.0.0.1".parse().expect("ip");
    sim.with_engine(v, |e, _| {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        for a in &addrs {
            e.addr_book_mut()
                .add(*a, src, unix, &mut rng)
                .expect("added");
        }
    });
    run_feelers_only(&mut sim, 30 * MIN);
    let e = sim.engine(v).expect("victim");
    let c = e.counters();
    // One feeler per new entry (each wait within [1, 3) min, so all within 12 min), then
    // nothing is left to test: tried entries are tested only as collision incumbents.
    assert_eq!((c.feelers, c.feelers_reached), (4, 4), "{c:?}");
    for a in &addrs {
        assert!(e.addr_book().is_tried(&a.addr), "{a} tested and promoted");
    }
    assert_eq!(e.num_dialing(), 0);
    assert!(
        !sim.events()
            .iter()
            .any(|r| r.node == v && matches!(r.event, Event::PeerUp { .. })),
        "no PeerUp for a feeler"
    );
}

/// An address in the /16 of `incumbent` whose tried slot (under `book`'s key) is the
/// incumbent's, found by trying addresses on a copy of the book (the slot depends on the
/// address only, not on the node id).
fn colliding(book: &AddrBook, incumbent: NetAddr, unix: u64) -> SocketAddr {
    let mut probe = book.clone();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    if !probe.is_tried(&incumbent.addr) {
        let src: IpAddr = "30.0.0.9".parse().expect("ip");
        probe.add(incumbent, src, unix, &mut rng).expect("added");
        assert_eq!(
            probe.mark_good(incumbent.addr, unix, &mut rng),
            GoodOutcome::Promoted
        );
    }
    let IpAddr::V4(v4) = incumbent.addr.ip() else {
        panic!("ipv4")
    };
    let [a, b, _, _] = v4.octets();
    let src: IpAddr = "30.0.0.2".parse().expect("ip");
    let probe_id = NodeKey::from_seed([0xcc; 32]).node_id();
    for k in 1..=65_000u32 {
        let ip = IpAddr::from([a, b, (k >> 8) as u8, (k & 0xff) as u8]);
        if ip == incumbent.addr.ip() {
            continue;
        }
        let cand = NetAddr::new(probe_id, SocketAddr::new(ip, 26656));
        if probe.add(cand, src, unix, &mut rng).is_err() {
            continue;
        }
        match probe.mark_good(cand.addr, unix, &mut rng) {
            GoodOutcome::Collision { incumbent: i } if i == incumbent => return cand.addr,
            _ => probe.remove(cand.addr),
        }
    }
    panic!("no colliding address in the incumbent's /16");
}

/// Sets up the victim's book: `incumbent` in tried (its last success `age` ago) and the
/// colliding `newcomer` in new.
fn seed_collision(sim: &mut Sim, incumbent: NetAddr, newcomer: NetAddr, age: Duration) {
    let unix = sim.unix_now();
    let src: IpAddr = "30.0.0.3".parse().expect("ip");
    sim.with_engine(0, |e, _| {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let then = unix - age.as_secs();
        let b = e.addr_book_mut();
        b.add(incumbent, src, then, &mut rng).expect("added");
        assert_eq!(
            b.mark_good(incumbent.addr, then, &mut rng),
            GoodOutcome::Promoted
        );
        b.add(newcomer, src, unix, &mut rng).expect("added");
    });
}

/// A dead tried incumbent (last success 5 h ago, no longer reachable) is tested by a feeler
/// and then replaced by the reachable newcomer that collided with it.
#[test]
fn a_dead_incumbent_is_tested_then_replaced() {
    let mut sim = sim(2);
    let v = add(&mut sim, victim_config());
    let dead = NetAddr::new(
        NodeKey::from_seed([0xdd; 32]).node_id(),
        SocketAddr::from(([40, 1, 0, 1], 26656)),
    );
    let unix = sim.unix_now();
    let newcomer_addr = colliding(sim.engine(v).expect("v").addr_book(), dead, unix);
    // The newcomer is a live node at the colliding address, with the key of that id.
    let n = add_at(&mut sim, 1, newcomer_addr);
    let newcomer = sim.net_addr(n);
    seed_collision(&mut sim, dead, newcomer, 5 * 60 * MIN);
    run_feelers_only(&mut sim, 30 * MIN);
    let b = sim.engine(v).expect("victim").addr_book();
    assert!(
        b.is_tried(&newcomer.addr),
        "the newcomer replaced the dead incumbent"
    );
    assert!(!b.is_tried(&dead.addr), "the dead incumbent left tried");
    assert_eq!(b.len_collisions(), 0);
    b.check().expect("consistent book");
}

/// A tried incumbent we have been connected to for 5 h (its recorded success is that old) is
/// never displaced by a colliding newcomer: the feeler pass refreshes live peers first.
#[test]
fn a_live_incumbent_is_never_displaced() {
    let mut sim = sim(3);
    let v = add(&mut sim, victim_config());
    let d = add(&mut sim, quiet(1, SocketAddr::from(([40, 2, 0, 1], 26656))));
    let incumbent = sim.net_addr(d);
    let unix = sim.unix_now();
    let src: IpAddr = "30.0.0.3".parse().expect("ip");
    sim.with_engine(v, |e, _| {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        e.addr_book_mut()
            .add(incumbent, src, unix, &mut rng)
            .expect("added");
    });
    sim.with_engine(v, |e, now| e.dial(now, incumbent))
        .expect("v")
        .expect("dial");
    sim.run_for(MIN, 1_000_000).expect("runs");
    assert!(
        sim.engine(v).expect("v").peer(&incumbent.id).is_some(),
        "{:?}",
        sim.events()
            .iter()
            .filter(|r| r.node == v)
            .take(20)
            .collect::<Vec<_>>()
    );
    assert!(
        sim.engine(v)
            .expect("v")
            .addr_book()
            .is_tried(&incumbent.addr)
    );
    sim.run_for(5 * 60 * MIN, 10_000_000).expect("runs");
    let unix = sim.unix_now();
    let newcomer_addr = colliding(sim.engine(v).expect("v").addr_book(), incumbent, unix);
    let n = add_at(&mut sim, 2, newcomer_addr);
    let newcomer = sim.net_addr(n);
    sim.with_engine(v, |e, _| {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        e.addr_book_mut()
            .add(newcomer, src, unix, &mut rng)
            .expect("added");
    });
    // An hour of feelers: the newcomer is reached (a collision each time) and the collision
    // is resolved in the incumbent's favour, well past the 40 min force-resolution.
    sim.run_for(60 * MIN, 10_000_000).expect("runs");
    let e = sim.engine(v).expect("victim");
    assert!(e.counters().feelers_reached >= 5);
    assert!(e.peer(&incumbent.id).is_some(), "still connected");
    assert!(
        e.addr_book().is_tried(&incumbent.addr),
        "live incumbent displaced"
    );
    assert!(!e.addr_book().is_tried(&newcomer.addr));
}

/// Adds a quiet node listening at `addr`.
fn add_at(sim: &mut Sim, i: usize, addr: SocketAddr) -> usize {
    add(sim, quiet(i, addr))
}
