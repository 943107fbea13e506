//! Inbound protection (G13, tendermint#4753): a rate limit on inbound connection attempts per
//! IP and per address group, before any handshake work, and eviction when the inbound slots
//! are full, which never touches a protected peer.
//!
//! **Rate limit.** Each accepted TCP connection costs one token from its IP's bucket and one
//! from its group's (`/16` by default). A bucket holds `per_minute` tokens and refills at
//! `per_minute` a minute; an empty bucket refuses the connection with
//! [`Refused::RateLimited`](super::Refused::RateLimited) before the handshake starts.
//! Non-routable remotes (loopback, private networks: the operator's own) are not limited. At
//! most [`MAX_TRACKED`] IPs and groups are tracked; beyond it the one idle longest is forgotten.
//!
//! **Eviction.** When every inbound slot holds a peer, up to [`EVICTION_HANDSHAKES`] more
//! inbound handshakes may run. A newcomer that completes one competes with the ordinary
//! inbound peers (not persistent, not unconditional) for a slot, as in Bitcoin's
//! `SelectNodeToEvict`:
//!
//! 1. protected: the longest-connected peer of each of 4 distinct groups chosen by a keyed
//!    hash of the group (the key is secret, so an attacker cannot aim at it);
//! 2. protected: the 4 peers that most recently sent an application message ("useful");
//! 3. protected: the longest-connected half of the rest;
//! 4. of the rest (the newcomer included), the group with the most peers loses its youngest.
//!
//! If that is the newcomer it is refused; if nobody is left it is refused. So a flood from one
//! group evicts only its own members once it is the largest group, and never a protected one.
//! Latency-based protection (Bitcoin's 8 fastest) is not done: the engine measures no RTT.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::addrbook::Group;
use crate::ids::{ConnId, NodeId};

/// Most IPs (and, separately, groups) whose attempt rate is tracked.
pub const MAX_TRACKED: usize = 4096;
/// Inbound handshakes allowed beyond the inbound limit while every slot holds a peer (the
/// newcomers that may evict).
pub const EVICTION_HANDSHAKES: usize = 2;
/// Peers protected by distinct group.
const PROTECT_BY_GROUP: usize = 4;
/// Peers protected as recently useful.
const PROTECT_USEFUL: usize = 4;

/// A token bucket per key on injected time: `per_minute` tokens, refilled at `per_minute` a
/// minute. Units: one attempt is 60 000; each millisecond adds `per_minute`.
#[derive(Debug)]
struct RateTable<K> {
    buckets: BTreeMap<K, (u64, Instant)>,
    /// `(time, key)` of every bucket: the one idle longest is the first (an index of
    /// `buckets`, so that forgetting it at a full table is not a scan of 4 096 buckets per
    /// newcomer).
    by_age: BTreeSet<(Instant, K)>,
}

impl<K> Default for RateTable<K> {
    fn default() -> Self {
        RateTable {
            buckets: BTreeMap::new(),
            by_age: BTreeSet::new(),
        }
    }
}

const COST: u64 = 60_000;

impl<K: Ord + Copy> RateTable<K> {
    /// Whether `key` may make an attempt at `now` (without taking it).
    fn allows(&self, key: K, now: Instant, per_minute: u32) -> bool {
        per_minute == 0 || Self::level(self.buckets.get(&key), now, per_minute) >= COST
    }

    /// Takes one attempt's token for `key` (call after [`allows`](Self::allows)).
    fn take(&mut self, key: K, now: Instant, per_minute: u32) {
        if per_minute == 0 {
            return;
        }
        // Forget the buckets idle longest while they have refilled: a full bucket says no more
        // than an absent one, so the table holds little beyond the keys seen within a minute.
        while let Some(&(t, k)) = self.by_age.first() {
            let full =
                Self::level(self.buckets.get(&k), now, per_minute) >= u64::from(per_minute) * COST;
            if !full {
                break;
            }
            self.by_age.remove(&(t, k));
            self.buckets.remove(&k);
        }
        let old = self.buckets.get(&key).copied();
        let level = Self::level(old.as_ref(), now, per_minute);
        if old.is_none() && self.buckets.len() >= MAX_TRACKED {
            // Forget the bucket idle longest (ties: smallest key); a total order, so the
            // choice does not depend on anything but the inputs.
            if let Some((_, k)) = self.by_age.pop_first() {
                self.buckets.remove(&k);
            }
        }
        let at = old.map_or(now, |b| b.1.max(now));
        if let Some((_, t)) = old {
            self.by_age.remove(&(t, key));
        }
        self.by_age.insert((at, key));
        self.buckets.insert(key, (level.saturating_sub(COST), at));
    }

    fn level(b: Option<&(u64, Instant)>, now: Instant, per_minute: u32) -> u64 {
        let cap = u64::from(per_minute) * COST;
        match b {
            None => cap,
            Some(&(tokens, at)) => {
                let ms = u64::try_from(now.saturating_duration_since(at).as_millis())
                    .unwrap_or(u64::MAX);
                tokens
                    .saturating_add(ms.saturating_mul(u64::from(per_minute)))
                    .min(cap)
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The inbound guard: attempt rates and the "useful" times used by eviction.
#[derive(Debug, Default)]
pub(crate) struct InboundGuard {
    per_ip: RateTable<IpAddr>,
    per_group: RateTable<Group>,
    /// When each connection last delivered an application message.
    useful: BTreeMap<ConnId, Instant>,
}

/// Limits of the inbound guard (from the engine configuration).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rates {
    pub(crate) per_ip: u32,
    pub(crate) per_group: u32,
}

impl InboundGuard {
    /// Whether an inbound attempt from `ip` (in `group`) is within the rates at `now`; if so
    /// its tokens are taken. Non-routable remotes are not limited.
    pub(crate) fn admit(
        &mut self,
        ip: IpAddr,
        group: Group,
        routable: bool,
        now: Instant,
        rates: Rates,
    ) -> bool {
        if !routable {
            return true;
        }
        if !self.per_ip.allows(ip, now, rates.per_ip)
            || !self.per_group.allows(group, now, rates.per_group)
        {
            return false;
        }
        self.per_ip.take(ip, now, rates.per_ip);
        self.per_group.take(group, now, rates.per_group);
        true
    }

    /// `conn` delivered an application message at `now`.
    pub(crate) fn useful(&mut self, conn: ConnId, now: Instant) {
        self.useful.insert(conn, now);
    }

    /// When `conn` last delivered an application message.
    pub(crate) fn last_useful(&self, conn: ConnId) -> Option<Instant> {
        self.useful.get(&conn).copied()
    }

    /// `conn` is gone.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.useful.remove(&conn);
    }

    /// Tracked IPs and groups (bounded by [`MAX_TRACKED`] each).
    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        (self.per_ip.len(), self.per_group.len())
    }
}

/// An inbound peer (or the newcomer) competing for a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) conn: ConnId,
    pub(crate) id: NodeId,
    pub(crate) group: Group,
    pub(crate) since: Instant,
    pub(crate) last_useful: Option<Instant>,
}

/// The candidate to evict (see the module docs), or `None` if every candidate is protected.
/// `key` keys the group hash of the distinct-group protection.
pub(crate) fn select_victim(candidates: &[Candidate], key: u64) -> Option<ConnId> {
    let mut rest: Vec<Candidate> = candidates.to_vec();
    // Deterministic starting order.
    rest.sort_by_key(|c| (c.since, c.conn));
    // 1. The longest-connected peer of each of 4 groups, in keyed-hash order of the group.
    let mut by_hash: Vec<(u64, Candidate)> =
        rest.iter().map(|c| (keyed(key, &c.group), *c)).collect();
    by_hash.sort_by_key(|(h, c)| (*h, c.since, c.conn));
    let mut groups: Vec<Group> = Vec::new();
    let mut protected: Vec<ConnId> = Vec::new();
    for (_, c) in &by_hash {
        if groups.len() >= PROTECT_BY_GROUP {
            break;
        }
        if !groups.contains(&c.group) {
            groups.push(c.group);
            protected.push(c.conn);
        }
    }
    rest.retain(|c| !protected.contains(&c.conn));
    // 2. The most recently useful.
    let mut useful: Vec<Candidate> = rest
        .iter()
        .filter(|c| c.last_useful.is_some())
        .copied()
        .collect();
    useful.sort_by_key(|c| (std::cmp::Reverse(c.last_useful), c.conn));
    let useful: Vec<ConnId> = useful.iter().take(PROTECT_USEFUL).map(|c| c.conn).collect();
    rest.retain(|c| !useful.contains(&c.conn));
    // 3. The longest-connected half of the rest (`rest` is sorted oldest first).
    let keep = rest.len() / 2;
    rest.drain(..keep);
    // 4. The most-represented group loses its youngest.
    let mut counts: BTreeMap<Group, (usize, Instant, ConnId)> = BTreeMap::new();
    for c in &rest {
        let e = counts.entry(c.group).or_insert((0, c.since, c.conn));
        e.0 += 1;
        if (c.since, c.conn) > (e.1, e.2) {
            e.1 = c.since;
            e.2 = c.conn;
        }
    }
    counts
        .values()
        .max_by_key(|(n, since, conn)| (*n, *since, *conn))
        .map(|(_, _, conn)| *conn)
}

/// A keyed 64-bit hash of a group (SipHash-1-3).
fn keyed(key: u64, g: &Group) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = siphasher::sip::SipHasher13::new_with_keys(key, key.rotate_left(32) ^ 0x9e37_79b9);
    g.hash(&mut h);
    h.finish()
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::identity::NodeKey;

    fn g(b: u8) -> Group {
        Group::V4([50, b, 0, 0])
    }

    fn ip(b: u8, c: u8) -> IpAddr {
        IpAddr::from([50, b, c, 1])
    }

    const RATES: Rates = Rates {
        per_ip: 10,
        per_group: 30,
    };

    /// Per IP: 10 attempts at once, the 11th refused; one more every 6 s.
    #[test]
    fn per_ip_limit_is_crossed_by_one() {
        let t0 = Instant::now();
        let mut guard = InboundGuard::default();
        for _ in 0..10 {
            assert!(guard.admit(ip(1, 1), g(1), true, t0, RATES));
        }
        assert!(
            !guard.admit(ip(1, 1), g(1), true, t0, RATES),
            "11th refused"
        );
        assert!(guard.admit(ip(1, 2), g(1), true, t0, RATES), "another IP");
        let t = t0 + Duration::from_millis(5_999);
        assert!(!guard.admit(ip(1, 1), g(1), true, t, RATES));
        let t = t0 + Duration::from_secs(6);
        assert!(guard.admit(ip(1, 1), g(1), true, t, RATES), "refilled");
        assert!(!guard.admit(ip(1, 1), g(1), true, t, RATES));
        // Non-routable remotes are not limited.
        for _ in 0..100 {
            assert!(guard.admit(IpAddr::from([127, 0, 0, 1]), Group::Local, false, t0, RATES));
        }
    }

    /// Per group: 30 attempts at once from 30 IPs of one /16, the 31st refused.
    #[test]
    fn per_group_limit_is_crossed_by_one() {
        let t0 = Instant::now();
        let mut guard = InboundGuard::default();
        for c in 0..30 {
            assert!(guard.admit(ip(2, c), g(2), true, t0, RATES));
        }
        assert!(
            !guard.admit(ip(2, 200), g(2), true, t0, RATES),
            "31st refused"
        );
        assert!(
            guard.admit(ip(3, 0), g(3), true, t0, RATES),
            "another group"
        );
        // A refused attempt takes no token: after 2 s exactly one more fits.
        let t = t0 + Duration::from_secs(2);
        assert!(guard.admit(ip(2, 201), g(2), true, t, RATES));
        assert!(!guard.admit(ip(2, 202), g(2), true, t, RATES));
    }

    /// The tables stay bounded: the bucket idle longest is forgotten.
    #[test]
    fn tracking_is_bounded() {
        let t0 = Instant::now();
        let mut guard = InboundGuard::default();
        for k in 0..(MAX_TRACKED as u32 + 10) {
            let t = t0 + Duration::from_millis(u64::from(k));
            let a = IpAddr::from((0x3200_0000u32 + k).to_be_bytes());
            assert!(guard.admit(
                a,
                Group::V4([9, (k >> 8) as u8, k as u8, 0]),
                true,
                t,
                RATES
            ));
        }
        // Every IP is still refilling (4 s of the minute), so the IP table is at its bound; the
        // group buckets refill within 2 s, so the older ones were forgotten as full.
        let (ips, groups) = guard.tracked();
        assert_eq!(ips, MAX_TRACKED);
        assert!(groups < MAX_TRACKED, "{groups}");
    }

    fn cand(n: u64, group: u8, age_s: u64, useful: Option<u64>, t0: Instant) -> Candidate {
        Candidate {
            conn: ConnId(n),
            id: NodeKey::from_seed([n as u8; 32]).node_id(),
            group: g(group),
            since: t0 + Duration::from_secs(1000 - age_s),
            last_useful: useful.map(|u| t0 + Duration::from_secs(1000 + u)),
        }
    }

    /// Ten old honest peers in distinct groups, two of them useful, and a flood from group 99:
    /// the victim is always a flooder (the youngest), never an honest peer.
    #[test]
    fn the_largest_group_loses_its_youngest_and_protected_peers_stay() {
        let t0 = Instant::now();
        let mut cands: Vec<Candidate> = (0..10)
            .map(|i| cand(i, i as u8, 900 - i, (i < 2).then_some(i), t0))
            .collect();
        for k in 0..12 {
            cands.push(cand(100 + k, 99, 100 - k, None, t0));
        }
        for key in 0..50u64 {
            let v = select_victim(&cands, key).expect("someone");
            assert_eq!(v, ConnId(111), "key {key}: the youngest flooder");
        }
        // With only protected peers (4 groups) left, nobody is evicted.
        assert_eq!(select_victim(&cands[..4], 1), None);
    }

    /// A full table forgets the bucket idle longest (ties: the smallest key), as a scan of
    /// every bucket would choose it.
    #[test]
    fn full_rate_table_forgets_the_bucket_idle_longest() {
        let t0 = Instant::now();
        let mut table = RateTable::<u32>::default();
        let mut model: BTreeMap<u32, Instant> = BTreeMap::new();
        let mut x: u32 = 12_345;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = (x >> 8) % 6_000;
            // Times jump forward and back (0 to 1.5 ms times the step): many ties, and takes
            // earlier than a bucket's own time.
            let now = t0 + Duration::from_millis(step * u64::from((x >> 4) % 4) / 2);
            if !model.contains_key(&key) && model.len() >= MAX_TRACKED {
                let oldest = model
                    .iter()
                    .min_by_key(|(k, t)| (**t, **k))
                    .map(|(k, _)| *k);
                model.remove(&oldest.expect("full"));
            }
            let at = model.get(&key).map_or(now, |t| (*t).max(now));
            model.insert(key, at);
            // One attempt a minute: no bucket refills within the test's 30 s, so none is
            // forgotten for being full.
            table.take(key, now, 1);
            assert_eq!(table.len(), model.len());
        }
        let kept: BTreeMap<u32, Instant> = table.buckets.iter().map(|(k, b)| (*k, b.1)).collect();
        assert_eq!(kept, model);
        assert_eq!(table.by_age.len(), table.buckets.len());
    }

    /// A bucket that has refilled is forgotten by the next take (it says no more than an
    /// absent one); one still refilling is kept and still limits its key.
    #[test]
    fn refilled_buckets_are_forgotten() {
        let t0 = Instant::now();
        let mut table = RateTable::<u32>::default();
        for key in 0..100 {
            table.take(key, t0, 2);
        }
        assert_eq!(table.len(), 100);
        // Half a minute on, every bucket still misses half a token: all kept.
        let t1 = t0 + Duration::from_secs(29);
        table.take(500, t1, 2);
        assert_eq!(table.len(), 101);
        table.take(500, t1, 2);
        assert!(
            !table.allows(500, t1, 2),
            "two attempts a minute, both taken"
        );
        // A minute on, the first hundred have refilled and go; key 500 stays.
        let t2 = t0 + Duration::from_secs(31);
        table.take(7, t2, 2);
        assert_eq!(table.len(), 2);
        assert!(!table.allows(500, t2, 2), "key 500 is still limited");
        assert!(table.allows(7, t2, 2), "key 7 has one attempt left");
    }
}
