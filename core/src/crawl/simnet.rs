//! A simulated network to crawl (feature `sim`): real engines with mixed versions, 20 %
//! unreachable (half refusing, half absent), some on another chain, a PEX-flooding liar and a
//! node sending garbage, every node's address book filled with random others. Used by the
//! crawler's tests and by `cargo run -p cometmesh-core --features sim --example crawl_scale`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use super::{CrawlConfig, Crawler};
use crate::addr::NetAddr;
use crate::engine::{Input, Output};
use crate::ids::{ConnId, NodeId};
use crate::sim::{Guest, Sim, SimConfig, node_addr, node_config};

/// Software versions handed out round-robin.
pub const VERSIONS: [&str; 4] = ["0.38.26", "0.37.15", "0.34.35", "1.0.1"];
/// The other chain's id.
pub const OTHER_CHAIN: &str = "other-chain";

/// An id the seed (node 0) announces at node 9's address, where node 9 answers instead.
pub const WRONG_ID: NodeId = NodeId([0x77; 20]);

/// How network node `i` is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
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
pub struct Network {
    /// The simulator.
    pub sim: Sim,
    /// The role of each network node.
    pub kinds: Vec<Kind>,
    /// The id of each network node.
    pub ids: Vec<NodeId>,
    /// The crawler's index in the simulator.
    pub crawler: usize,
}

/// The role of network node `i`.
#[must_use]
pub fn kind_of(i: usize) -> Kind {
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

/// Builds an `n`-node network; every node's book holds `degree` random others. `origin` is
/// the zero of the virtual clock; the crawler (seeded with node 0) is a guest of the sim.
pub fn network(n: usize, degree: usize, seed: u64, crawl: CrawlConfig, origin: Instant) -> Network {
    let cfg = SimConfig {
        seed,
        check_invariants: false,
        ..SimConfig::default()
    };
    let mut sim = Sim::new(cfg, origin);
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
            if i == 0 {
                // A stale entry: an id nobody has, at node 9's address (node 9 answers).
                let stale = NetAddr::new(WRONG_ID, node_addr(9));
                let _ = e
                    .addr_book_mut()
                    .add(stale, node_addr(9).ip(), unix, &mut brng);
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
pub struct Checked {
    /// The crawler.
    pub crawler: Crawler,
    open: BTreeMap<ConnId, IpAddr>,
    /// Most connections open at once.
    pub max_open: usize,
    /// Dials made.
    pub dials: usize,
}

impl Checked {
    /// Wraps a crawler.
    #[must_use]
    pub fn new(crawler: Crawler) -> Self {
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

/// The crawler of `net`.
#[must_use]
pub fn checked(net: &Network) -> &Checked {
    let g: &dyn std::any::Any = net.sim.guest(net.crawler).expect("crawler");
    g.downcast_ref::<Checked>().expect("a Checked crawler")
}

/// Runs the crawl to its end (or `limit` of simulated time); panics if it does not end.
pub fn run(net: &mut Network, limit: Duration) {
    let crawler = net.crawler;
    for _ in 0..10_000 {
        if checked(net).crawler.is_done() || net.sim.elapsed() >= limit {
            break;
        }
        let _ = net.sim.run_for(Duration::from_millis(500), 2_000_000);
        net.sim.with_guest(crawler, |g, _| {
            let g: &mut dyn std::any::Any = g;
            let c = g.downcast_mut::<Checked>().expect("checked");
            while c.crawler.poll_note().is_some() {}
        });
    }
    assert!(checked(net).crawler.is_done(), "crawl did not finish");
}
