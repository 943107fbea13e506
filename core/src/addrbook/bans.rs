//! Bans (G14–G16): node id, and IP when the ban's scope covers it, atomic with removal from the
//! tables, bounded in number, reinstated into *new* only on expiry.
//!
//! This is the node's one ban list: it is persisted with the book, and the engine reads it on
//! admission and before every dial, so a ban survives a restart. Its scope is the caller's
//! choice ([`AddrBook::ban_scoped`]); the engine bans the IP too only when duplicate IPs are
//! refused (`allow_duplicate_ip = false`), see `docs/bans.md`.

use std::net::IpAddr;

use rand_core::RngCore;
use smallvec::SmallVec;

use super::{AddrBook, Ban, Entry, HOUR, MAX_BANS, MAX_SAVED_PER_BAN, UnixTime};
use crate::addr::NetAddr;
use crate::ids::NodeId;

impl AddrBook {
    /// Bans node `id` and `ip` until `now + ban_duration`, removing every entry with that id
    /// or at that IP in the same step (G14, G15). A repeated ban never shortens one. Persistent
    /// peers are never banned: returns false for them.
    pub fn ban(&mut self, id: NodeId, ip: IpAddr, now: UnixTime) -> bool {
        self.ban_for(id, ip, now, self.config.ban_duration)
    }

    /// Like [`ban`](Self::ban), for `duration` instead of the configured `ban_duration`.
    pub fn ban_for(
        &mut self,
        id: NodeId,
        ip: IpAddr,
        now: UnixTime,
        duration: std::time::Duration,
    ) -> bool {
        self.ban_scoped(id, Some(ip), now, duration)
    }

    /// Bans node `id` for `duration`, and `ip` too when given: every entry with that id (and,
    /// with an IP, every entry at that IP) leaves the tables in the same step. Without an IP,
    /// other nodes at the same address (one host, a NAT) stay admitted. A repeated ban never
    /// shortens one. Persistent peers are never banned: returns false for them.
    pub fn ban_scoped(
        &mut self,
        id: NodeId,
        ip: Option<IpAddr>,
        now: UnixTime,
        duration: std::time::Duration,
    ) -> bool {
        // `any` over the set: the answer does not depend on the order.
        #[allow(clippy::disallowed_methods)]
        let persistent = self.persistent_ids.contains(&id)
            || ip.is_some_and(|ip| self.persistent_addrs.iter().any(|a| a.ip() == ip));
        if persistent {
            return false;
        }
        let until = now.saturating_add(duration.as_secs());
        let mut victims: Vec<u32> = self.with_id(id);
        if let Some(ip) = ip {
            for i in self.chain(ip) {
                if !victims.contains(&i) {
                    victims.push(i);
                }
            }
        }
        let mut saved: SmallVec<[(NetAddr, IpAddr); 1]> = SmallVec::new();
        for i in victims {
            if let Some(e) = self.entry(i) {
                if self.entry_persistent(e) {
                    continue;
                }
                saved.push((e.addr(&self.v6), self.source(e)));
            }
            self.delete_entry(i);
        }
        saved.truncate(MAX_SAVED_PER_BAN);
        if let Some(b) = self.bans.iter_mut().find(|b| b.id == id && b.ip == ip) {
            b.until = b.until.max(until);
            let room = MAX_SAVED_PER_BAN.saturating_sub(b.saved.len());
            b.saved.extend(saved.into_iter().take(room));
        } else {
            if self.bans.len() >= MAX_BANS
                && let Some((i, _)) = self.bans.iter().enumerate().min_by_key(|(_, b)| b.until)
            {
                self.bans.swap_remove(i);
                self.rebuild_ban_maps();
            }
            self.bans.push(Ban {
                id,
                ip,
                until,
                saved,
            });
        }
        let t = self.ban_ids.entry(id).or_insert(0);
        *t = (*t).max(until);
        if let Some(ip) = ip {
            let t = self.ban_ips.entry(ip).or_insert(0);
            *t = (*t).max(until);
        }
        true
    }

    /// Rebuilds the id and IP lookup maps from the ban records.
    pub(super) fn rebuild_ban_maps(&mut self) {
        self.ban_ids.clear();
        self.ban_ips.clear();
        for b in &self.bans {
            let t = self.ban_ids.entry(b.id).or_insert(0);
            *t = (*t).max(b.until);
            if let Some(ip) = b.ip {
                let t = self.ban_ips.entry(ip).or_insert(0);
                *t = (*t).max(b.until);
            }
        }
    }

    /// True if node `id` or `ip` is banned at `now`.
    #[must_use]
    pub fn is_banned(&self, id: &NodeId, ip: &IpAddr, now: UnixTime) -> bool {
        self.is_id_banned(id, now) || self.is_ip_banned(ip, now)
    }

    /// [`Self::is_banned`] for an entry, unpacking its IP only when some IP is banned.
    pub(super) fn entry_banned(&self, e: &Entry, now: UnixTime) -> bool {
        self.is_id_banned(&e.id, now)
            || (!self.ban_ips.is_empty() && self.is_ip_banned(&e.ip(&self.v6), now))
    }

    /// True if node `id` is banned at `now`.
    #[must_use]
    pub fn is_id_banned(&self, id: &NodeId, now: UnixTime) -> bool {
        self.ban_ids.get(id).is_some_and(|&t| t > now)
    }

    /// True if `ip` is banned at `now` (only bans that cover the IP count).
    #[must_use]
    pub fn is_ip_banned(&self, ip: &IpAddr, now: UnixTime) -> bool {
        self.ban_ips.get(ip).is_some_and(|&t| t > now)
    }

    /// Ban records in force at `now` (expired ones wait for [`reinstate_expired`]).
    ///
    /// [`reinstate_expired`]: Self::reinstate_expired
    #[must_use]
    pub fn len_banned_at(&self, now: UnixTime) -> usize {
        self.bans.iter().filter(|b| b.until > now).count()
    }

    /// Lifts expired bans (earliest expiry first, at most `max_reinstatements_per_hour` per
    /// hour) and puts their addresses back into *new* only, with attempts reset and the
    /// original source kept (G16). Returns how many ban records were lifted.
    pub fn reinstate_expired(&mut self, now: UnixTime, rng: &mut impl RngCore) -> usize {
        if now.saturating_sub(self.reinstate_window.0) >= HOUR {
            self.reinstate_window = (now, 0);
        }
        let budget = self
            .config
            .max_reinstatements_per_hour
            .saturating_sub(self.reinstate_window.1) as usize;
        let mut expired: Vec<usize> = (0..self.bans.len())
            .filter(|&i| self.bans[i].until <= now)
            .collect();
        expired.sort_by_key(|&i| (self.bans[i].until, self.bans[i].id, self.bans[i].ip));
        expired.truncate(budget);
        expired.sort_unstable_by(|a, b| b.cmp(a));
        let mut lifted = Vec::with_capacity(expired.len());
        for i in expired {
            lifted.push(self.bans.swap_remove(i));
        }
        lifted.sort_by_key(|b| (b.until, b.id, b.ip));
        self.rebuild_ban_maps();
        self.reinstate_window.1 = self.reinstate_window.1.saturating_add(lifted.len() as u32);
        for b in &lifted {
            for &(addr, source) in &b.saved {
                // Through `add`: new table only, fresh counters, original source (G1 holds).
                let _ = self.add(addr, source, now, rng);
            }
        }
        lifted.len()
    }

    /// Number of ban records (active or expired but not yet reinstated).
    #[must_use]
    pub fn len_banned(&self) -> usize {
        self.bans.len()
    }
}
