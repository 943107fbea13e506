//! A bounded broadcast of engine events to any number of subscribers.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use cometmesh_core::engine::Event;
use futures::Stream;
use futures::channel::mpsc;

/// The events of a node, as a [`Stream`]. Each subscriber has its own bounded queue: one that
/// falls behind loses events (counted by [`lagged`](Self::lagged)), it never makes the node
/// buffer more. The stream ends when the node stops.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    lagged: Arc<AtomicU64>,
}

impl EventStream {
    /// How many events this subscriber lost because its queue was full.
    #[must_use]
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

/// The driver's side: one bounded sender per subscriber.
#[derive(Debug)]
pub(crate) struct Subscribers {
    subs: Vec<(mpsc::Sender<Event>, Arc<AtomicU64>)>,
    capacity: usize,
}

impl Subscribers {
    pub(crate) fn new(capacity: usize) -> Self {
        Subscribers {
            subs: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// A new subscriber.
    pub(crate) fn subscribe(&mut self) -> EventStream {
        // A futures channel holds `buffer + senders` items; one sender, so `capacity`.
        let (tx, rx) = mpsc::channel(self.capacity - 1);
        let lagged = Arc::new(AtomicU64::new(0));
        self.subs.push((tx, lagged.clone()));
        EventStream { rx, lagged }
    }

    /// Offers `event` to every subscriber; drops it for those that are full, forgets those
    /// that went away.
    pub(crate) fn publish(&mut self, event: &Event) {
        self.subs
            .retain_mut(|(tx, lagged)| match tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(e) if e.is_full() => {
                    lagged.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(_) => false,
            });
    }

    /// Ends every stream.
    pub(crate) fn close(&mut self) {
        self.subs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn a_lagging_subscriber_loses_events_not_memory() {
        let mut subs = Subscribers::new(4);
        let mut slow = subs.subscribe();
        for _ in 0..100 {
            subs.publish(&Event::AddrBookDirty);
        }
        assert_eq!(slow.lagged(), 96);
        subs.close();
        let got = futures::executor::block_on(async { (&mut slow).count().await });
        assert_eq!(got, 4);
        drop(subs.subscribe());
        subs.publish(&Event::AddrBookDirty);
        assert!(subs.subs.is_empty());
    }
}
