//! Feelers and test-before-evict (G11, Bitcoin's feeler connections).
//!
//! About every [`EngineConfig::feeler_interval`](super::EngineConfig::feeler_interval) (2 min by
//! default; each wait is drawn from `[interval / 2, 3 interval / 2)` with the engine's RNG) the
//! engine makes **one** short-lived extra outbound connection, outside the outbound limit and
//! never counted for G7:
//!
//! 1. first it resolves the address book's buffered tried collisions
//!    ([`AddrBook::resolve_collisions`]), after refreshing the success time of every live
//!    outbound peer, so a tried incumbent we are connected to is never displaced;
//! 2. then it dials the incumbent of a buffered collision
//!    ([`AddrBook::tried_collision_to_test`]), or else an entry of the *new* table;
//! 3. when the handshake completes the address is marked good (a tested incumbent then stays,
//!    a new entry moves to tried) and the connection is closed at once: no `PeerUp`, no PEX, no
//!    application traffic. A failed feeler marks the address failed, so an incumbent that did
//!    not answer is swapped out at the next resolution (after more than a minute).
//!
//! `Feeler` owns the schedule and the one connection in flight; the engine owns the dial.

use std::time::{Duration, Instant};

use rand_core::RngCore;

use crate::addr::NetAddr;
use crate::addrbook::{AddrBook, UnixTime};
use crate::ids::ConnId;

/// Why a feeler dials an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FeelerTarget {
    /// The tried incumbent of a buffered collision: is it still alive?
    Incumbent(NetAddr),
    /// An entry of the new table: is it reachable (then it moves to tried)?
    New(NetAddr),
}

impl FeelerTarget {
    /// The address to dial.
    pub(crate) fn addr(self) -> NetAddr {
        match self {
            FeelerTarget::Incumbent(a) | FeelerTarget::New(a) => a,
        }
    }
}

/// The feeler schedule and its one connection in flight.
#[derive(Debug, Default)]
pub(crate) struct Feeler {
    /// The feeler connection in flight, if any (at most one at a time).
    conn: Option<ConnId>,
}

impl Feeler {
    /// The wait before the next feeler: uniform in `[interval / 2, 3 interval / 2)`, so the mean
    /// is `interval` and nodes started together drift apart.
    pub(crate) fn next_delay(interval: Duration, rng: &mut impl RngCore) -> Duration {
        interval / 2 + super::backoff::jitter(rng, interval)
    }

    /// Whether a feeler connection is in flight.
    pub(crate) fn busy(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether `conn` is the feeler connection.
    pub(crate) fn is_feeler(&self, conn: ConnId) -> bool {
        self.conn == Some(conn)
    }

    /// Records the feeler connection just dialled.
    pub(crate) fn started(&mut self, conn: ConnId) {
        debug_assert!(self.conn.is_none(), "one feeler at a time");
        self.conn = Some(conn);
    }

    /// The feeler connection is over (whatever its outcome).
    pub(crate) fn finished(&mut self, conn: ConnId) {
        if self.conn == Some(conn) {
            self.conn = None;
        }
    }

    /// What to test next: the incumbent of a buffered tried collision if one may be dialled,
    /// else an entry of the new table that `may_dial` accepts.
    pub(crate) fn choose(
        book: &AddrBook,
        now: UnixTime,
        rng: &mut impl RngCore,
        mut may_dial: impl FnMut(&NetAddr) -> bool,
    ) -> Option<FeelerTarget> {
        if let Some(a) = book.tried_collision_to_test(rng)
            && may_dial(&a)
        {
            return Some(FeelerTarget::Incumbent(a));
        }
        book.pick(now, rng, |a| !book.is_tried(&a.addr) && may_dial(a))
            .map(FeelerTarget::New)
    }
}

/// When the next feeler is due, from `now` (`None`: feelers are off).
pub(crate) fn next_at(now: Instant, interval: Duration, rng: &mut impl RngCore) -> Option<Instant> {
    (!interval.is_zero()).then(|| now + Feeler::next_delay(interval, rng))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
mod tests {
    use std::net::SocketAddr;

    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::addrbook::{AddrBookConfig, GoodOutcome};
    use crate::identity::NodeKey;

    const T0: UnixTime = 1_700_000_000;

    fn addr(i: u32, port: u16) -> NetAddr {
        let ip = std::net::Ipv4Addr::from(0x1400_0000u32 + i);
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_be_bytes());
        seed[4..6].copy_from_slice(&port.to_be_bytes());
        NetAddr::new(
            NodeKey::from_seed(seed).node_id(),
            SocketAddr::new(ip.into(), port),
        )
    }

    #[test]
    fn waits_are_jittered_around_the_interval() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let i = Duration::from_secs(120);
        let waits: Vec<Duration> = (0..1000).map(|_| Feeler::next_delay(i, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w >= i / 2 && *w < i * 3 / 2));
        let mean = waits.iter().sum::<Duration>() / 1000;
        assert!(mean > Duration::from_secs(110) && mean < Duration::from_secs(130));
        assert!(waits.windows(2).any(|w| w[0] != w[1]), "jittered");
        assert_eq!(next_at(Instant::now(), Duration::ZERO, &mut rng), None);
    }

    #[test]
    fn one_feeler_at_a_time() {
        let mut f = Feeler::default();
        assert!(!f.busy());
        f.started(ConnId(3));
        assert!(f.busy() && f.is_feeler(ConnId(3)) && !f.is_feeler(ConnId(4)));
        f.finished(ConnId(4));
        assert!(f.busy());
        f.finished(ConnId(3));
        assert!(!f.busy());
    }

    /// A buffered collision's incumbent is tested first; without one a *new* entry is.
    #[test]
    fn chooses_the_collision_incumbent_then_a_new_entry() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let mut book = AddrBook::new(AddrBookConfig::default(), &mut rng);
        let src = "30.0.0.1".parse().expect("ip");
        let first = addr(1, 26656);
        book.add(first, src, T0, &mut rng).expect("added");
        assert_eq!(
            book.mark_good(first.addr, T0, &mut rng),
            GoodOutcome::Promoted
        );
        assert_eq!(
            Feeler::choose(&book, T0, &mut rng, |_| true),
            None,
            "no new entry"
        );
        // A newcomer whose tried slot is the incumbent's.
        let mut incumbent = None;
        for port in 1..u16::MAX {
            let a = addr(1, port);
            if a.addr == first.addr || book.add(a, src, T0, &mut rng).is_err() {
                continue;
            }
            match book.mark_good(a.addr, T0, &mut rng) {
                GoodOutcome::Collision { incumbent: i } => {
                    incumbent = Some(i);
                    break;
                }
                _ => book.remove(a.addr),
            }
        }
        let incumbent = incumbent.expect("a colliding newcomer");
        assert_eq!(
            Feeler::choose(&book, T0, &mut rng, |_| true),
            Some(FeelerTarget::Incumbent(incumbent))
        );
        // An incumbent that may not be dialled (connected, say) gives way to a new entry.
        let t = Feeler::choose(&book, T0, &mut rng, |a| *a != incumbent).expect("a target");
        assert!(matches!(t, FeelerTarget::New(a) if !book.is_tried(&a.addr)));
    }
}
