//! The consistency checker (G23): every cross-index of the book verified, in O(entries) plus one
//! pass over the new table's occupied slots ([`AddrBook::check`]; the whole table once it is
//! dense), or with a full scan of both tables ([`AddrBook::check_full`]).

use super::{
    AddrBook, BUCKET_SIZE, CheckError, MAX_BANS, MAX_NEW_REFS, MAX_SAVED_PER_BAN,
    MAX_TRIED_COLLISIONS, NEW_BUCKETS,
};

impl AddrBook {
    /// Verifies every cross-index (G23): slot ↔ keyed hash, references 1–8 in new and 0 in
    /// tried, list positions, address/port/id indexes, counts, collisions, bans, key ≠ 0.
    pub fn check(&self) -> Result<(), CheckError> {
        let err = |s: String| Err(CheckError(s));
        if self.key == [0u8; 16] {
            return err("key is zero".into());
        }
        let live = self.entries.slots().filter(Option::is_some).count();
        if live != self.new_list.len() + self.tried_list.len() {
            return err(format!("{live} entries but lists hold {}", self.len()));
        }
        if live + self.free.len() != self.entries.len() {
            return err("free list does not match the slab".into());
        }
        for &f in &self.free {
            if self.entry(f).is_some() {
                return err(format!("free index {f} is live"));
            }
        }
        self.check_untested().map_err(CheckError)?;
        for (tried, list) in [(false, &self.new_list), (true, &self.tried_list)] {
            for (pos, &idx) in list.iter().enumerate() {
                let Some(e) = self.entry(idx) else {
                    return err(format!("list holds dead index {idx}"));
                };
                if e.tried() != tried || e.list_pos as usize != pos {
                    return err(format!("{} has a wrong list position", e.addr(&self.v6)));
                }
            }
        }
        for (idx, e) in self.entries.slots().enumerate() {
            let Some(e) = e else { continue };
            let idx = idx as u32;
            if self.idx_of(&e.socket(&self.v6)) != Some(idx) {
                return err(format!(
                    "{} missing from the address index",
                    e.addr(&self.v6)
                ));
            }
            if !self.chain(e.ip(&self.v6)).any(|i| i == idx) {
                return err(format!("{} missing from the port index", e.addr(&self.v6)));
            }
            if e.tried() {
                if e.new_refs() != 0 {
                    return err(format!("tried {} has new references", e.addr(&self.v6)));
                }
                if self.tried_table.get(self.tried_pos(&e.socket(&self.v6))) != idx {
                    return err(format!("tried {} not at its keyed slot", e.addr(&self.v6)));
                }
            } else {
                let n = e.new_refs();
                if n == 0 || n > MAX_NEW_REFS {
                    return err(format!("{} has {n} new references", e.addr(&self.v6)));
                }
                let anchor = e.anchor().map_or(NEW_BUCKETS, usize::from);
                if anchor >= NEW_BUCKETS
                    || self
                        .new_table
                        .get(self.new_pos(anchor, &e.socket(&self.v6)))
                        != idx
                {
                    return err(format!(
                        "{} not at its keyed slot in bucket {anchor}",
                        e.addr(&self.v6)
                    ));
                }
            }
        }
        // Every pool slot is used by as many IPv6 addresses and sources as it counts.
        let mut pool_users = Vec::new();
        for e in self.entries.slots().flatten() {
            let source = e.source().err().filter(|&h| h != super::v6pool::OWN);
            for handle in [e.packed_ip().handle(), source].into_iter().flatten() {
                let i = handle as usize;
                if i >= pool_users.len() {
                    pool_users.resize(i + 1, 0u32);
                }
                pool_users[i] += 1;
            }
        }
        self.v6.check(&pool_users).map_err(CheckError)?;
        // Every occupied new slot holds a new entry at its keyed slot in that bucket, and each
        // entry is held by as many slots as it counts references: one pass over the table.
        let mut held = vec![0u8; self.entries.len()];
        let mut stray = None;
        self.new_table.for_each_occupied(|pos, idx| {
            let ok = self.entry(idx).is_some_and(|e| {
                !e.tried() && self.new_pos(pos / BUCKET_SIZE, &e.socket(&self.v6)) == pos
            });
            match held.get_mut(idx as usize) {
                Some(n) if ok => *n = n.saturating_add(1),
                // The smallest bad position, so the message does not depend on the order.
                _ => stray = Some(stray.map_or(pos, |s: usize| s.min(pos))),
            }
        });
        if let Some(pos) = stray {
            return err(format!("new slot {pos} holds a stray reference"));
        }
        for (idx, e) in self.entries.slots().enumerate() {
            if let Some(e) = e
                && held[idx] != e.new_refs()
            {
                return err(format!(
                    "{} has {} new references but {} slots hold it",
                    e.addr(&self.v6),
                    e.new_refs(),
                    held[idx]
                ));
            }
        }
        let new_refs: usize = held.iter().map(|&n| usize::from(n)).sum();
        let occupied_new = self.new_used;
        if occupied_new != new_refs {
            return err(format!(
                "{occupied_new} new slots used but {new_refs} references"
            ));
        }
        let occupied_tried = self.tried_used;
        if occupied_tried != self.tried_list.len() {
            return err(format!(
                "{occupied_tried} tried slots used but {} tried entries",
                self.tried_list.len()
            ));
        }
        self.check_chains(live).map_err(CheckError)?;
        if self.collisions.len() > MAX_TRIED_COLLISIONS {
            return err("too many tried collisions".into());
        }
        for c in &self.collisions {
            if self.entry(c.entry).is_none_or(|e| e.tried()) {
                return err("collision refers to a dead or tried entry".into());
            }
        }
        if self.bans.len() > MAX_BANS {
            return err("too many bans".into());
        }
        for b in &self.bans {
            if b.saved.len() > MAX_SAVED_PER_BAN {
                return err(format!("ban of {}@{:?} saves too many entries", b.id, b.ip));
            }
            if self.ban_ids.get(&b.id).is_none_or(|&t| t < b.until)
                || b.ip
                    .is_some_and(|ip| self.ban_ips.get(&ip).is_none_or(|&t| t < b.until))
            {
                return err(format!("ban of {}@{:?} not indexed", b.id, b.ip));
            }
        }
        Ok(())
    }

    /// [`Self::check`] plus a scan of every slot of both tables against the occupancy counts
    /// (O(table size); `check` is O(entries)).
    pub fn check_full(&self) -> Result<(), CheckError> {
        self.check()?;
        let new = self.new_table.count_occupied();
        let tried = self.tried_table.count_occupied();
        if new != self.new_used || tried != self.tried_used {
            return Err(CheckError(format!(
                "tables hold {new}/{tried} references, counts say {}/{}",
                self.new_used, self.tried_used
            )));
        }
        Ok(())
    }
}
