//! Anchors (issue 13.4, G12) on the simulator: which peers qualify, the saved file, and the
//! dials at the next start that come before any pick from a flooded book.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::AddrBook;
use cometmesh_core::engine::{EngineConfig, Origin, PeerState, anchors};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::sim::{Sim, SimConfig, node_config};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const MIN: Duration = Duration::from_secs(60);

fn add(sim: &mut Sim, c: EngineConfig) -> usize {
    let key = sim.gen_key();
    sim.add_node(c, key)
}

/// An honest node that only accepts (no outbound slots, no feelers).
fn honest(i: usize) -> EngineConfig {
    let mut c = node_config(i);
    c.max_num_outbound_peers = 0;
    c.feeler_interval = Duration::ZERO;
    c
}

/// The victim (node 0) knows five honest nodes and connects to them by itself.
fn network(seed: u64) -> (Sim, Vec<NetAddr>) {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    let mut sim = Sim::new(cfg, Instant::now());
    let v = add(&mut sim, node_config(0));
    assert_eq!(v, 0);
    let honest: Vec<NetAddr> = (1..=5)
        .map(|i| {
            let n = add(&mut sim, honest(i));
            sim.net_addr(n)
        })
        .collect();
    let unix = sim.unix_now();
    sim.with_engine(0, |e, _| {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for a in &honest {
            e.addr_book_mut()
                .add(*a, "30.0.0.1".parse().expect("ip"), unix, &mut rng)
                .expect("added");
        }
    });
    (sim, honest)
}

/// Only automatic outbound peers connected for 10 min or more qualify, at most two, the
/// longest-connected first.
#[test]
fn anchors_are_two_outbound_peers_connected_for_ten_minutes() {
    let (mut sim, honest) = network(1);
    sim.run_for(5 * MIN, 10_000_000).expect("runs");
    let e = sim.engine(0).expect("victim");
    let auto = e
        .peers()
        .filter(|p| p.origin == Origin::Auto && p.counts_outbound())
        .count();
    assert!(auto >= 3, "{auto} automatic outbound peers");
    assert!(e.anchors(sim.now()).is_empty(), "nobody has 10 min yet");
    sim.run_for(6 * MIN, 10_000_000).expect("runs");
    let e = sim.engine(0).expect("victim");
    let a = e.anchors(sim.now());
    assert_eq!(a.len(), 2);
    let mut since: Vec<(Instant, NetAddr)> = e
        .peers()
        .filter(|p| p.origin == Origin::Auto)
        .map(|p| {
            (
                p.since,
                honest
                    .iter()
                    .copied()
                    .find(|h| h.id == p.id)
                    .expect("honest"),
            )
        })
        .collect();
    since.sort_by_key(|&(s, a)| (s, a.id));
    assert_eq!(a, vec![since[0].1, since[1].1], "longest-connected first");
    // An inbound peer never qualifies.
    assert!(
        a.iter()
            .all(|x| e.peer(&x.id).is_some_and(|p| p.counts_outbound()))
    );
}

/// Floods `book` with `n` unreachable addresses from many source groups.
fn flood(book: &mut AddrBook, n: usize, unix: u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut added = 0;
    for k in 0..(n * 4) as u32 {
        if added >= n {
            break;
        }
        let ip = IpAddr::from((0x3c00_0000u32 + rng.next_u32() % 0x0400_0000).to_be_bytes());
        let src = IpAddr::from((0x5000_0000u32 + (k % 4096) * 0x1_0000).to_be_bytes());
        let a = NetAddr::new(
            NodeKey::from_seed([
                (k % 251) as u8,
                (k / 251) as u8,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
                9,
            ])
            .node_id(),
            SocketAddr::new(ip, 26656),
        );
        if book.add(a, src, unix, &mut rng).is_ok() {
            added += 1;
        }
    }
    assert_eq!(added, n);
}

/// After a restart with a flooded new table, the saved anchors are dialled before anything is
/// picked from the book and are both up within 30 s (G12), in every seed tried.
#[test]
fn anchors_are_dialled_first_after_a_restart_with_a_flooded_book() {
    for seed in 1..=5 {
        let (mut sim, honest) = network(seed);
        sim.run_for(11 * MIN, 10_000_000).expect("runs");
        let e = sim.engine(0).expect("victim");
        let saved = anchors::encode(&e.anchors(sim.now()));
        let mut book = AddrBook::decode(&e.addr_book().encode(), e.config().addr_book.clone())
            .expect("decodes");
        let unix = sim.unix_now();
        flood(&mut book, 3000, unix);
        let flooded = book.encode();
        sim.stop(0);
        sim.run_for(MIN, 1_000_000).expect("runs");
        let loaded = anchors::decode(&saved).expect("anchors file");
        assert_eq!(loaded.len(), 2);
        let now = sim.now();
        sim.restart_with(0, |e| {
            e.load_addr_book(&flooded).expect("loads");
            assert_eq!(e.dial_anchors(now, &loaded), 2);
        });
        let e = sim.engine(0).expect("victim");
        assert!(e.addr_book().len() > 3000);
        assert_eq!(e.num_dialing(), 2, "only the anchors are dialled at start");
        for a in &loaded {
            assert!(honest.contains(a));
            assert!(matches!(
                e.peer_state(&a.id),
                Some(PeerState::Dialing | PeerState::Handshaking)
            ));
        }
        sim.run_for(Duration::from_secs(30), 1_000_000)
            .expect("runs");
        let e = sim.engine(0).expect("victim");
        for a in &loaded {
            assert!(
                e.peer(&a.id).is_some_and(|p| p.counts_outbound()),
                "seed {seed}: anchor {a} up within 30 s"
            );
        }
    }
}
