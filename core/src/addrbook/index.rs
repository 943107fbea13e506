//! The book's lookup indexes: the entries at an IP, the entries with a node id, and through the
//! first the entry at an IP:port.
//!
//! Each index is a hash table of `u32` entry indices (4 bytes and a control byte a slot); the
//! keys are read from the entries themselves, so no address or id is stored twice. Entries that
//! share an IP or a node id form a chain through the entries (`next_same_ip`, `next_same_id`) in
//! insertion order, starting at the entry the table holds. An IP holds at most
//! `max_ports_per_ip` entries (4 by default, G5), so the entry at an IP:port is found by walking
//! its IP's chain: a table of its own would cost a slot per entry. The tables are only looked
//! up, never iterated for a decision, so their random hash seed cannot change the book's
//! behaviour.

use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::slab::Slab;
use super::{AddrBook, EMPTY, Entry, Spot};
use crate::ids::NodeId;

/// The two lookup tables (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(super) struct Indexes {
    hasher: DefaultHashBuilder,
    /// One slot per IP: the first entry of that IP's chain.
    by_ip: HashTable<u32>,
    /// One slot per node id: the first entry of that id's chain.
    by_id: HashTable<u32>,
}

/// A chain key: entries sharing an IP, or entries sharing a node id.
#[derive(Clone, Copy)]
pub(super) enum Key {
    Ip(IpAddr),
    Id(NodeId),
}

impl Key {
    fn of(&self, e: &Entry) -> Key {
        match self {
            Key::Ip(_) => Key::Ip(e.ip()),
            Key::Id(_) => Key::Id(e.id),
        }
    }

    fn matches(&self, e: &Entry) -> bool {
        match self {
            Key::Ip(ip) => e.has_ip(*ip),
            Key::Id(id) => e.id == *id,
        }
    }

    fn next(&self, e: &Entry) -> u32 {
        match self {
            Key::Ip(_) => e.next_same_ip,
            Key::Id(_) => e.next_same_id,
        }
    }

    fn next_mut<'a>(&self, e: &'a mut Entry) -> &'a mut u32 {
        match self {
            Key::Ip(_) => &mut e.next_same_ip,
            Key::Id(_) => &mut e.next_same_id,
        }
    }

    fn hash(&self, h: &DefaultHashBuilder) -> u64 {
        match self {
            Key::Ip(ip) => h.hash_one(ip),
            Key::Id(id) => h.hash_one(id),
        }
    }
}

fn live(entries: &Slab, idx: u32) -> Option<&Entry> {
    entries.get(idx)
}

/// The entries of one chain, in insertion order.
pub(super) struct Chain<'a> {
    entries: &'a Slab,
    key: Key,
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
        self.next = live(self.entries, idx).map_or(EMPTY, |e| self.key.next(e));
        Some(idx)
    }
}

impl AddrBook {
    /// The index of the entry at `addr`.
    #[inline]
    pub(super) fn idx_of(&self, addr: &SocketAddr) -> Option<u32> {
        let spot = Spot::of(addr);
        let mut idx = self.head(Key::Ip(addr.ip()))?;
        // A chain never holds more entries than the slab.
        for _ in 0..self.entries.len() {
            let e = live(&self.entries, idx)?;
            if e.is_at(&spot) {
                return Some(idx);
            }
            idx = e.next_same_ip;
        }
        None
    }

    #[inline]
    fn head(&self, key: Key) -> Option<u32> {
        let h = key.hash(&self.index.hasher);
        let entries = &self.entries;
        let table = match key {
            Key::Ip(_) => &self.index.by_ip,
            Key::Id(_) => &self.index.by_id,
        };
        table
            .find(h, |&i| live(entries, i).is_some_and(|e| key.matches(e)))
            .copied()
    }

    /// The entries sharing `key` (an IP or a node id), in insertion order.
    pub(super) fn chain(&self, key: Key) -> Chain<'_> {
        Chain {
            entries: &self.entries,
            key,
            next: self.head(key).unwrap_or(EMPTY),
            left: self.entries.len(),
        }
    }

    /// Number of entries (ports) kept for `ip`.
    pub(super) fn ports_at(&self, ip: IpAddr) -> usize {
        self.chain(Key::Ip(ip)).count()
    }

    /// Makes room in the indexes for `n` more entries.
    pub(super) fn index_reserve(&mut self, n: usize) {
        let (hasher, entries) = (&self.index.hasher, &self.entries);
        let ip_hash = |&i: &u32| live(entries, i).map_or(0, |e| hasher.hash_one(e.ip()));
        self.index.by_ip.reserve(n, ip_hash);
        let id_hash = |&i: &u32| live(entries, i).map_or(0, |e| hasher.hash_one(e.id));
        self.index.by_id.reserve(n, id_hash);
    }

    /// Indexes the live entry `idx` (its chain links are reset here).
    pub(super) fn index_insert(&mut self, idx: u32) {
        let Some(e) = self.entry_mut(idx) else {
            return;
        };
        e.next_same_ip = EMPTY;
        e.next_same_id = EMPTY;
        let (ip, id) = (e.ip(), e.id);
        self.chain_append(Key::Ip(ip), idx);
        self.chain_append(Key::Id(id), idx);
    }

    fn chain_append(&mut self, key: Key, idx: u32) {
        let tail = self.chain(key).last();
        match tail {
            Some(t) => {
                if let Some(e) = self.entry_mut(t) {
                    *key.next_mut(e) = idx;
                }
            }
            None => {
                let (hasher, entries) = (&self.index.hasher, &self.entries);
                let table = match key {
                    Key::Ip(_) => &mut self.index.by_ip,
                    Key::Id(_) => &mut self.index.by_id,
                };
                table.insert_unique(key.hash(hasher), idx, |&i| {
                    live(entries, i).map_or(0, |e| key.of(e).hash(hasher))
                });
            }
        }
    }

    /// Removes the live entry `idx` from the indexes (before it leaves the slab).
    pub(super) fn index_remove(&mut self, idx: u32) {
        let Some(e) = self.entry(idx) else {
            return;
        };
        let (ip, id) = (e.ip(), e.id);
        self.chain_unlink(Key::Ip(ip), idx);
        self.chain_unlink(Key::Id(id), idx);
    }

    fn chain_unlink(&mut self, key: Key, idx: u32) {
        let Some(next) = self.entry(idx).map(|e| key.next(e)) else {
            return;
        };
        let Some(head) = self.head(key) else {
            return;
        };
        if head == idx {
            let h = key.hash(&self.index.hasher);
            let table = match key {
                Key::Ip(_) => &mut self.index.by_ip,
                Key::Id(_) => &mut self.index.by_id,
            };
            if let Ok(mut o) = table.find_entry(h, |&i| i == idx) {
                if next == EMPTY {
                    o.remove();
                } else {
                    *o.get_mut() = next;
                }
            }
            return;
        }
        let prev = self
            .chain(key)
            .find(|&i| self.entry(i).is_some_and(|e: &Entry| key.next(e) == idx));
        if let Some(p) = prev
            && let Some(e) = self.entry_mut(p)
        {
            *key.next_mut(e) = next;
        }
    }

    /// Verifies the chains (for `check`): every chain holds entries of its own key only and is
    /// indexed once, each IP's chain respects the port cap, and together the chains of each
    /// kind cover every live entry exactly once.
    pub(super) fn check_chains(&self, live_entries: usize) -> Result<(), String> {
        for (name, table, ip) in [
            ("ip", &self.index.by_ip, true),
            ("id", &self.index.by_id, false),
        ] {
            let mut total = 0usize;
            // A sum and per-chain checks: the answer does not depend on the order.
            #[allow(clippy::disallowed_methods)]
            for &head in table.iter() {
                let Some(e) = self.entry(head) else {
                    return Err(format!("{name} index holds dead index {head}"));
                };
                let key = if ip { Key::Ip(e.ip()) } else { Key::Id(e.id) };
                if self.head(key) != Some(head) {
                    return Err(format!("{} heads two {name} chains", e.addr()));
                }
                let mut n = 0usize;
                for i in self.chain(key) {
                    if !self.entry(i).is_some_and(|c| key.matches(c)) {
                        return Err(format!("{name} chain of {} holds a stranger", e.addr()));
                    }
                    n += 1;
                }
                if ip && n > self.config.max_ports_per_ip {
                    return Err(format!("{} is over the per-ip port cap", e.addr()));
                }
                total += n;
            }
            if total != live_entries {
                return Err(format!(
                    "{name} chains hold {total} of {live_entries} entries"
                ));
            }
        }
        Ok(())
    }
}
