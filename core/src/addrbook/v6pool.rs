//! The IPv6 addresses of the book's entries, each kept once.
//!
//! An entry has 4 bytes for its IP and 4 for its source (the IP of the peer that told us about
//! it; it places the entry's first new-table reference when the book is reloaded under another
//! geometry, and it is persisted and exported). An IPv4 address fits; an IPv6 one is kept here
//! and the entry holds its handle. Most addresses of a network are IPv4, and a book of a
//! thousand entries hears from a few dozen peers, so the pool stays small while every entry
//! saves 12 of the 16 bytes an IPv6 address would take in it. A self-announcement (the source
//! is the address's own IP) takes no slot: its handle is [`OWN`]. A slot counts its users (an
//! entry's address and an entry's source count one each) and is freed with the last of them.
//! An IP is interned once, so two handles are equal exactly when their IPs are.

use std::hash::BuildHasher;
use std::net::Ipv6Addr;

use hashbrown::{DefaultHashBuilder, HashTable};

/// The source handle of an entry whose source is its own IP.
pub(super) const OWN: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Slot {
    ip: Ipv6Addr,
    /// Users of the slot; 0 for a free slot.
    users: u32,
}

/// The pool (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(super) struct V6Pool {
    hasher: DefaultHashBuilder,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Live slots by IP; only looked up, never iterated.
    index: HashTable<u32>,
}

impl V6Pool {
    /// The handle of `ip`, counting one more user.
    pub(super) fn intern(&mut self, ip: Ipv6Addr) -> u32 {
        let h = self.hasher.hash_one(ip);
        let slots = &self.slots;
        if let Some(&i) = self.index.find(h, |&i| slots[i as usize].ip == ip) {
            self.slots[i as usize].users += 1;
            return i;
        }
        let slot = Slot { ip, users: 1 };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                // At most two slots per entry, and the book holds far fewer than `u32::MAX / 2`.
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(h, i, |&j| hasher.hash_one(slots[j as usize].ip));
        i
    }

    /// The handle of `ip` if the pool holds it (no user counted).
    pub(super) fn find(&self, ip: Ipv6Addr) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(ip), |&i| slots[i as usize].ip == ip)
            .copied()
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

    /// The IP behind `handle` (`None`: not a live slot).
    pub(super) fn get(&self, handle: u32) -> Option<Ipv6Addr> {
        self.slots
            .get(handle as usize)
            .filter(|s| s.users > 0)
            .map(|s| s.ip)
    }

    /// Checks the pool against `users`, the number of users of each slot (counted by
    /// [`super::AddrBook::check`]).
    pub(super) fn check(&self, users: &[u32]) -> Result<(), String> {
        if users.len() > self.slots.len() {
            return Err("an entry names a pool slot that does not exist".into());
        }
        let mut live = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let counted = users.get(i).copied().unwrap_or(0);
            if slot.users != counted {
                return Err(format!(
                    "pool slot {i} counts {} users, entries name it {counted} times",
                    slot.users
                ));
            }
            if slot.users > 0 {
                live += 1;
                let h = self.hasher.hash_one(slot.ip);
                if self.index.find(h, |&j| j as usize == i).is_none() {
                    return Err(format!("pool slot {i} missing from its index"));
                }
            } else if !self.free.contains(&(i as u32)) {
                return Err(format!("pool slot {i} is neither used nor free"));
            }
        }
        if self.index.len() != live || live + self.free.len() != self.slots.len() {
            return Err("pool index or free list does not match the slots".into());
        }
        Ok(())
    }

    /// Number of distinct IPs held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn slots_are_shared_counted_and_reused() {
        let (a, b): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "::ffff:1.2.3.4".parse().unwrap(),
        );
        let mut p = V6Pool::default();
        assert_eq!(p.find(a), None);
        let ha = p.intern(a);
        assert_eq!(p.intern(a), ha);
        assert_eq!(p.find(a), Some(ha));
        let hb = p.intern(b);
        assert_ne!(ha, hb);
        assert_eq!((p.get(ha), p.get(hb), p.len()), (Some(a), Some(b), 2));
        p.check(&[2, 1]).unwrap();
        assert!(p.check(&[1, 1]).is_err());
        assert!(p.check(&[2, 1, 1]).is_err(), "a slot that does not exist");
        p.release(ha);
        assert_eq!(p.get(ha), Some(a), "one user left");
        p.release(ha);
        assert_eq!((p.get(ha), p.find(a), p.len()), (None, None, 1));
        p.check(&[0, 1]).unwrap();
        let c: Ipv6Addr = "2001:db8::3".parse().unwrap();
        assert_eq!(p.intern(c), ha, "the freed slot is reused");
        p.release(OWN);
        p.release(999);
        p.check(&[1, 1]).unwrap();
    }

    /// In a book: IPv4 addresses and sources stay in the entries; an IPv6 address or source
    /// takes one shared slot, a self-announcement nothing more; a slot goes with its last user,
    /// and encoding keeps them all.
    #[test]
    fn a_book_pools_ipv6_only() {
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
            (at(5, "[2a01:4fa::3]:26657"), v4src),
            (at(6, "[2a01:4f8::1]:26656"), v4src),
        ];
        for (a, src) in heard {
            book.add(a, src, 1_700_000_000, &mut r).unwrap();
        }
        assert_eq!(
            book.v6.len(),
            3,
            "three IPv6 addresses, one of them a source too"
        );
        book.check().unwrap();
        let copy = AddrBook::decode(&book.encode(), AddrBookConfig::default()).unwrap();
        for (a, src) in heard {
            assert_eq!(book.source_of(&a.addr), Some(src));
            assert_eq!(copy.source_of(&a.addr), Some(src));
            assert!(book.contains(&a.addr) && copy.contains(&a.addr));
        }
        assert_eq!(copy.v6.len(), 3);
        book.remove(heard[2].0.addr);
        assert_eq!(book.v6.len(), 3, "2a01:4f8::1 is still an address");
        book.remove(heard[3].0.addr);
        assert_eq!(book.v6.len(), 3, "2a01:4fa::3 is still an address");
        book.remove(heard[4].0.addr);
        assert_eq!(book.v6.len(), 2, "freed with its last user");
        book.remove(heard[5].0.addr);
        book.remove(heard[1].0.addr);
        assert_eq!(book.v6.len(), 0);
        book.check().unwrap();
        assert!(book.contains(&heard[0].0.addr));
    }
}
