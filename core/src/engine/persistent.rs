//! Persistent peers (G18): the addresses the operator asked to stay connected to, each with its
//! redial state. The engine dials them on their own schedule (never by an automatic pick); the
//! delay before the k-th redial is `backoff::persistent_delay`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rand_core::RngCore;

use super::backoff;
use super::peers::PeerState;
use crate::addr::NetAddr;
use crate::ids::NodeId;

#[derive(Debug)]
struct Entry {
    addr: NetAddr,
    /// Consecutive failures since the last success (k of the G18 schedule).
    failures: u32,
    /// Ever dialled (distinguishes candidate from reconnecting).
    dialled: bool,
}

/// The persistent peers and their redial state, by node id.
#[derive(Debug, Default)]
pub(super) struct PersistentPeers {
    map: BTreeMap<NodeId, Entry>,
}

impl PersistentPeers {
    /// The configured persistent peers (a later entry for the same id replaces an earlier one).
    pub(super) fn new<'a>(addrs: impl IntoIterator<Item = &'a NetAddr>) -> Self {
        let map = addrs
            .into_iter()
            .map(|&addr| {
                let entry = Entry {
                    addr,
                    failures: 0,
                    dialled: false,
                };
                (addr.id, entry)
            })
            .collect();
        PersistentPeers { map }
    }

    /// Whether `id` is a persistent peer.
    pub(super) fn contains(&self, id: &NodeId) -> bool {
        self.map.contains_key(id)
    }

    /// How many persistent peers there are.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// The address to dial `id` at.
    pub(super) fn addr(&self, id: &NodeId) -> Option<NetAddr> {
        self.map.get(id).map(|e| e.addr)
    }

    /// A dial to `id` started.
    pub(super) fn dialled(&mut self, id: &NodeId) {
        if let Some(e) = self.map.get_mut(id) {
            e.dialled = true;
        }
    }

    /// A dial of `id` by name resolved to `addr`: later redials use it.
    pub(super) fn resolved(&mut self, id: &NodeId, addr: SocketAddr) {
        if let Some(e) = self.map.get_mut(id) {
            e.addr.addr = addr;
        }
    }

    /// `id` connected: its failure count starts again. Returns whether it is persistent.
    pub(super) fn connected(&mut self, id: &NodeId) -> bool {
        let Some(e) = self.map.get_mut(id) else {
            return false;
        };
        e.failures = 0;
        e.dialled = true;
        true
    }

    /// The delay before the next redial of `id` (G18: grows with its consecutive failures up
    /// to `cap`, jittered), counting one more failure; `None` if `id` is not persistent.
    pub(super) fn next_delay(
        &mut self,
        id: &NodeId,
        cap: Duration,
        rng: &mut impl RngCore,
    ) -> Option<Duration> {
        let e = self.map.get_mut(id)?;
        let delay = backoff::persistent_delay(e.failures, cap, rng);
        e.failures = e.failures.saturating_add(1);
        Some(delay)
    }

    /// The life-cycle state of a persistent peer that is neither connected nor being dialled.
    pub(super) fn state(&self, id: &NodeId) -> Option<PeerState> {
        self.map.get(id).map(|e| {
            if e.dialled {
                PeerState::Reconnecting
            } else {
                PeerState::Candidate
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn peer(n: u8) -> NetAddr {
        let id = crate::identity::NodeKey::from_seed([n; 32]).node_id();
        NetAddr::new(id, SocketAddr::from(([10, 0, 0, n], 26656)))
    }

    /// The redial delay follows the G18 schedule of consecutive failures, and a connection
    /// starts the schedule again.
    #[test]
    fn redial_delay_follows_failures_and_resets_on_connect() {
        let a = peer(1);
        let mut p = PersistentPeers::new([&a]);
        let cap = Duration::from_secs(3600);
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let mut expect = ChaCha20Rng::from_seed([3; 32]);
        for k in 0..4 {
            let want = backoff::persistent_delay(k, cap, &mut expect);
            assert_eq!(
                p.next_delay(&a.id, cap, &mut rng),
                Some(want),
                "failure {k}"
            );
        }
        assert!(p.connected(&a.id));
        let want = backoff::persistent_delay(0, cap, &mut expect);
        assert_eq!(p.next_delay(&a.id, cap, &mut rng), Some(want));
        assert_eq!(p.next_delay(&peer(2).id, cap, &mut rng), None);
        assert!(!p.connected(&peer(2).id));
    }

    /// A persistent peer is a candidate until first dialled, then reconnecting; a resolved
    /// name becomes the address of later dials.
    #[test]
    fn state_and_address_follow_dials() {
        let a = peer(1);
        let mut p = PersistentPeers::new([&a]);
        assert_eq!(p.len(), 1);
        assert_eq!(p.state(&a.id), Some(PeerState::Candidate));
        p.dialled(&a.id);
        assert_eq!(p.state(&a.id), Some(PeerState::Reconnecting));
        let to = SocketAddr::from(([10, 9, 9, 9], 1));
        p.resolved(&a.id, to);
        assert_eq!(p.addr(&a.id).map(|x| x.addr), Some(to));
        assert_eq!(p.state(&peer(2).id), None);
        assert!(!p.contains(&peer(2).id));
    }
}
