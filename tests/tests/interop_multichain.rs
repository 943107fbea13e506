//! One cometmesh seed serves two chains on ONE port (issue 15.2, 15.8), with real CometBFT
//! nodes of v0.34, v0.38 and v0.40.
//!
//! The seed runs in this process as `cometmesh seed` builds it: a [`SharedPort`] whose
//! acceptor completes the SecretConnection with the port's key, reads the dialling node's
//! NodeInfo (CometBFT sends it without waiting for ours: `p2p/transport.go`, `handshake`, one
//! goroutine writes while another reads, in v0.34.35, v0.38.26 and v0.40.0 alike) and hands
//! the connection to the seed engine of that node's chain, which answers with its own NodeInfo.
//!
//! Chain A: a v0.34 node and a v0.38 node (the two lines share p2p protocol 8; they connect
//! and gossip addresses, which is all a seed needs). Chain B: a v0.38 node and a v0.40 node.
//! Every node knows only the seed's shared address. Asserted:
//! - every node's own dial to the shared port completed the handshake (its log lists the seed
//!   as an outbound peer), so the port answered v0.34, v0.38 and v0.40 nodes of both chains;
//! - the seed introduces the nodes of each chain to each other: each node lists the other
//!   node of its chain in RPC `/net_info`;
//! - it never crosses chains: no node lists a peer of the other chain or with another network,
//!   no node's log mentions a node of the other chain (CometBFT logs the addresses it dials),
//!   and each chain's seed book holds only its own chain's nodes;
//! - a node of a third chain dials the port and is refused: it has no peer, and no chain of
//!   the seed knows it.
//!
//! Needs the CometBFT binaries of `tests/interop/install-cometbft.sh`; `#[ignore]`d in a plain
//! `cargo test`, run by `.ci/run`'s interop step. About a minute.

use std::time::{Duration, Instant};

use cometmesh_core::engine::EngineConfig;
use cometmesh_core::identity::NodeKey;
use cometmesh_tests::cometbft::{CometBft, NodeOptions, Version};
use cometmesh_tokio::{Node, NodeBuilder, TokioRuntime};

const CHAIN_A: &str = "multi-chain-a";
const CHAIN_B: &str = "multi-chain-b";

/// A seed engine for `chain`, as `cometmesh seed` configures a `[[chain]]` on loopback.
fn seed_config(chain: &str) -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = chain.to_owned();
    c.listen_addr = ([127, 0, 0, 1], 0).into();
    c.allow_duplicate_ip = true;
    c.addr_book_strict = false;
    c.addr_book.strict = false;
    c.seed_mode = true;
    c.addr_book.min_selection = 32;
    c
}

fn start(label: &str, version: Version, chain: &str, seed: &str) -> CometBft {
    let mut opts = NodeOptions::new(label, version, chain);
    opts.seeds = seed.to_owned();
    CometBft::start(&opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (bounded) until `seed` serves `node` as a vetted address.
fn wait_vetted(rt: &tokio::runtime::Runtime, seed: &Node, node: &CometBft, limit: Duration) {
    let end = Instant::now() + limit;
    let id = node.id();
    loop {
        let vetted = rt.block_on(seed.vetted_addrs()).expect("vetted");
        if vetted.iter().any(|a| a.id == id) {
            return;
        }
        assert!(
            Instant::now() < end,
            "the seed never vetted {id}: {vetted:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs cometbft v0.34, v0.38 and v0.40 (tests/interop/install-cometbft.sh); about a minute"]
fn one_port_seeds_two_chains_of_cometbft_nodes_without_crossing() {
    for v in [Version::V034, Version::V038, Version::V040] {
        let _ = v.require();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let key = NodeKey::from_seed([0x4d; 32]);
    let (seed_a, seed_b, port) = rt.block_on(async {
        let port = cometmesh_tokio::shared_port(([127, 0, 0, 1], 0).into(), key.clone())
            .await
            .expect("bind the shared port");
        let a = NodeBuilder::new(TokioRuntime, seed_config(CHAIN_A), key.clone())
            .seed([0x4a; 32])
            .shared_port(&port)
            .start()
            .await
            .expect("chain A's seed starts");
        let b = NodeBuilder::new(TokioRuntime, seed_config(CHAIN_B), key.clone())
            .seed([0x4b; 32])
            .shared_port(&port)
            .start()
            .await
            .expect("chain B's seed starts");
        (a, b, port.start())
    });
    assert_eq!(seed_a.listen_addr(), seed_b.listen_addr(), "one port");
    let seed = seed_a.net_addr().to_string();

    // The first node of each chain; the seed crawls it back and vets it, then the second
    // node of the chain gets its address from the seed.
    let a1 = start("multi-a-v034", Version::V034, CHAIN_A, &seed);
    let b1 = start("multi-b-v038", Version::V038, CHAIN_B, &seed);
    wait_vetted(&rt, &seed_a, &a1, Duration::from_secs(30));
    wait_vetted(&rt, &seed_b, &b1, Duration::from_secs(30));
    let a2 = start("multi-a-v038", Version::V038, CHAIN_A, &seed);
    let b2 = start("multi-b-v040", Version::V040, CHAIN_B, &seed);
    // A node of a chain the port does not serve.
    let z = start("multi-z-v038", Version::V038, "multi-chain-z", &seed);

    let chain_a = [&a1, &a2];
    let chain_b = [&b1, &b2];
    for nodes in [chain_a, chain_b] {
        for (i, n) in nodes.iter().enumerate() {
            let mate = nodes[1 - i].id().to_string();
            let peers = n
                .wait_net_info(Duration::from_secs(90), |p| p.iter().any(|p| p.id == mate))
                .unwrap_or_else(|e| panic!("the seed did not introduce its chain's nodes: {e}"));
            eprintln!("{} lists {peers:?}", n.id());
        }
    }

    // Every node dialled the shared port and completed the handshake there (CometBFT logs
    // each peer it starts: `Peer{MConn{..} <id> out}`), whatever its version and chain.
    let seed_id = key.node_id().to_string();
    let to_seed = format!("{seed_id} out}}");
    for n in chain_a.iter().chain(&chain_b) {
        let lines = n.log_lines("Starting Peer service");
        assert!(
            lines.iter().any(|l| l.contains(&to_seed)),
            "{} never had the seed as an outbound peer: {lines:#?}",
            n.id()
        );
    }

    // Never crossed.
    for (nodes, chain, other) in [(chain_a, CHAIN_A, chain_b), (chain_b, CHAIN_B, chain_a)] {
        for n in nodes {
            let peers = n.net_info_peers().expect("net_info");
            for p in &peers {
                assert_eq!(p.network, chain, "a peer of another network: {peers:?}");
                assert!(
                    p.id == seed_id || nodes.iter().any(|m| m.id().to_string() == p.id),
                    "a stranger among {chain}'s peers: {peers:?}"
                );
            }
            for o in other {
                let lines = n.log_lines(&o.id().to_string());
                assert!(
                    lines.is_empty(),
                    "a {chain} node heard of a node of the other chain: {lines:#?}"
                );
            }
        }
    }
    for (seed, nodes, other) in [(&seed_a, chain_a, chain_b), (&seed_b, chain_b, chain_a)] {
        let book = rt.block_on(seed.known_addrs()).expect("book");
        assert!(
            nodes.iter().all(|n| book.iter().any(|a| a.id == n.id())),
            "{book:?}"
        );
        assert!(
            other.iter().all(|n| book.iter().all(|a| a.id != n.id())),
            "crossed books: {book:?}"
        );
    }
    // The stranger was refused: it tried (its log names the seed), never got a peer, and no
    // chain of the seed knows it.
    assert!(
        z.logs_within(&seed_id, Duration::from_secs(10)),
        "the stranger never dialled the seed"
    );
    assert_eq!(z.net_info_peers().expect("net_info"), []);
    for seed in [&seed_a, &seed_b] {
        let book = rt.block_on(seed.known_addrs()).expect("book");
        assert!(book.iter().all(|a| a.id != z.id()), "{book:?}");
    }
    drop(port);
    rt.block_on(async {
        seed_a.shutdown().await;
        seed_b.shutdown().await;
    });
}
