//! The book's entries, by index: a vector of slots, each empty or holding an entry.
//!
//! The slab is the largest part of a book, and a simulator holds thousands of books, so a
//! full slab grows by an eighth (at least 8 slots) instead of doubling: doubling leaves a third
//! of the slab unused on average, which costs more than the extra copies (the book's lists
//! grow the same way, see [`push_compact`]). (Chunks of 32
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
        grow_compact(&mut self.slots);
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

/// Makes room for one more element in `v`, growing a full vector by an eighth (at least 8).
fn grow_compact<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact((v.len() / 8).max(8));
    }
}

/// Pushes `x` onto `v`, growing it as the slab grows (the book's lists hold an index per entry).
pub(super) fn push_compact(v: &mut Vec<u32>, x: u32) {
    grow_compact(v);
    v.push(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_index_and_grow_by_an_eighth() {
        let mut s = Slab::default();
        let mut list = Vec::new();
        assert_eq!(s.get(0), None);
        for i in 0..1000 {
            assert_eq!(s.push_slot() as usize, i);
            assert!(s.slots.capacity() <= s.len() + s.len() / 8 + 8);
            push_compact(&mut list, i as u32);
            assert!(list.capacity() <= list.len() + list.len() / 8 + 8);
        }
        assert_eq!(list, (0..1000).collect::<Vec<u32>>());
        assert_eq!(s.len(), 1000);
        assert_eq!(s.slots().count(), 1000);
        assert!(s.slots().all(|e| e.is_none()));
        assert_eq!(s.get(1000), None);
        assert_eq!(s.take(1000), None);
    }
}
