//! The book's entries, by index: a vector of slots, each empty or holding an entry.
//!
//! The slab is the largest part of a book, and a simulator holds thousands of books, so a
//! full slab grows by a quarter (at least 4 slots) instead of doubling: doubling leaves a third
//! of the slab unused on average, which costs more than the extra copies. (Chunks of 32
//! entries, which copy nothing when they grow, were tried and made random lookups, as `pick`
//! and `selection` make them, 3–9 % slower.) Slots are never removed: a slot emptied by
//! [`Slab::take`] is reused through the book's free list, so an index stays valid for the life
//! of its slot.

use super::Entry;

/// The entry slots (see the module documentation).
#[derive(Clone, Debug, Default)]
pub(super) struct Slab {
    slots: Vec<Option<Entry>>,
}

impl Slab {
    /// Number of slots, empty or not.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The entry in slot `idx`, if the slot exists and holds one.
    pub(super) fn get(&self, idx: u32) -> Option<&Entry> {
        self.slots.get(idx as usize)?.as_ref()
    }

    /// The entry in slot `idx`, mutably.
    pub(super) fn get_mut(&mut self, idx: u32) -> Option<&mut Entry> {
        self.slots.get_mut(idx as usize)?.as_mut()
    }

    /// Appends an empty slot and returns its index.
    pub(super) fn push_slot(&mut self) -> u32 {
        if self.slots.len() == self.slots.capacity() {
            self.slots.reserve_exact((self.slots.len() / 4).max(4));
        }
        self.slots.push(None);
        // The book holds at most `u32::MAX` entries (its tables hold fewer slots).
        (self.slots.len() - 1) as u32
    }

    /// Puts `entry` into the existing slot `idx`, returning what it held.
    pub(super) fn put(&mut self, idx: u32, entry: Entry) -> Option<Entry> {
        self.slots[idx as usize].replace(entry)
    }

    /// Empties slot `idx`, returning its entry.
    pub(super) fn take(&mut self, idx: u32) -> Option<Entry> {
        self.slots.get_mut(idx as usize)?.take()
    }

    /// Every slot in index order.
    pub(super) fn slots(&self) -> impl Iterator<Item = Option<&Entry>> {
        self.slots.iter().map(Option::as_ref)
    }

    /// Makes room for `n` more slots.
    pub(super) fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_index_and_grow_by_a_quarter() {
        let mut s = Slab::default();
        assert_eq!(s.get(0), None);
        for i in 0..1000 {
            assert_eq!(s.push_slot() as usize, i);
            assert!(s.slots.capacity() <= s.len() + s.len() / 4 + 4);
        }
        assert_eq!(s.len(), 1000);
        assert_eq!(s.slots().count(), 1000);
        assert!(s.slots().all(|e| e.is_none()));
        assert_eq!(s.get(1000), None);
        assert_eq!(s.take(1000), None);
    }
}
