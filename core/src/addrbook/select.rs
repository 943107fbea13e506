//! Choosing addresses: a dial candidate ([`AddrBook::pick`], G8, G9) and a PEX reply
//! ([`AddrBook::selection`], G19).

use hashbrown::HashSet;
use rand_core::RngCore;

use super::{AddrBook, Entry, MAX_SELECTION, RECENT_ATTEMPT, SELECTION_PERCENT, UnixTime};
use crate::addr::NetAddr;

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
                if accept(&e.addr) {
                    return Some(e.addr);
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
            .map(|e| e.addr)
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
                && !self.private_ids.contains(&e.addr.id)
                && !self.is_banned(&e.addr.id, &e.addr.addr.ip(), now)
            {
                out.push(e.addr);
            }
        }
        out
    }
}

/// Bitcoin's `GetChance`: the selection weight of an entry.
fn chance(e: &Entry, now: UnixTime) -> f64 {
    let mut c = 1.0;
    if e.last_attempt != 0 && now.saturating_sub(e.last_attempt) < RECENT_ATTEMPT {
        c *= 0.01;
    }
    c * 0.66f64.powi(e.attempts.min(8) as i32)
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
