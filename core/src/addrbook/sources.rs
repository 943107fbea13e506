//! The IPv6 source IPs of the book's entries, each kept once.
//!
//! An entry remembers the IP of the peer that told us about it: it places the entry's first
//! new-table reference when the book is reloaded under another geometry, and it is persisted and
//! exported. An entry has 4 bytes for it: an IPv4 source fits, an IPv6 one is kept here and the
//! entry holds its handle (a book of a thousand entries hears from a few dozen peers). A
//! self-announcement (the source is the address's own IP) takes no slot: its handle is [`OWN`].
//! A slot counts the entries naming it and is freed with the last of them.

use std::hash::BuildHasher;
use std::net::IpAddr;

use hashbrown::{DefaultHashBuilder, HashTable};

/// The handle of an entry whose source is its own IP.
pub(super) const OWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Slot {
    ip: IpAddr,
    /// Entries naming the slot; 0 for a free slot.
    users: u32,
}

/// The pool (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(super) struct Sources {
    hasher: DefaultHashBuilder,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Live slots by IP; only looked up, never iterated.
    index: HashTable<u32>,
}

impl Sources {
    /// A handle for `source` heard for an address at `own_ip`, counting one more user.
    pub(super) fn intern(&mut self, source: IpAddr, own_ip: IpAddr) -> u32 {
        if source == own_ip {
            return OWN;
        }
        let h = self.hasher.hash_one(source);
        let slots = &self.slots;
        if let Some(&i) = self.index.find(h, |&i| slots[i as usize].ip == source) {
            self.slots[i as usize].users += 1;
            return i;
        }
        let slot = Slot {
            ip: source,
            users: 1,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                // At most one slot per entry, and the book holds fewer than `u32::MAX`.
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(h, i, |&j| hasher.hash_one(slots[j as usize].ip));
        i
    }

    /// Drops one user of `handle`, freeing its slot with the last.
    pub(super) fn release(&mut self, handle: u32) {
        let Some(slot) = self.slots.get_mut(handle as usize) else {
            return;
        };
        if slot.users == 0 {
            return;
        }
        slot.users -= 1;
        if slot.users == 0 {
            let h = self.hasher.hash_one(slot.ip);
            if let Ok(found) = self.index.find_entry(h, |&j| j == handle) {
                found.remove();
            }
            self.free.push(handle);
        }
    }

    /// The source IP behind `handle` for an entry at `own_ip` (`None`: not a live slot).
    pub(super) fn ip(&self, handle: u32, own_ip: IpAddr) -> Option<IpAddr> {
        if handle == OWN {
            return Some(own_ip);
        }
        self.slots
            .get(handle as usize)
            .filter(|s| s.users > 0)
            .map(|s| s.ip)
    }

    /// Checks the pool against `users`, the number of entries naming each slot (counted by
    /// [`super::AddrBook::check`]).
    pub(super) fn check(&self, users: &[u32]) -> Result<(), String> {
        if users.len() > self.slots.len() {
            return Err("an entry names a source slot that does not exist".into());
        }
        let mut live = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let counted = users.get(i).copied().unwrap_or(0);
            if slot.users != counted {
                return Err(format!(
                    "source slot {i} counts {} users, entries name it {counted} times",
                    slot.users
                ));
            }
            if slot.users > 0 {
                live += 1;
                let h = self.hasher.hash_one(slot.ip);
                if self.index.find(h, |&j| j as usize == i).is_none() {
                    return Err(format!("source slot {i} missing from its index"));
                }
            } else if !self.free.contains(&(i as u32)) {
                return Err(format!("source slot {i} is neither used nor free"));
            }
        }
        if self.index.len() != live || live + self.free.len() != self.slots.len() {
            return Err("source index or free list does not match the slots".into());
        }
        Ok(())
    }

    /// Number of distinct source IPs held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_counted_and_reused() {
        let (a, b): (IpAddr, IpAddr) = (
            "1.2.3.4".parse().unwrap(),
            "::ffff:1.2.3.4".parse().unwrap(),
        );
        let own: IpAddr = "9.9.9.9".parse().unwrap();
        let mut p = Sources::default();
        assert_eq!(p.intern(own, own), OWN);
        assert_eq!(p.ip(OWN, own), Some(own));
        let ha = p.intern(a, own);
        assert_eq!(p.intern(a, own), ha);
        let hb = p.intern(b, own);
        assert_ne!(ha, hb, "IPv4 and IPv4-mapped IPv6 are different sources");
        assert_eq!(
            (p.ip(ha, own), p.ip(hb, own), p.len()),
            (Some(a), Some(b), 2)
        );
        p.check(&[2, 1]).unwrap();
        assert!(p.check(&[1, 1]).is_err());
        p.release(ha);
        assert_eq!(p.ip(ha, own), Some(a), "one user left");
        p.release(ha);
        assert_eq!((p.ip(ha, own), p.len()), (None, 1));
        p.check(&[0, 1]).unwrap();
        let c: IpAddr = "5.6.7.8".parse().unwrap();
        assert_eq!(p.intern(c, own), ha, "the freed slot is reused");
        p.release(OWN);
        p.release(999);
        p.check(&[1, 1]).unwrap();
    }

    /// In a book: IPv4 sources stay in the entries, an IPv6 source takes one shared slot, a
    /// self-announcement none; the slot goes with its last entry, and encoding keeps them all.
    #[test]
    fn a_book_pools_ipv6_sources_only() {
        use rand_chacha::ChaCha8Rng;
        use rand_core::SeedableRng;

        use crate::addr::NetAddr;
        use crate::addrbook::{AddrBook, AddrBookConfig};
        use crate::ids::NodeId;

        let mut r = ChaCha8Rng::seed_from_u64(1);
        let mut book = AddrBook::new(AddrBookConfig::default(), &mut r);
        let at = |n: u8, s: &str| NetAddr::new(NodeId([n; 20]), s.parse().unwrap());
        let (v4src, v6src): (IpAddr, IpAddr) =
            ("8.8.4.4".parse().unwrap(), "2a01:4f8::1".parse().unwrap());
        let own6 = at(2, "[2a01:4f9::2]:26656");
        let heard = [
            (at(1, "1.2.3.4:26656"), v4src),
            (own6, own6.addr.ip()),
            (at(3, "5.6.7.8:26656"), v6src),
            (at(4, "[2a01:4fa::3]:26656"), v6src),
        ];
        for (a, src) in heard {
            book.add(a, src, 1_700_000_000, &mut r).unwrap();
        }
        assert_eq!(
            book.sources.len(),
            1,
            "one IPv6 source besides the self-announcement"
        );
        book.check().unwrap();
        let copy = AddrBook::decode(&book.encode(), AddrBookConfig::default()).unwrap();
        for (a, src) in heard {
            assert_eq!(book.source_of(&a.addr), Some(src));
            assert_eq!(copy.source_of(&a.addr), Some(src));
        }
        book.remove(heard[2].0.addr);
        assert_eq!(book.sources.len(), 1);
        book.remove(heard[3].0.addr);
        assert_eq!(book.sources.len(), 0, "freed with its last entry");
        book.check().unwrap();
    }
}
