//! A faithful model of CometBFT's legacy address book (`p2p/pex/addrbook.go`, spec section 6)
//! and its dialing policy (`ensurePeers`, `dialPeer`, spec 5.4–5.5), for the eclipse
//! simulation's differential. Differences from Go, none of which favours our book:
//! - HighwayHash-64 is replaced by SipHash-2-4 under a random key (any keyed PRF behaves alike);
//!   as in Go, that hash key is drawn again at every restart while stored buckets are kept;
//! - Go map iteration (used to find an `isBad` entry to expire) is replaced by a random start
//!   index over the bucket's vector; "uniform in a bucket" stays uniform.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use cometmesh_core::NodeId;
use cometmesh_core::addr::NetAddr;
use rand_core::RngCore;
use siphasher::sip::SipHasher24;

const NEW_BUCKETS: usize = 256;
const OLD_BUCKETS: usize = 64;
const BUCKET_SIZE: usize = 64;
const NEW_PER_GROUP: u64 = 32;
const OLD_PER_GROUP: u64 = 4;
const MAX_NEW_PER_ADDR: usize = 4;
const DAY: u64 = 86_400;
const BAN: u64 = DAY;
const MAX_DIAL_ATTEMPTS: u32 = 16;

#[derive(Clone)]
struct Known {
    addr: NetAddr,
    src: IpAddr,
    buckets: Vec<usize>,
    attempts: u32,
    old: bool,
    last_attempt: u64,
    last_success: u64,
}

/// CometBFT's legacy book, keyed by node id.
pub struct LegacyBook {
    key: [u8; 12],
    k0: u64,
    k1: u64,
    by_id: BTreeMap<NodeId, Known>,
    new: Vec<Vec<NodeId>>,
    old: Vec<Vec<NodeId>>,
    n_old: usize,
    bad: BTreeMap<NodeId, (Known, u64)>,
    /// `dialPeer` back-off: ip:port → (failures, last failure).
    dial_history: BTreeMap<SocketAddr, (u32, u64)>,
}

fn group(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.0.0", o[0], o[1])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            format!("{:02x}{:02x}:{:02x}{:02x}::", o[0], o[1], o[2], o[3])
        }
    }
}

impl LegacyBook {
    /// An empty book.
    pub fn new(rng: &mut impl RngCore) -> Self {
        let mut key = [0u8; 12];
        rng.fill_bytes(&mut key);
        LegacyBook {
            key,
            k0: rng.next_u64(),
            k1: rng.next_u64(),
            by_id: BTreeMap::new(),
            new: vec![Vec::new(); NEW_BUCKETS],
            old: vec![Vec::new(); OLD_BUCKETS],
            n_old: 0,
            bad: BTreeMap::new(),
            dial_history: BTreeMap::new(),
        }
    }

    fn h(&self, parts: &[&[u8]]) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        h.write(&self.key);
        for p in parts {
            h.write(p);
        }
        h.finish()
    }

    fn new_bucket(&self, addr: &SocketAddr, src: &IpAddr) -> usize {
        let (ga, gs) = (group(&addr.ip()), group(src));
        let b = self.h(&[ga.as_bytes(), gs.as_bytes()]) % NEW_PER_GROUP;
        (self.h(&[gs.as_bytes(), &b.to_be_bytes()]) % NEW_BUCKETS as u64) as usize
    }

    fn old_bucket(&self, a: &NetAddr) -> usize {
        let s = a.to_string();
        let b = self.h(&[s.as_bytes()]) % OLD_PER_GROUP;
        let ga = group(&a.addr.ip());
        (self.h(&[ga.as_bytes(), &b.to_be_bytes()]) % OLD_BUCKETS as u64) as usize
    }

    fn is_bad(k: &Known, now: u64) -> bool {
        if k.old {
            return false;
        }
        if now.saturating_sub(k.last_attempt) < 60 {
            return false;
        }
        now.saturating_sub(k.last_attempt) > 7 * DAY
            || (k.last_success == 0 && k.attempts >= 3)
            || (now.saturating_sub(k.last_success) > 7 * DAY && k.attempts >= 10)
    }

    /// Restart: the hash key is regenerated, stored buckets kept, bans and dial history lost.
    pub fn restart(&mut self, rng: &mut impl RngCore) {
        self.k0 = rng.next_u64();
        self.k1 = rng.next_u64();
        self.bad.clear();
        self.dial_history.clear();
    }

    /// `AddAddress(addr, src)` (spec 6.4).
    pub fn add(&mut self, addr: NetAddr, src: IpAddr, now: u64, rng: &mut impl RngCore) {
        if self.bad.contains_key(&addr.id) {
            return;
        }
        let nb = self.new_bucket(&addr.addr, &src);
        if let Some(k) = self.by_id.get_mut(&addr.id) {
            if k.old || k.buckets.len() >= MAX_NEW_PER_ADDR {
                return;
            }
            let factor = 2 * k.buckets.len() as u64;
            if factor > 0 && !rng.next_u64().is_multiple_of(factor) {
                return;
            }
            if k.buckets.contains(&nb) {
                return;
            }
            k.buckets.push(nb);
            self.insert_new(addr.id, nb, now, rng);
            return;
        }
        self.by_id.insert(
            addr.id,
            Known {
                addr,
                src,
                buckets: vec![nb],
                attempts: 0,
                old: false,
                last_attempt: now,
                last_success: 0,
            },
        );
        self.insert_new(addr.id, nb, now, rng);
    }

    fn insert_new(&mut self, id: NodeId, b: usize, now: u64, rng: &mut impl RngCore) {
        if self.new[b].len() > BUCKET_SIZE {
            self.expire_new(b, now, rng);
        }
        self.new[b].push(id);
    }

    /// `expireNew`: drop one bad entry (map-iteration order ≈ random start), else the oldest.
    fn expire_new(&mut self, b: usize, now: u64, rng: &mut impl RngCore) {
        let n = self.new[b].len();
        let start = (rng.next_u64() % n as u64) as usize;
        let victim = (0..n)
            .map(|i| self.new[b][(start + i) % n])
            .find(|id| self.by_id.get(id).is_some_and(|k| Self::is_bad(k, now)))
            .or_else(|| {
                self.new[b]
                    .iter()
                    .min_by_key(|id| self.by_id.get(id).map_or(0, |k| k.last_attempt))
                    .copied()
            });
        if let Some(v) = victim {
            self.remove_from_new_bucket(v, b);
        }
    }

    fn remove_from_new_bucket(&mut self, id: NodeId, b: usize) {
        self.new[b].retain(|x| *x != id);
        let drop = match self.by_id.get_mut(&id) {
            Some(k) => {
                k.buckets.retain(|x| *x != b);
                k.buckets.is_empty() && !k.old
            }
            None => false,
        };
        if drop {
            self.by_id.remove(&id);
        }
    }

    /// `MarkAttempt`.
    pub fn attempt(&mut self, a: &NetAddr, now: u64) {
        if let Some(k) = self.by_id.get_mut(&a.id) {
            k.attempts += 1;
            k.last_attempt = now;
        }
    }

    /// `dialPeer` back-off check: true if the dial may go ahead now; false while backing off.
    /// Past 16 failures the address is marked bad (24 h) instead.
    pub fn may_dial(&mut self, a: &NetAddr, now: u64) -> bool {
        let Some(&(n, last)) = self.dial_history.get(&a.addr) else {
            return true;
        };
        if n > MAX_DIAL_ATTEMPTS {
            self.mark_bad(a, now);
            self.dial_history.remove(&a.addr);
            return false;
        }
        n == 0 || now.saturating_sub(last) >= (1u64 << n.min(40))
    }

    /// A failed dial: `MarkAttempt` plus the back-off record.
    pub fn failed(&mut self, a: &NetAddr, now: u64) {
        self.attempt(a, now);
        let e = self.dial_history.entry(a.addr).or_insert((0, 0));
        e.0 += 1;
        e.1 = now;
    }

    /// A successful dial forgets the back-off history.
    pub fn dialed_ok(&mut self, a: &NetAddr) {
        self.dial_history.remove(&a.addr);
    }

    /// `MarkBad`: 24 h ban by id, entry removed from every bucket (no-op if unknown).
    pub fn mark_bad(&mut self, a: &NetAddr, now: u64) {
        let Some(k) = self.by_id.get(&a.id).cloned() else {
            return;
        };
        self.detach(&k);
        self.by_id.remove(&a.id);
        self.bad.insert(a.id, (k, now + BAN));
    }

    fn detach(&mut self, k: &Known) {
        if k.old {
            for &b in &k.buckets {
                self.old[b].retain(|x| *x != k.addr.id);
            }
            self.n_old -= 1;
        } else {
            for &b in &k.buckets {
                self.new[b].retain(|x| *x != k.addr.id);
            }
        }
    }

    /// `ReinstateBadPeers` (only called when the book has < 1000 entries).
    pub fn reinstate(&mut self, now: u64, rng: &mut impl RngCore) {
        let expired: Vec<NodeId> = self
            .bad
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((k, _)) = self.bad.remove(&id) {
                if k.old {
                    continue; // the Go quirk: an old entry fails the new-bucket check and is dropped
                }
                self.add(k.addr, k.src, now, rng);
            }
        }
    }

    /// `MarkGood(id)` (spec 6.5).
    pub fn good(&mut self, a: &NetAddr, now: u64, rng: &mut impl RngCore) {
        let Some(k) = self.by_id.get_mut(&a.id) else {
            return;
        };
        k.attempts = 0;
        k.last_attempt = now;
        k.last_success = now;
        if k.old {
            return;
        }
        let k = k.clone();
        for &b in &k.buckets {
            self.new[b].retain(|x| *x != a.id);
        }
        let ob = self.old_bucket(&k.addr);
        if let Some(k) = self.by_id.get_mut(&a.id) {
            k.old = true;
            k.buckets = vec![ob];
        }
        self.n_old += 1;
        if self.old[ob].len() > BUCKET_SIZE {
            // Demote the oldest to a new bucket.
            let oldest = self.old[ob]
                .iter()
                .min_by_key(|id| self.by_id.get(id).map_or(0, |k| k.last_attempt))
                .copied();
            if let Some(o) = oldest {
                self.old[ob].retain(|x| *x != o);
                self.n_old -= 1;
                if let Some(ko) = self.by_id.get(&o).cloned() {
                    let nb = self.new_bucket(&ko.addr.addr, &ko.src);
                    if let Some(km) = self.by_id.get_mut(&o) {
                        km.old = false;
                        km.buckets = vec![nb];
                    }
                    self.insert_new(o, nb, now, rng);
                }
            }
        }
        self.old[ob].push(a.id);
    }

    /// `PickAddress(bias)` (spec 6.8): sqrt-weighted table choice, then a uniformly random
    /// non-empty bucket, then a uniformly random entry in it.
    pub fn pick(&self, bias: u32, rng: &mut impl RngCore) -> Option<NetAddr> {
        let bias = f64::from(bias.min(100));
        let n_new = self.by_id.len() - self.n_old;
        let old_w = (self.n_old as f64).sqrt() * (100.0 - bias);
        let new_w = (n_new as f64).sqrt() * bias;
        if old_w + new_w == 0.0 {
            return None;
        }
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let table = if u * (old_w + new_w) < old_w {
            &self.old
        } else {
            &self.new
        };
        let non_empty: Vec<&Vec<NodeId>> = table.iter().filter(|b| !b.is_empty()).collect();
        if non_empty.is_empty() {
            return None;
        }
        let b = non_empty[(rng.next_u64() % non_empty.len() as u64) as usize];
        let id = b[(rng.next_u64() % b.len() as u64) as usize];
        self.by_id.get(&id).map(|k| k.addr)
    }

    /// Number of entries (new + old).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Entries with their table (`true` = old).
    pub fn entries(&self) -> impl Iterator<Item = (NetAddr, bool)> + '_ {
        self.by_id.values().map(|k| (k.addr, k.old))
    }
}
