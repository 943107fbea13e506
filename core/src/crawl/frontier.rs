//! The frontier: addresses waiting to be dialled, queued per host so that no host ever has two
//! connections from us at once, and served round-robin across hosts so that one host that
//! announces many addresses of its own (a liar, or many nodes behind one IP) delays nobody else.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use crate::addr::NetAddr;

/// Queued addresses, per host, and the hosts we are connected to.
#[derive(Debug, Default)]
pub(crate) struct Frontier {
    /// Addresses not yet dialled, in arrival order, per host.
    by_host: BTreeMap<IpAddr, VecDeque<NetAddr>>,
    /// Hosts with queued addresses and no connection, in round-robin order.
    ready: VecDeque<IpAddr>,
    /// Hosts we have a connection (or a dial) to, or that are cooling down after one.
    busy: BTreeSet<IpAddr>,
    /// Hosts cooling down after a connection, until when.
    cooling: BTreeSet<(Instant, IpAddr)>,
    /// Number of queued addresses.
    queued: usize,
}

impl Frontier {
    /// Queues `addr` (the caller makes sure it is not queued already).
    pub(crate) fn push(&mut self, addr: NetAddr) {
        let ip = addr.addr.ip();
        let q = self.by_host.entry(ip).or_default();
        if q.is_empty() && !self.busy.contains(&ip) {
            self.ready.push_back(ip);
        }
        q.push_back(addr);
        self.queued += 1;
    }

    /// The next address on a host we are not connected to; its host becomes busy until
    /// [`Self::release`].
    pub(crate) fn pop(&mut self) -> Option<NetAddr> {
        let ip = self.ready.pop_front()?;
        let q = self.by_host.get_mut(&ip)?;
        let addr = q.pop_front()?;
        if q.is_empty() {
            self.by_host.remove(&ip);
        }
        self.queued -= 1;
        self.busy.insert(ip);
        Some(addr)
    }

    /// The connection to `ip` is over: its next address may be dialled from `at` on (give
    /// the host time to see our close first: CometBFT refuses a second connection from an IP
    /// it still has one from).
    pub(crate) fn release_at(&mut self, ip: IpAddr, at: Instant, now: Instant) {
        if at <= now {
            self.release(ip);
        } else {
            self.cooling.insert((at, ip));
        }
    }

    /// Ends the cool-downs due by `now`.
    pub(crate) fn tick(&mut self, now: Instant) {
        while let Some(&(at, ip)) = self.cooling.first() {
            if at > now {
                break;
            }
            self.cooling.pop_first();
            self.release(ip);
        }
    }

    /// When the next cool-down ends.
    pub(crate) fn next_release(&self) -> Option<Instant> {
        self.cooling.first().map(|(at, _)| *at)
    }

    /// The connection to `ip` is over: its next address may be dialled now.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        if self.busy.remove(&ip) && self.by_host.contains_key(&ip) {
            self.ready.push_back(ip);
        }
    }

    /// Whether no address is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Whether an address could be popped now.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Number of queued addresses.
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    /// Whether we have a connection to `ip`.
    #[cfg(test)]
    pub(crate) fn is_busy(&self, ip: IpAddr) -> bool {
        self.busy.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::NodeId;

    fn a(id: u8, ip: [u8; 4], port: u16) -> NetAddr {
        NetAddr::new(NodeId([id; 20]), (ip, port).into())
    }

    #[test]
    fn one_connection_per_host_and_round_robin() {
        let mut f = Frontier::default();
        f.push(a(1, [1, 1, 1, 1], 1));
        f.push(a(2, [1, 1, 1, 1], 2));
        f.push(a(3, [2, 2, 2, 2], 1));
        assert_eq!(f.pop(), Some(a(1, [1, 1, 1, 1], 1)));
        assert!(f.is_busy([1, 1, 1, 1].into()));
        // Host 1.1.1.1 is busy: its second address waits, the other host goes first.
        assert_eq!(f.pop(), Some(a(3, [2, 2, 2, 2], 1)));
        assert_eq!(f.pop(), None);
        assert_eq!(f.len(), 1);
        f.release([1, 1, 1, 1].into());
        assert_eq!(f.pop(), Some(a(2, [1, 1, 1, 1], 2)));
        assert!(f.is_empty());
        f.release([1, 1, 1, 1].into());
        f.release([2, 2, 2, 2].into());
        assert!(!f.has_ready());
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock
    fn a_host_cools_down_before_its_next_dial() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(100);
        let mut f = Frontier::default();
        f.push(a(1, [1, 1, 1, 1], 1));
        f.push(a(2, [1, 1, 1, 1], 2));
        assert!(f.pop().is_some());
        f.release_at([1, 1, 1, 1].into(), later, t0);
        assert_eq!(f.pop(), None, "cooling down");
        assert_eq!(f.next_release(), Some(later));
        f.tick(later);
        assert_eq!(f.pop(), Some(a(2, [1, 1, 1, 1], 2)));
    }
}
