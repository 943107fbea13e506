//! A seed must never make the network it serves worse (issue 15.3).
//!
//! Four CometBFT nodes (two v0.38, two v0.40) that know only one seed run for a while, once with a
//! CometBFT v0.38 seed and once with a cometmesh seed. Counted from the nodes' own logs: how many
//! connections each one opened to the seed (each is logged at info level as
//! `Starting Peer service ... Peer{MConn{..} <seed id> out}`), and whether any node dropped
//! another for an error (`Stopping peer for error`, e.g. "sent next PEX request too soon").
//!
//! A seed that hangs up on the nodes it crawls draws them back at every ensure-peers period (they
//! keep its address, learnt from the crawl's inbound connection, and spread it by PEX), 6 to 15
//! connections per node in 100 s, and the bursts made v0.40 nodes ban each other for PEX requests
//! sent too soon. cometmesh's seed holds crawled connections as CometBFT's does, and crawls a
//! node as soon as the node's own connection to it is gone, before its address has spread.
//!
//! A second cause, found in these nodes' logs: a CometBFT node whose seed reply gave it nothing
//! to dial runs its ensure-peers pass at once (the reply of a configured seed triggers it) and
//! falls back to its seeds; when the seed's hang-up has already arrived, that redial succeeds,
//! gets another empty reply, and so on: a race that a CometBFT seed loses now and then for the
//! first node ([2,1,1,1] or [3,1,1,1]) and that a young vetted seed, answering empty until its
//! crawl had reached the earlier nodes, lost for the first two ([3,3,1,1]). cometmesh's seed
//! now holds an answered connection 1 s before hanging up, so the node's fallback finds it
//! still connected, and defers a vetted reply that would be empty while it tests what it
//! knows. Measured here (2026-12-04, branch `vetted2`): before the linger, [2,1,1,1] against
//! CometBFT's [2,1,1,1]; in three runs with it, [1,1,1,1] each time against CometBFT's
//! [3,1,1,1], [1,1,1,1] and [1,1,1,1]; no node dropped another.
//!
//! The race is still lost now and then by either seed, so one run of each is compared with a
//! margin of one connection (`RACE_ALLOWANCE`); the storm this test exists for costs 6 to 15
//! per node. Measured (2026-12-05, eight runs each): a CometBFT seed drew [2,1,1,1] in two and
//! [1,1,1,1] in six; cometmesh's [1,1,2,1] in one (CI, against CometBFT's [1,1,1,1], which
//! failed the comparison without a margin) and [1,1,1,1] in seven.
//!
//! `RUST_LOG=cometmesh_driver=debug` prints the cometmesh seed's log; `KEEP_LOGS=<dir>` copies
//! every CometBFT node's log (and the CometBFT seed's) into `<dir>`.
//!
//! Needs the CometBFT binaries of `tests/interop/install-cometbft.sh`; `#[ignore]`d in a plain
//! `cargo test`, run by `.ci/run`'s interop step.

use std::time::Duration;

use cometmesh_core::engine::EngineConfig;
use cometmesh_core::identity::NodeKey;
use cometmesh_core::ids::NodeId;
use cometmesh_tests::cometbft::{CometBft, NodeOptions, Version};

const CHAIN: &str = "storm-chain";
/// How long the nodes run against each seed: three ensure-peers periods (30 s) and more.
const RUN: Duration = Duration::from_secs(100);
/// Extra connections the fallback race may cost in one run (see the module docs).
const RACE_ALLOWANCE: usize = 1;
/// The nodes: two of the v0.38 line, two of the newest line.
const NODES: [Version; 4] = [Version::V038, Version::V038, Version::V040, Version::V040];

/// What the nodes did while they ran against one seed.
#[derive(Debug)]
struct Draw {
    /// Connections each node opened to the seed.
    dials: Vec<usize>,
    /// `Stopping peer for error` lines about a peer that is not the seed.
    drops: Vec<String>,
}

/// Starts the nodes with `seed` as their only seed, lets them run for [`RUN`], and reads their
/// logs.
fn run_nodes(label: &str, seed_id: NodeId, seed: &str) -> Draw {
    let nodes: Vec<CometBft> = NODES
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let mut opts = NodeOptions::new(&format!("{label}-{i}"), v, CHAIN);
            opts.seeds = seed.to_owned();
            CometBft::start(&opts).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    std::thread::sleep(RUN);
    let seed_conn = format!("{seed_id} out}}");
    let dials = nodes
        .iter()
        .map(|n| {
            n.log_lines("Starting Peer service")
                .iter()
                .filter(|l| l.contains(&seed_conn))
                .count()
        })
        .collect();
    if let Ok(dir) = std::env::var("KEEP_LOGS") {
        let _ = std::fs::create_dir_all(&dir);
        for (i, n) in nodes.iter().enumerate() {
            let _ = std::fs::write(format!("{dir}/{label}-{i}.log"), n.log());
        }
    }
    let seed_text = seed_id.to_string();
    let drops = nodes
        .iter()
        .flat_map(|n| n.log_lines("Stopping peer for error"))
        .filter(|l| !l.contains(&seed_text))
        .collect();
    // The nodes met each other through the seed.
    for n in &nodes {
        let peers = n.net_info_peers().expect("net_info");
        let others = peers
            .iter()
            .filter(|p| p.id != seed_text && nodes.iter().any(|m| m.id().to_string() == p.id))
            .count();
        assert!(
            others >= 1,
            "{label}: a node found no other node: {peers:?}"
        );
    }
    Draw { dials, drops }
}

/// The cometmesh seed as `cometmesh start --p2p.seed_mode` configures it, on loopback.
fn cometmesh_seed_config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = CHAIN.to_owned();
    c.listen_addr = ([127, 0, 0, 1], 0).into();
    c.allow_duplicate_ip = true;
    c.addr_book_strict = false;
    c.addr_book.strict = false;
    c.seed_mode = true;
    c.addr_book.min_selection = 32;
    c
}

#[test]
#[ignore = "needs cometbft v0.38 and v0.40 (tests/interop/install-cometbft.sh); runs 3.5 min"]
fn cometmesh_seed_draws_no_more_dials_than_a_cometbft_seed() {
    for v in [Version::V038, Version::V040] {
        let _ = v.require();
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    // 1. The reference: a CometBFT v0.38 seed.
    let mut opts = NodeOptions::new("storm-cmt-seed", Version::V038, CHAIN);
    opts.seed_mode = true;
    let cmt_seed = CometBft::start(&opts).unwrap_or_else(|e| panic!("{e}"));
    let cmt = run_nodes("storm-cmt", cmt_seed.id(), &cmt_seed.peer_addr());
    if let Ok(dir) = std::env::var("KEEP_LOGS") {
        let _ = std::fs::write(format!("{dir}/cmt-seed.log"), cmt_seed.log());
    }
    drop(cmt_seed);

    // 2. Ours, on tokio in this process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let seed = rt.block_on(async {
        cometmesh_tokio::builder(cometmesh_seed_config(), NodeKey::from_seed([0x5e; 32]))
            .seed([0x5e; 32])
            .start()
            .await
            .expect("cometmesh seed starts")
    });
    let ours = run_nodes("storm-ours", seed.node_id(), &seed.net_addr().to_string());
    let status = rt.block_on(seed.status()).expect("status");
    rt.block_on(seed.shutdown());

    eprintln!("connections to a CometBFT seed per node: {:?}", cmt.dials);
    eprintln!(
        "connections to the cometmesh seed per node: {:?}",
        ours.dials
    );
    eprintln!("cometmesh seed counters: {:?}", status.counters);
    let (total_cmt, total_ours) = (
        cmt.dials.iter().sum::<usize>(),
        ours.dials.iter().sum::<usize>(),
    );
    assert!(
        ours.dials.iter().all(|&n| n >= 1),
        "every node used the seed: {:?}",
        ours.dials
    );
    // The fallback race (module docs) costs one extra connection now and then, whichever the
    // seed: one run of each is compared, so ours may lose it once where CometBFT's did not.
    let allowed = total_cmt.max(NODES.len() + RACE_ALLOWANCE);
    assert!(
        total_ours <= allowed && ours.dials.iter().all(|&n| n <= 1 + RACE_ALLOWANCE),
        "the cometmesh seed drew {total_ours} connections ({:?}), a CometBFT seed {total_cmt} ({:?})",
        ours.dials,
        cmt.dials
    );
    assert!(
        ours.drops.is_empty(),
        "nodes dropped each other with the cometmesh seed: {:#?}",
        ours.drops
    );
    // The CometBFT reference run is the control: its drops, if any, are reported, not ours.
    if !cmt.drops.is_empty() {
        eprintln!(
            "with the CometBFT seed, nodes dropped each other: {:#?}",
            cmt.drops
        );
    }
}
