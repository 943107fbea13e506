//! The crawler on the simulator: a 1 000-node network (see [`super::simnet`]) crawled from one
//! seed.
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::simnet::{
    Checked, Kind, Network, OTHER_CHAIN, VERSIONS, WRONG_ID, checked, network, run,
};
use super::*;
use crate::sim::node_addr;

fn build(n: usize, degree: usize, seed: u64, crawl: CrawlConfig) -> Network {
    network(n, degree, seed, crawl, Instant::now())
}

fn crawl_config() -> CrawlConfig {
    CrawlConfig {
        concurrency: 32,
        rate: 100,
        timeout: Duration::from_secs(10),
        ..CrawlConfig::default()
    }
}

#[test]
fn maps_a_thousand_node_network() {
    let n = 1000;
    let mut net = build(n, 20, 11, crawl_config());
    run(&mut net, Duration::from_secs(3600));
    let now = net.sim.now();
    let c = checked(&net);
    assert!(c.max_open <= 32, "concurrency exceeded: {}", c.max_open);
    let report = c.crawler.report(now);
    assert_eq!(report.crawl.chain_id.as_deref(), Some("sim"));
    assert_eq!(report.crawl.chain_id_learned_from, Some(net.ids[0]));
    assert_eq!(report.crawl.state, "complete");
    let by_id: BTreeMap<NodeId, &NodeRecord> = report.nodes.iter().map(|r| (r.id, r)).collect();

    // Every reachable node answered, with its own NodeInfo, at its own address.
    let healthy: Vec<usize> = (0..n)
        .filter(|&i| matches!(net.kinds[i], Kind::Healthy | Kind::Liar))
        .collect();
    let mut found = 0;
    for &i in &healthy {
        let Some(r) = by_id.get(&net.ids[i]) else {
            continue;
        };
        if r.status != Status::Reachable {
            continue;
        }
        found += 1;
        let info = r.info.as_ref().expect("a reachable node has its NodeInfo");
        assert_eq!(info.version, VERSIONS[i % VERSIONS.len()], "node {i}");
        assert_eq!(info.moniker, format!("node{i}"));
        assert_eq!(info.network, "sim");
        assert_eq!(r.answered_at, Some(node_addr(i)));
        assert!(r.addrs_given.is_some(), "node {i} answered PEX");
        assert!(r.handshake_ms.is_some() && r.connect_ms.is_some());
    }
    assert!(
        found * 100 >= healthy.len() * 99,
        "mapped {found} of {} reachable nodes",
        healthy.len()
    );
    // Nobody else is reachable, and every failure has its kind.
    let reachable = report
        .nodes
        .iter()
        .filter(|r| r.status == Status::Reachable)
        .count();
    assert_eq!(reachable, found, "only healthy nodes are reachable");
    for i in 0..n {
        let Some(r) = by_id.get(&net.ids[i]) else {
            continue;
        };
        let kind = r.failure.as_ref().map(Failure::kind);
        match net.kinds[i] {
            Kind::Stopped => assert_eq!(kind, Some("refused"), "node {i}"),
            Kind::Absent => assert_eq!(kind, Some("unreachable"), "node {i}"),
            // Garbage either fails to decode or leaves the handshake waiting for more.
            Kind::Garbage => assert!(
                matches!(kind, Some("handshake" | "timeout")),
                "node {i}: {kind:?}"
            ),
            Kind::OtherChain => {
                assert_eq!(kind, Some("other_chain"), "node {i}");
                let info = r.info.as_ref().expect("another chain's NodeInfo is kept");
                assert_eq!(info.network, OTHER_CHAIN);
            }
            Kind::Healthy | Kind::Liar => {}
        }
    }
    // An announced id that another node answers for is a wrong id, and names who answered.
    assert_eq!(
        by_id[&WRONG_ID].failure,
        Some(Failure::WrongId {
            answered_by: net.ids[9]
        })
    );
    // Node 9 itself is then dialled after a cool-down, not refused as a duplicate IP.
    assert_eq!(by_id[&net.ids[9]].status, Status::Reachable);
    // The liar's made-up addresses were dialled once each and failed; they did not stop the
    // crawl from mapping everything else.
    let liar = by_id[&net.ids[3]];
    assert!(
        liar.addrs_given.unwrap_or(0) > 100,
        "the liar floods: {liar:?}"
    );
    let fakes = report
        .nodes
        .iter()
        .filter(|r| {
            r.main_addr()
                .is_some_and(|a| a.port() == 26656 && a.ip().to_string().ends_with(".7.1"))
        })
        .count();
    assert!(fakes > 100);
    assert_eq!(report.summary.reachable as usize, found);
    assert!(report.summary.versions.len() == VERSIONS.len());
    assert!(report.summary.other_chains.contains_key(OTHER_CHAIN));
    // Each address was dialled at most once.
    for r in &report.nodes {
        for a in &r.addresses {
            assert!(a.dials <= 1, "{} dialled {} times", a.addr, a.dials);
        }
    }
    assert_eq!(report.crawl.dials as usize, c.dials);

    // Deterministic: the same network and seed give the same map, byte for byte.
    let first = serde_json::to_string(&report).expect("json");
    let mut again = build(n, 20, 11, crawl_config());
    run(&mut again, Duration::from_secs(3600));
    let now = again.sim.now();
    let second = serde_json::to_string(&checked(&again).crawler.report(now)).expect("json");
    assert!(first == second, "two runs gave different maps");
}

#[test]
fn same_seed_same_map() {
    let once = || {
        let mut net = build(150, 12, 5, crawl_config());
        run(&mut net, Duration::from_secs(3600));
        let now = net.sim.now();
        serde_json::to_string(&checked(&net).crawler.report(now)).expect("json")
    };
    let a = once();
    assert_eq!(a, once());
}

#[test]
fn stop_then_resume_finishes_the_map() {
    // Stop after a few seconds, resume from the report in a fresh crawler on the same
    // network, and end with the same reachable set as an uninterrupted crawl.
    let mut full = build(120, 10, 9, crawl_config());
    run(&mut full, Duration::from_secs(3600));
    let full_now = full.sim.now();
    let full_report = checked(&full).crawler.report(full_now);

    let cfg = CrawlConfig {
        concurrency: 2,
        rate: 2,
        ..crawl_config()
    };
    let mut net = build(120, 10, 9, cfg.clone());
    let _ = net.sim.run_for(Duration::from_secs(3), 1_000_000);
    let crawler = net.crawler;
    let report = net
        .sim
        .with_guest(crawler, |g, now| {
            let g: &mut dyn std::any::Any = g;
            let c = g.downcast_mut::<Checked>().expect("checked");
            c.crawler.stop(now);
            c.crawler.report(now)
        })
        .expect("crawler");
    assert_eq!(report.crawl.state, "interrupted");
    let text = serde_json::to_string(&report).expect("json");
    let report: CrawlReport = serde_json::from_str(&text).expect("a report reads back");
    let before = report.summary.reachable;
    assert!(
        report
            .nodes
            .iter()
            .any(|n| n.addresses.iter().any(|a| a.dials == 0))
    );

    let key = net.sim.gen_key();
    let now = net.sim.now();
    let unix = net.sim.unix_now();
    let mut resumed = Crawler::new(crawl_config(), key.clone(), [7; 32], now, unix).expect("cfg");
    resumed.resume(report).expect("resume");
    let at: SocketAddr = ([198, 18, 0, 2], 40000).into();
    net.crawler = net.sim.add_guest(at, key, Box::new(Checked::new(resumed)));
    run(&mut net, Duration::from_secs(3600));
    let now = net.sim.now();
    let after = checked(&net).crawler.report(now);
    assert!(after.summary.reachable > before);
    let reach = |r: &CrawlReport| -> BTreeSet<NodeId> {
        r.nodes
            .iter()
            .filter(|n| n.status == Status::Reachable)
            .map(|n| n.id)
            .collect()
    };
    for id in reach(&after).symmetric_difference(&reach(&full_report)) {
        eprintln!("full: {:?}", full_report.nodes.iter().find(|n| n.id == *id));
        eprintln!("after: {:?}", after.nodes.iter().find(|n| n.id == *id));
    }
    assert_eq!(reach(&after), reach(&full_report));
    assert_eq!(after.crawl.state, "complete");
}

#[test]
fn a_given_chain_id_marks_other_chains_and_unreachable_seeds_are_reported() {
    let cfg = CrawlConfig {
        chain_id: Some("sim".to_owned()),
        ..crawl_config()
    };
    let mut net = build(60, 8, 3, cfg);
    // An extra seed nobody listens at: a clear note, and the crawl goes on.
    let bogus = NetAddr::new(NodeId([9; 20]), ([198, 51, 100, 7], 26656).into());
    let crawler = net.crawler;
    net.sim.with_guest(crawler, |g, _| {
        let g: &mut dyn std::any::Any = g;
        let c = g.downcast_mut::<Checked>().expect("checked");
        c.crawler.seeds.push(bogus);
        c.crawler.learn(bogus, None, 0);
    });
    let mut notes = Vec::new();
    for _ in 0..1000 {
        if checked(&net).crawler.is_done() {
            break;
        }
        let _ = net.sim.run_for(Duration::from_millis(500), 1_000_000);
        net.sim.with_guest(crawler, |g, _| {
            let g: &mut dyn std::any::Any = g;
            let c = g.downcast_mut::<Checked>().expect("checked");
            while let Some(n) = c.crawler.poll_note() {
                notes.push(n);
            }
        });
    }
    let now = net.sim.now();
    let report = checked(&net).crawler.report(now);
    assert_eq!(report.crawl.chain_id_learned_from, None);
    assert!(report.summary.reachable > 20);
    let seed_line = notes
        .iter()
        .find(|n| matches!(n, Note::Failed { seed: true, .. }))
        .expect("the unreachable seed is reported");
    assert!(seed_line.to_string().starts_with("seed "), "{seed_line}");
    let other = (0..60)
        .find(|&i| net.kinds[i] == Kind::OtherChain)
        .expect("one");
    if let Some(r) = report.nodes.iter().find(|r| r.id == net.ids[other]) {
        assert_eq!(r.failure.as_ref().map(Failure::kind), Some("other_chain"));
    }
}

/// Every key of the JSON report is documented in docs/crawl-schema.md, and every key the
/// document lists appears in a real report.
#[test]
fn json_report_matches_the_documented_schema() {
    let mut net = build(60, 8, 3, crawl_config());
    run(&mut net, Duration::from_secs(3600));
    let now = net.sim.now();
    let report = checked(&net).crawler.report(now);
    let value = serde_json::to_value(&report).expect("json");
    assert_eq!(value["schema"], SCHEMA);
    assert_eq!(value["schema_version"], SCHEMA_VERSION);
    let mut keys = BTreeSet::new();
    collect_keys(&value, "", &mut keys);
    let doc = include_str!("../../../docs/crawl-schema.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = keys.difference(&documented).collect();
    assert!(missing.is_empty(), "undocumented keys: {missing:?}");
    // Documented keys that this report cannot show (optional ones) are listed as such.
    let optional = |k: &str| {
        k == "nodes[].pex_error"
            || ["nodes[].failure.", "nodes[].addresses[].last_failure."]
                .iter()
                .any(|p| k.strip_prefix(p).is_some_and(|rest| rest != "kind"))
    };
    let unseen: Vec<_> = documented
        .iter()
        .filter(|k| !keys.contains(*k) && !optional(k))
        .collect();
    assert!(unseen.is_empty(), "documented but absent: {unseen:?}");
    // Round trip.
    let back: CrawlReport = serde_json::from_value(value).expect("reads back");
    assert_eq!(back, report);
}

fn collect_keys(v: &serde_json::Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                // Maps keyed by data (versions, channels, ...) are documented as a whole.
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                if !matches!(
                    p.as_str(),
                    "summary.failures"
                        | "summary.versions"
                        | "summary.channels"
                        | "summary.other_chains"
                ) {
                    collect_keys(v, &p, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                collect_keys(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn revisit_runs_rounds_until_the_duration_and_max_nodes_bounds_the_map() {
    let mut cfg = crawl_config();
    cfg.revisit = true;
    cfg.revisit_interval = Duration::from_secs(60);
    cfg.duration = Some(Duration::from_secs(150));
    cfg.max_nodes = Some(40);
    let mut net = build(80, 8, 4, cfg);
    run(&mut net, Duration::from_secs(3600));
    let now = net.sim.now();
    let report = checked(&net).crawler.report(now);
    assert_eq!(report.crawl.state, "duration");
    assert_eq!(report.crawl.rounds, 3, "rounds at 0, 60 and 120 s");
    assert_eq!(report.summary.known, 40);
    assert!(report.crawl.dropped_nodes > 0);
    // Reachable nodes were dialled once per round at the address that answered.
    let again = report
        .nodes
        .iter()
        .filter(|n| n.status == Status::Reachable && n.round == 2)
        .count();
    assert!(again > 10, "{again} nodes answered in the third round");
    assert!(
        report
            .nodes
            .iter()
            .flat_map(|n| &n.addresses)
            .any(|a| a.dials == 3)
    );
}
