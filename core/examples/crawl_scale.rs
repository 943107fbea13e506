//! Scale figure of the crawler on the simulator: an N-node network of real engines (the mix of
//! `cometmesh_core::crawl::simnet`: 20 % unreachable, other-chain nodes, a PEX-flooding liar, a
//! garbage node; 20 random addresses per book) crawled from one seed with 64 connections at
//! once and no dial-rate limit.
//!
//! ```text
//! cargo run --release -p cometmesh-core --features sim --example crawl_scale -- 10000 [sim-seed]
//! ```
//!
//! Prints the simulated crawl time, wall time (setup and crawl), coverage of the reachable nodes,
//! resident memory once the network is built (VmRSS: the 10 000 engines) and the peak (VmHWM)
//! after the crawl; their difference is what the crawl itself added. Also the JSON report size.
#![allow(clippy::disallowed_methods)] // wall-clock timing of the benchmark itself

use std::time::{Duration, Instant};

use cometmesh_core::crawl::simnet::{Kind, checked, network, run};
use cometmesh_core::crawl::{CrawlConfig, Status};

fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut cfg = CrawlConfig::default();
    cfg.concurrency = 64;
    cfg.rate = 0;
    let wall = Instant::now();
    let mut net = network(n, 20, seed, cfg, wall);
    let setup = wall.elapsed();
    let rss_network = vm_rss_kib().unwrap_or(0);
    let sim_start = net.sim.elapsed();
    let crawl_wall = Instant::now();
    run(&mut net, Duration::from_secs(24 * 3600));
    let crawl_wall = crawl_wall.elapsed();
    let now = net.sim.now();
    let report = checked(&net).crawler.report(now);
    let healthy = (0..n)
        .filter(|&i| matches!(net.kinds[i], Kind::Healthy | Kind::Liar))
        .count();
    let found = report
        .nodes
        .iter()
        .filter(|r| r.status == Status::Reachable)
        .count();
    println!(
        "nodes={n} known={} reachable={found}/{healthy} ({:.2}%) dials={} simulated={:.1}s wall: setup={:.2}s crawl={:.2}s rss after setup={} MiB peak_rss={} MiB report={} KiB",
        report.summary.known,
        found as f64 * 100.0 / healthy.max(1) as f64,
        report.crawl.dials,
        (net.sim.elapsed() - sim_start).as_secs_f64(),
        setup.as_secs_f64(),
        crawl_wall.as_secs_f64(),
        rss_network / 1024,
        vm_hwm_kib().map_or(0, |k| k / 1024),
        serde_json::to_vec(&report).map_or(0, |v| v.len() / 1024),
    );
}
