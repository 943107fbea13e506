//! The book's entries, by index: a slab of slots in fixed-size chunks.
//!
//! A vector would be the obvious slab, but it grows by reallocation: each growth copies every
//! entry, and leaves capacity unused until the next one. A simulator holds thousands of books,
//! and their slabs are most of its memory. So the slab is a list of boxed chunks of [`CHUNK`]
//! slots: growing allocates one chunk and copies nothing, at most one chunk is partly unused,
//! and an index stays valid for the life of its slot, as in a vector.

use super::Entry;

/// Slots per chunk (a chunk of 32 entries is about 3 KiB).
const CHUNK: usize = 32;

/// The entry slots (see the module documentation). Slots are never removed: a slot emptied by
/// [`Slab::take`] is reused through the book's free list.
#[derive(Clone, Debug, Default)]
pub(super) struct Slab {
    chunks: Vec<Box<[Option<Entry>]>>,
    /// Slots handed out so far.
    len: usize,
}

impl Slab {
    /// Number of slots, empty or not.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The entry in slot `idx`, if the slot exists and holds one.
    pub(super) fn get(&self, idx: u32) -> Option<&Entry> {
        let i = idx as usize;
        if i >= self.len {
            return None;
        }
        self.chunks[i / CHUNK][i % CHUNK].as_ref()
    }

    /// The entry in slot `idx`, mutably.
    pub(super) fn get_mut(&mut self, idx: u32) -> Option<&mut Entry> {
        let i = idx as usize;
        if i >= self.len {
            return None;
        }
        self.chunks[i / CHUNK][i % CHUNK].as_mut()
    }

    /// Appends an empty slot and returns its index.
    pub(super) fn push_slot(&mut self) -> u32 {
        if self.len == self.chunks.len() * CHUNK {
            self.chunks.push((0..CHUNK).map(|_| None).collect());
        }
        self.len += 1;
        // The book holds at most `u32::MAX` entries (its tables hold fewer slots).
        (self.len - 1) as u32
    }

    /// Puts `entry` into the existing slot `idx`, returning what it held.
    pub(super) fn put(&mut self, idx: u32, entry: Entry) -> Option<Entry> {
        let i = idx as usize;
        assert!(i < self.len, "slot {i} out of {}", self.len);
        self.chunks[i / CHUNK][i % CHUNK].replace(entry)
    }

    /// Empties slot `idx`, returning its entry.
    pub(super) fn take(&mut self, idx: u32) -> Option<Entry> {
        let i = idx as usize;
        if i >= self.len {
            return None;
        }
        self.chunks[i / CHUNK][i % CHUNK].take()
    }

    /// Every slot in index order.
    pub(super) fn slots(&self) -> impl Iterator<Item = Option<&Entry>> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .take(self.len)
            .map(Option::as_ref)
    }

    /// Makes room in the chunk list for `n` more slots.
    pub(super) fn reserve(&mut self, n: usize) {
        self.chunks.reserve(n.div_ceil(CHUNK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_index_across_chunks() {
        let mut s = Slab::default();
        assert_eq!(s.get(0), None);
        let n = 3 * CHUNK + 5;
        for i in 0..n {
            assert_eq!(s.push_slot() as usize, i);
        }
        assert_eq!(s.len(), n);
        assert_eq!(s.chunks.len(), 4, "one partly used chunk, no more");
        assert_eq!(s.slots().count(), n);
        assert!(s.slots().all(|e| e.is_none()));
        assert_eq!(s.get(n as u32), None);
        assert_eq!(s.take(n as u32), None);
    }
}
