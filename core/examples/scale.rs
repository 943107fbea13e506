//! Scale benchmark of the engine on the simulator: N nodes bootstrap through 5 seed-mode (`seeds=K`: K)
//! seeds until 95 % of them reach their outbound target (10).
//!
//! ```text
//! cargo run --release -p cometmesh-core --features sim --example scale -- 1000 [sim-seed] [modelled] [cometbft-seeds] [progress] [seeds=K] [threads=T]
//! ```
//!
//! A third argument `modelled` runs the simulator's modelled-crypto mode
//! (`SimConfig::modelled_crypto`: the fuzzing shim instead of X25519, Ed25519 verification and
//! ChaCha20-Poly1305, same frame sizes); its figures go beside the real-crypto ones.
//! `cometbft-seeds` makes the seeds answer as CometBFT's do (a random selection of their book,
//! `seed_vetted_window = 0s`) instead of serving only the addresses they reached themselves.
//!
//! `threads=T` runs the network in T shards side by side ([`Sim::run_windows`]); the result is
//! the same for any T. Prints simulated time, wall time, steps and peak resident memory (VmHWM). Run one N per
//! process so the peak memory is that run's own.
#![allow(clippy::disallowed_methods)] // wall-clock timing of the benchmark itself

use std::time::{Duration, Instant};

use cometmesh_core::engine::Origin;
use cometmesh_core::sim::{Sim, SimConfig, node_config};

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rest: Vec<String> = args.collect();
    let modelled = rest.iter().any(|a| a == "modelled");
    // `cometbft-seeds`: the seeds follow CometBFT's reply policy (a random selection of the
    // whole book, `seed_vetted_window = 0s`) instead of serving only vetted addresses.
    let cometbft_seeds = rest.iter().any(|a| a == "cometbft-seeds");
    // `progress`: every 5 simulated seconds, the nodes at their target and what the seeds
    // serve (vetted addresses, inbound connections), on stderr.
    let progress = rest.iter().any(|a| a == "progress");
    // `seeds=K`: K seeds instead of 5.
    let seeds = rest
        .iter()
        .find_map(|a| a.strip_prefix("seeds=").and_then(|k| k.parse().ok()))
        .unwrap_or(5);
    // `threads=T`: the network in T shards run side by side (`Sim::run_windows`); the result
    // is the same for any T.
    let threads = rest
        .iter()
        .find_map(|a| a.strip_prefix("threads=").and_then(|k| k.parse().ok()))
        .unwrap_or(1);
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.threads = threads;
    cfg.check_invariants = false;
    cfg.modelled_crypto = modelled;
    let wall = Instant::now();
    let mut sim = Sim::new(cfg, wall);
    sim.reserve_nodes(seeds + n);
    let mut seed_addrs = Vec::new();
    for i in 0..seeds {
        let mut c = node_config(i);
        c.seed_mode = true;
        if cometbft_seeds {
            c.seed_vetted_window = Duration::ZERO;
        }
        let key = sim.gen_key();
        let idx = sim.add_node(c, key);
        seed_addrs.push(sim.net_addr(idx));
    }
    for i in seeds..seeds + n {
        let mut c = node_config(i);
        c.seeds = seed_addrs.clone();
        let key = sim.gen_key();
        sim.add_node(c, key);
    }
    let setup = wall.elapsed();
    // A node has reached its target when `max_num_outbound_peers` outbound peers are up. The
    // seed a node dialled counts as one of them until it hangs up (as `num_peers` counts it),
    // so the stricter count leaves seed connections out; both times are printed, the run
    // stops when the stricter one is reached. A node's counts are re-read only when its peer
    // set changed since the last check (`Sim::peer_epoch`): at 10 000 nodes re-reading every
    // node's peers at every check cost more than the simulation itself.
    let mut counted = vec![(u64::MAX, false, false); seeds + n];
    let mut target = |s: &Sim| {
        let (mut strict, mut with_seeds) = (0, 0);
        for (i, slot) in counted.iter_mut().enumerate().skip(seeds) {
            let epoch = s.peer_epoch(i);
            if slot.0 != epoch {
                let (mut all, mut no_seed) = (0, 0);
                let mut max = usize::MAX;
                if let Some(e) = s.engine(i) {
                    max = e.config().max_num_outbound_peers;
                    for p in e.peers().filter(|p| p.counts_outbound()) {
                        all += 1;
                        no_seed += usize::from(p.origin != Origin::Seed);
                    }
                }
                *slot = (epoch, all >= max, no_seed >= max);
            }
            with_seeds += usize::from(slot.1);
            strict += usize::from(slot.2);
        }
        (strict, with_seeds)
    };
    let limit = Duration::from_secs(3 * 3600);
    let mut reached = 0;
    let mut first_with_seeds: Option<Duration> = None;
    let mut next_report = Duration::ZERO;
    while reached * 100 < n * 95 && sim.elapsed() < limit {
        // Checked every 100 ms of simulated time.
        sim.run_windows(Duration::from_millis(100));
        let (strict, with_seeds) = target(&sim);
        if first_with_seeds.is_none() && with_seeds * 100 >= n * 95 {
            first_with_seeds = Some(sim.elapsed());
        }
        reached = strict;
        if progress && sim.elapsed() >= next_report {
            next_report += Duration::from_secs(5);
            let now = sim.now();
            let seeds_state: Vec<String> = (0..seeds)
                .filter_map(|i| sim.engine(i))
                .map(|e| {
                    let c = e.counters();
                    format!(
                        "vetted={} in={} answered={} dials={}",
                        e.vetted_addrs(now).len(),
                        e.num_peers().0,
                        c.pex_requests_answered,
                        c.dials
                    )
                })
                .collect();
            // The nodes still short: their outbound peers, book sizes, failed dials.
            let (mut short, mut out, mut book, mut failed, mut refused) = (0, 0, 0, 0, 0);
            let (mut dials, mut downs, mut dialing, mut inb) = (0, 0, 0, 0);
            for i in seeds..seeds + n {
                if let Some(e) = sim.engine(i) {
                    let o = e
                        .peers()
                        .filter(|p| p.counts_outbound() && p.origin != Origin::Seed)
                        .count();
                    if o < e.config().max_num_outbound_peers {
                        short += 1;
                        out += o;
                        book += e.addr_book().len();
                        failed += e.counters().dial_failures;
                        refused += e.counters().refused;
                        dials += e.counters().dials;
                        downs += e.counters().peers_down;
                        dialing += e.num_dialing() as u64;
                        inb += e.num_peers().0 as u64;
                    }
                }
            }
            let avg = |x: u64| x as f64 / f64::from(short.max(1));
            eprintln!(
                "t={:.1}s steps={} rss={} MiB reached={reached} short={short} (avg out {:.1} book {:.0} failed dials {:.1} refused {:.1} dials {:.1} downs {:.1} dialing {:.1} in {:.1}) seeds: {}",
                sim.elapsed().as_secs_f64(),
                sim.steps(),
                vm_rss_kib().map_or(0, |k| k / 1024),
                avg(out as u64),
                avg(book as u64),
                avg(failed),
                avg(refused),
                avg(dials),
                avg(downs),
                avg(dialing),
                avg(inb),
                seeds_state.join(" | ")
            );
        }
    }
    let wall_total = wall.elapsed();
    // Invariants once at the end (they are not checked per step at this size).
    sim.check_all();
    let (mut conns, mut book) = (0usize, 0usize);
    for i in 0..sim.len() {
        if let Some(e) = sim.engine(i) {
            conns += e.num_conns();
            book += e.addr_book().len();
        }
    }
    println!(
        "crypto={} threads={threads} nodes={n} seeds={seeds} reached={reached} ({:.1}%) simulated={:.1}s (counting seed connections: {:.1}s) wall={:.2}s (setup {:.2}s) steps={} steps/s={:.0} peak_rss={} MiB conns={} avg_book={} trace={:016x}",
        if modelled { "modelled" } else { "real" },
        reached as f64 * 100.0 / n as f64,
        sim.elapsed().as_secs_f64(),
        first_with_seeds.unwrap_or(sim.elapsed()).as_secs_f64(),
        wall_total.as_secs_f64(),
        setup.as_secs_f64(),
        sim.steps(),
        sim.steps() as f64 / wall_total.as_secs_f64(),
        vm_hwm_kib().map_or(0, |k| k / 1024),
        conns,
        book / sim.len().max(1),
        sim.trace_hash(),
    );
}
