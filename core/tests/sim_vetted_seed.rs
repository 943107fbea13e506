//! Issue 15.1: a seed that serves only addresses it reached itself (the default) against one
//! following CometBFT's policy (a random selection of its book, `seed_vetted_window = 0`), on a
//! network where half the addresses the seed knows are dead.
//!
//! The network: one seed, `LIVE` ordinary nodes that know only the seed, `LIARS` of them with
//! books stuffed with dead addresses that their PEX replies announce, and as many dead addresses
//! again in the seed's own book (a saved book from an older network). A dead address has no
//! node behind it: the simulator fails a dial to it after the link latency. After a warm-up, a
//! new node that knows only the seed joins; we measure how long it takes to reach its outbound
//! target.
//!
//! `cargo test -p cometmesh-core --features sim --test sim_vetted_seed -- --nocapture` prints the
//! figures (`bench/README.md`, "Vetted seed").
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cometmesh_core::addr::NetAddr;
use cometmesh_core::conn::Direction;
use cometmesh_core::engine::Origin;
use cometmesh_core::sim::{Sim, SimConfig, node_addr, node_config};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

/// Ordinary live nodes.
const LIVE: usize = 24;
/// Live nodes whose PEX replies announce dead addresses.
const LIARS: usize = 4;
/// Dead addresses each liar announces.
const DEAD_PER_LIAR: usize = 3;
/// Dead addresses in the seed's own book at the start (with the liars' ones: `LIVE` in all).
const DEAD_IN_SEED_BOOK: usize = LIVE - LIARS * DEAD_PER_LIAR;
/// Warm-up before the new node joins.
const WARM_UP: Duration = Duration::from_secs(120);
/// The longest bootstrap we count (a run that has not reached its target in 3 million steps
/// counts as this long).
const PATIENCE: Duration = Duration::from_secs(1200);

/// The `k`-th dead address: a fresh node id at an address where no node listens.
fn dead(sim: &mut Sim, k: usize) -> NetAddr {
    NetAddr::new(sim.gen_key().node_id(), node_addr(1000 + k))
}

/// The network after its warm-up, and the seed's index.
fn network(seed: u64, vetted: bool) -> (Sim, usize) {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.check_invariants = std::env::var("NOCHECK").is_err();
    let mut sim = Sim::new(cfg, Instant::now());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    let mut sc = node_config(0);
    sc.seed_mode = true;
    if !vetted {
        sc.seed_vetted_window = Duration::ZERO;
    }
    let key = sim.gen_key();
    let seed_idx = sim.add_node(sc, key);
    let seed_addr = sim.net_addr(seed_idx);
    let unix = sim.unix_now();
    let stale_source = IpAddr::from([30, 0, 0, 1]);
    let mut k = 0;
    for _ in 0..DEAD_IN_SEED_BOOK {
        let a = dead(&mut sim, k);
        k += 1;
        sim.with_engine(seed_idx, |e, _| {
            e.addr_book_mut()
                .add(a, stale_source, unix, &mut rng)
                .expect("dead address added");
        });
    }
    for i in 1..=LIVE {
        let mut c = node_config(i);
        c.seeds = vec![seed_addr];
        let key = sim.gen_key();
        let idx = sim.add_node(c, key);
        if i <= LIARS {
            for _ in 0..DEAD_PER_LIAR {
                let a = dead(&mut sim, k);
                k += 1;
                sim.with_engine(idx, |e, _| {
                    e.addr_book_mut()
                        .add(a, stale_source, unix, &mut rng)
                        .expect("dead address added");
                });
            }
        }
    }
    sim.run_for(WARM_UP, 4_000_000).expect("warm-up");
    (sim, seed_idx)
}

/// Whether `a` is one of the dead addresses (all at 24.x.0.1, see [`dead`]).
fn is_dead(a: &NetAddr) -> bool {
    matches!(a.addr.ip(), IpAddr::V4(v4) if v4.octets()[0] == 24)
}

/// Runs the scenario and returns how long the new node took to reach its outbound target
/// (`None` if it did not within [`PATIENCE`] or the step bound), and how many dead addresses
/// its book holds then. `early`: the new node runs cometmesh's early ensure-peers passes
/// (`early_ensure_passes`); without them it keeps CometBFT's timing, as the CometBFT nodes a
/// seed mostly serves do.
fn bootstrap(seed: u64, vetted: bool, early: bool) -> (Option<Duration>, usize) {
    let (mut sim, seed_idx) = network(seed, vetted);
    let seed_addr = sim.net_addr(seed_idx);

    let mut c = node_config(LIVE + 1);
    c.seeds = vec![seed_addr];
    c.early_ensure_passes = early;
    let key = sim.gen_key();
    let newcomer = sim.add_node(c, key);
    let t0 = sim.elapsed();
    let target = sim
        .engine(newcomer)
        .unwrap()
        .config()
        .max_num_outbound_peers;
    // Outbound peers other than the seed (which hangs up after its reply).
    let reached = |s: &Sim| {
        s.engine(newcomer).is_some_and(|e| {
            e.peers()
                .filter(|p| p.direction == Direction::Outbound && p.origin != Origin::Seed)
                .count()
                >= target
        })
    };
    let took = sim
        .run_until(reached, 3_000_000)
        .ok()
        .map(|_| sim.elapsed() - t0)
        .filter(|&d| d <= PATIENCE);
    let book = sim.engine(newcomer).unwrap().addr_book();
    let dead_n = book.entries().filter(|(a, _)| is_dead(a)).count();
    (took, dead_n)
}

/// A new node with CometBFT's ensure-peers timing (a dead address costs it a 30 s period).
#[test]
fn vetted_seed_bootstraps_a_new_node_faster_than_cometbft_policy() {
    let mut ratios = Vec::new();
    for seed in [1u64, 2, 3, 4, 5] {
        let (ours, ours_dead) = bootstrap(seed, true, false);
        let (theirs, theirs_dead) = bootstrap(seed, false, false);
        let ours = ours.expect("the new node reaches its target through our seed");
        let theirs = theirs.unwrap_or(PATIENCE);
        eprintln!(
            "sim seed {seed}: vetted {ours:?} ({ours_dead} dead in book), \
             cometbft policy {theirs:?} ({theirs_dead} dead in book)"
        );
        assert!(
            ours < theirs,
            "seed {seed}: vetted {ours:?}, cometbft {theirs:?}"
        );
        ratios.push(theirs.as_secs_f64() / ours.as_secs_f64().max(0.001));
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    eprintln!("speed-up per sim seed: {ratios:.1?}; median {median:.1}x");
    assert!(median >= 5.0, "median speed-up {median:.1}x");
}

/// A new cometmesh node (early ensure-peers passes): a dead address costs it seconds, not a
/// period, so the vetted seed's lead is smaller; it is still never slower.
#[test]
fn vetted_seed_bootstraps_our_node_no_slower_than_cometbft_policy() {
    let mut ratios = Vec::new();
    for seed in [1u64, 2, 3, 4, 5] {
        let (ours, _) = bootstrap(seed, true, true);
        let (theirs, _) = bootstrap(seed, false, true);
        let ours = ours.expect("the new node reaches its target through our seed");
        let theirs = theirs.unwrap_or(PATIENCE);
        eprintln!("sim seed {seed}, early passes: vetted {ours:?}, cometbft policy {theirs:?}");
        assert!(
            ours <= theirs,
            "seed {seed}: vetted {ours:?}, cometbft {theirs:?}"
        );
        ratios.push(theirs.as_secs_f64() / ours.as_secs_f64().max(0.001));
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    eprintln!("early passes: speed-up per sim seed: {ratios:.1?}; median {median:.1}x");
    assert!(median > 1.0, "median speed-up {median:.1}x");
}

/// The seed's reply, seen in the book of a node that knows only the seed, at the moment the
/// reply arrives: only addresses the seed reached (live nodes), none of the dead ones it
/// knows; with CometBFT's policy, dead ones too.
#[test]
fn vetted_seed_reply_holds_only_addresses_it_reached() {
    for vetted in [true, false] {
        let (mut sim, seed_idx) = network(11, vetted);
        let known_dead = sim
            .engine(seed_idx)
            .unwrap()
            .addr_book()
            .entries()
            .filter(|(a, _)| is_dead(a))
            .count();
        assert!(
            known_dead >= LIVE / 2,
            "the seed's book holds {known_dead} dead"
        );
        let mut c = node_config(LIVE + 1);
        c.seeds = vec![sim.net_addr(seed_idx)];
        let key = sim.gen_key();
        let probe = sim.add_node(c, key);
        sim.run_until(
            |s| s.engine(probe).unwrap().counters().pex_addrs_received >= 1,
            200_000,
        )
        .expect("the seed answers");
        let book: Vec<NetAddr> = sim
            .engine(probe)
            .unwrap()
            .addr_book()
            .entries()
            .map(|(a, _)| a)
            .collect();
        let dead = book.iter().filter(|a| is_dead(a)).count();
        if vetted {
            assert!(book.len() >= LIVE / 2, "reply of {} addresses", book.len());
            assert_eq!(dead, 0, "dead addresses served: {book:?}");
            // Every address served is a node the seed reached (it holds the crawled
            // connections).
            let seed = sim.engine(seed_idx).unwrap();
            for a in &book {
                assert!(seed.peer(&a.id).is_some(), "{a} served but never reached");
            }
        } else {
            assert!(
                dead > 0,
                "CometBFT's policy serves dead addresses too: {book:?}"
            );
        }
    }
}

/// A young seed whose book holds only addresses it never reached (a saved book, nodes that
/// just announced themselves) does not answer a new node with an empty vetted reply, which
/// would send the node straight back to it: it tests those addresses at once and answers when
/// the tests are done (at most 2 s later), with the live ones only.
#[test]
fn young_seed_defers_its_reply_until_it_tested_what_it_knows() {
    const YOUNG_LIVE: usize = 6;
    const YOUNG_DEAD: usize = 6;
    let mut cfg = SimConfig::default();
    cfg.seed = 31;
    cfg.record_events = true;
    cfg.check_invariants = std::env::var("NOCHECK").is_err();
    let mut sim = Sim::new(cfg, Instant::now());
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut sc = node_config(0);
    sc.seed_mode = true;
    let key = sim.gen_key();
    let seed_idx = sim.add_node(sc, key);
    // Live nodes that know nobody: the seed's book is the only place they are known.
    let mut live = Vec::new();
    for i in 1..=YOUNG_LIVE {
        let key = sim.gen_key();
        let idx = sim.add_node(node_config(i), key);
        live.push(sim.net_addr(idx));
    }
    let mut known = live.clone();
    for k in 0..YOUNG_DEAD {
        known.push(dead(&mut sim, k));
    }
    // A new node that knows only the seed.
    let mut c = node_config(YOUNG_LIVE + 1);
    c.seeds = vec![sim.net_addr(seed_idx)];
    let key = sim.gen_key();
    let probe = sim.add_node(c, key);
    let probe_id = sim.node_id(probe);
    // The seed learns the addresses as the probe's connection comes up, before the probe's
    // request arrives: none of them tested yet.
    sim.run_until(
        |s| s.engine(seed_idx).unwrap().peer(&probe_id).is_some(),
        200_000,
    )
    .expect("the probe reaches the seed");
    assert_eq!(
        sim.engine(probe).unwrap().counters().pex_addrs_received,
        0,
        "the reply came before the probe was up"
    );
    let asked = sim.elapsed();
    let unix = sim.unix_now();
    let source = IpAddr::from([30, 0, 0, 1]);
    sim.with_engine(seed_idx, |e, _| {
        for a in &known {
            e.addr_book_mut()
                .add(*a, source, unix, &mut rng)
                .expect("address added");
        }
    });
    sim.run_until(
        |s| s.engine(probe).unwrap().counters().pex_addrs_received >= 1,
        200_000,
    )
    .expect("the seed answers");
    let waited = sim.elapsed() - asked;
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    let book: Vec<NetAddr> = sim
        .engine(probe)
        .unwrap()
        .addr_book()
        .entries()
        .map(|(a, _)| a)
        .collect();
    for a in &live {
        assert!(book.contains(a), "live {a} not served: {book:?}");
    }
    assert!(!book.iter().any(is_dead), "dead addresses served: {book:?}");
}

/// Nodes that contact a young seed one after another, each as soon as the one before got its
/// reply (the seed still holds that connection for a second): each later node's reply waits
/// for the crawler's tests of the nodes before it, and names at least one of them, rather than
/// coming back empty and sending the node back to the seed.
#[test]
fn a_young_seed_never_answers_a_newcomer_empty() {
    let mut cfg = SimConfig::default();
    cfg.seed = 41;
    cfg.check_invariants = std::env::var("NOCHECK").is_err();
    let mut sim = Sim::new(cfg, Instant::now());
    let mut sc = node_config(0);
    sc.seed_mode = true;
    let key = sim.gen_key();
    let seed_idx = sim.add_node(sc, key);
    let seed_addr = sim.net_addr(seed_idx);
    let mut earlier: Vec<NetAddr> = Vec::new();
    for i in 1..=4 {
        let mut c = node_config(i);
        c.seeds = vec![seed_addr];
        let key = sim.gen_key();
        let idx = sim.add_node(c, key);
        let t0 = sim.elapsed();
        sim.run_until(
            |s| s.engine(idx).unwrap().counters().pex_addrs_received >= 1,
            200_000,
        )
        .expect("the seed answers");
        let waited = sim.elapsed() - t0;
        assert!(waited < Duration::from_secs(4), "node {i}: {waited:?}");
        let book: Vec<NetAddr> = sim
            .engine(idx)
            .unwrap()
            .addr_book()
            .entries()
            .map(|(a, _)| a)
            .collect();
        let given = earlier.iter().filter(|a| book.contains(a)).count();
        eprintln!(
            "node {i}: given {given} of {} after {waited:?}",
            earlier.len()
        );
        if i > 1 {
            assert!(
                given >= 1,
                "node {i} was given none of {earlier:?}: {book:?}"
            );
        }
        earlier.push(sim.net_addr(idx));
    }
}
