//! Redial schedules: the persistent-peer back-off (G18) and the dial back-off of automatic
//! dials (spec 5.5). Both take their jitter from the engine's seeded RNG.
//!
//! **Persistent peers.** The first dial happens at start after `U[0, 3 s)`. After the k-th
//! consecutive failure or loss (k = 0, 1, 2, …) the next dial is due after
//!
//! ```text
//! delay(k) = min(1 s · 2^k, cap) + U[0, 1 s)        cap = persistent_redial_cap (5 min)
//! ```
//!
//! i.e. 1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, … seconds plus up to one second of jitter,
//! forever. A successful handshake resets k to 0.
//!
//! **Automatic dials.** An address whose dial failed `a` times (a ≥ 1) in a row is not dialled
//! again before `2^min(a, 16) s + U[0, 1 s)` has passed since the last failure (CometBFT's
//! `dialPeer`), and it is never banned for it (G14): failures only lower its chance in the book.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::RngCore;

/// Uniform jitter in `[0, max)` with millisecond resolution.
pub(crate) fn jitter(rng: &mut impl RngCore, max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rng.next_u64() % ms)
}

/// The deterministic part of the persistent-peer delay after `k` failures: `min(2^k s, cap)`.
#[must_use]
pub fn persistent_base_delay(k: u32, cap: Duration) -> Duration {
    let exp = Duration::from_secs(1u64.checked_shl(k.min(62)).unwrap_or(u64::MAX));
    exp.min(cap)
}

/// The persistent-peer delay after `k` failures, with its `U[0, 1 s)` jitter.
pub(crate) fn persistent_delay(k: u32, cap: Duration, rng: &mut impl RngCore) -> Duration {
    persistent_base_delay(k, cap) + jitter(rng, Duration::from_secs(1))
}

/// The start-up jitter of persistent dials, `U[0, 3 s)` as CometBFT's `DialPeersAsync`.
pub(crate) fn startup_jitter(rng: &mut impl RngCore) -> Duration {
    jitter(rng, Duration::from_secs(3))
}

/// At most this many failing addresses are remembered; the oldest history is dropped first.
pub(crate) const MAX_DIAL_HISTORY: usize = 8192;

/// How long an address that refused us right after the handshake is left alone: one
/// ensure-peers period (its inbound slots are unlikely to free sooner).
pub(crate) const REFUSED_WAIT: Duration = Duration::from_secs(30);

/// A peer we dialled that hangs up within this time of its handshake refused us.
pub(crate) const REFUSAL_WINDOW: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
struct History {
    attempts: u32,
    last: Instant,
    not_before: Instant,
}

/// In-memory dial back-off of automatic dials, keyed by socket address (spec 5.5).
#[derive(Debug, Default)]
pub(crate) struct DialBackoff {
    entries: hashbrown::HashMap<SocketAddr, History>,
}

impl DialBackoff {
    /// Whether `addr` may be dialled at `now`.
    pub(crate) fn allowed(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.entries.get(addr).is_none_or(|h| now >= h.not_before)
    }

    /// Records a failed dial.
    pub(crate) fn failed(&mut self, addr: SocketAddr, now: Instant, rng: &mut impl RngCore) {
        let attempts = self.entries.get(&addr).map_or(0, |h| h.attempts) + 1;
        let wait =
            Duration::from_secs(1u64 << attempts.min(16)) + jitter(rng, Duration::from_secs(1));
        if self.entries.len() >= MAX_DIAL_HISTORY && !self.entries.contains_key(&addr) {
            // Drop the entry whose last failure is oldest; ties broken by address so the
            // choice does not depend on hash order.
            #[allow(clippy::disallowed_methods)]
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(a, h)| (h.last, **a))
                .map(|(a, _)| *a);
            if let Some(old) = oldest {
                self.entries.remove(&old);
            }
        }
        self.entries.insert(
            addr,
            History {
                attempts,
                last: now,
                not_before: now + wait,
            },
        );
    }

    /// Records that `addr` hung up on us right after the handshake, as a node at its inbound
    /// limit does: it is not dialled again for [`REFUSED_WAIT`] (and up to one second more).
    pub(crate) fn refused(&mut self, addr: SocketAddr, now: Instant, rng: &mut impl RngCore) {
        self.failed(addr, now, rng);
        if let Some(h) = self.entries.get_mut(&addr) {
            h.not_before = h
                .not_before
                .max(now + REFUSED_WAIT + jitter(rng, Duration::from_secs(1)));
        }
    }

    /// Forgets the history of `addr` after a successful connection.
    pub(crate) fn succeeded(&mut self, addr: &SocketAddr) {
        self.entries.remove(addr);
    }

    /// How many consecutive failures `addr` has.
    #[cfg(test)]
    pub(crate) fn attempts(&self, addr: &SocketAddr) -> u32 {
        self.entries.get(addr).map_or(0, |h| h.attempts)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a test needs some Instant as its origin
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn persistent_schedule_doubles_then_caps_at_five_minutes() {
        let cap = Duration::from_secs(300);
        let secs: Vec<u64> = (0..12)
            .map(|k| persistent_base_delay(k, cap).as_secs())
            .collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(persistent_base_delay(u32::MAX, cap), cap);
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        for k in 0..20 {
            let d = persistent_delay(k, cap, &mut rng);
            let base = persistent_base_delay(k, cap);
            assert!(
                d >= base && d < base + Duration::from_secs(1),
                "k={k} d={d:?}"
            );
        }
    }

    #[test]
    fn dial_backoff_grows_and_resets() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let t0 = Instant::now();
        let a: SocketAddr = "1.2.3.4:26656".parse().unwrap();
        let mut b = DialBackoff::default();
        assert!(b.allowed(&a, t0));
        b.failed(a, t0, &mut rng);
        assert!(!b.allowed(&a, t0 + Duration::from_millis(1999)));
        assert!(b.allowed(&a, t0 + Duration::from_secs(3)));
        b.failed(a, t0, &mut rng);
        assert_eq!(b.attempts(&a), 2);
        assert!(!b.allowed(&a, t0 + Duration::from_secs(3)));
        assert!(b.allowed(&a, t0 + Duration::from_secs(5)));
        b.succeeded(&a);
        assert!(b.allowed(&a, t0));
        assert_eq!(b.attempts(&a), 0);
    }

    #[test]
    fn a_refusal_keeps_the_address_for_a_period_and_counts_as_a_failure() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let t0 = Instant::now();
        let a: SocketAddr = "1.2.3.4:26656".parse().unwrap();
        let mut b = DialBackoff::default();
        b.refused(a, t0, &mut rng);
        assert_eq!(b.attempts(&a), 1);
        assert!(!b.allowed(&a, t0 + REFUSED_WAIT - Duration::from_millis(1)));
        assert!(b.allowed(&a, t0 + REFUSED_WAIT + Duration::from_secs(1)));
        // A longer failure back-off is not shortened by a refusal.
        for _ in 0..5 {
            b.failed(a, t0, &mut rng);
        }
        b.refused(a, t0, &mut rng);
        assert!(!b.allowed(&a, t0 + Duration::from_secs(64)));
    }

    #[test]
    fn dial_history_is_bounded() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let t0 = Instant::now();
        let mut b = DialBackoff::default();
        for i in 0..(MAX_DIAL_HISTORY as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0x0100_0000 + i);
            b.failed(
                SocketAddr::from((ip, 1)),
                t0 + Duration::from_millis(u64::from(i)),
                &mut rng,
            );
        }
        assert_eq!(b.entries.len(), MAX_DIAL_HISTORY);
    }
}
