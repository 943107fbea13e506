//! The engine's ban glue: what a ban covers (`ban_scope`), banning a connected peer, and the
//! ban queries. The one ban list is the address book's (`addrbook/bans.rs`), persisted with it.

use super::*;

impl Engine {
    /// How many bans are in force (the address book's records, which persist with it).
    #[must_use]
    pub fn num_banned(&self) -> usize {
        self.book.len_banned_at(self.unix(self.last_now))
    }

    /// Whether `id` is banned at `now` (by the address book's ban list, which persists).
    #[must_use]
    pub fn is_banned(&self, id: &NodeId, now: Instant) -> bool {
        self.book.is_id_banned(id, self.unix(now))
    }

    /// What a ban of a peer seen at `ip` covers: its node id always, and its IP only when
    /// duplicate IPs are refused (`allow_duplicate_ip = false`). With duplicate IPs allowed the
    /// operator has declared that many nodes share an address (one host, a NAT), so a ban on
    /// the IP would refuse honest nodes along with the offender (docs/bans.md).
    pub(super) fn ban_scope(&self, ip: IpAddr) -> Option<IpAddr> {
        (!self.cfg.allow_duplicate_ip).then_some(ip)
    }

    /// Bans `peer` for `duration` and disconnects it with [`DisconnectReason::Banned`]
    /// (CometBFT's `StopPeerForError`): its node id (and its IP, unless `allow_duplicate_ip`)
    /// go into the address book's bans, the one persisted list, so it is neither dialled nor
    /// admitted until the ban expires, across restarts. A persistent peer is never banned: it is disconnected and redialled
    /// on its usual schedule ([`BanOutcome::Persistent`]).
    pub fn ban(
        &mut self,
        now: Instant,
        peer: NodeId,
        reason: impl Into<String>,
        duration: Duration,
    ) -> BanOutcome {
        self.touch(now);
        let Some(conn) = self.peers.get(&peer).map(|p| p.conn) else {
            return BanOutcome::NotConnected;
        };
        let reason = DisconnectReason::Banned(reason.into());
        let outcome = self.ban_conn(now, conn, peer, duration, reason);
        if outcome == BanOutcome::Banned {
            self.counters.bans += 1;
        }
        self.finish(now);
        outcome
    }

    /// Bans the peer on `id` (not if persistent) and drops it with `reason`.
    pub(super) fn ban_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        peer: NodeId,
        duration: Duration,
        reason: DisconnectReason,
    ) -> BanOutcome {
        let Some(ip) = self.conns.get(&id).map(|c| c.remote.ip()) else {
            return BanOutcome::NotConnected;
        };
        let outcome = if self.persistent.contains(&peer) {
            BanOutcome::Persistent
        } else {
            let unix = self.unix(now);
            // A ban always lasts at least one second of the book's clock.
            let duration = duration.max(Duration::from_secs(1));
            if self
                .book
                .ban_scoped(peer, self.ban_scope(ip), unix, duration)
            {
                self.book_dirty = true;
            }
            BanOutcome::Banned
        };
        self.drop_conn(now, id, reason, true);
        outcome
    }
}
