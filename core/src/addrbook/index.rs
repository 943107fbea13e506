//! The book's lookup index: the entries at an IP, and through it the entry at an IP:port.
//!
//! The index is a hash table of `u32` entry indices (4 bytes and a control byte a slot), one
//! per IP; the keys are the entries' packed IPs ([`PackedIp`]), read from the entries
//! themselves, so no address is stored twice. The
//! entries that share an IP form a chain through the entries (`next_same_ip`) in insertion
//! order, starting at the entry the table holds. An IP holds at most `max_ports_per_ip` entries
//! (4 by default, G5), so the entry at an IP:port is found by walking its IP's chain: a table of
//! its own would cost a slot per entry. The entries with a node id are found by a scan of the
//! entries ([`AddrBook::with_id`]): only a ban and setting the private ids ask, both rare, and
//! an index by id cost 13 bytes per entry. The table is only looked up, never iterated for a
//! decision, so its random hash seed cannot change the book's behaviour.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::entry::PackedIp;
use super::slab::Slab;
use super::{AddrBook, EMPTY, Entry};
use crate::ids::NodeId;

/// The lookup table (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(super) struct Indexes {
    hasher: DefaultHashBuilder,
    /// One slot per IP: the first entry of that IP's chain.
    by_ip: HashTable<u32>,
}

fn live(entries: &Slab, idx: u32) -> Option<&Entry> {
    entries.get(idx)
}

/// The entries at one IP, in insertion order.
pub(super) struct Chain<'a> {
    entries: &'a Slab,
    next: u32,
    /// Steps left: a chain never holds more entries than the slab.
    left: usize,
}

impl Iterator for Chain<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.next == EMPTY || self.left == 0 {
            return None;
        }
        self.left -= 1;
        let idx = self.next;
        self.next = live(self.entries, idx).map_or(EMPTY, |e| e.next_same_ip);
        Some(idx)
    }
}

impl AddrBook {
    /// The index of the entry at `addr`.
    #[inline]
    pub(super) fn idx_of(&self, addr: &SocketAddr) -> Option<u32> {
        let ip = PackedIp::find(addr.ip(), &self.v6)?;
        let port = addr.port();
        let mut idx = self.head(ip)?;
        // A chain never holds more entries than the slab.
        for _ in 0..self.entries.len() {
            let e = live(&self.entries, idx)?;
            if e.is_at(ip, port) {
                return Some(idx);
            }
            idx = e.next_same_ip;
        }
        None
    }

    /// The first entry of `ip`'s chain.
    #[inline]
    fn head(&self, ip: PackedIp) -> Option<u32> {
        let h = self.index.hasher.hash_one(ip);
        let entries = &self.entries;
        self.index
            .by_ip
            .find(h, |&i| {
                live(entries, i).is_some_and(|e| e.packed_ip() == ip)
            })
            .copied()
    }

    /// The entries at `ip`, in insertion order.
    pub(super) fn chain(&self, ip: IpAddr) -> Chain<'_> {
        let head = PackedIp::find(ip, &self.v6).and_then(|p| self.head(p));
        self.chain_from(head)
    }

    /// The entries of the chain starting at `head`.
    fn chain_from(&self, head: Option<u32>) -> Chain<'_> {
        Chain {
            entries: &self.entries,
            next: head.unwrap_or(EMPTY),
            left: self.entries.len(),
        }
    }

    /// The entries with node id `id`, in slot order (a scan, see the module documentation).
    pub(super) fn with_id(&self, id: NodeId) -> Vec<u32> {
        (0u32..)
            .zip(self.entries.slots())
            .filter(|(_, e)| e.is_some_and(|e| e.id == id))
            .map(|(i, _)| i)
            .collect()
    }

    /// Number of entries (ports) kept for `ip`.
    pub(super) fn ports_at(&self, ip: IpAddr) -> usize {
        self.chain(ip).count()
    }

    /// Makes room in the index for `n` more entries.
    pub(super) fn index_reserve(&mut self, n: usize) {
        let (hasher, entries) = (&self.index.hasher, &self.entries);
        let ip_hash = |&i: &u32| live(entries, i).map_or(0, |e| hasher.hash_one(e.packed_ip()));
        self.index.by_ip.reserve(n, ip_hash);
    }

    /// Indexes the live entry `idx` at the end of its IP's chain.
    pub(super) fn index_insert(&mut self, idx: u32) {
        let Some(e) = self.entry_mut(idx) else {
            return;
        };
        e.next_same_ip = EMPTY;
        let ip = e.packed_ip();
        match self.chain_from(self.head(ip)).last() {
            Some(tail) => {
                if let Some(t) = self.entry_mut(tail) {
                    t.next_same_ip = idx;
                }
            }
            None => {
                let (hasher, entries) = (&self.index.hasher, &self.entries);
                self.index
                    .by_ip
                    .insert_unique(hasher.hash_one(ip), idx, |&i| {
                        live(entries, i).map_or(0, |e| hasher.hash_one(e.packed_ip()))
                    });
            }
        }
    }

    /// Removes the live entry `idx` from its IP's chain (before it leaves the slab).
    pub(super) fn index_remove(&mut self, idx: u32) {
        let Some((ip, next)) = self.entry(idx).map(|e| (e.packed_ip(), e.next_same_ip)) else {
            return;
        };
        let Some(head) = self.head(ip) else {
            return;
        };
        if head == idx {
            let h = self.index.hasher.hash_one(ip);
            if let Ok(mut o) = self.index.by_ip.find_entry(h, |&i| i == idx) {
                if next == EMPTY {
                    o.remove();
                } else {
                    *o.get_mut() = next;
                }
            }
            return;
        }
        let prev = self
            .chain_from(Some(head))
            .find(|&i| self.entry(i).is_some_and(|e| e.next_same_ip == idx));
        if let Some(p) = prev
            && let Some(e) = self.entry_mut(p)
        {
            e.next_same_ip = next;
        }
    }

    /// Verifies the chains (for `check`): every chain holds entries of its own IP only and is
    /// indexed once, respects the port cap, and together the chains cover every live entry
    /// exactly once.
    pub(super) fn check_chains(&self, live_entries: usize) -> Result<(), String> {
        let mut total = 0usize;
        // A sum and per-chain checks: the answer does not depend on the order.
        #[allow(clippy::disallowed_methods)]
        for &head in self.index.by_ip.iter() {
            let Some(e) = self.entry(head) else {
                return Err(format!("ip index holds dead index {head}"));
            };
            let ip = e.packed_ip();
            let addr = e.addr(&self.v6);
            if self.head(ip) != Some(head) || PackedIp::find(addr.addr.ip(), &self.v6) != Some(ip) {
                return Err(format!("{addr} heads two ip chains"));
            }
            let mut n = 0usize;
            for i in self.chain_from(Some(head)) {
                if !self.entry(i).is_some_and(|c| c.packed_ip() == ip) {
                    return Err(format!("ip chain of {addr} holds a stranger"));
                }
                n += 1;
            }
            if n > self.config.max_ports_per_ip {
                return Err(format!("{addr} is over the per-ip port cap"));
            }
            total += n;
        }
        if total != live_entries {
            return Err(format!("ip chains hold {total} of {live_entries} entries"));
        }
        Ok(())
    }
}
