//! One ban list (issue 13.2): the address book's persisted bans are what admission and dialling
//! read, so a ban survives a restart; and a ban's scope follows the declared topology (node id
//! always, the IP only when duplicate IPs are refused).
#![cfg(feature = "sim")]
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cometmesh_core::engine::{BanOutcome, DialError, EngineConfig};
use cometmesh_core::sim::{Sim, SimConfig, node_config};

const HOUR: Duration = Duration::from_secs(3600);

fn sim(seed: u64) -> Sim {
    let mut cfg = SimConfig::default();
    cfg.seed = seed;
    Sim::new(cfg, Instant::now())
}

fn config(i: usize, listen: Option<SocketAddr>, allow_duplicate_ip: bool) -> EngineConfig {
    let mut c = node_config(i);
    c.pex = false;
    c.allow_duplicate_ip = allow_duplicate_ip;
    if let Some(l) = listen {
        c.listen_addr = l;
    }
    c
}

fn connected(sim: &Sim, a: usize, b: usize) -> bool {
    let id = sim.node_id(b);
    sim.engine(a).is_some_and(|e| e.peer(&id).is_some())
}

/// `from` dials `to` and both see the peer.
fn connect(sim: &mut Sim, from: usize, to: usize) {
    let addr = sim.net_addr(to);
    sim.with_engine(from, |e, now| e.dial(now, addr))
        .expect("node")
        .expect("dial starts");
    sim.run_until(
        |s| connected(s, from, to) && connected(s, to, from),
        100_000,
    )
    .expect("peers up");
}

/// `from` dials `to`; after 10 s the two are still not peers.
fn refused(sim: &mut Sim, from: usize, to: usize) -> bool {
    let addr = sim.net_addr(to);
    let _ = sim.with_engine(from, |e, now| e.dial(now, addr));
    sim.run_for(Duration::from_secs(10), 100_000).expect("runs");
    !connected(sim, from, to) && !connected(sim, to, from)
}

/// Stops node `i` and starts it again from its saved address book, as the driver does.
fn restart_with_book(sim: &mut Sim, i: usize) {
    let book = sim.engine(i).expect("running").addr_book().encode();
    sim.stop(i);
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    sim.restart_with(i, |e| e.load_addr_book(&book).expect("book loads"));
}

/// A peer banned a minute before a restart is neither admitted nor dialled after it, until
/// the ban expires (before issue 13 the restarted engine read an empty in-memory list).
#[test]
fn ban_survives_a_restart() {
    let mut sim = sim(1);
    let victim = add(&mut sim, config(0, None, false));
    let bad = add(&mut sim, config(1, None, false));
    connect(&mut sim, bad, victim);
    let bad_id = sim.node_id(bad);
    let out = sim.with_engine(victim, |e, now| e.ban(now, bad_id, "test", HOUR));
    assert_eq!(out, Some(BanOutcome::Banned));
    sim.run_for(Duration::from_secs(60), 100_000).expect("runs");
    restart_with_book(&mut sim, victim);
    let e = sim.engine(victim).expect("restarted");
    assert!(e.is_banned(&bad_id, sim.now()));
    assert_eq!(e.num_banned(), 1);
    let refused_before = e.counters().refused;
    assert!(
        refused(&mut sim, bad, victim),
        "banned peer admitted after restart"
    );
    assert!(sim.engine(victim).expect("node").counters().refused > refused_before);
    let bad_addr = sim.net_addr(bad);
    assert_eq!(
        sim.with_engine(victim, |e, now| e.dial(now, bad_addr)),
        Some(Err(DialError::Banned)),
        "banned peer dialled after restart"
    );
    // The ban ends on time, restart or not.
    sim.jump(HOUR);
    sim.run_for(Duration::from_secs(5), 100_000).expect("runs");
    assert!(
        !sim.engine(victim)
            .expect("node")
            .is_banned(&bad_id, sim.now())
    );
    connect(&mut sim, bad, victim);
}

/// Without a saved book a restarted engine has no bans: the book is the only list.
#[test]
fn a_restart_without_the_book_forgets_the_ban() {
    let mut sim = sim(2);
    let victim = add(&mut sim, config(0, None, false));
    let bad = add(&mut sim, config(1, None, false));
    connect(&mut sim, bad, victim);
    let bad_id = sim.node_id(bad);
    sim.with_engine(victim, |e, now| e.ban(now, bad_id, "test", HOUR));
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    assert!(refused(&mut sim, bad, victim));
    sim.stop(victim);
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    sim.restart(victim);
    connect(&mut sim, bad, victim);
}

/// Adds a node with a fresh key.
fn add(sim: &mut Sim, c: EngineConfig) -> usize {
    let key = sim.gen_key();
    sim.add_node(c, key)
}

/// Three nodes on one host (one IP, three ports) and a victim elsewhere.
fn shared_host(seed: u64, allow_duplicate_ip: bool) -> (Sim, usize, [usize; 3]) {
    let mut sim = sim(seed);
    let victim = add(&mut sim, config(0, None, allow_duplicate_ip));
    let host = |port| SocketAddr::from(([30, 7, 0, 1], port));
    let mut others = [0; 3];
    for (k, o) in others.iter_mut().enumerate() {
        let port = 26656 + k as u16;
        let c = config(k + 1, Some(host(port)), allow_duplicate_ip);
        *o = add(&mut sim, c);
    }
    (sim, victim, others)
}

/// `allow_duplicate_ip = true` declares that honest nodes share addresses (one host, a NAT):
/// a ban then covers the offender's node id only. Its neighbours on the same IP still get in,
/// before and after a restart; the offender does not.
#[test]
fn with_duplicate_ips_allowed_a_ban_covers_the_node_id_only() {
    let (mut sim, victim, [bad, honest1, honest2]) = shared_host(3, true);
    connect(&mut sim, bad, victim);
    connect(&mut sim, honest1, victim);
    let bad_id = sim.node_id(bad);
    let ip = sim.net_addr(bad).addr.ip();
    sim.with_engine(victim, |e, now| e.ban(now, bad_id, "pex violation", HOUR));
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    assert!(connected(&sim, victim, honest1), "a neighbour was dropped");
    let unix = sim.unix_now();
    let book = sim.engine(victim).expect("node").addr_book();
    assert!(book.is_id_banned(&bad_id, unix));
    assert!(!book.is_ip_banned(&ip, unix));
    assert!(refused(&mut sim, bad, victim));
    connect(&mut sim, honest2, victim);
    restart_with_book(&mut sim, victim);
    assert!(
        refused(&mut sim, bad, victim),
        "offender admitted after restart"
    );
    connect(&mut sim, honest1, victim);
    connect(&mut sim, honest2, victim);
}

/// `allow_duplicate_ip = false` (the default) declares one node per IP: a ban covers the IP
/// too, so a fresh node id from the banned IP buys nothing (G15), before and after a restart.
#[test]
fn with_one_node_per_ip_a_ban_covers_the_ip_too() {
    let (mut sim, victim, [bad, other, _]) = shared_host(4, false);
    connect(&mut sim, bad, victim);
    let bad_id = sim.node_id(bad);
    let ip = sim.net_addr(bad).addr.ip();
    sim.with_engine(victim, |e, now| e.ban(now, bad_id, "pex violation", HOUR));
    sim.run_for(Duration::from_secs(1), 100_000).expect("runs");
    let unix = sim.unix_now();
    let book = sim.engine(victim).expect("node").addr_book();
    assert!(book.is_id_banned(&bad_id, unix) && book.is_ip_banned(&ip, unix));
    assert!(
        refused(&mut sim, other, victim),
        "a new id on the banned IP got in"
    );
    let other_addr = sim.net_addr(other);
    assert_eq!(
        sim.with_engine(victim, |e, now| e.dial(now, other_addr)),
        Some(Err(DialError::Banned))
    );
    restart_with_book(&mut sim, victim);
    assert!(
        refused(&mut sim, other, victim),
        "banned IP admitted after restart"
    );
    assert!(refused(&mut sim, bad, victim));
}
