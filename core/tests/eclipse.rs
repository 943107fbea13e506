//! Eclipse simulation (peer-management.md section 5, scaled): our book against a model of
//! CometBFT's legacy book in the same world with the same seeds. The smoke set runs in
//! `cargo test`; the full grid runs with `cargo test --release -p cometmesh-core --test eclipse
//! -- --ignored --nocapture` (`ECLIPSE_SEEDS=n` changes its 20 seeds; `.ci/run` runs it with
//! fewer). Print the table with `-- --nocapture`.

mod eclipse_support;

use eclipse_support::{Outcome, Scenario, Variant, run};

/// Mean of each metric over seeds, plus event counts.
#[derive(Default, Debug)]
struct Summary {
    share_new: f64,
    share_tried: f64,
    share_picks: f64,
    share_dialed: f64,
    share_outbound: f64,
    full_eclipse_runs: u32,
    no_honest_runs: u32,
}

fn summarize(outcomes: &[Outcome]) -> Summary {
    let n = outcomes.len() as f64;
    let mut s = Summary::default();
    for o in outcomes {
        s.share_new += o.share_new / n;
        s.share_tried += o.share_tried / n;
        s.share_picks += o.share_picks / n;
        s.share_dialed += o.share_dialed / n;
        s.share_outbound += o.share_outbound / n;
        s.full_eclipse_runs += u32::from(o.full_eclipse_ticks > 0);
        s.no_honest_runs += u32::from(o.no_honest_10min);
    }
    s
}

fn row(label: &str, sc: &Scenario, s: &Summary, runs: usize) -> String {
    format!(
        "| {label} | {}×{}×{} | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {}/{runs} | {}/{runs} |",
        sc.groups,
        sc.ips,
        sc.ids,
        100.0 * s.share_new,
        100.0 * s.share_tried,
        100.0 * s.share_picks,
        100.0 * s.share_dialed,
        100.0 * s.share_outbound,
        s.full_eclipse_runs,
        s.no_honest_runs,
    )
}

const HEADER: &str = "| book | attacker G×I×K | new share | tried share | outbound picks | dialed | outbound conns | E_full | E_none |\n|---|---|---|---|---|---|---|---|---|";

/// Runs the grid; prints the side-by-side table; returns (ours, ours with inbound adds,
/// legacy) summaries per scenario.
fn grid(scenarios: &[Scenario], seeds: u64) -> Vec<(Scenario, Summary, Summary, Summary)> {
    let mut out = Vec::new();
    println!("{HEADER}");
    for sc in scenarios {
        let mut sums = Vec::new();
        for (label, v) in [
            ("cometmesh", Variant::Ours),
            ("cometmesh + inbound adds", Variant::OursInboundAdds),
            ("legacy model", Variant::Legacy),
        ] {
            let o: Vec<Outcome> = (0..seeds).map(|s| run(s, *sc, v)).collect();
            let s = summarize(&o);
            println!("{}", row(label, sc, &s, o.len()));
            sums.push(s);
        }
        let mut it = sums.into_iter();
        if let (Some(a), Some(b), Some(c)) = (it.next(), it.next(), it.next()) {
            out.push((*sc, a, b, c));
        }
    }
    out
}

/// The smoke set: three attacker sizes, 3 seeds each, all variants.
#[test]
fn eclipse_smoke_ours_beats_legacy() {
    let scenarios = [
        Scenario::smoke(4, 64, 1),
        Scenario::smoke(16, 256, 10),
        Scenario::smoke(64, 64, 1),
    ];
    let results = grid(&scenarios, 3);
    for (sc, ours, _inbound_adds, legacy) in &results {
        // Strictly better on what the book keeps in tried (by a factor ≥ 4 here) and on the
        // outbound connections that result; strictly better on what it offers to dial once the
        // attacker spans many groups. Against a few groups the legacy book's bucket-first
        // picks dilute the attacker about as well as our uniform ones (see the full grid in
        // bench/README.md: 1×256×1 is a case where its pick share is lower), so there the pick
        // share only has to be no worse than legacy's + 1 point.
        assert!(
            ours.share_tried * 4.0 < legacy.share_tried,
            "{sc:?}: tried {ours:?} vs {legacy:?}"
        );
        assert!(
            ours.share_outbound < legacy.share_outbound,
            "{sc:?}: conns {ours:?} vs {legacy:?}"
        );
        if sc.groups >= 16 {
            assert!(
                ours.share_picks < legacy.share_picks,
                "{sc:?}: picks {ours:?} vs {legacy:?}"
            );
        } else {
            assert!(
                ours.share_picks <= legacy.share_picks + 0.01,
                "{sc:?}: picks {ours:?} vs {legacy:?}"
            );
        }
        // G7 (asserted at every tick inside the run) caps a 4-group attacker at 4 of 10.
        if sc.groups < 10 {
            assert!(ours.share_outbound <= f64::from(sc.groups) / 10.0, "{sc:?}");
        }
        // G7 corollary and E_none: never fully eclipsed, never 10 min without an honest peer.
        assert_eq!(ours.full_eclipse_runs, 0, "{sc:?}");
        assert_eq!(ours.no_honest_runs, 0, "{sc:?}");
        // G4/G11: tried changes only through our own successful outbound connections.
        assert!(
            ours.share_tried <= 0.25,
            "{sc:?}: tried share {}",
            ours.share_tried
        );
    }
}

/// Same seed, same trace: the simulation is deterministic.
#[test]
fn eclipse_is_deterministic() {
    let sc = Scenario {
        warmup: 120,
        attack: 240,
        measure: 60,
        ..Scenario::smoke(16, 64, 10)
    };
    for v in [Variant::Ours, Variant::OursInboundAdds, Variant::Legacy] {
        assert_eq!(run(7, sc, v), run(7, sc, v));
        assert_ne!(run(7, sc, v).trace, run(8, sc, v).trace);
    }
}

/// The full grid (G ∈ {1, 4, 9, 16, 64, 256}, I ∈ {1, 256}, K ∈ {1, 1000}), 20 seeds.
#[test]
#[ignore = "slow (minutes, release build): cargo test --release -p cometmesh-core --test eclipse -- --ignored"]
fn eclipse_full_grid() {
    let seeds = std::env::var("ECLIPSE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut scenarios = Vec::new();
    for g in [1, 4, 9, 16, 64, 256] {
        for i in [1, 256] {
            for k in [1, 1000] {
                scenarios.push(Scenario::smoke(g, i, k));
            }
        }
    }
    for (sc, ours, _, _) in grid(&scenarios, seeds) {
        if sc.groups < 10 {
            assert_eq!(ours.full_eclipse_runs, 0, "G7 violated: {sc:?}");
        }
    }
}

/// Wilson 95 % upper bound on a proportion (`k` events in `n` runs).
fn wilson_upper(k: u32, n: u32) -> f64 {
    let (k, n, z) = (f64::from(k), f64::from(n), 1.96_f64);
    let p = k / n;
    let d = 1.0 + z * z / n;
    (p + z * z / (2.0 * n) + z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt()) / d
}

/// The differential (spec 5): the attack is strong enough to fully eclipse the legacy
/// CometBFT-book model (P(E_none) ≥ 50 %) in the largest attacker cell, while ours, in the
/// same world with the same seeds, never loses its last honest outbound peer. `ECLIPSE_SEEDS`
/// (default 6) sets the seed count; our Wilson 95 % bound on P(E_none) is printed.
#[test]
fn legacy_book_is_eclipsed_ours_is_not() {
    let seeds: u32 = std::env::var("ECLIPSE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let sc = Scenario::smoke(256, 1, 1000);
    println!("{HEADER}");
    let ours: Vec<Outcome> = (0..u64::from(seeds))
        .map(|s| run(s, sc, Variant::Ours))
        .collect();
    let legacy: Vec<Outcome> = (0..u64::from(seeds))
        .map(|s| run(s, sc, Variant::Legacy))
        .collect();
    let (o, l) = (summarize(&ours), summarize(&legacy));
    println!("{}", row("cometmesh", &sc, &o, ours.len()));
    println!("{}", row("legacy model", &sc, &l, legacy.len()));
    println!(
        "ours: P(E_none) Wilson 95 % upper bound {:.1} % over {seeds} seeds",
        100.0 * wilson_upper(o.no_honest_runs, seeds)
    );
    assert!(
        2 * l.no_honest_runs >= seeds,
        "attack too weak: legacy E_none in {}/{seeds} runs",
        l.no_honest_runs
    );
    assert_eq!(o.no_honest_runs, 0, "ours eclipsed: {o:?}");
    assert_eq!(o.full_eclipse_runs, 0, "ours fully eclipsed: {o:?}");
}
