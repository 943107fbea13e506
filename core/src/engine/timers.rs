//! The engine's deadlines in one table (as quinn-proto's `TimerTable`).
//!
//! Every timer the engine runs is a [`Timer`] key with at most one deadline. The table keeps
//! the deadline once (no shadow field beside it): [`TimerTable::set`] replaces it,
//! [`TimerTable::cancel`] drops it, [`TimerTable::next`] is the earliest one and
//! [`TimerTable::expired`] hands out the due ones, earliest first. Ties are broken by the
//! timer's own order, so the same inputs fire the same timers in the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::ids::{ConnId, NodeId};

/// One of the engine's timers; each has at most one deadline in a [`TimerTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Timer {
    /// The connection's own deadline (handshake, ping, pong, flush).
    Conn(ConnId),
    /// A dial that has not connected yet.
    DialTimeout(ConnId),
    /// The periodic ensure-peers pass (or the seed crawler).
    EnsurePeers,
    /// An extra ensure-peers pass after addresses from a seed.
    EnsureSoon,
    /// A persistent peer's redial.
    Redial(NodeId),
    /// A graceful hang-up that has not finished flushing in time.
    Hangup(ConnId),
    /// Seed mode: a deferred PEX reply's deadline, or the end of an answered inbound
    /// connection's linger (see `switch/seed_reply.rs`).
    SeedReply(ConnId),
    /// The next feeler connection (G11).
    Feeler,
}

impl Timer {
    /// The timers that belong to one connection (cancelled together when it is forgotten).
    pub(crate) fn of_conn(id: ConnId) -> [Timer; 4] {
        [
            Timer::Conn(id),
            Timer::DialTimeout(id),
            Timer::Hangup(id),
            Timer::SeedReply(id),
        ]
    }
}

/// Every engine deadline, by timer and in deadline order.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    /// The deadline of each armed timer.
    by_timer: BTreeMap<Timer, Instant>,
    /// The same entries ordered by deadline (then by timer).
    order: BTreeSet<(Instant, Timer)>,
}

impl TimerTable {
    /// Arms `timer` at `at`, replacing its previous deadline.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(old) = self.by_timer.insert(timer, at) {
            if old == at {
                return;
            }
            self.order.remove(&(old, timer));
        }
        self.order.insert((at, timer));
    }

    /// Arms `timer` at `at`, or disarms it with `None`.
    pub(crate) fn set_opt(&mut self, timer: Timer, at: Option<Instant>) {
        match at {
            Some(at) => self.set(timer, at),
            None => self.cancel(timer),
        }
    }

    /// Disarms `timer` (nothing if it is not armed).
    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(old) = self.by_timer.remove(&timer) {
            self.order.remove(&(old, timer));
        }
    }

    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.by_timer.get(&timer).copied()
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_set(&self, timer: Timer) -> bool {
        self.by_timer.contains_key(&timer)
    }

    /// The earliest deadline of all armed timers.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Disarms and returns the earliest timer due at `now`, if any. Call in a loop: a timer
    /// armed again while handling one is returned in turn if it is due too.
    pub(crate) fn expired(&mut self, now: Instant) -> Option<Timer> {
        let &(at, timer) = self.order.first()?;
        if at > now {
            return None;
        }
        self.order.remove(&(at, timer));
        self.by_timer.remove(&timer);
        Some(timer)
    }

    /// How many timers are armed.
    #[cfg(test)]
    fn len(&self) -> usize {
        debug_assert_eq!(self.by_timer.len(), self.order.len());
        self.by_timer.len()
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod tests {
    use std::time::Duration;

    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn empty_table_has_no_deadline() {
        let mut t = TimerTable::default();
        assert_eq!(t.next(), None);
        assert_eq!(t.expired(t0()), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn set_replaces_the_deadline() {
        let now = t0();
        let mut t = TimerTable::default();
        t.set(Timer::EnsurePeers, now + Duration::from_secs(5));
        t.set(Timer::EnsurePeers, now + Duration::from_secs(2));
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.get(Timer::EnsurePeers),
            Some(now + Duration::from_secs(2))
        );
        assert_eq!(t.next(), Some(now + Duration::from_secs(2)));
        // The same deadline again changes nothing.
        t.set(Timer::EnsurePeers, now + Duration::from_secs(2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancel_disarms_one_timer_only() {
        let now = t0();
        let mut t = TimerTable::default();
        t.set(Timer::Feeler, now);
        t.set(Timer::EnsureSoon, now + Duration::from_secs(1));
        t.cancel(Timer::Feeler);
        t.cancel(Timer::Feeler);
        assert!(!t.is_set(Timer::Feeler));
        assert!(t.is_set(Timer::EnsureSoon));
        assert_eq!(t.next(), Some(now + Duration::from_secs(1)));
        t.set_opt(Timer::EnsureSoon, None);
        assert_eq!(t.next(), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn expired_pops_due_timers_in_deadline_then_timer_order() {
        let now = t0();
        let mut t = TimerTable::default();
        let c = ConnId(7);
        t.set(Timer::Feeler, now + Duration::from_secs(1));
        t.set(Timer::Hangup(c), now);
        t.set(Timer::Conn(c), now);
        t.set(Timer::EnsurePeers, now + Duration::from_secs(9));
        assert_eq!(t.expired(now), Some(Timer::Conn(c)));
        assert_eq!(t.expired(now), Some(Timer::Hangup(c)));
        assert_eq!(t.expired(now), None);
        let later = now + Duration::from_secs(1);
        assert_eq!(t.expired(later), Some(Timer::Feeler));
        assert_eq!(t.expired(later), None);
        assert!(!t.is_set(Timer::Feeler));
        assert_eq!(t.next(), Some(now + Duration::from_secs(9)));
    }

    #[test]
    fn a_timer_rearmed_while_due_fires_again() {
        let now = t0();
        let mut t = TimerTable::default();
        t.set(Timer::Feeler, now);
        assert_eq!(t.expired(now), Some(Timer::Feeler));
        t.set(Timer::Feeler, now);
        assert_eq!(t.expired(now), Some(Timer::Feeler));
        assert_eq!(t.expired(now), None);
    }

    #[test]
    fn conn_timers_cancel_together() {
        let now = t0();
        let mut t = TimerTable::default();
        let c = ConnId(3);
        for timer in Timer::of_conn(c) {
            t.set(timer, now);
        }
        t.set(Timer::Conn(ConnId(4)), now);
        for timer in Timer::of_conn(c) {
            t.cancel(timer);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.expired(now), Some(Timer::Conn(ConnId(4))));
    }
}
