//! The engine's anchor glue (G12): which peers to save at shutdown and dialling saved ones at
//! start. The constants are in `engine/anchors.rs`.

use super::*;

impl Engine {
    /// The anchors to save at shutdown (G12): up to two automatic outbound peers connected for
    /// at least 10 min, longest-connected first. A peer that misbehaved provably was banned and
    /// disconnected, so every peer still connected qualifies. See [`anchors`](crate::engine::anchors).
    #[must_use]
    pub fn anchors(&self, now: Instant) -> Vec<NetAddr> {
        let mut found: Vec<(Instant, NodeId, NetAddr)> = self
            .peers
            .values()
            .filter(|p| p.origin == Origin::Auto && p.counts_outbound() && !p.persistent)
            .filter(|p| now.saturating_duration_since(p.since) >= MIN_ANCHOR_AGE)
            .filter_map(|p| {
                let a = self.conns.get(&p.conn)?.dialed?;
                Some((p.since, p.id, a))
            })
            .collect();
        found.sort_by_key(|&(since, id, _)| (since, id));
        found.into_iter().take(MAX_ANCHORS).map(|f| f.2).collect()
    }

    /// Dials saved anchors (G12): call at start, before the first ensure-peers pass picks from
    /// the book. They are automatic outbound dials (the outbound limit and G7 apply; banned
    /// ones are skipped). Returns how many dials started.
    pub fn dial_anchors(&mut self, now: Instant, anchors: &[NetAddr]) -> usize {
        self.touch(now);
        let mut groups = self.auto_groups();
        let mut started = 0;
        for a in anchors.iter().take(MAX_ANCHORS) {
            let (_, out) = self.num_peers();
            if out + self.num_dialing() >= self.cfg.max_num_outbound_peers {
                break;
            }
            let g = self.book.group_of(&a.addr.ip());
            if groups.contains(&g) {
                continue;
            }
            if self.start_dial(now, *a, Origin::Auto).is_ok() {
                groups.insert(g);
                started += 1;
            }
        }
        self.finish(now);
        started
    }
}
