//! The simulator's shards ([`SimConfig::threads`], [`Sim::run_windows`]) change only the speed:
//! one scenario with faults, stepped one event at a time on one shard and run window by window
//! on 1, 2 and 3 shards, gives the same trace, the same steps, the same recorded events and the
//! same address books.
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::time::{Duration, Instant};

use cometmesh_core::sim::{Sim, SimConfig, node_config};

/// How the scenario advances the clock.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// [`Sim::run_for`]: one event at a time.
    Steps,
    /// [`Sim::run_windows`] on this many shards.
    Windows(usize),
}

/// What a run leaves behind.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    trace: u64,
    steps: u64,
    elapsed: Duration,
    /// Recorded events, `(time, node, event)`, in time and node order (each node's own
    /// events keep their order).
    events: Vec<(Duration, usize, String)>,
    books: Vec<Vec<u8>>,
}

/// 30 nodes bootstrap through one seed over jittered, re-chunked links with modelled crypto
/// (switched on per thread, so a worker thread without it would fail every handshake); then
/// a node stops, a partition cuts five nodes off, one connection is reset, a node's output
/// turns to garbage for a while, and everything heals.
fn scenario(run: Run) -> Outcome {
    let mut cfg = SimConfig::default();
    cfg.seed = 0x5a4d_2026;
    cfg.record_events = true;
    cfg.modelled_crypto = true;
    cfg.threads = match run {
        Run::Steps => 1,
        Run::Windows(t) => t,
    };
    let mut sim = Sim::new(cfg, Instant::now());
    let advance = |sim: &mut Sim, d: Duration| match run {
        Run::Steps => {
            sim.run_for(d, 10_000_000).expect("runs");
        }
        Run::Windows(_) => {
            sim.run_windows(d);
        }
    };
    let mut sc = node_config(0);
    sc.seed_mode = true;
    let key = sim.gen_key();
    let seed = sim.add_node(sc, key);
    let seed_addr = sim.net_addr(seed);
    for i in 1..30 {
        let mut c = node_config(i);
        c.seeds = vec![seed_addr];
        let key = sim.gen_key();
        sim.add_node(c, key);
    }
    advance(&mut sim, Duration::from_secs(20));
    sim.stop(5);
    sim.partition(&[(10, 1), (11, 1), (12, 1), (13, 1), (14, 1)]);
    assert!(sim.reset_nth(7), "connections are up");
    sim.set_corrupt(17, true);
    sim.set_slow_reader(18, Duration::from_millis(300));
    advance(&mut sim, Duration::from_secs(10));
    sim.set_corrupt(17, false);
    sim.heal();
    sim.restart(5);
    advance(&mut sim, Duration::from_secs(30));
    sim.check_all();

    let mut events: Vec<(Duration, usize, String)> = sim
        .events()
        .iter()
        .map(|r| (r.at, r.node, format!("{:?}", r.event)))
        .collect();
    events.sort_by_key(|e| (e.0, e.1));
    Outcome {
        trace: sim.trace_hash(),
        steps: sim.steps(),
        elapsed: sim.elapsed(),
        events,
        books: (0..sim.len())
            .map(|i| sim.engine(i).expect("runs").addr_book().encode())
            .collect(),
    }
}

#[test]
fn shards_and_windows_change_nothing_but_the_speed() {
    let steps = scenario(Run::Steps);
    assert!(
        steps.steps > 10_000,
        "the scenario ran: {} steps",
        steps.steps
    );
    assert!(
        steps.events.len() > 500,
        "events recorded: {}",
        steps.events.len()
    );
    for run in [Run::Windows(1), Run::Windows(2), Run::Windows(3)] {
        let other = scenario(run);
        assert_eq!(other.trace, steps.trace, "{run:?}: trace");
        assert_eq!(other.steps, steps.steps, "{run:?}: steps");
        assert_eq!(other.elapsed, steps.elapsed, "{run:?}: clock");
        assert!(
            other.events == steps.events,
            "{run:?}: recorded events differ"
        );
        assert!(other.books == steps.books, "{run:?}: address books differ");
    }
}
