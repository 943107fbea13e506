//! The storage of one bucket table (new or tried): `buckets × BUCKET_SIZE` slots, each holding an
//! entry index or `EMPTY`.
//!
//! A fresh or small book uses few of its 81 920 slots, yet a flat array costs 320 KiB per book
//! (a simulator with 100 000 nodes holds 100 000 books). So the table starts sparse, its
//! occupied slots sorted by position (6 bytes each: the 16-bit position and the entry index,
//! found by binary search; a hash table cost twice that for its control bytes and spare
//! room), and turns into the flat array once a sixteenth of the slots is occupied, before an
//! insertion shifts more than 12 KiB on average; it never turns back. Placement, capacity and
//! every guarantee of the book are the same in both forms: only the memory differs.

use smallvec::SmallVec;

use super::EMPTY;

/// Most slots a table may have: a position fits 16 bits.
const MAX_LEN: usize = 1 << 16;

/// One bucket table's slots (see the module documentation).
#[derive(Clone, Debug)]
pub(super) struct SlotTable {
    /// Number of slots (`buckets × BUCKET_SIZE`).
    len: usize,
    slots: Slots,
}

#[derive(Clone, Debug)]
enum Slots {
    /// Occupied slots only (never an `EMPTY` value), by ascending position.
    Sparse(Vec<Occupied>),
    /// Every slot.
    Dense(Vec<u32>),
}

/// An occupied slot of the sparse form: its position and the entry index, packed in 6 bytes.
#[derive(Clone, Copy, Debug)]
struct Occupied {
    pos: u16,
    idx: [u16; 2],
}

impl Occupied {
    fn new(pos: u16, idx: u32) -> Occupied {
        Occupied {
            pos,
            idx: [(idx >> 16) as u16, idx as u16],
        }
    }

    fn idx(self) -> u32 {
        (u32::from(self.idx[0]) << 16) | u32::from(self.idx[1])
    }
}

impl SlotTable {
    /// An empty table of `len` slots (at most 65 536).
    pub(super) fn new(len: usize) -> SlotTable {
        assert!(len <= MAX_LEN, "a table has at most {MAX_LEN} slots");
        SlotTable {
            len,
            slots: Slots::Sparse(Vec::new()),
        }
    }

    /// The entry index in slot `pos`, or `EMPTY`.
    pub(super) fn get(&self, pos: usize) -> u32 {
        assert!(pos < self.len, "slot {pos} out of {}", self.len);
        match &self.slots {
            Slots::Dense(v) => v[pos],
            Slots::Sparse(v) => {
                // `pos < len ≤ 2^16` (checked at construction).
                let pos = pos as u16;
                v.binary_search_by_key(&pos, |o| o.pos)
                    .map_or(EMPTY, |i| v[i].idx())
            }
        }
    }

    /// Sets slot `pos` to `idx` (`EMPTY` clears it).
    pub(super) fn set(&mut self, pos: usize, idx: u32) {
        assert!(pos < self.len, "slot {pos} out of {}", self.len);
        match &mut self.slots {
            Slots::Dense(v) => v[pos] = idx,
            Slots::Sparse(v) => {
                let pos = pos as u16;
                match (v.binary_search_by_key(&pos, |o| o.pos), idx == EMPTY) {
                    (Ok(i), true) => {
                        v.remove(i);
                    }
                    (Ok(i), false) => v[i] = Occupied::new(pos, idx),
                    (Err(_), true) => {}
                    (Err(i), false) => {
                        if v.len() == v.capacity() {
                            // Grown by an eighth, as the book's slab and lists.
                            v.reserve_exact((v.len() / 8).max(8));
                        }
                        v.insert(i, Occupied::new(pos, idx));
                        if v.len() > self.len / 16 {
                            self.densify();
                        }
                    }
                }
            }
        }
    }

    /// Turns the sparse form into the flat array.
    fn densify(&mut self) {
        let mut v = vec![EMPTY; self.len];
        self.for_each_occupied(|pos, idx| v[pos] = idx);
        self.slots = Slots::Dense(v);
    }

    /// Occupied slots, counted by a scan (O(table size) when dense); for `check_full`.
    pub(super) fn count_occupied(&self) -> usize {
        let mut n = 0;
        self.for_each_occupied(|_, _| n += 1);
        n
    }

    /// Calls `f(position, value)` for every occupied slot, by ascending position.
    /// O(occupied slots) while sparse, O(table size) once dense.
    pub(super) fn for_each_occupied(&self, mut f: impl FnMut(usize, u32)) {
        match &self.slots {
            Slots::Dense(v) => {
                for (pos, &idx) in v.iter().enumerate() {
                    if idx != EMPTY {
                        f(pos, idx);
                    }
                }
            }
            Slots::Sparse(v) => {
                for o in v {
                    f(usize::from(o.pos), o.idx());
                }
            }
        }
    }

    /// The positions holding `idx`, ascending (a scan, see [`Self::for_each_occupied`]).
    pub(super) fn positions_of(&self, idx: u32) -> SmallVec<[usize; 8]> {
        let mut found = SmallVec::new();
        self.for_each_occupied(|pos, i| {
            if i == idx {
                found.push(pos);
            }
        });
        found
    }

    /// Whether the table has turned into the flat array.
    #[cfg(test)]
    fn is_dense(&self) -> bool {
        matches!(self.slots, Slots::Dense(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sparse and the dense form read back what was written, across the switch.
    #[test]
    fn reads_back_across_densify() {
        let len = 1024;
        let mut t = SlotTable::new(len);
        let mut model = vec![EMPTY; len];
        assert_eq!(t.get(5), EMPTY);
        // Fill every third slot, clearing every ninth again; the table densifies on the way.
        for pos in (0..len).step_by(3) {
            t.set(pos, pos as u32 * 2);
            model[pos] = pos as u32 * 2;
            if pos % 9 == 0 {
                t.set(pos, EMPTY);
                model[pos] = EMPTY;
            }
            for p in [0, 1, pos, len - 1] {
                assert_eq!(t.get(p), model[p], "slot {p} after writing {pos}");
            }
        }
        assert!(t.is_dense());
        assert!((0..len).all(|p| t.get(p) == model[p]));
        let occupied = model.iter().filter(|&&i| i != EMPTY).count();
        assert_eq!(t.count_occupied(), occupied);
        assert_eq!(t.positions_of(12).as_slice(), &[6]);
        assert_eq!(t.positions_of(EMPTY - 1).as_slice(), &[] as &[usize]);
    }

    /// A table with few occupied slots stays sparse, and clearing removes the slot.
    #[test]
    fn small_table_stays_sparse() {
        let mut t = SlotTable::new(1024);
        // Written in descending order: the sparse form keeps them sorted anyway.
        for pos in (0..64).rev() {
            t.set(pos * 16, 7);
        }
        assert!(!t.is_dense());
        assert_eq!(t.count_occupied(), 64);
        t.set(16, EMPTY);
        assert_eq!(t.get(16), EMPTY);
        assert_eq!(t.count_occupied(), 63);
        t.set(17, 3);
        assert!(!t.is_dense(), "64 of 1024 slots is a sixteenth");
        assert_eq!(t.positions_of(3).as_slice(), &[17]);
        assert_eq!(t.positions_of(7).len(), 63);
        assert!(
            t.positions_of(7).windows(2).all(|w| w[0] < w[1]),
            "ascending"
        );
        let mut seen = Vec::new();
        t.for_each_occupied(|pos, _| seen.push(pos));
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending");
        t.set(18, 3);
        assert!(t.is_dense(), "65 of 1024 slots is more than a sixteenth");
        assert_eq!(t.count_occupied(), 65);
        assert_eq!(
            (t.get(16), t.get(17), t.get(18), t.get(32)),
            (EMPTY, 3, 3, 7)
        );
    }

    #[test]
    #[should_panic(expected = "out of")]
    fn out_of_range_panics_as_a_slice() {
        let t = SlotTable::new(64);
        let _ = t.get(64);
    }
}
