//! `cometmesh crawl` against a CometBFT localnet on loopback: one v0.38 seed (seed mode), three
//! v0.38 nodes, two v0.40 nodes and one v0.34 node, each knowing only the seed. A crawl started
//! from the seed alone must find every node, reachable, with the version its binary reports,
//! and must not enter any node's address book.
//!
//! Binaries (installed by `tests/interop/install-cometbft.sh`): `$COMETBFT`, `$COMETBFT_V040`,
//! `$COMETBFT_V034`, else `cometbft`, `cometbft-v0.40`, `cometbft-v0.34` in
//! `${COMETMESH_CACHE:-~/.cache/cometmesh}/bin`. Ports: 38000–38999 (this test's range).
#![allow(clippy::disallowed_methods)] // wall-clock waits for real processes

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use cometmesh_cli::crawl::{CrawlEvent, CrawlJob, crawl};
use cometmesh_core::addr::PeerAddr;
use cometmesh_core::crawl::{CrawlConfig, Status};
use cometmesh_core::ids::NodeId;

const CHAIN: &str = "crawl-localnet";

/// A free port from this test's range.
fn port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(38000);
    loop {
        let p = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(p < 39000, "port range 38000-38999 exhausted");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn binary(var: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("COMETMESH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/cometmesh")))
        .expect("HOME or COMETMESH_CACHE");
    let p = cache.join("bin").join(name);
    assert!(
        p.is_file(),
        "no {} (${var}): run tests/interop/install-cometbft.sh",
        p.display()
    );
    p
}

/// A CometBFT node started by `tests/interop/cometbft-node.sh`, killed (by pid) on drop.
struct Node {
    pid: u32,
    home: PathBuf,
    id: NodeId,
    p2p: u16,
    version: String,
    label: String,
}

impl Node {
    fn start(label: &str, bin: &Path, seeds: &str, seed_mode: bool) -> Node {
        let home =
            std::env::temp_dir().join(format!("cometmesh-crawl-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let p2p = port();
        let rpc = port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/cometbft-node.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(script)
            .arg("--home")
            .arg(&home)
            .args(["--chain-id", CHAIN])
            .args(["--p2p-port", &p2p.to_string()])
            .args(["--rpc-port", &rpc.to_string()])
            .arg("--bin")
            .arg(bin);
        if !seeds.is_empty() {
            cmd.args(["--seeds", seeds]);
        }
        if seed_mode {
            cmd.arg("--seed-mode");
        }
        let out = cmd.output().expect("run cometbft-node.sh");
        assert!(
            out.status.success(),
            "{label} did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pid");
        let run = |args: &[&str]| {
            let o = Command::new(bin).args(args).output().expect("run cometbft");
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        };
        let home_s = home.to_string_lossy().into_owned();
        let id = run(&["show-node-id", "--home", &home_s])
            .parse()
            .expect("a node id");
        let version = run(&["version"]);
        Node {
            pid,
            home,
            id,
            p2p,
            version,
            label: label.to_owned(),
        }
    }

    fn addr(&self) -> String {
        format!("{}@127.0.0.1:{}", self.id, self.p2p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("cometbft.log")).unwrap_or_default()
    }

    fn addr_book(&self) -> String {
        std::fs::read_to_string(self.home.join("config/addrbook.json")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.pid.to_string())
            .stderr(std::process::Stdio::null())
            .status();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- {} log tail ---", self.label);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}

#[test]
#[ignore = "needs cometbft (v0.38, v0.40, v0.34)"]
fn crawl_finds_every_node_of_a_localnet_from_one_seed() {
    let v038 = binary("COMETBFT", "cometbft");
    let v040 = binary("COMETBFT_V040", "cometbft-v0.40");
    let v034 = binary("COMETBFT_V034", "cometbft-v0.34");
    let seed = Node::start("seed", &v038, "", true);
    let seeds = seed.addr();
    let mut nodes = vec![];
    for (label, bin) in [
        ("a038", &v038),
        ("b038", &v038),
        ("c038", &v038),
        ("d040", &v040),
        ("e040", &v040),
        ("f034", &v034),
    ] {
        nodes.push(Node::start(label, bin, &seeds, false));
    }
    // The seed knows a node once that node has dialled it; crawl until the seed's answer
    // holds every node (bounded: the nodes dial the seed within seconds of starting).
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (report, lines) = loop {
        let mut config = CrawlConfig::default();
        config.timeout = Duration::from_secs(5);
        let job = CrawlJob {
            seeds: vec![seeds.parse::<PeerAddr>().expect("seed address")],
            config,
            resume: None,
        };
        let mut lines = Vec::new();
        let report = rt
            .block_on(crawl(
                job,
                |e| {
                    if let CrawlEvent::Note(n) = e {
                        lines.push(n.to_string());
                    }
                },
                std::future::pending(),
            ))
            .expect("crawl");
        if report.summary.reachable as usize == nodes.len() + 1 || Instant::now() > deadline {
            break (report, lines);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    for l in &lines {
        eprintln!("{l}");
    }
    assert_eq!(report.crawl.chain_id.as_deref(), Some(CHAIN));
    assert_eq!(report.crawl.chain_id_learned_from, Some(seed.id));
    assert_eq!(report.crawl.state, "complete");
    for n in std::iter::once(&seed).chain(&nodes) {
        let r = report
            .nodes
            .iter()
            .find(|r| r.id == n.id)
            .unwrap_or_else(|| panic!("{} ({}) not found", n.label, n.id));
        assert_eq!(r.status, Status::Reachable, "{}: {:?}", n.label, r.failure);
        let info = r.info.as_ref().expect("NodeInfo");
        assert_eq!(info.version, n.version, "{}", n.label);
        assert_eq!(info.network, CHAIN);
        assert_eq!(r.answered_at.map(|a| a.port()), Some(n.p2p));
        assert!(r.addrs_given.is_some(), "{} answered PEX", n.label);
    }
    assert_eq!(report.summary.reachable as usize, nodes.len() + 1);
    let versions: Vec<&String> = report.summary.versions.keys().collect();
    assert_eq!(versions.len(), 3, "three versions: {versions:?}");

    // The page draws every node.
    let page = cometmesh_cli::crawl_html::render(&report);
    for n in std::iter::once(&seed).chain(&nodes) {
        assert!(page.contains(&format!("data-id=\"{}\"", n.id)));
    }

    // The crawler is in nobody's address book (it announced 0.0.0.0:0). Address books are written every 2 minutes and at shutdown: stop the nodes first.
    let crawler = report.crawl.crawler_id.to_string();
    for n in std::iter::once(&seed).chain(&nodes) {
        let _ = Command::new("kill").arg(n.pid.to_string()).status();
    }
    std::thread::sleep(Duration::from_secs(2));
    for n in std::iter::once(&seed).chain(&nodes) {
        assert!(
            !n.addr_book().contains(&crawler),
            "{} keeps the crawler in its address book",
            n.label
        );
    }
}
