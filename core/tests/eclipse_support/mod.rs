//! A deterministic in-process eclipse simulation (peer-management.md section 5, scaled down):
//! one victim, an honest population with churn, and an attacker, with our book and a model of
//! CometBFT's legacy book driven through the same world with the same seed.
//!
//! Virtual time advances in 1-minute ticks (`ensurePeers` runs every 30 s in CometBFT; one
//! round per tick is enough here). Timeline: honest warm-up, attack, restart (our book reloads
//! from its encoded bytes; the legacy book keeps its buckets but draws a new hash key and loses
//! its bans, as Go does), measurement.
//!
//! Policies around each book follow its design:
//! - **ours**: `pick` with an `accept` that skips connected addresses and groups already used
//!   by an outbound peer (G7); `mark_good` on a successful *outbound* dial only; `mark_failed`
//!   on a failed dial; a feeler every 2 minutes that tests a tried collision's incumbent or an
//!   entry of new, then `resolve_collisions`; inbound peers' listen addresses added to new;
//! - **legacy**: `ensurePeers` (bias `min(out, 8)·10 + 10`, up to 3× picks, skip connected id or
//!   IP, no group rule), `dialPeer` back-off and the 16-failure ban, `MarkGood` for every peer
//!   (inbound too) that stays connected 10 minutes (consensus calls it after 10,000 useful
//!   messages), inbound listen addresses added with the peer as source.
//!
//! Both ask every new outbound peer for addresses once (a stress assumption: CometBFT asks only
//! while the book has < 1000 entries), and one random outbound peer per tick while the book has
//! < 1000 entries (spec 5.3, 5.4). During the attack a fifth of the
//! addresses honest peers relay are the attacker's (its addresses spread through the network).
//! During the attack the attacker also holds every inbound slot (spec 5): a slot that frees is
//! retaken at once, a connection held 10 min (so the legacy policy marks it good) hangs up and
//! is replaced by a fresh attacker node, and `INBOUND_CHURN` short connections a tick report new
//! listen addresses. Ours ignores inbound listen addresses and never marks inbound peers good,
//! so this is what fills the legacy book's old and new tables (P(E_none) ≥ 50 % at G = 256).
//! A third variant runs our book with CometBFT's inbound policy, to show that policy's cost.

#![allow(dead_code, unreachable_pub)]

pub mod legacy;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use cometmesh_core::NodeId;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{AddrBook, AddrBookConfig, Group};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use siphasher::sip::SipHasher13;

use legacy::LegacyBook;

const OUTBOUND: usize = 10;
const INBOUND: usize = 40;
/// Short attacker connections per tick that only report a listen address (see the inbound step).
const INBOUND_CHURN: usize = 10;
const PORT: u16 = 26656;
const T_START: u64 = 1_700_000_000;
const TICK: u64 = 60;

/// Attack and world parameters of one run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Attacker groups (/16s).
    pub groups: u32,
    /// Attacker IPs per group.
    pub ips: u32,
    /// Node ids per attacker IP (the legacy book is keyed by id).
    pub ids: u32,
    /// Honest listening nodes.
    pub honest: u32,
    /// Honest groups (skewed: a few large "cloud" groups).
    pub honest_groups: u32,
    /// Warm-up, attack and measurement lengths in ticks (minutes).
    pub warmup: u64,
    /// Attack length in ticks.
    pub attack: u64,
    /// Measurement length in ticks.
    pub measure: u64,
}

impl Scenario {
    /// The smoke-set shape: 4,000 honest nodes in 1,500 groups (as the spec), 12 h warm-up
    /// (spec: 48 h), 24 h attack, 2 h measurement.
    pub fn smoke(groups: u32, ips: u32, ids: u32) -> Self {
        Scenario {
            groups,
            ips,
            ids,
            honest: 4000,
            honest_groups: 1500,
            warmup: 12 * 60,
            attack: 24 * 60,
            measure: 2 * 60,
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Attacker-controlled share (own nodes + trash) of new, at the end of the attack.
    pub share_new: f64,
    /// Attacker-controlled share of tried (legacy: old), at the end of the attack.
    pub share_tried: f64,
    /// Share of attacker-controlled addresses among picks from the reloaded book, sampled as the
    /// policy fills 10 empty slots (legacy bias 10 %, 20 %, …, 90 % new; ours 50/50): 200 picks
    /// per slot, nothing dialed.
    pub share_picks: f64,
    /// Share of attacker-controlled addresses among the picks actually dialed (measurement).
    pub share_dialed: f64,
    /// Mean share of established outbound connections held by the attacker (measurement).
    pub share_outbound: f64,
    /// Ticks in the measurement at which the attacker held all outbound slots (E_full).
    pub full_eclipse_ticks: u64,
    /// True if, from 5 min after restart, some ≥ 10 min window had no honest outbound peer.
    pub no_honest_10min: bool,
    /// Hash of the trace of picks and dial outcomes (determinism check).
    pub trace: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Honest(u32),
    Attacker,
    Trash,
}

struct World {
    seed: u64,
    sc: Scenario,
    honest: Vec<NetAddr>,
    attacker_ips: Vec<IpAddr>,
}

fn hash3(seed: u64, a: u64, b: u64) -> u64 {
    let mut h = SipHasher13::new_with_keys(seed, 0x5eed);
    h.write_u64(a);
    h.write_u64(b);
    h.finish()
}

fn id_from(x: u64, y: u64) -> NodeId {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&x.to_be_bytes());
    b[8..16].copy_from_slice(&y.to_be_bytes());
    b[16] = 0xa5;
    NodeId(b)
}

impl World {
    fn new(seed: u64, sc: Scenario) -> Self {
        let mut r = ChaCha20Rng::seed_from_u64(seed ^ 0x77);
        let mut honest = Vec::new();
        for i in 0..sc.honest {
            // Skewed groups: u² concentrates nodes in low-numbered groups.
            let u = (r.next_u32() as f64) / (u32::MAX as f64);
            let g = ((u * u) * f64::from(sc.honest_groups)) as u32;
            let ip = IpAddr::V4(Ipv4Addr::new(
                20 + (g / 256) as u8,
                (g % 256) as u8,
                (r.next_u32() % 250) as u8 + 1,
                (i % 250) as u8 + 1,
            ));
            honest.push(NetAddr::new(
                id_from(1, u64::from(i)),
                SocketAddr::new(ip, PORT),
            ));
        }
        honest.sort_by_key(|a| a.addr);
        honest.dedup_by_key(|a| a.addr);
        let mut attacker_ips = Vec::new();
        for g in 0..sc.groups {
            for i in 0..sc.ips {
                let ip = IpAddr::V4(Ipv4Addr::new(
                    150 + (g / 256) as u8,
                    (g % 256) as u8,
                    (i / 250) as u8,
                    (i % 250) as u8 + 1,
                ));
                attacker_ips.push(ip);
            }
        }
        World {
            seed,
            sc,
            honest,
            attacker_ips,
        }
    }

    fn kind(&self, a: &SocketAddr) -> Kind {
        match a.ip() {
            IpAddr::V4(v4) if (150..200).contains(&v4.octets()[0]) => Kind::Attacker,
            IpAddr::V4(v4) if (100..150).contains(&v4.octets()[0]) => Kind::Trash,
            _ => match self.honest.binary_search_by_key(a, |h| h.addr) {
                Ok(i) => Kind::Honest(i as u32),
                Err(_) => Kind::Trash,
            },
        }
    }

    /// Honest nodes are online ~70 % of the time, in 6 h sessions with per-node phase.
    fn online(&self, i: u32, t: u64) -> bool {
        let phase = hash3(self.seed, u64::from(i), 0) % 360;
        hash3(self.seed, u64::from(i), (t + phase) / 360) % 10 < 7
    }

    /// Would a dial to `a` at tick `t` succeed?
    fn reachable(&self, a: &NetAddr, t: u64) -> bool {
        match self.kind(&a.addr) {
            Kind::Honest(i) => self.online(i, t) && self.honest[i as usize].id == a.id,
            Kind::Attacker => true,
            Kind::Trash => false,
        }
    }

    fn attacker_addr(&self, rng: &mut impl RngCore) -> NetAddr {
        let ip = self.attacker_ips[(rng.next_u64() % self.attacker_ips.len() as u64) as usize];
        let k = rng.next_u64() % u64::from(self.sc.ids);
        let ipn = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(_) => 0,
        };
        NetAddr::new(id_from(2 + k, ipn), SocketAddr::new(ip, PORT))
    }

    /// A PEX reply from `peer`: honest peers send 250 random honest addresses (some offline),
    /// attackers 250 addresses, half their own nodes, half non-existent "trash".
    fn pex_reply(&self, peer: &NetAddr, attack: bool, rng: &mut impl RngCore) -> Vec<NetAddr> {
        match self.kind(&peer.addr) {
            Kind::Attacker if attack => (0..250)
                .map(|i| {
                    if i % 2 == 0 {
                        self.attacker_addr(rng)
                    } else {
                        let v = rng.next_u32().to_be_bytes();
                        let ip = IpAddr::V4(Ipv4Addr::new(100 + v[0] % 50, v[1], v[2], v[3] | 1));
                        NetAddr::new(
                            id_from(9, u64::from(rng.next_u32())),
                            SocketAddr::new(ip, PORT),
                        )
                    }
                })
                .collect(),
            // During the attack a fifth of what honest peers relay is the attacker's.
            Kind::Honest(_) => (0..250)
                .map(|_| {
                    if attack && rng.next_u32().is_multiple_of(5) {
                        self.attacker_addr(rng)
                    } else {
                        self.honest[(rng.next_u64() % self.honest.len() as u64) as usize]
                    }
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// The two books behind one driver.
enum Victim {
    Ours(Box<AddrBook>),
    Legacy(Box<LegacyBook>),
}

struct Conn {
    addr: NetAddr,
    since: u64,
    good_done: bool,
}

/// Which book and policy a run uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Variant {
    /// Our book with our policy: inbound peers' listen addresses are not added (Bitcoin #8594;
    /// only solicited PEX replies feed the book, G20).
    Ours,
    /// Our book, but inbound listen addresses added with the peer as source (CometBFT 5.3).
    OursInboundAdds,
    /// The legacy CometBFT model with its policy.
    Legacy,
}

/// Runs one scenario with one book variant.
pub fn run(seed: u64, sc: Scenario, variant: Variant) -> Outcome {
    let legacy = variant == Variant::Legacy;
    let world = World::new(seed, sc);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut victim = if legacy {
        Victim::Legacy(Box::new(LegacyBook::new(&mut rng)))
    } else {
        Victim::Ours(Box::new(AddrBook::new(AddrBookConfig::default(), &mut rng)))
    };
    let mut out: Vec<Conn> = Vec::new();
    let mut inbound: VecDeque<Conn> = VecDeque::new();
    let mut trace = SipHasher13::new_with_keys(seed, 1);
    let mut outcome = Outcome::default();
    let (mut picks, mut picks_bad, mut conn_ticks, mut conn_bad) = (0u64, 0u64, 0u64, 0u64);
    let mut no_honest_run = 0u64;
    let mut dbg_pex = 0u64;

    // Seeds: 5 honest nodes, each answering one PEX request.
    for s in 0..5 {
        let seed_node = world.honest[(s * 97) % world.honest.len()];
        let t = T_START;
        for a in world.pex_reply(&seed_node, false, &mut rng) {
            add(&mut victim, a, seed_node.addr.ip(), t, &mut rng);
        }
    }

    let total = sc.warmup + sc.attack + sc.measure;
    let restart_at = sc.warmup + sc.attack;
    for tick in 0..total {
        let now = T_START + tick * TICK;
        let attack = tick >= sc.warmup;
        let measuring = tick >= restart_at;
        if tick == restart_at {
            let (n, tr) = table_shares(&victim, &world);
            if std::env::var_os("ECLIPSE_DEBUG").is_some() {
                match &victim {
                    Victim::Ours(b) => eprintln!(
                        "ours len {} new {} tried {} pexreq {}",
                        b.len(),
                        b.len_new(),
                        b.len_tried(),
                        dbg_pex
                    ),
                    Victim::Legacy(b) => eprintln!(
                        "legacy len {} old {} inbound {} inbound attacker {} pexreq {}",
                        b.len(),
                        b.entries().filter(|e| e.1).count(),
                        inbound.len(),
                        inbound
                            .iter()
                            .filter(|c| !matches!(world.kind(&c.addr.addr), Kind::Honest(_)))
                            .count(),
                        dbg_pex
                    ),
                }
            }
            outcome.share_new = n;
            outcome.share_tried = tr;
            out.clear();
            inbound.clear();
            victim = match victim {
                Victim::Ours(b) => {
                    let bytes = b.encode();
                    let d = AddrBook::decode(&bytes, AddrBookConfig::default())
                        .expect("own encoding reloads");
                    Victim::Ours(Box::new(d))
                }
                Victim::Legacy(mut b) => {
                    b.restart(&mut rng);
                    Victim::Legacy(b)
                }
            };
            let (mut bad, mut n) = (0u64, 0u64);
            for slot in 0..OUTBOUND {
                for _ in 0..200 {
                    let p = match &victim {
                        Victim::Ours(b) => b.pick(now, &mut rng, |_| true),
                        Victim::Legacy(b) => b.pick((slot.min(8) * 10 + 10) as u32, &mut rng),
                    };
                    if let Some(a) = p {
                        n += 1;
                        bad += u64::from(!matches!(world.kind(&a.addr), Kind::Honest(_)));
                    }
                }
            }
            outcome.share_picks = ratio(bad, n);
        }

        // Churn: outbound honest peers that went offline disconnect.
        out.retain(|c| world.reachable(&c.addr, tick));

        // Inbound (40 slots). Honest inbound peers leave when they go offline. During the
        // attack the attacker occupies every free inbound slot and retakes one at once when it
        // frees (spec 5), so honest nodes find the victim full; and it rotates: a connection
        // held 10 min (long enough for the legacy policy's `MarkGood`, below) hangs up and its
        // slot goes to a fresh attacker node, whose listen address CometBFT's policy adds to
        // new and, 10 min later, moves to old. An honest node tries to connect with
        // probability 0.3 per tick and gets in only if a slot is free.
        inbound.retain(|c| match world.kind(&c.addr.addr) {
            Kind::Honest(_) => world.reachable(&c.addr, tick),
            _ => !(attack && tick > c.since + 10),
        });
        let mut inbound_new = Vec::new();
        let mut churned = Vec::new();
        if attack {
            while inbound.len() + inbound_new.len() < INBOUND {
                inbound_new.push(world.attacker_addr(&mut rng));
            }
            // Churn through one of its slots: a new attacker node connects, handshakes (so its
            // listen address is reported) and hangs up, `INBOUND_CHURN` times a tick.
            for _ in 0..INBOUND_CHURN {
                churned.push(world.attacker_addr(&mut rng));
            }
        }
        if rng.next_u32() % 10 < 3 {
            let h = world.honest[(rng.next_u64() % world.honest.len() as u64) as usize];
            if let Kind::Honest(i) = world.kind(&h.addr)
                && world.online(i, tick)
                && inbound.len() + inbound_new.len() < INBOUND
            {
                inbound_new.push(h);
            }
        }
        if variant != Variant::Ours {
            for a in &churned {
                add(&mut victim, *a, a.addr.ip(), now, &mut rng);
            }
        }
        for a in inbound_new {
            if variant != Variant::Ours {
                add(&mut victim, a, a.addr.ip(), now, &mut rng);
            }
            inbound.push_back(Conn {
                addr: a,
                since: tick,
                good_done: false,
            });
        }

        // ensurePeers: fill empty outbound slots.
        let need = OUTBOUND.saturating_sub(out.len());
        let mut picked: Vec<NetAddr> = Vec::new();
        for _ in 0..3 * need {
            if picked.len() >= need {
                break;
            }
            let connected: BTreeSet<SocketAddr> = out
                .iter()
                .map(|c| c.addr.addr)
                .chain(picked.iter().map(|p| p.addr))
                .collect();
            let cand = match &mut victim {
                Victim::Ours(b) => {
                    let groups: BTreeSet<Group> =
                        connected.iter().map(|a| b.group_of(&a.ip())).collect();
                    b.pick(now, &mut rng, |a| {
                        !connected.contains(&a.addr) && !groups.contains(&b.group_of(&a.addr.ip()))
                    })
                }
                Victim::Legacy(b) => {
                    let bias = (out.len().min(8) * 10 + 10) as u32;
                    let ips: BTreeSet<IpAddr> = connected.iter().map(|a| a.ip()).collect();
                    b.pick(bias, &mut rng)
                        .filter(|a| !ips.contains(&a.addr.ip()) && b.may_dial(a, now))
                }
            };
            if let Some(a) = cand {
                picked.push(a);
            }
        }
        for a in picked {
            let ok = world.reachable(&a, tick);
            trace.write(&a.addr.to_string().into_bytes());
            trace.write_u8(u8::from(ok));
            if measuring {
                picks += 1;
                if !matches!(world.kind(&a.addr), Kind::Honest(_)) {
                    picks_bad += 1;
                }
            }
            match &mut victim {
                Victim::Ours(b) => {
                    b.mark_attempt(a.addr, now);
                    if ok {
                        let _ = b.mark_good(a.addr, now, &mut rng);
                    } else {
                        b.mark_failed(a.addr, now);
                    }
                }
                Victim::Legacy(b) => {
                    if ok {
                        b.dialed_ok(&a);
                    } else {
                        b.failed(&a, now);
                    }
                }
            }
            if ok {
                out.push(Conn {
                    addr: a,
                    since: tick,
                    good_done: false,
                });
                // Stress assumption (both books): every new outbound peer is asked once, as
                // Bitcoin sends GETADDR to each outbound peer (CometBFT only below 1000).
                {
                    dbg_pex += 1;
                    for x in world.pex_reply(&a, attack, &mut rng) {
                        add(&mut victim, x, a.addr.ip(), now, &mut rng);
                    }
                }
            }
        }

        // Periodic PEX request to one random outbound peer while the book is small.
        if needs_more(&victim) && !out.is_empty() {
            dbg_pex += 1;
            let p = out[(rng.next_u64() % out.len() as u64) as usize].addr;
            for x in world.pex_reply(&p, attack, &mut rng) {
                add(&mut victim, x, p.addr.ip(), now, &mut rng);
            }
            if let Victim::Legacy(b) = &mut victim {
                b.reinstate(now, &mut rng);
            }
        }

        // Book maintenance and the good signal.
        match &mut victim {
            Victim::Ours(b) => {
                if tick % 2 == 0 {
                    feeler(b, &world, &out, tick, now, &mut rng);
                }
                b.resolve_collisions(now);
                if b.needs_more() {
                    b.reinstate_expired(now, &mut rng);
                }
            }
            Victim::Legacy(b) => {
                for c in out.iter_mut().chain(inbound.iter_mut()) {
                    if !c.good_done && tick >= c.since + 10 {
                        c.good_done = true;
                        b.good(&c.addr, now, &mut rng);
                    }
                }
            }
        }

        // G7: our outbound peers never share a group.
        if let Victim::Ours(b) = &victim {
            let groups: BTreeSet<Group> =
                out.iter().map(|c| b.group_of(&c.addr.addr.ip())).collect();
            assert_eq!(
                groups.len(),
                out.len(),
                "G7: two outbound peers share a group (seed {seed})"
            );
        }

        if measuring {
            let bad = out
                .iter()
                .filter(|c| !matches!(world.kind(&c.addr.addr), Kind::Honest(_)))
                .count();
            conn_ticks += out.len() as u64;
            conn_bad += bad as u64;
            if out.len() == OUTBOUND && bad == OUTBOUND {
                outcome.full_eclipse_ticks += 1;
            }
            if tick >= restart_at + 5 {
                if bad == out.len() {
                    no_honest_run += 1;
                    if no_honest_run >= 10 {
                        outcome.no_honest_10min = true;
                    }
                } else {
                    no_honest_run = 0;
                }
            }
        }
    }
    outcome.share_dialed = ratio(picks_bad, picks);
    outcome.share_outbound = ratio(conn_bad, conn_ticks);
    outcome.trace = trace.finish();
    outcome
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn add(v: &mut Victim, a: NetAddr, src: IpAddr, now: u64, rng: &mut ChaCha20Rng) {
    match v {
        Victim::Ours(b) => {
            let _ = b.add(a, src, now, rng);
        }
        Victim::Legacy(b) => b.add(a, src, now, rng),
    }
}

fn needs_more(v: &Victim) -> bool {
    match v {
        Victim::Ours(b) => b.needs_more(),
        Victim::Legacy(b) => b.len() < 1000,
    }
}

/// Our feeler: test a tried collision's incumbent if one waits, else an entry of new.
fn feeler(
    b: &mut AddrBook,
    world: &World,
    out: &[Conn],
    tick: u64,
    now: u64,
    rng: &mut ChaCha20Rng,
) {
    let connected: BTreeSet<SocketAddr> = out.iter().map(|c| c.addr.addr).collect();
    let target = b.tried_collision_to_test(rng).or_else(|| {
        b.pick(now, rng, |a| {
            !connected.contains(&a.addr) && !b.is_tried(&a.addr)
        })
    });
    if let Some(a) = target {
        b.mark_attempt(a.addr, now);
        if world.reachable(&a, tick) {
            let _ = b.mark_good(a.addr, now, rng);
        } else {
            b.mark_failed(a.addr, now);
        }
    }
}

fn table_shares(v: &Victim, world: &World) -> (f64, f64) {
    let mut c = BTreeMap::new();
    let mut tally = |(a, tried): (NetAddr, bool)| {
        let bad = !matches!(world.kind(&a.addr), Kind::Honest(_));
        let e = c.entry(tried).or_insert((0u64, 0u64));
        e.0 += u64::from(bad);
        e.1 += 1;
    };
    match v {
        Victim::Ours(b) => b.entries().for_each(&mut tally),
        Victim::Legacy(b) => b.entries().for_each(&mut tally),
    }
    let get = |k: bool| c.get(&k).map_or(0.0, |&(bad, n)| ratio(bad, n));
    (get(false), get(true))
}
