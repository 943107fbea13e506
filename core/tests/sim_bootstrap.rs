//! Scenario: 50 nodes bootstrap from one seed; determinism of the trace.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::time::{Duration, Instant};

use cometmesh_core::sim::{Sim, SimConfig, node_config};

fn bootstrap(n: usize, seed: u64) -> Sim {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    bootstrap_with(n, cfg)
}

fn bootstrap_with(n: usize, cfg: SimConfig) -> Sim {
    let mut sim = Sim::new(cfg, Instant::now());
    let seed_key = sim.gen_key();
    let mut sc = node_config(0);
    sc.seed_mode = true;
    let seed_idx = sim.add_node(sc, seed_key);
    let seed_addr = sim.net_addr(seed_idx);
    for i in 1..n {
        let mut c = node_config(i);
        c.seeds = vec![seed_addr];
        let key = sim.gen_key();
        sim.add_node(c, key);
    }
    sim
}

fn all_reached_target(sim: &Sim) -> bool {
    (1..sim.len()).all(|i| {
        sim.engine(i)
            .is_some_and(|e| e.num_peers().1 >= e.config().max_num_outbound_peers)
    })
}

#[test]
fn fifty_nodes_bootstrap_from_one_seed() {
    let mut sim = bootstrap(50, 7);
    let steps = sim
        .run_until(all_reached_target, 2_000_000)
        .expect("bootstrap");
    sim.check_all();
    eprintln!("50 nodes: {steps} steps, {:?} simulated", sim.elapsed());
    assert!(sim.elapsed() < Duration::from_secs(600));
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let mut sim = bootstrap(12, seed);
        sim.run_for(Duration::from_secs(90), 1_000_000)
            .expect("run");
        (sim.trace_hash(), sim.steps())
    };
    let a = run(3);
    let b = run(3);
    let c = run(4);
    assert_eq!(a, b, "same seed, same trace");
    assert_ne!(a.0, c.0, "another seed gives another trace");
}

/// Modelled crypto changes the bytes on the wire (the trace hashes them) but no decision: the
/// frames keep their sizes, so the same steps happen at the same times. The mode is switched
/// per step, so a real-crypto simulation afterwards on the same thread is unaffected.
#[test]
fn modelled_crypto_changes_bytes_not_decisions() {
    let run = |modelled| {
        let mut cfg = SimConfig::default();
        cfg.seed = 5;
        cfg.modelled_crypto = modelled;
        let mut sim = bootstrap_with(12, cfg);
        sim.run_for(Duration::from_secs(90), 1_000_000)
            .expect("run");
        sim.check_all();
        let peers: Vec<usize> = (0..sim.len())
            .map(|i| {
                sim.engine(i)
                    .map_or(0, |e| e.num_peers().0 + e.num_peers().1)
            })
            .collect();
        (sim.trace_hash(), sim.steps(), peers)
    };
    let real = run(false);
    let modelled = run(true);
    let real_again = run(false);
    assert!(real.2.iter().skip(1).all(|&p| p > 0), "nodes connected");
    assert_eq!(real.1, modelled.1, "same number of steps");
    assert_eq!(real.2, modelled.2, "same peers per node");
    assert_ne!(real.0, modelled.0, "different bytes on the wire");
    assert_eq!(real, real_again, "real crypto again after a modelled run");
}
