//! Fuzz entry point for the crawler ([`crate::crawl::Crawler`]), driven as its adapter would.
//!
//! The input is a program of one-byte opcodes with one-byte operands: advance the injected
//! clock, complete or fail a pending dial, feed arbitrary raw bytes to a connection, feed
//! arbitrary bytes sealed after a real SecretConnection handshake (the peer side is a
//! hand-driven [`Handshake`] holding the dialled id's key when it is one of ours), send a valid
//! NodeInfo or a PEX reply (addresses from a small pool, some invalid), close a connection,
//! and stop the crawl. After every step the driver checks the crawler's invariants and panics
//! on a violation (a finding): never two connections to one host, at most `concurrency` in
//! flight, at most `max_nodes` node ids, the frontier and pending marks in step, and a report
//! consistent with the records. At the end the crawl is stopped, every close is answered, and
//! the crawler must be done.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::addr::NetAddr;
use crate::conn::NodeInfo;
use crate::crawl::{CrawlConfig, CrawlReport, Crawler, Status};
use crate::engine::{CloseCause, DialFailure, Input, Output};
use crate::identity::NodeKey;
use crate::ids::{ChannelId, ConnId};
use crate::secret::{Handshake, SecretSession};
use crate::wire::codec::encode_delimited;
use crate::wire::proto::{Packet, PexMessage};

/// Keys of the nodes the fuzzer can impersonate.
const KEYS: usize = 4;
/// Connections at once.
const CONCURRENCY: usize = 3;
/// Node ids recorded at most.
const MAX_NODES: usize = 24;
/// Inputs fed per driver pass at most (a handshake needs a handful).
const MAX_PASS: usize = 1_000;

/// The peer side of one connection the crawler dialled.
struct Peer {
    addr: NetAddr,
    connected: bool,
    /// The crawler asked for a close (`Output::Close`).
    closing: bool,
    hs: Option<Handshake>,
    session: Option<SecretSession>,
}

struct Driver {
    crawler: Crawler,
    keys: Vec<NodeKey>,
    now: Instant,
    conns: BTreeMap<ConnId, Peer>,
    inputs: VecDeque<Input>,
}

fn key(i: usize) -> NodeKey {
    NodeKey::from_seed([10 + u8::try_from(i % KEYS).unwrap_or(0); 32])
}

/// Address `i` of the pool: key `i % KEYS` on one of three hosts; every fifth is invalid.
fn pool_addr(keys: &[NodeKey], i: u8) -> NetAddr {
    let host = if i % 5 == 4 {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::new(127, 0, 0, 1 + i % 3)
    };
    let port = 26656 + u16::from(i / 8 % 3);
    NetAddr::new(
        keys[usize::from(i) % KEYS].node_id(),
        SocketAddr::new(IpAddr::V4(host), port),
    )
}

impl Driver {
    /// Feeds queued inputs and carries out outputs until both are drained.
    fn drive(&mut self) {
        for _ in 0..MAX_PASS {
            while let Some(out) = self.crawler.poll_output() {
                self.carry_out(out);
            }
            let Some(input) = self.inputs.pop_front() else {
                break;
            };
            if let Input::Closed { conn, .. } | Input::DialFailed { conn, .. } = &input {
                self.conns.remove(conn);
            }
            self.crawler
                .handle_input(self.now, input)
                .expect("the driver only names live connections");
        }
        self.check();
    }

    fn carry_out(&mut self, out: Output) {
        match out {
            Output::DialName { .. } => panic!("the crawler dials addresses, never names"),
            Output::Dial { conn, addr } => {
                assert!(
                    self.conns.values().all(|p| p.addr.addr.ip() != addr.ip()),
                    "two connections to host {}",
                    addr.ip()
                );
                assert!(!self.conns.contains_key(&conn), "connection id reused");
                let id = self
                    .crawler
                    .nodes()
                    .iter()
                    .find(|(_, n)| n.addresses.iter().any(|a| a.addr == addr && a.pending))
                    .map(|(id, _)| *id)
                    .expect("a dialled address is a pending record");
                self.conns.insert(
                    conn,
                    Peer {
                        addr: NetAddr::new(id, addr),
                        connected: false,
                        closing: false,
                        hs: None,
                        session: None,
                    },
                );
                assert!(self.conns.len() <= CONCURRENCY, "over the concurrency");
            }
            Output::Transmit { conn, data } => {
                let p = self.conns.get_mut(&conn).expect("transmit on a live conn");
                assert!(p.connected, "transmit before the connection is up");
                if let Some(hs) = p.hs.as_mut() {
                    if hs.handle_received(&data).is_err() {
                        p.hs = None;
                    } else {
                        while let Some(b) = hs.poll_transmit() {
                            self.inputs.push_back(Input::Received { conn, bytes: b });
                        }
                        if hs.is_complete() {
                            p.session = p.hs.take().and_then(|h| h.into_session().ok());
                        }
                    }
                }
                self.inputs.push_back(Input::Sent {
                    conn,
                    len: data.len(),
                });
            }
            Output::Close { conn } => {
                let p = self.conns.get_mut(&conn).expect("close of a live conn");
                assert!(!p.closing, "closed twice");
                p.closing = true;
            }
            Output::Event(_) => {}
        }
    }

    /// The `arg`-th live connection matching `f`.
    fn pick(&self, arg: u8, f: impl Fn(&Peer) -> bool) -> Option<ConnId> {
        let c: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, p)| f(p))
            .map(|(id, _)| *id)
            .collect();
        (!c.is_empty()).then(|| c[usize::from(arg) % c.len()])
    }

    /// Seals `plain` as the peer of `conn` and sends it.
    fn send_sealed(&mut self, conn: ConnId, plain: &[u8]) {
        let Some(s) = self.conns.get_mut(&conn).and_then(|p| p.session.as_mut()) else {
            return;
        };
        let mut sealed = BytesMut::new();
        if s.sealer.seal(plain, &mut sealed).is_ok() {
            self.inputs.push_back(Input::Received {
                conn,
                bytes: sealed.freeze(),
            });
        }
    }

    fn check(&self) {
        let p = self.crawler.progress();
        assert!(p.in_flight <= CONCURRENCY, "in flight {}", p.in_flight);
        assert!(p.known <= MAX_NODES, "known {}", p.known);
        let nodes = self.crawler.nodes();
        let pending = nodes
            .values()
            .flat_map(|n| n.addresses.iter())
            .filter(|a| a.pending)
            .count();
        assert_eq!(
            pending,
            p.queued + p.in_flight,
            "pending marks and frontier + attempts disagree"
        );
        let report = self.crawler.report(self.now);
        let s = &report.summary;
        assert_eq!(s.known, nodes.len() as u64);
        let reach = nodes
            .values()
            .filter(|n| n.status == Status::Reachable)
            .count() as u64;
        assert_eq!(s.reachable, reach);
        assert!(s.reachable + s.unreachable <= s.known);
        let dials: u64 = nodes
            .values()
            .flat_map(|n| n.addresses.iter())
            .map(|a| u64::from(a.dials))
            .sum();
        assert!(dials <= report.crawl.dials, "more dials recorded than made");
        for n in nodes.values() {
            if n.status == Status::Reachable {
                assert!(n.answered_at.is_some() && n.info.is_some());
            }
        }
    }
}

/// Runs the program in `data` against a crawler seeded with two of the pool's nodes; returns
/// the final report.
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock
pub fn crawl(data: &[u8]) -> CrawlReport {
    let keys: Vec<NodeKey> = (0..KEYS).map(key).collect();
    let mut rest = data;
    let mut next = || -> Option<u8> {
        let (b, tail) = rest.split_first()?;
        rest = tail;
        Some(*b)
    };
    let flags = next().unwrap_or(0);
    let now = Instant::now();
    let mut cfg = CrawlConfig {
        seeds: vec![pool_addr(&keys, 0), pool_addr(&keys, 1)],
        chain_id: (flags & 1 != 0).then(|| "fuzz".to_owned()),
        concurrency: CONCURRENCY,
        rate: u32::from(flags >> 4),
        timeout: Duration::from_secs(5),
        max_nodes: Some(MAX_NODES),
        ..CrawlConfig::default()
    };
    if flags & 2 != 0 {
        cfg.duration = Some(Duration::from_secs(60));
        cfg.revisit = flags & 4 != 0;
        cfg.revisit_interval = Duration::from_secs(10);
    }
    let crawler = Crawler::new(
        cfg,
        NodeKey::from_seed([1; 32]),
        [2; 32],
        now,
        1_700_000_000,
    )
    .expect("a valid config");
    let mut d = Driver {
        crawler,
        keys,
        now,
        conns: BTreeMap::new(),
        inputs: VecDeque::new(),
    };
    d.crawler.handle_timeout(now);
    d.drive();
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        match op % 9 {
            0 => {
                d.now += Duration::from_millis(u64::from(arg) * 50);
                if d.crawler.poll_timeout().is_some_and(|t| t <= d.now) {
                    d.crawler.handle_timeout(d.now);
                }
            }
            1 => {
                if let Some(conn) = d.pick(arg, |p| !p.connected && !p.closing) {
                    let p = d.conns.get_mut(&conn).expect("picked");
                    p.connected = true;
                    let k = d
                        .keys
                        .iter()
                        .find(|k| k.node_id() == p.addr.id)
                        .unwrap_or(&d.keys[usize::from(arg) % KEYS]);
                    let mut hs = Handshake::new(k, [arg; 32]);
                    while let Some(b) = hs.poll_transmit() {
                        d.inputs.push_back(Input::Received { conn, bytes: b });
                    }
                    p.hs = Some(hs);
                    d.inputs.push_front(Input::Connected { conn });
                }
            }
            2 => {
                if let Some(conn) = d.pick(arg, |p| !p.connected) {
                    let error = [
                        DialFailure::Refused,
                        DialFailure::TimedOut,
                        DialFailure::Unreachable,
                        DialFailure::Io,
                    ][usize::from(arg) % 4];
                    d.inputs.push_back(Input::DialFailed { conn, error });
                }
            }
            3 | 4 => {
                let len = usize::from(next().unwrap_or(0));
                let bytes: Vec<u8> = (0..len).map_while(|_| next()).collect();
                if let Some(conn) = d.pick(arg, |p| p.connected) {
                    if op % 9 == 3 {
                        d.inputs.push_back(Input::Received {
                            conn,
                            bytes: Bytes::from(bytes),
                        });
                    } else {
                        d.send_sealed(conn, &bytes);
                    }
                }
            }
            5 => {
                if let Some(conn) = d.pick(arg, |p| p.session.is_some()) {
                    let id = d.conns[&conn].addr.id;
                    let network = if arg & 0x40 == 0 { "fuzz" } else { "other" };
                    let chans: &[ChannelId] = if arg & 0x80 == 0 {
                        &[ChannelId::PEX, ChannelId(0x20)]
                    } else {
                        &[ChannelId(0x20)]
                    };
                    let info = NodeInfo::new(
                        id,
                        network,
                        "tcp://127.0.0.1:26656",
                        "peer",
                        chans.iter().copied(),
                    );
                    let mut plain = BytesMut::new();
                    encode_delimited(&info.to_proto(), &mut plain);
                    d.send_sealed(conn, &plain);
                }
            }
            6 => {
                let n = next().unwrap_or(0);
                if let Some(conn) = d.pick(arg, |p| p.session.is_some()) {
                    let addrs = (0..n % 16)
                        .map(|i| pool_addr(&d.keys, arg.wrapping_add(i.wrapping_mul(7))).to_proto())
                        .collect();
                    let msg = prost::Message::encode_to_vec(&PexMessage::addrs(addrs));
                    let mut plain = BytesMut::new();
                    encode_delimited(
                        &Packet::msg(ChannelId::PEX, true, Bytes::from(msg)),
                        &mut plain,
                    );
                    d.send_sealed(conn, &plain);
                }
            }
            7 => {
                if let Some(conn) = d.pick(arg, |_| true) {
                    let closing = d.conns[&conn].closing;
                    let cause = if closing {
                        CloseCause::Local
                    } else {
                        [CloseCause::Eof, CloseCause::Reset, CloseCause::Io][usize::from(arg) % 3]
                    };
                    d.inputs.push_back(Input::Closed { conn, cause });
                }
            }
            _ => {
                if arg == 0xff {
                    d.crawler.stop(d.now);
                }
            }
        }
        d.drive();
    }
    // Stop, answer every close, and the crawl must be over.
    d.crawler.stop(d.now);
    d.drive();
    let closing: Vec<ConnId> = d.conns.keys().copied().collect();
    for conn in closing {
        assert!(d.conns[&conn].closing, "stop must close every connection");
        d.inputs.push_back(Input::Closed {
            conn,
            cause: CloseCause::Local,
        });
    }
    d.drive();
    assert!(d.conns.is_empty());
    assert!(d.crawler.is_done(), "stopped and drained, yet not done");
    let report = d.crawler.report(d.now);
    assert!(
        ["interrupted", "duration"].contains(&report.crawl.state.as_str()),
        "state {} after a stop",
        report.crawl.state
    );
    report
}

/// Seed inputs for the corpus (`fuzz/corpus/crawl/`) and the unit test: a handshake with a
/// seed, its NodeInfo and a PEX reply, then the same with failures, garbage and time jumps.
#[must_use]
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let happy = vec![
        0, // flags: learn the chain, no rate limit, no duration
        1, 0, // connect the first dial
        5, 0, // NodeInfo on the "fuzz" chain with PEX
        6, 0, 9, // a PEX reply of 9 pool addresses
        0, 40, // 2 s
        7, 0, // answer the close
        0, 60, 1, 0, 2, 1, 5, 0x40, 7, 0, 0, 200, 1, 0, 3, 0, 4, 1, 2, 3, 4,
    ];
    let mut garbage = vec![0x01, 1, 0, 4, 0, 8];
    garbage.extend_from_slice(b"\x00\x01\x02\x03\xff\xfe\xfd\xfc");
    garbage.extend_from_slice(&[2, 1, 0, 120, 8, 0xff]);
    let timeouts = vec![
        0x12, 1, 0, 0, 255, 0, 255, 1, 1, 5, 0x80, 0, 255, 0, 255, 0, 255,
    ];
    vec![
        ("happy", happy),
        ("garbage", garbage),
        ("timeouts", timeouts),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed corpus is what [`seeds`] generates, and each seed runs clean. With
    /// `COMETMESH_WRITE_SEEDS=1` it (re)writes `fuzz/corpus/crawl/` first.
    #[test]
    fn corpus_seeds_run_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/crawl");
        for (name, input) in seeds() {
            let _ = crawl(&input);
            if std::env::var_os("COMETMESH_WRITE_SEEDS").is_some() {
                std::fs::create_dir_all(&dir).expect("corpus dir");
                std::fs::write(dir.join(name), &input).expect("seed written");
            }
            let committed = std::fs::read(dir.join(name)).expect("the seed is committed");
            assert_eq!(committed, input, "fuzz/corpus/crawl/{name} is stale");
        }
    }

    /// The happy seed gets somewhere: the first seed node is reached and its PEX reply read.
    #[test]
    fn happy_seed_reaches_a_node() {
        let report = crawl(&seeds()[0].1);
        assert!(report.summary.reachable >= 1, "{:?}", report.nodes);
        assert!(report.nodes.iter().any(|n| n.addrs_given == Some(9)));
        assert_eq!(crawl(&[]).summary.reachable, 0);
        let mut prog = Vec::new();
        for i in 0..200u8 {
            prog.extend_from_slice(&[i, i.wrapping_mul(37)]);
        }
        let _ = crawl(&prog);
    }
}
