//! Duplicate connections (simultaneous cross-dials) and outbound group diversity (G7).
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cometmesh_core::engine::{Direction, Origin};
use cometmesh_core::sim::{Sim, SimConfig, node_config};

fn cross_dial(seed: u64, allow_duplicate_ip: bool) -> u64 {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.latency_jitter = Duration::from_millis(80);
    let mut sim = Sim::new(cfg, Instant::now());
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut c = node_config(i);
        c.pex = false;
        c.allow_duplicate_ip = allow_duplicate_ip;
        let key = sim.gen_key();
        nodes.push(sim.add_node(c, key));
    }
    let (a, b) = (nodes[0], nodes[1]);
    let (aa, ba) = (sim.net_addr(a), sim.net_addr(b));
    // Both dial at the same virtual instant.
    sim.with_engine(a, |e, now| e.dial(now, ba))
        .unwrap()
        .unwrap();
    sim.with_engine(b, |e, now| e.dial(now, aa))
        .unwrap()
        .unwrap();
    sim.run_for(Duration::from_secs(10), 100_000).unwrap();
    let ea = sim.engine(a).unwrap();
    let eb = sim.engine(b).unwrap();
    let pa = ea.peer(&ba.id).expect("a has b");
    let pb = eb.peer(&aa.id).expect("b has a");
    assert_eq!(ea.peers().count(), 1);
    assert_eq!(eb.peers().count(), 1);
    assert_eq!(ea.num_conns(), 1, "the losing connection is gone");
    assert_eq!(eb.num_conns(), 1);
    let lower_is_a = aa.id < ba.id;
    // One TCP connection, seen from both ends.
    assert_ne!(pa.direction, pb.direction);
    if allow_duplicate_ip {
        // Both connections reach the handshake; the one dialled by the lower id survives.
        assert_eq!(
            pa.direction == Direction::Outbound,
            lower_is_a,
            "seed {seed}"
        );
    }
    // And it stays that way.
    let (ca, cb) = (pa.conn, pb.conn);
    sim.run_for(Duration::from_secs(120), 100_000).unwrap();
    assert_eq!(
        sim.engine(a).unwrap().peer(&ba.id).map(|p| p.conn),
        Some(ca)
    );
    assert_eq!(
        sim.engine(b).unwrap().peer(&aa.id).map(|p| p.conn),
        Some(cb)
    );
    sim.engine(a).unwrap().counters().duplicates + sim.engine(b).unwrap().counters().duplicates
}

#[test]
fn simultaneous_cross_dials_end_as_one_connection() {
    let mut resolved = 0;
    for seed in 0..12 {
        resolved += cross_dial(seed, true);
        cross_dial(seed, false);
    }
    assert!(resolved > 0, "the duplicate rule was exercised");
}

#[test]
fn automatic_outbound_peers_never_share_a_group() {
    // 40 nodes in only 4 /16 groups: every node can have at most 4 automatic outbound peers
    // (one per group, G7); the simulator asserts the invariant after every step.
    let mut cfg = SimConfig::default();
    cfg.seed = 5;
    let mut sim = Sim::new(cfg, Instant::now());
    let addr = |i: usize| {
        SocketAddr::from((
            [
                30,
                u8::try_from(i % 4).unwrap(),
                0,
                u8::try_from(i + 1).unwrap(),
            ],
            26656,
        ))
    };
    let mut sc = node_config(0);
    sc.seed_mode = true;
    let key = sim.gen_key();
    let seed = sim.add_node(sc, key);
    let seed_addr = sim.net_addr(seed);
    for i in 0..40 {
        let mut c = node_config(i + 1);
        c.listen_addr = addr(i);
        c.seeds = vec![seed_addr];
        c.allow_duplicate_ip = true;
        let key = sim.gen_key();
        sim.add_node(c, key);
    }
    sim.run_for(Duration::from_secs(600), 3_000_000).unwrap();
    let mut full = 0;
    for i in 1..sim.len() {
        let e = sim.engine(i).unwrap();
        let auto = e
            .peers()
            .filter(|p| p.origin == Origin::Auto && p.direction == Direction::Outbound)
            .count();
        assert!(auto <= 4, "node {i} has {auto} automatic outbound peers");
        full += usize::from(auto >= 3);
    }
    assert!(
        full > 20,
        "diversity should still let most nodes fill 3+ groups ({full})"
    );
}
