//! Choosing addresses: a dial candidate ([`AddrBook::pick`], G8, G9), a PEX reply
//! ([`AddrBook::selection`], G19) and a seed's vetted reply ([`AddrBook::vetted_selection`]).

use std::net::SocketAddr;

use hashbrown::HashSet;
use rand_core::RngCore;

use super::{AddrBook, Entry, MAX_SELECTION, RECENT_ATTEMPT, SELECTION_PERCENT, UnixTime};
use crate::addr::NetAddr;
use crate::ids::NodeId;

impl AddrBook {
    /// Picks an address to dial: a coin (`tried_bias_percent`) chooses the table, then an entry
    /// uniformly at random from it, kept with its chance (×0.01 if attempted within 10 min,
    /// ×0.66 per failed attempt up to 8), the threshold relaxing ×1.2 per rejected draw, as
    /// Bitcoin's `Select` (G8, G9). `accept` lets the caller skip candidates (connected,
    /// dialing, same group); if random draws find nothing acceptable the tables are scanned.
    pub fn pick(
        &self,
        now: UnixTime,
        rng: &mut impl RngCore,
        mut accept: impl FnMut(&NetAddr) -> bool,
    ) -> Option<NetAddr> {
        let (nn, nt) = (self.new_list.len(), self.tried_list.len());
        if nn + nt == 0 {
            return None;
        }
        let bias = u32::from(self.config.tried_bias_percent.min(100));
        let mut factor = 1.0f64;
        for _ in 0..256 {
            let use_tried = if nt == 0 {
                false
            } else if nn == 0 {
                true
            } else {
                uniform(rng, 100) < bias as usize
            };
            let list = if use_tried {
                &self.tried_list
            } else {
                &self.new_list
            };
            if list.is_empty() {
                continue;
            }
            let idx = list[uniform(rng, list.len())];
            let Some(e) = self.entry(idx) else {
                continue;
            };
            let p = (factor * chance(e, now)).min(1.0);
            if unit(rng) < p {
                if accept(&e.addr(&self.v6)) {
                    return Some(e.addr(&self.v6));
                }
            } else {
                factor *= 1.2;
            }
        }
        // Fallback: scan both tables from a random offset.
        let total = nn + nt;
        let start = uniform(rng, total);
        (0..total)
            .map(|k| (start + k) % total)
            .filter_map(|i| {
                let idx = if i < nn {
                    self.new_list[i]
                } else {
                    self.tried_list[i - nn]
                };
                self.entry(idx)
            })
            .map(|e| e.addr(&self.v6))
            .find(|a| accept(a))
    }

    /// A PEX reply (G19): at most min(23 % of the book, 250) distinct entries drawn uniformly
    /// from both tables, never terrible, banned or private ones.
    #[must_use]
    pub fn selection(&self, now: UnixTime, rng: &mut impl RngCore) -> Vec<NetAddr> {
        let total = self.new_list.len() + self.tried_list.len();
        let n = (total * SELECTION_PERCENT / 100)
            .max(self.config.min_selection.min(total))
            .min(MAX_SELECTION);
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let mut seen: HashSet<usize> = HashSet::with_capacity(n * 2);
        let mut draws = 0usize;
        let max_draws = 4 * n + 64;
        while out.len() < n && seen.len() < total && draws < max_draws {
            draws += 1;
            let i = uniform(rng, total);
            if !seen.insert(i) {
                continue;
            }
            let idx = if i < self.new_list.len() {
                self.new_list[i]
            } else {
                self.tried_list[i - self.new_list.len()]
            };
            if let Some(e) = self.entry(idx)
                && !self.terrible(e, now)
                && !self.private_ids.contains(&e.id)
                && !self.entry_banned(e, now)
            {
                out.push(e.addr(&self.v6));
            }
        }
        out
    }
}

impl AddrBook {
    /// A seed's vetted PEX reply: only addresses we reached ourselves. An entry qualifies if
    /// its last completed handshake ([`AddrBook::mark_good`], the book's `last_success`) is at
    /// or after `since` and no failed dial was counted since then, or if `live` says we hold
    /// a connection we dialled to it right now (reached at `now`). Never private or banned
    /// entries. The reply has the size [`AddrBook::selection`] would give a book of only the
    /// qualifying entries; its members are taken from the address groups in turns (each
    /// turn the most recently reached remaining entry of every group), so that no group
    /// dominates, and it is ordered most recently reached first. Equally recent entries (every
    /// connection held counts as reached at `now`, and times are whole seconds) are taken in
    /// an order drawn from `salt`: a new salt per reply spreads the newcomers that a young
    /// seed answers within one second over all it holds, where the address order would send
    /// every one of them to the same few nodes, whose inbound slots then fill.
    #[must_use]
    pub fn vetted_selection(
        &self,
        now: UnixTime,
        since: UnixTime,
        live: &[SocketAddr],
        salt: u64,
    ) -> Vec<NetAddr> {
        // The entries held now, by index (a seed holds thousands of crawled connections: one
        // lookup each, not a search per entry).
        let mut held = vec![false; self.entries.len()];
        for a in live {
            if let Some(i) = self.idx_of(a) {
                held[i as usize] = true;
            }
        }
        // Taking "each group's `turn`-th most recent, turn by turn" is taking the first `n` in
        // the order (rank in its group, key). So: one sort by (group, key) ranks every entry,
        // a selection finds the first `n` by (rank, key), and only those are put in key order.
        // A seed answers thousands of requests a minute from a book of thousands of reached
        // entries: no allocation per group, no pass over every group per turn.
        // `entries` is a vector, then sorted: no hash order decides. Keys are unique: the
        // address breaks a tie of time and salt.
        let mut reached: Vec<Reached> = Vec::with_capacity(self.len());
        reached.extend(self.entries.slots().enumerate().filter_map(|(idx, slot)| {
            let e = slot?;
            if self.private_ids.contains(&e.id) || self.entry_banned(e, now) {
                return None;
            }
            let t = if held[idx] {
                now
            } else if e.last_success.get() != 0
                && e.last_success.get() >= since
                && e.attempts() == 0
            {
                e.last_success.get()
            } else {
                return None;
            };
            Some(Reached {
                rank: 0,
                group: self.group_of(&e.ip(&self.v6)).sort_key(),
                key: (u128::from(u64::MAX - t) << 64) | u128::from(tie_order(salt, &e.id)),
                idx,
            })
        }));
        let total = reached.len();
        let n = (total * SELECTION_PERCENT / 100)
            .max(self.config.min_selection.min(total))
            .min(MAX_SELECTION);
        if n == 0 {
            return Vec::new();
        }
        let addr_of = |r: &Reached| self.entry(r.idx as u32).map(|e| e.addr(&self.v6));
        let by_key =
            |a: &Reached, b: &Reached| a.key.cmp(&b.key).then_with(|| addr_of(a).cmp(&addr_of(b)));
        reached.sort_unstable_by(|a, b| a.group.cmp(&b.group).then_with(|| by_key(a, b)));
        let mut rank = 0u32;
        let mut prev = None;
        for r in &mut reached {
            rank = if prev == Some(r.group) { rank + 1 } else { 0 };
            r.rank = rank;
            prev = Some(r.group);
        }
        let by_turn = |a: &Reached, b: &Reached| a.rank.cmp(&b.rank).then_with(|| by_key(a, b));
        if reached.len() > n {
            reached.select_nth_unstable_by(n - 1, by_turn);
            reached.truncate(n);
        }
        reached.sort_unstable_by(by_key);
        reached.iter().filter_map(addr_of).collect()
    }

    /// The first implementation of [`AddrBook::vetted_selection`] (a sort, then turns over a
    /// map of groups), kept to check the faster one against.
    #[cfg(test)]
    pub(crate) fn vetted_selection_by_turns(
        &self,
        now: UnixTime,
        since: UnixTime,
        live: &[SocketAddr],
        salt: u64,
    ) -> Vec<NetAddr> {
        use super::Group;
        use std::cmp::Reverse;
        let key = |&(t, a): &(UnixTime, NetAddr)| (Reverse(t), tie_order(salt, &a.id), a);
        let mut reached: Vec<(Reverse<UnixTime>, u64, NetAddr)> = self
            .entries
            .slots()
            .flatten()
            .filter(|e| !self.private_ids.contains(&e.id) && !self.entry_banned(e, now))
            .filter_map(|e| {
                let t = if live.contains(&e.socket(&self.v6)) {
                    now
                } else if e.last_success.get() != 0
                    && e.last_success.get() >= since
                    && e.attempts() == 0
                {
                    e.last_success.get()
                } else {
                    return None;
                };
                Some((Reverse(t), tie_order(salt, &e.id), e.addr(&self.v6)))
            })
            .collect();
        reached.sort_unstable();
        let total = reached.len();
        let n = (total * SELECTION_PERCENT / 100)
            .max(self.config.min_selection.min(total))
            .min(MAX_SELECTION);
        let mut by_group: std::collections::BTreeMap<Group, Vec<(UnixTime, NetAddr)>> =
            std::collections::BTreeMap::new();
        for (Reverse(t), _, a) in reached {
            by_group
                .entry(self.group_of(&a.addr.ip()))
                .or_default()
                .push((t, a));
        }
        let mut out: Vec<(UnixTime, NetAddr)> = Vec::with_capacity(n);
        let mut turn = 0usize;
        while out.len() < n {
            let mut this_turn: Vec<(UnixTime, NetAddr)> = by_group
                .values()
                .filter_map(|members| members.get(turn).copied())
                .collect();
            if this_turn.is_empty() {
                break;
            }
            this_turn.sort_by_key(key);
            let room = n - out.len();
            out.extend(this_turn.into_iter().take(room));
            turn += 1;
        }
        out.sort_by_key(key);
        out.into_iter().map(|(_, a)| a).collect()
    }

    /// Up to `limit` entries never reached (no `last_success`) that `accept` takes, most
    /// recently heard of first (ties by node id, then address); never terrible, private or
    /// banned ones. A seed's crawler tests these first, so that an announced address is served
    /// soon after. The first call builds an index of the never-reached entries, which the book
    /// keeps from then on (see `untested.rs`): a call walks the order from its head and stops
    /// at the `limit`-th address taken, instead of scanning the book.
    #[must_use]
    pub fn untested(
        &mut self,
        now: UnixTime,
        limit: usize,
        mut accept: impl FnMut(&NetAddr) -> bool,
    ) -> Vec<NetAddr> {
        if limit == 0 {
            return Vec::new();
        }
        self.untested_index();
        let Some(index) = &self.untested else {
            return Vec::new();
        };
        index
            .iter()
            .filter_map(|u| self.entry(u.idx))
            .filter(|e| {
                !self.terrible(e, now)
                    && !self.private_ids.contains(&e.id)
                    && !self.entry_banned(e, now)
            })
            .map(|e| e.addr(&self.v6))
            .filter(|a| accept(a))
            .take(limit)
            .collect()
    }
}

/// A reached entry in [`AddrBook::vetted_selection`]: its rank among the reached entries of
/// its group, its group ([`Group::sort_key`]) and its key: the time it was reached, most
/// recent first, in the high half, its salted tie order in the low half (the address breaks
/// what ties remain). Integers all, so that sorting thousands of them compares no bytes.
#[derive(Clone, Copy)]
struct Reached {
    rank: u32,
    group: (u8, u128),
    key: u128,
    idx: usize,
}

/// The place of `a` among equally recent entries of a vetted reply: its node id's first eight
/// bytes mixed with `salt` (splitmix64's finaliser), so that each salt gives another order.
fn tie_order(salt: u64, id: &NodeId) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&id.as_bytes()[..8]);
    let mut z = u64::from_le_bytes(head) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bitcoin's `GetChance`: the selection weight of an entry.
fn chance(e: &Entry, now: UnixTime) -> f64 {
    let mut c = 1.0;
    if e.last_attempt.get() != 0 && now.saturating_sub(e.last_attempt.get()) < RECENT_ATTEMPT {
        c *= 0.01;
    }
    c * 0.66f64.powi(e.attempts().min(8) as i32)
}

/// A uniform integer in `0..n` (`n > 0`), without modulo bias.
pub(crate) fn uniform(rng: &mut impl RngCore, n: usize) -> usize {
    let n = n as u64;
    if n <= 1 {
        return 0;
    }
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return (v % n) as usize;
        }
    }
}

/// A uniform float in `[0, 1)`.
fn unit(rng: &mut impl RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    use super::super::{AddrBook, AddrBookConfig, UnixTime};
    use crate::addr::NetAddr;
    use crate::ids::NodeId;

    const T0: u64 = 1_700_000_000;

    /// Address `n` of group `g` (a /16 per group).
    fn addr(g: u8, n: u8) -> NetAddr {
        let mut id = [0u8; 20];
        id[0] = g;
        id[1] = n;
        id[19] = 1;
        NetAddr::new(
            NodeId(id),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(40 + g, 1, n, 1)), 26656),
        )
    }

    fn book() -> (AddrBook, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let cfg = AddrBookConfig {
            min_selection: 32,
            ..AddrBookConfig::default()
        };
        (AddrBook::new(cfg, &mut rng), rng)
    }

    #[test]
    fn only_reached_within_the_window_most_recent_first() {
        let (mut b, mut rng) = book();
        let src = IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9));
        let (old, fresh, newer, untested, failed) =
            (addr(1, 1), addr(2, 1), addr(3, 1), addr(4, 1), addr(5, 1));
        for a in [old, fresh, newer, untested, failed] {
            b.add(a, src, T0, &mut rng).unwrap();
        }
        b.mark_good(old.addr, T0, &mut rng);
        b.mark_good(fresh.addr, T0 + 5000, &mut rng);
        b.mark_good(newer.addr, T0 + 6000, &mut rng);
        b.mark_good(failed.addr, T0 + 6000, &mut rng);
        b.mark_failed(failed.addr, T0 + 6500);
        let now = T0 + 7000;
        let sel = b.vetted_selection(now, now - 3600, &[], 0);
        assert_eq!(sel, vec![newer, fresh]);
        // A connection we dialled and hold counts as reached now.
        let sel = b.vetted_selection(now, now - 3600, &[old.addr], 0);
        assert_eq!(sel, vec![old, newer, fresh]);
    }

    #[test]
    fn no_group_dominates() {
        let (mut b, mut rng) = book();
        let src = IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9));
        // 30 recent addresses in group 1, then one older in each of groups 2..=10.
        let mut all = Vec::new();
        for n in 0..30 {
            all.push((addr(1, n), T0 + 1000 + u64::from(n)));
        }
        for g in 2..=10 {
            all.push((addr(g, 0), T0 + u64::from(g)));
        }
        for &(a, t) in &all {
            b.add(a, src, T0, &mut rng).unwrap();
            b.mark_good(a.addr, t, &mut rng);
        }
        let now = T0 + 2000;
        let sel = b.vetted_selection(now, 0, &[], 0);
        // 39 qualify: the reply holds min(32, 39) of them, every group's entry included.
        assert_eq!(sel.len(), 32);
        for g in 2..=10 {
            assert!(sel.contains(&addr(g, 0)), "group {g} left out: {sel:?}");
        }
        // Most recent first.
        assert_eq!(sel[0], addr(1, 29));
        assert_eq!(sel[31], addr(2, 0));
    }

    #[test]
    fn equally_recent_entries_are_taken_in_an_order_drawn_from_the_salt() {
        let (mut b, mut rng) = book();
        let src = IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9));
        // 100 addresses reached in the same second, one reached later: 32 served.
        let all: Vec<NetAddr> = (0..100u8).map(|n| addr(n / 10 + 1, n)).collect();
        for a in &all {
            b.add(*a, src, T0, &mut rng).unwrap();
            b.mark_good(a.addr, T0 + 10, &mut rng);
        }
        let newest = addr(20, 0);
        b.add(newest, src, T0, &mut rng).unwrap();
        b.mark_good(newest.addr, T0 + 20, &mut rng);
        let now = T0 + 30;
        let picks: Vec<Vec<NetAddr>> = (1..=4)
            .map(|salt| b.vetted_selection(now, 0, &[], salt))
            .collect();
        for sel in &picks {
            assert_eq!(sel.len(), 32);
            assert_eq!(sel[0], newest, "the most recent first, whatever the salt");
        }
        // Another salt, other members: the ties are not always the lowest addresses.
        assert_ne!(picks[0], picks[1]);
        let union: std::collections::BTreeSet<NetAddr> = picks.iter().flatten().copied().collect();
        assert!(
            union.len() > 60,
            "four salts drew only {} of 101",
            union.len()
        );
        // The same salt, the same reply.
        assert_eq!(b.vetted_selection(now, 0, &[], 1), picks[0]);
    }

    /// The ranked selection gives exactly what turns over a map of groups gave: random books
    /// of few or many groups, with ties in time, held connections, every salt.
    #[test]
    fn vetted_selection_matches_the_turns_it_replaced() {
        let mut draw = ChaCha8Rng::seed_from_u64(99);
        let mut long = 0;
        for case in 0..60u64 {
            let (mut b, mut rng) = book();
            let src = IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9));
            let groups = 1 + (draw.next_u32() % [2, 6, 40, 250][(case % 4) as usize]);
            let mut added = Vec::new();
            let count = 1 + draw.next_u32() % 600;
            for i in 0..count {
                let g = u8::try_from(draw.next_u32() % groups).unwrap();
                let n = u8::try_from(i % 250).unwrap();
                let mut id = [0u8; 20];
                id[..4].copy_from_slice(&i.to_be_bytes());
                id[4] = g;
                let ip = Ipv4Addr::new(
                    30 + g / 4,
                    (g % 4) * 50 + u8::try_from(i / 250).unwrap(),
                    n,
                    1,
                );
                let a = NetAddr::new(NodeId(id), SocketAddr::new(IpAddr::V4(ip), 26656));
                if b.add(a, src, T0, &mut rng).is_err() {
                    continue;
                }
                added.push(a.addr);
                // Few distinct times, so that ties are common; some never reached.
                match draw.next_u32() % 4 {
                    0 => {}
                    k => {
                        b.mark_good(a.addr, T0 + u64::from(k) * 10, &mut rng);
                    }
                }
            }
            let now = T0 + 100;
            // Held connections: the addresses whose third octet is `live_bit` mod 7.
            // (Plus one the book does not hold.)
            let live_bit = u8::try_from(draw.next_u32() % 7).unwrap();
            let mut live: Vec<SocketAddr> = added
                .iter()
                .copied()
                .filter(|a| match a.ip() {
                    IpAddr::V4(v4) => v4.octets()[2] % 7 == live_bit,
                    IpAddr::V6(_) => false,
                })
                .collect();
            live.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(99, 9, 9, 9)), 1));
            for salt in [0, draw.next_u64()] {
                for since in [0, T0 + 15] {
                    let sel = b.vetted_selection(now, since, &live, salt);
                    assert_eq!(
                        sel,
                        b.vetted_selection_by_turns(now, since, &live, salt),
                        "case {case}, salt {salt}, since {since}"
                    );
                    if sel.len() > 32 {
                        long += 1;
                    }
                }
            }
        }
        // Replies past `min_selection` (23 % of a larger vetted set) were compared too.
        assert!(long > 20, "only {long} replies longer than 32");
    }

    #[test]
    fn untested_newest_first_and_filtered() {
        let (mut b, mut rng) = book();
        let src = IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9));
        let (reached, early, late, skipped) = (addr(1, 1), addr(2, 1), addr(3, 1), addr(4, 1));
        b.add(reached, src, T0, &mut rng).unwrap();
        b.add(early, src, T0 + 10, &mut rng).unwrap();
        b.add(late, src, T0 + 20, &mut rng).unwrap();
        b.add(skipped, src, T0 + 30, &mut rng).unwrap();
        b.mark_good(reached.addr, T0 + 40, &mut rng);
        let now = T0 + 100;
        assert_eq!(b.untested(now, 10, |a| *a != skipped), vec![late, early]);
        assert_eq!(b.untested(now, 1, |_| true), vec![skipped]);
    }

    /// The never-reached entries of `b` sorted as `untested` hands them out, from the entries.
    fn untested_by_sort(b: &AddrBook) -> Vec<NetAddr> {
        let mut all: Vec<(UnixTime, NetAddr)> = b
            .entries
            .slots()
            .flatten()
            .filter(|e| e.last_success.get() == 0)
            .map(|e| (e.last_seen.get(), e.addr(&b.v6)))
            .collect();
        all.sort_by_key(|&(t, a)| (Reverse(t), a));
        all.into_iter().map(|(_, a)| a).collect()
    }

    /// 600 never-reached addresses, many heard of in the same second (ties by address).
    fn book_of_untested() -> (AddrBook, ChaCha8Rng) {
        let (mut b, mut rng) = book();
        for g in 0..30u8 {
            for n in 0..20u8 {
                let src = IpAddr::V4(Ipv4Addr::new(9, 9, g, 9));
                let t = T0 + u64::from((u16::from(g) * 7 + u16::from(n) * 13) % 50);
                let _ = b.add(addr(g + 1, n), src, t, &mut rng);
            }
        }
        (b, rng)
    }

    #[test]
    fn untested_equals_a_full_sort() {
        let (mut b, _) = book_of_untested();
        let now = T0 + 100;
        let all = untested_by_sort(&b);
        assert!(all.len() > 300, "the book kept {} entries", all.len());
        // Filters that refuse none, most, or all but the oldest few.
        let filters: [&dyn Fn(&NetAddr) -> bool; 4] = [
            &|_| true,
            &|a| a.id.as_bytes()[1] % 5 == 0,
            &|a| a.id.as_bytes()[0] > 28,
            &|_| false,
        ];
        for f in filters {
            for limit in [0, 1, 5, 30, 1000] {
                let want: Vec<NetAddr> = all.iter().copied().filter(|a| f(a)).take(limit).collect();
                assert_eq!(b.untested(now, limit, f), want, "limit {limit}");
            }
        }
    }

    #[test]
    fn the_untested_index_follows_the_book() {
        let (mut b, mut rng) = book_of_untested();
        let mut now = T0 + 100;
        // The first call builds the index; every change after it must move it.
        assert_eq!(b.untested(now, 1000, |_| true), untested_by_sort(&b));
        for round in 0..20u8 {
            now += 7;
            let src = IpAddr::V4(Ipv4Addr::new(9, 9, round, 9));
            for n in 0..20u8 {
                let g = (round * 3 + n) % 30;
                let a = addr(g + 1, n);
                match (n + round) % 5 {
                    // Heard of again (a newer `last_seen`), or a newcomer.
                    0 => {
                        let _ = b.add(a, src, now, &mut rng);
                        let _ = b.add(addr(g + 100, n + round), src, now, &mut rng);
                    }
                    // Reached: leaves the index.
                    1 => {
                        let _ = b.mark_good(a.addr, now, &mut rng);
                    }
                    2 => b.mark_failed(a.addr, now),
                    3 => b.remove(a.addr),
                    _ => b.mark_attempt(a.addr, now),
                }
            }
            b.check().unwrap();
            assert_eq!(
                b.untested(now, 1000, |_| true),
                untested_by_sort(&b),
                "round {round}"
            );
        }
    }
}
