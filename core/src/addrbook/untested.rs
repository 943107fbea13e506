//! The never-reached entries in the order [`AddrBook::untested`] hands them out: most recently
//! heard of first, then by node id, then by address.
//!
//! A seed's crawler asks for a few never-reached addresses after every dial it finishes, and
//! its book holds thousands of entries: a scan of the whole book per question made the seeds
//! the most expensive nodes of a large network. The index is built by the first question and
//! kept from then on, so a book that is never asked (every node's but a seed's or a crawler's)
//! pays nothing for it. It holds copies of the keys (the time, the id and the address), which
//! [`AddrBook::check`] compares with the entries.

use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::net::SocketAddr;

use super::v6pool::V6Pool;
use super::{AddrBook, Entry, UnixTime};
use crate::ids::NodeId;

/// A never-reached entry's place in the order, and its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Untested {
    pub(super) seen: Reverse<UnixTime>,
    pub(super) id: NodeId,
    pub(super) addr: SocketAddr,
    pub(super) idx: u32,
}

impl Untested {
    /// The place of `e` (at slot `idx`), if it was never reached.
    pub(super) fn of(idx: u32, e: &Entry, pool: &V6Pool) -> Option<Untested> {
        (e.last_success.get() == 0).then(|| Untested {
            seen: Reverse(e.last_seen.get()),
            id: e.id,
            addr: e.socket(pool),
            idx,
        })
    }
}

/// The index (see the module documentation): `None` until first asked.
pub(super) type UntestedIndex = Option<BTreeSet<Untested>>;

impl AddrBook {
    /// Builds the index if it is not there yet.
    pub(super) fn untested_index(&mut self) -> &BTreeSet<Untested> {
        let entries = &self.entries;
        self.untested.get_or_insert_with(|| {
            (0u32..)
                .zip(entries.slots())
                .filter_map(|(idx, e)| Untested::of(idx, e?, &self.v6))
                .collect()
        })
    }

    /// The place of the entry at `idx` while the index is kept, for [`Self::untested_moved`].
    pub(super) fn untested_place(&self, idx: u32) -> Option<Untested> {
        self.untested.as_ref()?;
        Untested::of(idx, self.entry(idx)?, &self.v6)
    }

    /// Moves the entry at `idx` in the index from `before` (its [`Self::untested_place`] before
    /// a change) to where it is now; `None` now if it was reached or deleted.
    pub(super) fn untested_moved(&mut self, idx: u32, before: Option<Untested>) {
        let Some(index) = self.untested.as_mut() else {
            return;
        };
        let after = self
            .entries
            .get(idx)
            .and_then(|e| Untested::of(idx, e, &self.v6));
        if before == after {
            return;
        }
        if let Some(b) = before {
            index.remove(&b);
        }
        if let Some(a) = after {
            index.insert(a);
        }
    }

    /// Whether the index, if kept, holds exactly the never-reached entries.
    pub(super) fn check_untested(&self) -> Result<(), String> {
        let Some(index) = &self.untested else {
            return Ok(());
        };
        let want: BTreeSet<Untested> = (0u32..)
            .zip(self.entries.slots())
            .filter_map(|(idx, e)| Untested::of(idx, e?, &self.v6))
            .collect();
        if *index != want {
            return Err(format!(
                "untested index holds {} entries, the book {} never-reached ones",
                index.len(),
                want.len()
            ));
        }
        Ok(())
    }
}
