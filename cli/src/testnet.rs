//! `testnet`: N nodes on loopback in this process — one seed in seed mode, the others knowing
//! only the seed — watched until every node reaches its target (see [`crate::testnet_view`]).
//!
//! Every node listens on 127.0.0.1 port 0 (a free port), allows duplicate IPs and keeps a
//! non-strict address book (loopback addresses are not routable). The PEX period is 1 s rather
//! than CometBFT's 30 s so that discovery is watched in seconds; nothing else differs from a
//! default node. Nothing is written to disk.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use cometmesh_core::ConnId;
use cometmesh_core::engine::{Direction, EngineConfig};
use cometmesh_core::identity::NodeKey;
use cometmesh_tokio as adapter;

use crate::args::TestnetArgs;
use crate::error::CliError;
use crate::node::{runtime, start_error};
use crate::testnet_view::{
    NodeSnapshot, all_reached, render_line, render_summary, render_table, target_peers,
};

/// The chain id of the local network.
pub const CHAIN_ID: &str = "cometmesh-testnet";
/// PEX period of the testnet nodes.
pub const PEX_PERIOD: Duration = Duration::from_secs(1);
/// Screen refresh period.
const REFRESH: Duration = Duration::from_millis(500);
/// A line every this often when stdout is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// The loopback address of node `index` (the seed is 0): `127.<index>.0.1`, so that each node
/// is in an address group of its own. The engine dials at most one automatic outbound peer
/// per group (an eclipse defence), which on a single IP would leave every node one outbound
/// peer. The whole of 127.0.0.0/8 is loopback on Linux.
#[must_use]
pub fn loopback_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, u8::try_from(index).unwrap_or(u8::MAX), 0, 1)
}

/// The configuration of testnet node `name` listening on `ip`.
#[must_use]
pub fn node_config(name: &str, ip: Ipv4Addr, seed_mode: bool) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = CHAIN_ID.to_owned();
    c.moniker = name.to_owned();
    c.listen_addr = (ip, 0).into();
    c.allow_duplicate_ip = true;
    c.addr_book_strict = false;
    c.addr_book.strict = false;
    c.seed_mode = seed_mode;
    c.ensure_peers_period = PEX_PERIOD;
    // CometBFT's smallest PEX reply (32): in a network this small the engine's default of
    // 23 % of the book would hand out next to nothing.
    c.addr_book.min_selection = 32;
    c
}

/// Runs the testnet; `Ok` when every node reached its target in time.
pub fn run(args: &TestnetArgs) -> Result<(), CliError> {
    runtime()?.block_on(run_async(args))
}

async fn run_async(args: &TestnetArgs) -> Result<(), CliError> {
    let n = usize::from(args.nodes);
    let max_outbound = EngineConfig::default().max_num_outbound_peers;
    let target = target_peers(n, max_outbound);
    let timeout = Duration::from_secs(args.timeout);
    let tty = std::io::stdout().is_terminal();

    let mut rng = rand_core::OsRng;
    let mut nodes: Vec<(String, adapter::Node)> = Vec::with_capacity(n);
    let seed = adapter::builder(
        node_config("seed", loopback_ip(0), true),
        NodeKey::generate(&mut rng),
    )
    .start()
    .await
    .map_err(start_error)?;
    let seed_addr = seed.net_addr();
    nodes.push(("seed".to_owned(), seed));
    for i in 1..n {
        let name = format!("node{i}");
        let mut config = node_config(&name, loopback_ip(i), false);
        config.seeds = vec![seed_addr];
        match adapter::builder(config, NodeKey::generate(&mut rng))
            .start()
            .await
        {
            Ok(node) => nodes.push((name, node)),
            Err(e) => {
                shutdown_all(nodes).await;
                return Err(start_error(e));
            }
        }
    }
    println!(
        "cometmesh testnet: {n} nodes on loopback (127.N.0.1), seed {seed_addr}; target: every node connected to {target} others (PEX period {}s, timeout {}s)",
        PEX_PERIOD.as_secs(),
        timeout.as_secs()
    );

    let started = Instant::now();
    let mut drawn_lines = 0usize;
    let mut last_line = None::<Instant>;
    let mut discovery = None;
    let mut traffic = Traffic::new();
    let snapshots = loop {
        let snapshots = snapshot(&nodes, &mut traffic).await;
        let elapsed = started.elapsed();
        let done = all_reached(&snapshots, target);
        if tty {
            let table = render_table(&snapshots, target, elapsed);
            let mut out = std::io::stdout().lock();
            if drawn_lines > 0 {
                // Up to the start of the previous table, then clear to the end of the screen.
                let _ = write!(out, "\x1b[{drawn_lines}F\x1b[J");
            }
            let _ = write!(out, "{table}");
            let _ = out.flush();
            drawn_lines = table.lines().count();
        } else if done || last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
            println!("{}", render_line(&snapshots, target, elapsed));
            last_line = Some(Instant::now());
        }
        if done {
            discovery = Some(elapsed);
            break snapshots;
        }
        if elapsed >= timeout {
            break snapshots;
        }
        tokio::time::sleep(REFRESH).await;
    };
    let elapsed = started.elapsed();
    print!("{}", render_summary(&snapshots, target, discovery, elapsed));
    shutdown_all(nodes).await;
    match discovery {
        Some(_) => Ok(()),
        None => {
            let seed = snapshots.iter().find(|s| s.is_seed).map(|s| s.id);
            let behind: Vec<String> = snapshots
                .iter()
                .filter(|s| !s.is_seed)
                .filter(|s| seed.is_some_and(|id| s.mesh_peers(&id) < target))
                .map(|s| {
                    format!(
                        "{} ({}/{target})",
                        s.name,
                        seed.map_or(0, |id| s.mesh_peers(&id))
                    )
                })
                .collect();
            Err(CliError::Testnet(format!(
                "not every node reached {target} peers within {}s: {}",
                timeout.as_secs(),
                behind.join(", ")
            )))
        }
    }
}

/// Traffic seen so far per connection, so that closed connections (the seed's) still count.
type Traffic = BTreeMap<(usize, ConnId), (u64, u64)>;

async fn snapshot(nodes: &[(String, adapter::Node)], traffic: &mut Traffic) -> Vec<NodeSnapshot> {
    let mut out = Vec::with_capacity(nodes.len());
    for (i, (name, node)) in nodes.iter().enumerate() {
        let peers = node.peers().await.unwrap_or_default();
        let messages = node.status().await.map_or(0, |s| {
            s.counters.pex_requests_sent + s.counters.pex_requests_answered
        });
        let mut snap = NodeSnapshot {
            name: name.clone(),
            id: node.node_id(),
            is_seed: i == 0,
            peers: Vec::with_capacity(peers.len()),
            bytes_sent: 0,
            bytes_received: 0,
            messages,
        };
        for p in &peers {
            snap.peers
                .push((p.info.id, p.info.direction == Direction::Outbound));
            traffic.insert(
                (i, p.info.conn),
                (p.stats.bytes_sent, p.stats.bytes_received),
            );
        }
        for (_, &(sent, received)) in traffic.range((i, ConnId(0))..=(i, ConnId(u64::MAX))) {
            snap.bytes_sent += sent;
            snap.bytes_received += received;
        }
        out.push(snap);
    }
    out
}

async fn shutdown_all(nodes: Vec<(String, adapter::Node)>) {
    let all = nodes.into_iter().map(|(_, node)| node.shutdown());
    let _ = tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(all)).await;
}
