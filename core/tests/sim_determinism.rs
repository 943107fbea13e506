//! Determinism across processes: one simulated scenario, run in this process and in two fresh
//! processes of this same test binary, gives the same trace hash (every engine output in order,
//! plus every node's final address book, byte for byte).
//!
//! Separate processes matter: a randomly seeded hash map (hashbrown's default hasher draws a new
//! seed per process) iterated in a decision gives the same result twice in one process and a
//! different one in the next. The scenario exercises such a path on purpose: a node loads a
//! saved book and then drops the entries of its private peer ids from it.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::hash::Hasher;
use std::process::Command;
use std::time::{Duration, Instant};

use cometmesh_core::sim::{Sim, SimConfig, node_config};
use siphasher::sip::SipHasher13;

/// The marker before the hash in the child's output.
const MARK: &str = "TRACE=";

/// Bootstraps 10 nodes from one seed node, then adds a node that loads node 1's saved book
/// with nodes 2, 4, 6 and 8 private (the other entries stay, in an order the removals decide);
/// returns the hash of the whole run.
fn scenario_hash() -> u64 {
    let mut cfg = SimConfig::default();
    cfg.seed = 0x5eed_2026;
    cfg.check_invariants = true;
    let mut sim = Sim::new(cfg, Instant::now());
    let seed_key = sim.gen_key();
    let mut sc = node_config(0);
    sc.seed_mode = true;
    let seed_idx = sim.add_node(sc, seed_key);
    let seed_addr = sim.net_addr(seed_idx);
    for i in 1..10 {
        let mut c = node_config(i);
        c.seeds = vec![seed_addr];
        let key = sim.gen_key();
        sim.add_node(c, key);
    }
    sim.run_for(Duration::from_secs(60), 1_000_000)
        .expect("bootstrap");

    let saved = sim.engine(1).expect("node 1 runs").addr_book().encode();
    let mut late = node_config(10);
    late.seeds = vec![seed_addr];
    late.private_peer_ids = [8, 2, 6, 4].map(|i| sim.node_id(i)).to_vec();
    let key = sim.gen_key();
    let idx = sim.add_node(late, key);
    sim.with_engine(idx, |e, _| e.load_addr_book(&saved))
        .expect("node 10 runs")
        .expect("book loads before the first connection");
    sim.run_for(Duration::from_secs(60), 1_000_000)
        .expect("second minute");
    sim.check_all();

    let mut h = SipHasher13::new_with_keys(0, 0);
    h.write_u64(sim.trace_hash());
    h.write_u64(sim.steps());
    for i in 0..sim.len() {
        let book = sim.engine(i).expect("node runs").addr_book().encode();
        h.write_usize(book.len());
        h.write(&book);
    }
    h.finish()
}

/// The child half of [`two_processes_same_trace`]: prints the scenario's hash.
#[test]
#[ignore = "run by two_processes_same_trace in a child process (runnable alone: prints the hash)"]
fn print_trace() {
    println!("{MARK}{:016x}", scenario_hash());
}

/// Runs [`print_trace`] in a fresh process of this test binary and returns its hash.
fn hash_in_child() -> u64 {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args([
            "print_trace",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("re-run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest may print the line after "test print_trace ... ".
    let hex = stdout
        .lines()
        .find_map(|l| l.split_once(MARK).map(|(_, h)| h))
        .and_then(|h| h.get(..16))
        .unwrap_or_else(|| panic!("no {MARK} line in the child's output:\n{stdout}"));
    u64::from_str_radix(hex, 16).expect("hex hash")
}

#[test]
fn two_processes_same_trace() {
    let here = scenario_hash();
    let first = hash_in_child();
    let second = hash_in_child();
    assert_eq!(first, second, "two processes, two traces");
    assert_eq!(here, first, "this process and a child differ");
}
