//! Eclipse scenarios run by real engines (issue 13.6): the victim, a seed and the honest nodes
//! are `Engine`s on the simulator (`core::sim`); the attacker's nodes are engines too, scripted
//! from outside (they flood PEX replies from a book stuffed with their own and trash addresses,
//! redial the victim every minute, and, in G17, half of them break PEX rules as soon as a peer
//! connects). So these figures measure the node a user runs: ensure-peers, G7, feelers,
//! inbound protection, bans, anchors, the book's persistence across a restart.
//!
//! The book-level model and the legacy CometBFT-book comparison stay in `eclipse.rs`.
//! Small grid and G17 here (`cargo test`); the larger grid and G17 with a victim that joins
//! during the attack are `#[ignore]`d: `ECLIPSE_ENGINE_SEEDS=3 ECLIPSE_G17_SEEDS=1 cargo test -p
//! cometmesh-core --features sim --test eclipse_engines -- --ignored --nocapture` (figures in
//! bench/README.md; raise the two counts for more seeds).
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::engine::EngineConfig;
use cometmesh_core::identity::NodeKey;
use cometmesh_core::sim::{Sim, SimConfig, node_config};
use cometmesh_core::{ChannelId, NodeId};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const MIN: Duration = Duration::from_secs(60);
const VICTIM: usize = 0;
const SEED: usize = 1;

/// One scenario.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    /// Attacker groups (/16s).
    groups: u32,
    /// Attacker IPs (nodes) per group.
    ips: u32,
    /// Honest listening nodes (each in its own /16).
    honest: usize,
    /// Share of each attacker group's nodes that misbehave detectably (PEX flood) as soon as a
    /// peer is up: within each group, the first IPs (with one IP per group, every group's).
    misbehaving: f64,
    /// How honest nodes come and go.
    churn: Churn,
    /// After the attack, restart the victim from its saved book (the eclipse timeline), or
    /// (G17) start it then for the first time, knowing only the seed.
    restart: Restart,
    /// Save anchors at the restart and dial them first.
    anchors: bool,
    /// The flooding attacker: books stuffed with its own and trash addresses, and its nodes
    /// dial the victim every minute of the attack. Without it (G17) the attacker's nodes only
    /// announce themselves to the seed and relay what they hear.
    flood: bool,
    /// Honest warm-up, attack, and measurement after the restart.
    warmup: Duration,
    attack: Duration,
    measure: Duration,
}

impl Scenario {
    fn eclipse(groups: u32, ips: u32, anchors: bool) -> Self {
        Scenario {
            groups,
            ips,
            honest: 24,
            misbehaving: 0.0,
            churn: Churn::FifthEvery5Min,
            restart: Restart::FromSavedBook,
            anchors,
            flood: true,
            warmup: 20 * MIN,
            attack: 60 * MIN,
            measure: 40 * MIN,
        }
    }
}

/// How the victim comes to the measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// Up from the start; restarted from its saved book (and anchors) after the attack.
    FromSavedBook,
    /// Down until the attack is over, then started with only the seed in its book: it picks
    /// all its outbound peers while the attacker is there.
    JoinsLate,
    /// Up from the start, never restarted: the measurement follows the attack's start.
    Never,
}

/// Honest churn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Churn {
    /// Every 5 min a fifth of the honest nodes (drawn with replacement) go down or come back:
    /// about half are up, sessions of ~25 min (a harsh world, kept for the eclipse grid).
    FifthEvery5Min,
    /// The spec's world (section 5): 30 % of the honest nodes are down when the attack starts;
    /// each minute an up node goes down with probability 1/360 and a down one comes back with
    /// probability 1/840 (exponential sessions, mean 6 h up, ~70 % online).
    Sessions,
}

/// What one run measured (after the restart).
#[derive(Clone, Debug, Default)]
struct Outcome {
    /// Mean share of the victim's outbound peers held by the attacker, per minute.
    attacker_outbound: f64,
    /// Mean honest share of the victim's outbound peers at the end of each minute (G17).
    honest_fraction_end: f64,
    /// Some minute with all `max_num_outbound_peers` outbound slots held by the attacker.
    e_full: bool,
    /// From 5 min after the restart, a ≥ 10 min stretch without an honest outbound peer.
    e_none: bool,
    /// Minutes until the first honest outbound peer after the restart.
    first_honest_min: Option<u64>,
    /// Seconds a misbehaving outbound peer stayed connected (G17), one entry per such peer.
    misbehaving_held_s: Vec<u64>,
    /// Seconds from a misbehaving outbound peer's disconnection until the victim had as many
    /// outbound peers again (G17), one entry per replacement, 10 s resolution.
    replaced_s: Vec<u64>,
    /// Honest share of the victim's outbound peers at the end of the measurement (G17: after
    /// one hour).
    honest_fraction_last: f64,
}

fn is_attacker(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 60)
}

fn attacker_addr(g: u32, i: u32) -> SocketAddr {
    SocketAddr::from(([60, g as u8, i as u8, 1], 26656))
}

fn add(sim: &mut Sim, c: EngineConfig) -> usize {
    let key = sim.gen_key();
    sim.add_node(c, key)
}

fn run(seed: u64, sc: Scenario) -> Outcome {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.check_invariants = false;
    cfg.rechunk = false;
    let mut sim = Sim::new(cfg, Instant::now());
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0xec11);
    // The victim and a seed.
    let v = add(&mut sim, node_config(VICTIM));
    let mut sc_cfg = node_config(SEED);
    sc_cfg.seed_mode = true;
    let s = add(&mut sim, sc_cfg);
    let seed_addr = sim.net_addr(s);
    let mut honest = Vec::new();
    for i in 0..sc.honest {
        let mut c = node_config(2 + i);
        c.seeds = vec![seed_addr];
        c.max_num_outbound_peers = 4;
        honest.push(add(&mut sim, c));
    }
    // The victim knows only the seed, through its book.
    introduce(&mut sim, v, seed_addr);
    if sc.restart == Restart::JoinsLate {
        sim.stop(v);
    }
    sim.run_for(sc.warmup, 50_000_000).expect("warm-up");
    // The attack: attacker nodes come up with books full of their own and trash addresses.
    let mut attackers = Vec::new();
    let mut attacker_addrs: Vec<SocketAddr> = Vec::new();
    let mut misbehaves: Vec<bool> = Vec::new();
    for g in 0..sc.groups {
        for i in 0..sc.ips {
            attacker_addrs.push(attacker_addr(g, i));
            misbehaves.push((f64::from(i) + 0.5) / f64::from(sc.ips) <= sc.misbehaving);
        }
    }
    let mut misbehaving: Vec<NodeId> = Vec::new();
    let unix = sim.unix_now();
    for (k, &a) in attacker_addrs.clone().iter().enumerate() {
        let mut c = node_config(2 + sc.honest + k);
        c.listen_addr = a;
        c.max_num_outbound_peers = 0;
        c.feeler_interval = Duration::ZERO;
        c.max_num_inbound_peers = 1000;
        c.inbound_attempts_per_ip_per_minute = 0;
        c.inbound_attempts_per_group_per_minute = 0;
        c.addr_book.min_selection = 250;
        let n = add(&mut sim, c);
        attackers.push(n);
        if misbehaves[k] {
            misbehaving.push(sim.node_id(n));
        }
        let own: Vec<NetAddr> = attackers.iter().map(|&x| sim.net_addr(x)).collect();
        let (groups, total) = (sc.groups, sc.groups * sc.ips);
        let trash_seed = seed ^ 0x7a54;
        if !sc.flood {
            continue;
        }
        sim.with_engine(n, |e, _| {
            let mut r = ChaCha20Rng::seed_from_u64(trash_seed);
            let src = a.ip();
            for x in &own {
                let _ = e.addr_book_mut().add(*x, src, unix, &mut r);
            }
            // As many trash addresses as real attacker nodes: replies mix the two (spec 5).
            for t in 0..total {
                let g = r.next_u32() % groups;
                let ip = IpAddr::from([
                    60,
                    g as u8,
                    100 + (t % 150) as u8,
                    (r.next_u32() % 250) as u8 + 1,
                ]);
                let mut id = [0u8; 32];
                r.fill_bytes(&mut id);
                let na = NetAddr::new(NodeKey::from_seed(id).node_id(), SocketAddr::new(ip, 26656));
                let _ = e.addr_book_mut().add(na, src, unix, &mut r);
            }
        });
    }
    if sc.churn == Churn::Sessions {
        for &h in &honest {
            if rng.next_u32() % 10 < 3 {
                sim.stop(h);
            }
        }
    }
    // Attackers announce themselves to the seed and the victim, and redial the victim every
    // minute; misbehaving ones flood PEX requests at every peer they have.
    let victim_addr = sim.net_addr(v);
    let minutes = sc.attack.as_secs() / 60;
    for m in 0..minutes {
        for &n in &attackers {
            if sc.flood {
                let _ = sim.with_engine(n, |e, now| e.dial(now, victim_addr));
            }
            if m == 0 {
                let _ = sim.with_engine(n, |e, now| e.dial(now, seed_addr));
            }
        }
        // Honest churn: every 5 min a fifth of the honest nodes go down or come back (a restarted
        // node starts from its seed, whose book the attacker has flooded).
        churn(&mut sim, sc.churn, m, &honest, &mut rng);
        flood_pex(&mut sim, &attackers, &misbehaving);
        sim.run_for(MIN, 50_000_000).expect("attack");
    }
    // Restart the victim from its saved book (and anchors).
    if sc.restart == Restart::JoinsLate {
        sim.restart(v);
        introduce(&mut sim, v, seed_addr);
    } else if sc.restart == Restart::FromSavedBook {
        let e = sim.engine(v).expect("victim");
        let book = e.addr_book().encode();
        let anchors = if sc.anchors {
            e.anchors(sim.now())
        } else {
            Vec::new()
        };
        sim.stop(v);
        sim.run_for(MIN, 50_000_000).expect("down");
        let now = sim.now();
        sim.restart_with(v, |e| {
            e.load_addr_book(&book).expect("book loads");
            let _ = e.dial_anchors(now, &anchors);
        });
    }
    // Measurement, one sample a minute (attackers keep redialling and flooding).
    let mut out = Outcome::default();
    let max_out = sim
        .engine(v)
        .expect("victim")
        .config()
        .max_num_outbound_peers;
    let mut since_honest = 0u64;
    let mut held: std::collections::BTreeMap<NodeId, u64> = Default::default();
    let samples = sc.measure.as_secs() / 60;
    // After the restart the attacker no longer dials in: an inbound connection would keep its
    // node out of the victim's outbound picks (a connected id is never dialled).
    // Misbehaving outbound peers seen at the last sample, the outbound count then, and the
    // replacements under way: (seconds since the disconnection, outbound count to get back to).
    let mut last_bad: Vec<NodeId> = Vec::new();
    let mut last_out = 0usize;
    let mut pending: Vec<(u64, usize)> = Vec::new();
    for m in 0..samples {
        churn(&mut sim, sc.churn, m, &honest, &mut rng);
        // Sample every 10 s within the minute for the misbehaving-peer hold and replacement
        // times.
        for _ in 0..6 {
            flood_pex(&mut sim, &attackers, &misbehaving);
            sim.run_for(Duration::from_secs(10), 50_000_000)
                .expect("measure");
            let e = sim.engine(v).expect("victim");
            let outs: Vec<NodeId> = e
                .peers()
                .filter(|p| p.counts_outbound())
                .map(|p| p.id)
                .collect();
            let bad: Vec<NodeId> = outs
                .iter()
                .copied()
                .filter(|id| misbehaving.contains(id))
                .collect();
            for id in &bad {
                *held.entry(*id).or_insert(0) += 10;
            }
            for p in &mut pending {
                p.0 += 10;
            }
            pending.retain(|&(s, target)| {
                if outs.len() >= target {
                    out.replaced_s.push(s);
                    false
                } else {
                    true
                }
            });
            for id in &last_bad {
                if !outs.contains(id) {
                    if outs.len() >= last_out {
                        out.replaced_s.push(10);
                    } else {
                        pending.push((10, last_out));
                    }
                }
            }
            last_bad = bad;
            last_out = outs.len();
        }
        let e = sim.engine(v).expect("victim");
        let outs: Vec<bool> = e
            .peers()
            .filter(|p| p.counts_outbound())
            .map(|p| is_attacker(p.remote.ip()))
            .collect();
        let bad = outs.iter().filter(|&&b| b).count();
        let good = outs.len() - bad;
        if !outs.is_empty() {
            out.attacker_outbound += bad as f64 / outs.len() as f64 / samples as f64;
            out.honest_fraction_end += good as f64 / outs.len() as f64 / samples as f64;
            out.honest_fraction_last = good as f64 / outs.len() as f64;
        }
        if bad == max_out && good == 0 {
            out.e_full = true;
        }
        if good > 0 {
            out.first_honest_min.get_or_insert(m + 1);
            since_honest = 0;
        } else if m >= 5 {
            since_honest += 1;
            if since_honest >= 10 {
                out.e_none = true;
            }
        }
    }
    out.misbehaving_held_s = held.into_values().collect();
    out
}

/// Honest churn at minute `m` (see [`Churn`]), drawn with `rng`.
fn churn(sim: &mut Sim, churn: Churn, m: u64, honest: &[usize], rng: &mut ChaCha20Rng) {
    match churn {
        Churn::FifthEvery5Min => {
            if !m.is_multiple_of(5) {
                return;
            }
            for _ in 0..honest.len() / 5 {
                let h = honest[(rng.next_u32() as usize) % honest.len()];
                if sim.engine(h).is_some() {
                    sim.stop(h);
                } else {
                    sim.restart(h);
                }
            }
        }
        Churn::Sessions => {
            for &h in honest {
                let draw = rng.next_u32();
                if sim.engine(h).is_some() {
                    if draw.is_multiple_of(360) {
                        sim.stop(h);
                    }
                } else if draw.is_multiple_of(840) {
                    sim.restart(h);
                }
            }
        }
    }
}

/// Puts `seed` into node `v`'s book.
fn introduce(sim: &mut Sim, v: usize, seed: NetAddr) {
    let unix = sim.unix_now();
    sim.with_engine(v, |e, _| {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let _ = e
            .addr_book_mut()
            .add(seed, "30.0.0.1".parse().expect("ip"), unix, &mut r);
    });
}

/// Every misbehaving attacker sends three PEX requests at once to each of its peers (a
/// provable violation: the third comes sooner than 10 s after the previous one).
fn flood_pex(sim: &mut Sim, attackers: &[usize], misbehaving: &[NodeId]) {
    for &n in attackers {
        if !misbehaving.contains(&sim.node_id(n)) {
            continue;
        }
        let peers: Vec<NodeId> = sim
            .engine(n)
            .map(|e| e.peers().map(|p| p.id).collect())
            .unwrap_or_default();
        for p in peers {
            let _ = sim.with_engine(n, |e, now| {
                for _ in 0..3 {
                    let _ = e.send(now, p, ChannelId::PEX, Bytes::from_static(&[0x0a, 0x00]));
                }
            });
        }
    }
}

fn seeds(default: u64) -> u64 {
    std::env::var("ECLIPSE_ENGINE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(label: &str, sc: &Scenario, outs: &[Outcome]) -> (usize, usize) {
    let n = outs.len() as f64;
    let att = outs.iter().map(|o| o.attacker_outbound).sum::<f64>() / n;
    let full = outs.iter().filter(|o| o.e_full).count();
    let none = outs.iter().filter(|o| o.e_none).count();
    let mut first: Vec<u64> = outs.iter().filter_map(|o| o.first_honest_min).collect();
    first.sort_unstable();
    let first = first.get(first.len() / 2).copied();
    println!(
        "| {label} | {}×{} | {} | {:.1} % | {full}/{} | {none}/{} | {} |",
        sc.groups,
        sc.ips,
        if sc.anchors { "on" } else { "off" },
        100.0 * att,
        outs.len(),
        outs.len(),
        first.map_or("never".to_owned(), |m| format!("{m} min")),
    );
    (full, none)
}

const HEADER: &str = "| engines | attacker G×I | anchors | attacker outbound share | E_full | E_none | first honest outbound (median) |\n|---|---|---|---|---|---|---|";

/// The small grid (CI): attackers of 4 and 16 groups, anchors off and on, one seed. With fewer
/// than 10 groups the attacker can never hold every outbound slot (G7, asserted); E_none is
/// printed (a flooding attacker of 16 groups does eclipse this small world).
#[test]
fn eclipse_by_real_engines_small_grid() {
    println!("{HEADER}");
    for sc in [
        Scenario::eclipse(4, 4, false),
        Scenario::eclipse(16, 2, false),
        Scenario::eclipse(16, 2, true),
    ] {
        let outs: Vec<Outcome> = (0..seeds(1)).map(|s| run(s, sc)).collect();
        let (full, _none) = report("cometmesh", &sc, &outs);
        if sc.groups < 10 {
            assert_eq!(full, 0, "{sc:?}: E_full with fewer than 10 groups (G7)");
        }
    }
}

/// G17's world (spec 4.4 and 5): 93 honest nodes with the spec's churn (sessions of 6 h on
/// average, ~70 % online) and 40 attacker engines (30 % of the addresses) in 20 groups, two
/// per group; in each group one sends three PEX requests at once to every peer it has
/// (detectable within 60 s of connecting), the other is stealthy. No stuffed books, no dialling
/// the victim. The attacker's nodes come up after a 20 min honest warm-up and announce
/// themselves to the seed; the victim is measured for the hour after. With `Restart::Never`
/// the victim was up during the warm-up; with `Restart::JoinsLate` it starts 2 min into the
/// attack, knowing only the seed, so it picks every outbound peer with the attacker there.
fn g17_scenario(restart: Restart) -> Scenario {
    Scenario {
        groups: 20,
        ips: 2,
        honest: 93,
        misbehaving: 0.5,
        churn: Churn::Sessions,
        restart,
        anchors: false,
        flood: false,
        warmup: 20 * MIN,
        attack: if restart == Restart::JoinsLate {
            2 * MIN
        } else {
            MIN
        },
        measure: 60 * MIN,
    }
}

/// The most runs [`g17_check`] makes while looking for a misbehaving outbound encounter.
const G17_MAX_SEEDS: u64 = 24;

const G17_HEADER: &str = "| seed | honest outbound fraction after 1 h | mean over the hour | misbehaving outbound peers | longest held | replacements (10 s resolution) |\n|---|---|---|---|---|---|";

/// Runs G17 for `seeds` seeds, prints a row per seed and checks G17: the honest outbound
/// fraction after the hour is ≥ 0.8 in every run; every misbehaving outbound peer was dropped
/// within 60 s; and, pooled over the runs, misbehaving attackers did reach outbound slots (not
/// vacuous) and the median time to refill such a peer's slot is ≤ 60 s.
///
/// With `assert_fraction`, runs go on past `seeds` (at most [`G17_MAX_SEEDS`]) until a victim met
/// a misbehaving outbound peer: a victim that bootstraps in seconds meets one in only some runs,
/// and the replacement check must not pass vacuously.
fn g17_check(seeds: u64, restart: Restart, assert_fraction: bool) {
    println!("{G17_HEADER}");
    let mut pooled: Vec<u64> = Vec::new();
    let mut encounters = 0;
    let mut seed = 0;
    while seed < seeds || (assert_fraction && encounters == 0 && seed < G17_MAX_SEEDS) {
        let o = run(100 + seed, g17_scenario(restart));
        let longest = o.misbehaving_held_s.iter().max().copied().unwrap_or(0);
        println!(
            "| {seed} | {:.2} | {:.2} | {} | {longest} s | {:?} |",
            o.honest_fraction_last,
            o.honest_fraction_end,
            o.misbehaving_held_s.len(),
            o.replaced_s,
        );
        assert!(
            longest <= 60,
            "seed {seed}: a misbehaving peer held {longest} s"
        );
        assert!(
            !assert_fraction || o.honest_fraction_last >= 0.8,
            "seed {seed}: honest outbound fraction {:.2} after 1 h",
            o.honest_fraction_last
        );
        encounters += o.misbehaving_held_s.len();
        pooled.extend(o.replaced_s);
        seed += 1;
    }
    let seeds = seed;
    pooled.sort_unstable();
    let median = pooled.get(pooled.len() / 2).copied();
    println!(
        "{seeds} seeds: {encounters} misbehaving outbound peers, median replacement {median:?} s"
    );
    if assert_fraction {
        assert!(
            encounters > 0,
            "no misbehaving outbound peer in {seeds} seeds"
        );
    }
    assert!(
        median.is_none_or(|m| m <= 60),
        "median replacement {median:?} s"
    );
}

/// G17 in `cargo test` (one seed, or `ECLIPSE_ENGINE_SEEDS`, and more until a misbehaving
/// outbound peer was met), the victim up during the warm-up: every check asserted.
#[test]
fn g17_honest_outbound_under_misbehaving_peers() {
    g17_check(seeds(1), Restart::Never, true);
}

/// G17 with a victim that joins while the attacker is there (`--ignored`, 1 seed or
/// `ECLIPSE_G17_SEEDS`): hold and replacement times asserted, the honest fraction reported (see
/// bench/README.md: uniform selection leaves the stealthy half ~20 % of the reachable
/// candidates, so ≥ 0.8 fails in about a third of the runs).
#[test]
#[ignore = "slow: G17 with a late victim (run by .ci/run's slow-tests-engines step)"]
fn g17_victim_joins_during_the_attack() {
    let n = std::env::var("ECLIPSE_G17_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    g17_check(n, Restart::JoinsLate, false);
}

/// The larger grid (`--ignored`): attackers of 1, 4, 9 (4 nodes each) and 16 groups (2 each),
/// anchors off and on, 3 seeds (`ECLIPSE_ENGINE_SEEDS`). E_full = 0 below 10 groups (G7).
#[test]
#[ignore = "slow: the real-engine eclipse grid (run by .ci/run's slow-tests step)"]
fn eclipse_by_real_engines_grid() {
    println!("{HEADER}");
    for (groups, ips) in [(1u32, 4u32), (4, 4), (9, 4), (16, 2)] {
        for anchors in [false, true] {
            let sc = Scenario::eclipse(groups, ips, anchors);
            let outs: Vec<Outcome> = (0..seeds(3)).map(|s| run(s, sc)).collect();
            let (full, _) = report("cometmesh", &sc, &outs);
            if groups < 10 {
                assert_eq!(full, 0, "{sc:?}: E_full with fewer than 10 groups (G7)");
            }
        }
    }
}
