//! A token bucket on injected time: the sans-IO form of CometBFT's flow-rate monitor (spec 4.6).
//!
//! Go blocks while the bytes counted in the current 100 ms sample reach `rate × 0.1`. Here the
//! bucket holds at most one such sample (`rate / 10` bytes), refills at `rate` bytes per second,
//! and may go into debt: work proceeds while the balance is positive, and the debt is paid back
//! before the next batch, so the long-run rate is `rate` and bursts are one sample long.

use std::time::{Duration, Instant};

/// A byte-rate limiter driven by the caller's clock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    capacity: i64,
    tokens: i64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket allowing `rate` bytes per second (0 = unlimited).
    #[must_use]
    pub fn new(now: Instant, rate: u64) -> Self {
        let capacity = i64::try_from((rate / 10).max(1)).unwrap_or(i64::MAX);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        if self.rate == 0 {
            return;
        }
        let elapsed = now.saturating_duration_since(self.last);
        let add = (elapsed.as_nanos() * u128::from(self.rate)) / 1_000_000_000;
        if add == 0 {
            return;
        }
        let add = i64::try_from(add).unwrap_or(i64::MAX);
        self.tokens = self.tokens.saturating_add(add).min(self.capacity);
        // Advance by the time the added tokens represent, so fractions are not lost.
        if self.tokens == self.capacity {
            self.last = now;
        } else {
            let nanos = (u128::try_from(add).unwrap_or(0) * 1_000_000_000) / u128::from(self.rate);
            self.last += Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        }
    }

    /// Whether work may proceed now (the balance is positive).
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.rate == 0 || self.tokens > 0
    }

    /// Charges `bytes` (the balance may go negative).
    pub fn consume(&mut self, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// When the balance will be positive again, if it is not now.
    #[must_use]
    pub fn ready_at(&self) -> Option<Instant> {
        if self.rate == 0 || self.tokens > 0 {
            return None;
        }
        let missing = u128::from(self.tokens.unsigned_abs()) + 1;
        let nanos = (missing * 1_000_000_000).div_ceil(u128::from(self.rate));
        Some(self.last + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base of the virtual clock (its value is irrelevant).
    #[allow(clippy::disallowed_methods)]
    fn base() -> Instant {
        Instant::now()
    }

    #[test]
    fn long_run_rate_is_respected() {
        let t0 = base();
        let mut b = TokenBucket::new(t0, 1000);
        let mut now = t0;
        let mut sent = 0usize;
        while now < t0 + Duration::from_secs(10) {
            if b.ready(now) {
                b.consume(37);
                sent += 37;
            } else {
                now = b.ready_at().unwrap();
                assert!(b.ready(now));
            }
        }
        // 10 s at 1000 B/s plus the initial 100-byte burst and one packet of debt.
        assert!((10_000..=10_200).contains(&sent), "{sent}");
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = base();
        let mut b = TokenBucket::new(t0, 0);
        b.consume(usize::MAX);
        assert!(b.ready(t0));
        assert_eq!(b.ready_at(), None);
    }
}
