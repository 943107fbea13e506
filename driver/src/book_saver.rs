//! Address-book saving: at most one save in flight, at most one per save interval, started
//! only when the engine reported the book dirty; the last save at shutdown, with the anchors
//! (G12) beside the book.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cometmesh_core::addr::NetAddr;

use crate::persist;
use crate::runtime::Runtime;

/// When and where the address book is saved.
#[derive(Debug)]
pub(crate) struct BookSaver {
    path: PathBuf,
    dirty: bool,
    in_flight: bool,
    last: Option<Instant>,
    /// The engine's anchors taken when the shutdown began (G12), saved beside the book.
    anchors: Vec<NetAddr>,
}

impl BookSaver {
    /// Saves the book to `path`.
    pub(crate) fn new(path: PathBuf) -> Self {
        BookSaver {
            path,
            dirty: false,
            in_flight: false,
            last: None,
            anchors: Vec::new(),
        }
    }

    /// Where the book is saved.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The engine reported the book changed.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether a save is running.
    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// When the next save may start: `None` if nothing changed or a save is running.
    pub(crate) fn due(&self, now: Instant, interval: Duration) -> Option<Instant> {
        (self.dirty && !self.in_flight).then(|| self.last.map_or(now, |t| t + interval))
    }

    /// Whether a save starts at `now`; if so it is recorded as running.
    pub(crate) fn begin(&mut self, now: Instant, interval: Duration) -> bool {
        if self.due(now, interval).is_none_or(|at| now < at) {
            return false;
        }
        self.dirty = false;
        self.in_flight = true;
        self.last = Some(now);
        true
    }

    /// The running save ended with `r`.
    pub(crate) fn saved(&mut self, r: &io::Result<()>) {
        self.in_flight = false;
        if let Err(e) = r {
            tracing::warn!(path = %self.path.display(), error = %e, "address book not saved");
        }
    }

    /// The anchors to save beside the book at shutdown.
    pub(crate) fn set_anchors(&mut self, anchors: Vec<NetAddr>) {
        self.anchors = anchors;
    }

    /// The last save (the book's `bytes`, then the anchors if any), at shutdown.
    pub(crate) async fn save_final<R: Runtime>(&self, rt: &R, bytes: Vec<u8>) {
        let path = self.path.clone();
        match rt
            .spawn_blocking(move || persist::write_atomic(&path, &bytes))
            .await
        {
            Ok(()) => tracing::info!(path = %self.path.display(), "address book saved"),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "address book not saved");
            }
        }
        if !self.anchors.is_empty() {
            let bytes = cometmesh_core::engine::anchors::encode(&self.anchors);
            let path = persist::anchors_path(&self.path);
            let n = self.anchors.len();
            match rt
                .spawn_blocking(move || persist::write_atomic(&path, &bytes))
                .await
            {
                Ok(()) => tracing::info!(anchors = n, "anchors saved"),
                Err(e) => tracing::warn!(error = %e, "anchors not saved"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod tests {
    use super::*;

    const IVL: Duration = Duration::from_secs(2);

    /// Nothing is saved until the book is dirty; the first save is due at once.
    #[test]
    fn first_save_waits_for_dirty_then_starts_at_once() {
        let t0 = Instant::now();
        let mut b = BookSaver::new("book".into());
        assert_eq!(b.due(t0, IVL), None);
        assert!(!b.begin(t0, IVL));
        b.mark_dirty();
        assert_eq!(b.due(t0, IVL), Some(t0));
        assert!(b.begin(t0, IVL));
        assert!(b.in_flight());
        assert_eq!(b.due(t0, IVL), None, "nothing more to save");
    }

    /// One save at a time, and at most one per interval.
    #[test]
    fn one_save_in_flight_and_one_per_interval() {
        let t0 = Instant::now();
        let mut b = BookSaver::new("book".into());
        b.mark_dirty();
        assert!(b.begin(t0, IVL));
        b.mark_dirty();
        assert_eq!(b.due(t0, IVL), None, "a save is running");
        assert!(!b.begin(t0 + IVL * 5, IVL));
        b.saved(&Ok(()));
        assert!(!b.in_flight());
        assert_eq!(b.due(t0, IVL), Some(t0 + IVL));
        assert!(!b.begin(t0 + IVL / 2, IVL), "too soon after the last");
        assert!(b.begin(t0 + IVL, IVL));
    }

    /// A failed save frees the slot; the book is saved again only after a new change.
    #[test]
    fn failed_save_ends_the_flight() {
        let t0 = Instant::now();
        let mut b = BookSaver::new("book".into());
        b.mark_dirty();
        assert!(b.begin(t0, IVL));
        b.saved(&Err(io::Error::other("disk full")));
        assert!(!b.in_flight());
        assert_eq!(b.due(t0 + IVL, IVL), None);
    }
}
