//! Seed mode: how an inbound node's PEX request is answered, and when the seed hangs up.
//!
//! A CometBFT node (v0.34 through v1.0) that receives a seed's addresses runs its ensure-peers
//! pass at once; when the reply gave it nothing it can dial (the seed is young, or it is the
//! first node the seed has met), that pass falls back to the seeds and dials ours again. Whether
//! that dial succeeds is a race with our hang-up: measured on loopback (tests/interop_seed.rs),
//! a seed that hangs up as soon as its reply is flushed, as CometBFT's does, lost it about half
//! the time and drew one to three connections per node where one is enough. Two rules here:
//!
//! - **Linger.** After its reply the seed holds the connection [`SEED_REPLY_LINGER`] before it
//!   hangs up, so the node's immediate fallback finds the seed still connected and dials no one;
//!   the seed's crawl then reaches the node (and holds that connection), which leaves it no
//!   reason to come back. A cometmesh node hangs up on its seed itself once the reply is in
//!   (`discovery.rs`), so ours do not hold the seed's inbound slot for the linger.
//! - **Deferred vetted reply.** A vetted reply holds only addresses the seed reached itself. A
//!   young seed knows addresses it has not tested yet (nodes that just contacted it, a saved
//!   book); a reply sent at once would be empty, and send the node back. So when the reply
//!   would be empty, the seed starts its crawler's tests of the never-reached addresses at
//!   once and answers when no crawl dial is in flight and no crawl pass is due (a node is
//!   crawled [`SEED_CRAWL_AFTER_HANGUP`] after its own connection to us closed: until then it
//!   refuses ours as a duplicate), or after [`SEED_REPLY_DEFER`] at the latest, with whatever
//!   was reached by then. It does not wait for nodes whose answered connection still lingers:
//!   in a crowd of newcomers (`sim_bootstrap`'s 50 nodes within a second) every deferred reply
//!   would then go out at once with the same few early nodes, and those drew so many
//!   connections that one was left with no node to dial.
//! - **Ask or leave.** An inbound peer that has not asked for addresses within
//!   [`SEED_ASK_WAIT`] of its handshake is hung up. A node that learnt the seed's address by PEX
//!   (the crawled nodes spread it) may dial it as an ordinary peer and, with a full book, never
//!   ask: held until `seed_disconnect_wait` (28 h, as CometBFT's seed does), such peers filled
//!   every inbound slot of the 5 seeds of a 30 000-node simulation, and nodes still looking for
//!   their first addresses met full seeds for minutes.

use std::time::{Duration, Instant};

use super::{Engine, Phase, Timer};
use crate::addr::NetAddr;
use crate::engine::DisconnectReason;
use crate::engine::peers::Origin;
use crate::engine::pex;
use crate::ids::{ChannelId, ConnId};

/// The longest a seed defers a PEX reply while its crawler tests never-reached addresses (a
/// live node on the Internet completes the handshake in well under a second; a dead one would
/// cost the whole 3 s dial timeout).
pub(crate) const SEED_REPLY_DEFER: Duration = Duration::from_secs(2);

/// How long a seed holds an inbound connection after its reply before it hangs up: longer than
/// a node takes to run its ensure-peers pass on the reply (milliseconds).
pub(crate) const SEED_REPLY_LINGER: Duration = Duration::from_secs(1);

/// How soon after a seed hung up on a node it crawls it (the node has dropped its own
/// connection to us by then: it refuses a second one from the same node id).
pub(crate) const SEED_CRAWL_AFTER_HANGUP: Duration = Duration::from_millis(500);

/// How long a seed holds an inbound peer that has not asked for addresses: a node that dialled
/// us to ask does so at once (one round trip after its handshake). Shorter than
/// [`REFUSAL_WINDOW`](crate::engine::backoff::REFUSAL_WINDOW), so that a cometmesh node that
/// dialled us as an ordinary peer takes the hang-up for a refusal and leaves us alone for a
/// period.
pub(crate) const SEED_ASK_WAIT: Duration = Duration::from_millis(1500);

/// Where an inbound connection's PEX reply stands; the deadline of its state is
/// `Timer::SeedReply` in the engine's timer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SeedReply {
    /// Up, no request yet; hung up at the timer.
    Awaiting,
    /// Waiting for the crawler's tests; answered at the timer at the latest.
    Deferred,
    /// Answered; hung up at the timer.
    Lingering,
}

impl Engine {
    /// An inbound peer is up: it has [`SEED_ASK_WAIT`] to ask for addresses.
    pub(super) fn seed_await_request(&mut self, now: Instant, id: ConnId) {
        self.set_seed_reply(id, Some((SeedReply::Awaiting, now + SEED_ASK_WAIT)));
    }

    /// An inbound node's first PEX request to a seed: answered now, or deferred while the
    /// crawler tests never-reached addresses (vetted replies only).
    pub(super) fn seed_request(&mut self, now: Instant, id: ConnId) {
        let sel = self.pex_reply(now);
        if sel.is_empty() && !self.cfg.seed_vetted_window.is_zero() {
            let candidates = self.untested_candidates(now);
            self.crawl_dials(now, candidates);
            if self.tests_pending() {
                self.set_seed_reply(id, Some((SeedReply::Deferred, now + SEED_REPLY_DEFER)));
                return;
            }
            // Nothing to test: whatever the book gives now.
            return self.send_seed_reply(now, id, None);
        }
        self.send_seed_reply(now, id, Some(sel));
    }

    /// Sends the reply to `id` (`sel`, or the selection as of now) and starts its linger.
    fn send_seed_reply(&mut self, now: Instant, id: ConnId, sel: Option<Vec<NetAddr>>) {
        if !self
            .conns
            .get(&id)
            .is_some_and(|c| matches!(c.phase, Phase::Up(_)))
        {
            self.set_seed_reply(id, None);
            return;
        }
        let sel = sel.unwrap_or_else(|| self.pex_reply(now));
        if self
            .send_on(now, id, ChannelId::PEX, pex::encode_addrs(&sel))
            .is_ok()
        {
            self.counters.pex_requests_answered += 1;
        }
        self.set_seed_reply(id, Some((SeedReply::Lingering, now + SEED_REPLY_LINGER)));
    }

    /// Sets (or, with `None`, clears) the reply state of `id` and its deadline.
    fn set_seed_reply(&mut self, id: ConnId, state: Option<(SeedReply, Instant)>) {
        match state {
            Some((s, at)) => {
                self.timers.set(Timer::SeedReply(id), at);
                self.seed_replies.insert(id, s);
            }
            None => {
                self.timers.cancel(Timer::SeedReply(id));
                self.seed_replies.remove(&id);
            }
        }
    }

    /// `Timer::SeedReply(id)` fired (the timer is already out of the set): a deferred reply
    /// goes out now; a lingering or silent connection is hung up, and crawled once it is gone.
    pub(super) fn on_seed_reply_timer(&mut self, now: Instant, id: ConnId) {
        match self.seed_replies.remove(&id) {
            Some(SeedReply::Deferred) => self.send_seed_reply(now, id, None),
            Some(SeedReply::Lingering) => {
                self.hang_up(now, id, DisconnectReason::SeedDone);
                // Its crawl is due from now (the close, once flushed, cannot move it later).
                self.crawl_after_inbound_close(now);
            }
            Some(SeedReply::Awaiting) => {
                self.hang_up(now, id, DisconnectReason::SeedUnasked);
                self.crawl_after_inbound_close(now);
            }
            None => {}
        }
    }

    /// Seed mode: an inbound node's connection is gone; crawl it (and whatever else is
    /// untested) [`SEED_CRAWL_AFTER_HANGUP`] from now.
    pub(super) fn crawl_after_inbound_close(&mut self, now: Instant) {
        let at = now + SEED_CRAWL_AFTER_HANGUP;
        if self.timers.get(Timer::EnsureSoon).is_none_or(|t| t > at) {
            self.timers.set(Timer::EnsureSoon, at);
        }
    }

    /// Sends every deferred reply once no test is pending (called after each input).
    pub(super) fn release_deferred_replies(&mut self, now: Instant) {
        let deferred: Vec<ConnId> = self
            .seed_replies
            .iter()
            .filter(|(_, s)| matches!(s, SeedReply::Deferred))
            .map(|(&id, _)| id)
            .collect();
        if deferred.is_empty() || self.tests_pending() {
            return;
        }
        for id in deferred {
            self.send_seed_reply(now, id, None);
        }
    }

    /// Whether a deferred reply should wait: a crawl dial has not completed its handshake yet,
    /// or a crawl pass is due soon (after an inbound node's connection closed).
    fn tests_pending(&self) -> bool {
        self.crawl_in_flight() || self.timers.is_set(Timer::EnsureSoon)
    }

    /// Whether a crawl dial has not completed its handshake yet.
    fn crawl_in_flight(&self) -> bool {
        self.conns.count_dials(|_, _, c| c.origin == Origin::Crawl) > 0
    }
}
