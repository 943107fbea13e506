//! The crawler on the simulator: a 1 000-node network of real engines (mixed versions, 20 %
//! unreachable, some nodes on another chain, a PEX-flooding liar, a node sending garbage),
//! crawled from one seed.
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::*;
use crate::sim::{Guest, Sim, SimConfig, node_addr, node_config};

/// Software versions handed out round-robin.
const VERSIONS: [&str; 4] = ["0.38.26", "0.37.15", "0.34.35", "1.0.1"];
/// The other chain's id.
const OTHER_CHAIN: &str = "other-chain";

/// How network node `i` is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Running, on chain `sim`.
    Healthy,
    /// Running, on [`OTHER_CHAIN`].
    OtherChain,
    /// Added then stopped: dials are refused.
    Stopped,
    /// Never added: dials find no host.
    Absent,
    /// Running, but every byte it sends is garbage.
    Garbage,
    /// Healthy, with 1 200 made-up addresses in its book.
    Liar,
}

/// The network: who is what, their ids and addresses, and the simulator running it.
pub(crate) struct Network {
    pub(crate) sim: Sim,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) ids: Vec<NodeId>,
    pub(crate) crawler: usize,
}

pub(crate) fn kind_of(i: usize) -> Kind {
    match i {
        0 => Kind::Healthy, // the seed
        2 => Kind::Garbage,
        3 => Kind::Liar,
        _ if i % 5 == 1 => {
            if i % 10 == 1 {
                Kind::Stopped
            } else {
                Kind::Absent
            }
        }
        _ if i % 50 == 7 => Kind::OtherChain,
        _ => Kind::Healthy,
    }
}

/// Builds an `n`-node network; every node's book holds `degree` random others.
pub(crate) fn network(n: usize, degree: usize, seed: u64, crawl: CrawlConfig) -> Network {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    cfg.check_invariants = false;
    let mut sim = Sim::new(cfg, Instant::now());
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let keys: Vec<_> = (0..n).map(|_| sim.gen_key()).collect();
    let ids: Vec<NodeId> = keys.iter().map(crate::identity::NodeKey::node_id).collect();
    let kinds: Vec<Kind> = (0..n).map(kind_of).collect();
    let unix = sim.unix_now();
    let mut sim_idx = vec![None; n];
    for i in 0..n {
        if kinds[i] == Kind::Absent {
            continue;
        }
        let mut c = node_config(i);
        c.version = VERSIONS[i % VERSIONS.len()].to_owned();
        c.max_num_outbound_peers = 0; // quiet: only the crawler makes connections
        if kinds[i] == Kind::OtherChain {
            c.chain_id = OTHER_CHAIN.to_owned();
        }
        let idx = sim.add_node(c, keys[i].clone());
        sim_idx[i] = Some(idx);
        let mut picks = BTreeSet::new();
        while picks.len() < degree.min(n - 1) {
            let j = usize::try_from(rng.next_u64() % n as u64).unwrap_or(0);
            if j != i {
                picks.insert(j);
            }
        }
        let mut brng = ChaCha20Rng::seed_from_u64(seed ^ i as u64);
        sim.with_engine(idx, |e, _| {
            for &j in &picks {
                let a = NetAddr::new(ids[j], node_addr(j));
                let _ = e.addr_book_mut().add(a, node_addr(j).ip(), unix, &mut brng);
            }
            if kinds[i] == Kind::Liar {
                for k in 0..1200u32 {
                    let mut id = [0u8; 20];
                    brng.fill_bytes(&mut id);
                    let a = 100 + u8::try_from(k % 100).unwrap_or(0);
                    let b = u8::try_from(k / 100).unwrap_or(0);
                    let fake: SocketAddr = ([a, b, 7, 1], 26656).into();
                    let _ = e.addr_book_mut().add(
                        NetAddr::new(NodeId(id), fake),
                        fake.ip(),
                        unix,
                        &mut brng,
                    );
                }
            }
        });
        match kinds[i] {
            Kind::Stopped => sim.stop(idx),
            Kind::Garbage => sim.set_corrupt(idx, true),
            _ => {}
        }
    }
    let mut crawl = crawl;
    crawl.seeds = vec![NetAddr::new(ids[0], node_addr(0))];
    let key = sim.gen_key();
    let mut seed32 = [0u8; 32];
    rng.fill_bytes(&mut seed32);
    let crawler = Crawler::new(crawl, key.clone(), seed32, sim.now(), unix).expect("config");
    let at: SocketAddr = ([198, 18, 0, 1], 40000).into();
    let crawler = sim.add_guest(at, key, Box::new(Checked::new(crawler)));
    Network {
        sim,
        kinds,
        ids,
        crawler,
    }
}

/// The crawler, with the politeness rules checked on every output: never two connections to
/// one host, never more than `concurrency` at once.
pub(crate) struct Checked {
    pub(crate) crawler: Crawler,
    open: BTreeMap<ConnId, IpAddr>,
    pub(crate) max_open: usize,
    pub(crate) dials: usize,
}

impl Checked {
    fn new(crawler: Crawler) -> Self {
        Checked {
            crawler,
            open: BTreeMap::new(),
            max_open: 0,
            dials: 0,
        }
    }
}

impl Guest for Checked {
    fn handle_input(&mut self, now: Instant, input: Input) {
        if let Input::DialFailed { conn, .. } | Input::Closed { conn, .. } = &input {
            self.open.remove(conn);
        }
        self.crawler
            .handle_input(now, input)
            .expect("crawler accepts the simulator's inputs");
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.crawler.handle_timeout(now);
    }

    fn poll_output(&mut self) -> Option<Output> {
        let out = self.crawler.poll_output()?;
        if let Output::Dial { conn, addr } = &out {
            assert!(
                !self.open.values().any(|ip| *ip == addr.ip()),
                "two connections to host {}",
                addr.ip()
            );
            self.open.insert(*conn, addr.ip());
            self.dials += 1;
            self.max_open = self.max_open.max(self.open.len());
        }
        Some(out)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.crawler.poll_timeout()
    }
}

pub(crate) fn checked(net: &Network) -> &Checked {
    let g: &dyn std::any::Any = net.sim.guest(net.crawler).expect("crawler");
    g.downcast_ref::<Checked>().expect("a Checked crawler")
}

/// Runs the crawl to its end (or `limit` of simulated time).
pub(crate) fn run(net: &mut Network, limit: Duration) {
    let crawler = net.crawler;
    let mut notes = Vec::new();
    for _ in 0..10_000 {
        if checked(net).crawler.is_done() || net.sim.elapsed() >= limit {
            break;
        }
        let _ = net.sim.run_for(Duration::from_millis(500), 2_000_000);
        net.sim.with_guest(crawler, |g, _| {
            let g: &mut dyn std::any::Any = g;
            let c = g.downcast_mut::<Checked>().expect("checked");
            while let Some(n) = c.crawler.poll_note() {
                notes.push(n);
            }
        });
    }
    assert!(checked(net).crawler.is_done(), "crawl did not finish");
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
    let mut net = network(n, 20, 11, crawl_config());
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
}

#[test]
fn same_seed_same_map() {
    let once = || {
        let mut net = network(150, 12, 5, crawl_config());
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
    let mut full = network(120, 10, 9, crawl_config());
    run(&mut full, Duration::from_secs(3600));
    let full_now = full.sim.now();
    let full_report = checked(&full).crawler.report(full_now);

    let cfg = CrawlConfig {
        concurrency: 2,
        rate: 2,
        ..crawl_config()
    };
    let mut net = network(120, 10, 9, cfg.clone());
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
    assert_eq!(reach(&after), reach(&full_report));
    assert_eq!(after.crawl.state, "complete");
}

#[test]
fn a_given_chain_id_marks_other_chains_and_unreachable_seeds_are_reported() {
    let cfg = CrawlConfig {
        chain_id: Some("sim".to_owned()),
        ..crawl_config()
    };
    let mut net = network(60, 8, 3, cfg);
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
    let mut net = network(60, 8, 3, crawl_config());
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
