//! One cometmesh seed serves two chains on ONE port (issue 15.2, 15.8), with real CometBFT
//! nodes of v0.34, v0.38 and v0.40.
//!
//! The seed is `cometmesh seed`'s own code ([`cometmesh_cli::seed::serve`]) run in this process
//! from a seed config with two `[[chain]]` tables on one `laddr` with `shared_port = true`:
//! a `SharedPort` whose acceptor completes the SecretConnection with the port's key, reads the
//! dialling node's NodeInfo (CometBFT sends it without waiting for ours: `p2p/transport.go`,
//! `handshake`, one goroutine writes while another reads, in v0.34.35, v0.38.26 and v0.40.0
//! alike) and hands the connection to the seed engine of that node's chain, which answers
//! with its own NodeInfo.
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
//!   the seed's `/vetted` lists each chain's nodes under that chain only, and each chain's
//!   address book (written at the seed's graceful stop) holds only its own chain's nodes;
//! - a node of a third chain dials the port and is refused: it has no peer, and no chain of
//!   the seed knows it.
//!
//! Needs the CometBFT binaries of `tests/interop/install-cometbft.sh`; `#[ignore]`d in a plain
//! `cargo test`, run by `.ci/run`'s interop step. About 10 s.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use cometmesh_tests::cometbft::{CometBft, NodeOptions, Version, free_port, temp_dir};

const CHAIN_A: &str = "multi-chain-a";
const CHAIN_B: &str = "multi-chain-b";

/// The seed config: both chains on one loopback port, loopback-friendly (several peers from
/// 127.0.0.1, loopback addresses kept), metrics and `/vetted` on `metrics_port`.
fn seed_config(p2p_port: u16, metrics_port: u16) -> String {
    let chain = |id: &str| {
        format!(
            "[[chain]]\nchain_id = \"{id}\"\nladdr = \"tcp://127.0.0.1:{p2p_port}\"\n\
             shared_port = true\nallow_duplicate_ip = true\naddr_book_strict = false\n\n"
        )
    };
    format!(
        "[instrumentation]\nprometheus = true\n\
         prometheus_listen_addr = \"127.0.0.1:{metrics_port}\"\n\n{}{}",
        chain(CHAIN_A),
        chain(CHAIN_B)
    )
}

/// The body of `GET path` on 127.0.0.1:port (empty if nothing answers).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// The node ids `/vetted` lists for `chain`.
fn vetted(metrics_port: u16, chain: &str) -> Vec<String> {
    let doc = http_get(metrics_port, "/vetted");
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&doc) else {
        return Vec::new();
    };
    v["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["chain_id"] == chain)
        .flat_map(|c| c["vetted"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| Some(a.as_str()?.split('@').next()?.to_owned()))
        .collect()
}

/// Waits (bounded) until the seed serves `node` as a vetted address of `chain`.
fn wait_vetted(metrics_port: u16, chain: &str, node: &CometBft, limit: Duration) {
    let end = Instant::now() + limit;
    let id = node.id().to_string();
    loop {
        let list = vetted(metrics_port, chain);
        if list.contains(&id) {
            return;
        }
        assert!(
            Instant::now() < end,
            "the seed never vetted {id} for {chain}: {list:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start(label: &str, version: Version, chain: &str, seed: &str) -> CometBft {
    let mut opts = NodeOptions::new(label, version, chain);
    opts.seeds = seed.to_owned();
    CometBft::start(&opts).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
#[ignore = "needs cometbft v0.34, v0.38 and v0.40 (tests/interop/install-cometbft.sh); about a minute"]
fn one_port_seeds_two_chains_of_cometbft_nodes_without_crossing() {
    for v in [Version::V034, Version::V038, Version::V040] {
        let _ = v.require();
    }
    let dir = temp_dir("multichain-seed");
    std::fs::create_dir_all(&dir).expect("seed dir");
    let (p2p_port, metrics_port) = (free_port(), free_port());
    let config = dir.join("seeds.toml");
    std::fs::write(&config, seed_config(p2p_port, metrics_port)).expect("write seeds.toml");
    let plan = cometmesh_cli::seed_config::load(&config).expect("the seed config is valid");
    assert_eq!(plan.ports().len(), 1, "one port for both chains");
    let seed_id = plan.chains[0].key.node_id().to_string();
    let seed = format!("{seed_id}@127.0.0.1:{p2p_port}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = rt.spawn(cometmesh_cli::seed::serve(plan, async move {
        let _ = stopped.await;
    }));
    // Up once /vetted answers with both chains.
    let end = Instant::now() + Duration::from_secs(20);
    while !http_get(metrics_port, "/vetted").contains(CHAIN_B) {
        assert!(Instant::now() < end, "the seed never came up");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The first node of each chain; the seed crawls it back and vets it, then the second
    // node of the chain gets its address from the seed.
    let a1 = start("multi-a-v034", Version::V034, CHAIN_A, &seed);
    let b1 = start("multi-b-v038", Version::V038, CHAIN_B, &seed);
    wait_vetted(metrics_port, CHAIN_A, &a1, Duration::from_secs(30));
    wait_vetted(metrics_port, CHAIN_B, &b1, Duration::from_secs(30));
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
    for (chain, other) in [(CHAIN_A, chain_b), (CHAIN_B, chain_a)] {
        let list = vetted(metrics_port, chain);
        assert!(
            other.iter().all(|n| !list.contains(&n.id().to_string())),
            "{chain} serves a node of the other chain: {list:?}"
        );
    }

    // The stranger was refused: it tried (its log names the seed) and never got a peer; no
    // chain of the seed knows it (the books, below).
    assert!(
        z.logs_within(&seed_id, Duration::from_secs(10)),
        "the stranger never dialled the seed"
    );
    assert_eq!(z.net_info_peers().expect("net_info"), []);
    stop.send(()).expect("the seed still runs");
    rt.block_on(running)
        .expect("the seed task")
        .expect("the seed stops cleanly");
    // Each chain's book, as the seed wrote it at its graceful stop: its own nodes only.
    let book = |chain: &str| {
        std::fs::read_to_string(Path::new(&dir).join(chain).join("addrbook.json"))
            .unwrap_or_else(|e| panic!("{chain}'s book: {e}"))
    };
    for (chain, nodes, other) in [(CHAIN_A, chain_a, chain_b), (CHAIN_B, chain_b, chain_a)] {
        let text = book(chain);
        for n in nodes {
            assert!(text.contains(&n.id().to_string()), "{chain}: {text}");
        }
        for n in other.iter().chain([&&z]) {
            assert!(
                !text.contains(&n.id().to_string()),
                "{chain} crossed: {text}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
