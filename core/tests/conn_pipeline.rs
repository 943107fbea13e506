//! Two `PeerConnection`s back to back through a re-chunking in-memory pipe on a virtual clock.

mod conn_support;

use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::conn::{CloseReason, ConnEvent, ConnectionConfig, SendError, TimeoutKind};
use cometmesh_core::ids::ChannelId;
use conn_support::*;

fn pattern(len: usize, tag: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ tag)
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn handshake_establishes_both_sides_with_the_peers_node_info() {
    let mut p = Pair::new(1);
    p.establish();
    let remote_of = |events: &[ConnEvent]| {
        events.iter().find_map(|e| match e {
            ConnEvent::Established { remote } => Some((**remote).clone()),
            _ => None,
        })
    };
    assert_eq!(remote_of(&p.events_a).unwrap(), node_info(&key(2), "b"));
    assert_eq!(remote_of(&p.events_b).unwrap(), node_info(&key(1), "a"));
    assert_eq!(p.a.remote_id(), Some(key(2).node_id()));
    assert_eq!(p.b.remote_id(), Some(key(1).node_id()));
    assert_eq!(p.a.remote_info().unwrap().moniker, "b");
    assert!(!p.a.is_closed() && !p.b.is_closed());
}

#[test]
fn messages_of_every_size_arrive_intact_and_in_order_per_channel() {
    let sizes = [0usize, 1, 1024, 1025, 1024 * 1024];
    let chans = [ChannelId(0x20), ChannelId(0x21), ChannelId(0x40)];
    for seed in [1u64, 2, 3] {
        let mut p = Pair::new(seed);
        p.establish();
        let mut expected: Vec<Vec<Bytes>> = vec![Vec::new(); chans.len()];
        for (round, &size) in sizes.iter().enumerate() {
            for (ci, &ch) in chans.iter().enumerate() {
                // Keep 1 MiB messages to the big channel (the others cap at 1 MiB exactly).
                let size = if ch != ChannelId(0x40) {
                    size.min(1024 * 1024)
                } else {
                    size
                };
                let msg = pattern(size, (round * 3 + ci) as u8);
                p.a.send(p.now, ch, msg.clone()).unwrap();
                expected[ci].push(msg);
            }
        }
        let total: usize = expected.iter().map(Vec::len).sum();
        p.run_until(Duration::from_secs(60), |p| {
            chans.iter().map(|&c| p.received_b(c).len()).sum::<usize>() == total
        });
        for (ci, &ch) in chans.iter().enumerate() {
            assert_eq!(p.received_b(ch), expected[ci], "seed {seed} channel {ch}");
        }
        assert!(closed(&p.events_a).is_none() && closed(&p.events_b).is_none());
        let stats = p.a.stats();
        assert_eq!(stats.unflushed_bytes, 0);
        let sent: u64 = stats.channels.iter().map(|c| c.bytes_sent).sum();
        assert_eq!(sent, (3 * (1 + 1024 + 1025 + 1024 * 1024)) as u64);
    }
}

#[test]
fn both_directions_at_once() {
    let mut p = Pair::new(9);
    p.establish();
    for i in 0..50u8 {
        p.a.send(p.now, ChannelId(0x20), pattern(3000, i)).unwrap();
        p.b.send(p.now, ChannelId(0x21), pattern(2000, i)).unwrap();
    }
    p.run_until(Duration::from_secs(10), |p| {
        p.received_b(ChannelId(0x20)).len() == 50
            && messages(&p.events_a, ChannelId(0x21)).len() == 50
    });
    assert_eq!(
        messages(&p.events_a, ChannelId(0x21))[49],
        pattern(2000, 49)
    );
}

#[test]
fn priority_shares_are_observed_under_contention() {
    // 0x21 has priority 10, 0x23 priority 1: while both are backlogged, 0x21 gets ~10/11 of
    // the packets.
    let mut p = Pair::new(4);
    p.establish();
    for i in 0..600u32 {
        p.a.send(p.now, ChannelId(0x21), pattern(1000, i as u8))
            .unwrap();
        p.a.send(p.now, ChannelId(0x23), pattern(1000, i as u8))
            .unwrap();
    }
    p.run_until(Duration::from_secs(10), |p| {
        p.received_b(ChannelId(0x21)).len() + p.received_b(ChannelId(0x23)).len() >= 550
    });
    let high = p.received_b(ChannelId(0x21)).len() as f64;
    let low = p.received_b(ChannelId(0x23)).len() as f64;
    let share = high / (high + low);
    assert!(
        (0.86..=0.95).contains(&share),
        "high {high} low {low} share {share}"
    );
    // Everything still arrives in the end.
    p.run_until(Duration::from_secs(10), |p| {
        p.received_b(ChannelId(0x23)).len() == 600
    });
}

#[test]
fn ping_is_answered_and_a_deaf_peer_hits_the_pong_deadline() {
    let mut p = Pair::new(5);
    p.establish();
    let t0 = p.now;
    // Several ping intervals pass quietly: pings are answered, nobody closes.
    p.run_until(Duration::from_secs(200), |p| {
        p.now >= t0 + Duration::from_secs(190)
    });
    assert!(closed(&p.events_a).is_none() && closed(&p.events_b).is_none());
    let pings_a = p.a.stats().wire_bytes_sent;
    assert!(pings_a > 0);
    // B stops talking: A pings at its next interval and gives up 45 s later, not earlier.
    p.drop_b_to_a = true;
    let next_ping = p.a.poll_timeout().unwrap();
    p.run_until(Duration::from_secs(61), |p| p.now >= next_ping);
    let deadline = next_ping + Duration::from_secs(45);
    assert_eq!(p.a.poll_timeout(), Some(deadline));
    p.a.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!p.a.is_closed());
    p.run_until(Duration::from_secs(46), |p| closed(&p.events_a).is_some());
    assert_eq!(p.now, deadline);
    assert_eq!(
        closed(&p.events_a),
        Some(&CloseReason::Timeout(TimeoutKind::Pong))
    );
}

#[test]
fn custom_ping_and_pong_timers() {
    let config = ConnectionConfig {
        ping_interval: Duration::from_secs(5),
        pong_timeout: Duration::from_secs(2),
        ..ConnectionConfig::default()
    };
    let mut p = Pair::with_config(6, config);
    p.establish();
    let t0 = p.now;
    p.drop_b_to_a = true;
    p.run_until(Duration::from_secs(10), |p| closed(&p.events_a).is_some());
    assert_eq!(p.now, t0 + Duration::from_secs(7));
    assert_eq!(
        closed(&p.events_a),
        Some(&CloseReason::Timeout(TimeoutKind::Pong))
    );
}

#[test]
fn send_errors_and_backpressure() {
    let mut p = Pair::new(7);
    assert_eq!(
        p.a.send(p.now, ChannelId(0x20), Bytes::new()),
        Err(SendError::NotEstablished)
    );
    assert_eq!(
        p.a.send(p.now, ChannelId(0x99), Bytes::new()),
        Err(SendError::UnknownChannel(ChannelId(0x99)))
    );
    p.establish();
    // PEX queue holds 10 messages; the 11th comes back.
    for _ in 0..10 {
        p.a.send(p.now, ChannelId::PEX, Bytes::from_static(b"x"))
            .unwrap();
    }
    assert!(!p.a.can_send(ChannelId::PEX));
    assert_eq!(
        p.a.send(p.now, ChannelId::PEX, Bytes::from_static(b"y")),
        Err(SendError::Full(Bytes::from_static(b"y")))
    );
    p.run_until(Duration::from_secs(1), |p| {
        p.received_b(ChannelId::PEX).len() == 10
    });
    assert!(p.a.can_send(ChannelId::PEX));
    p.a.close(CloseReason::Local);
    assert_eq!(
        p.a.send(p.now, ChannelId::PEX, Bytes::new()),
        Err(SendError::Closed)
    );
    assert_eq!(p.a.poll_timeout(), None);
}

#[test]
fn unflushed_budget_bounds_output_until_handle_sent() {
    let mut p = Pair::new(8);
    p.establish();
    for i in 0..10u8 {
        p.a.send(p.now, ChannelId(0x40), pattern(256 * 1024, i))
            .unwrap();
    }
    // Take bytes without reporting them sent: output stops near the 512 KiB budget.
    let mut taken = 0usize;
    let mut now = p.now;
    for _ in 0..1000 {
        now += Duration::from_millis(100);
        p.a.handle_timeout(now);
        while let Some(b) = p.a.poll_transmit(now) {
            taken += b.len();
        }
    }
    let budget = 512 * 1024;
    assert!(taken >= budget - 2 * 1044, "{taken}");
    assert!(taken <= budget + 64 * 1024, "{taken}");
    assert_eq!(p.a.stats().unflushed_bytes, taken);
    // Reporting them sent lets more out.
    p.a.handle_sent(now, taken);
    assert!(p.a.poll_transmit(now).is_some());
}

#[test]
fn send_rate_limit_holds_on_virtual_time() {
    let config = ConnectionConfig {
        send_rate: 100_000,
        ..ConnectionConfig::default()
    };
    let mut p = Pair::with_config(10, config);
    p.establish();
    let t0 = p.now;
    for i in 0..4u8 {
        p.a.send(p.now, ChannelId(0x40), pattern(250_000, i))
            .unwrap();
    }
    p.run_until(Duration::from_secs(30), |p| {
        p.received_b(ChannelId(0x40)).len() == 4
    });
    let elapsed = (p.now - t0).as_secs_f64();
    // 1 MB at 100 kB/s: about 10 s (one 10 kB burst allowance, packet overhead adds ~1%).
    assert!((9.5..=10.8).contains(&elapsed), "{elapsed}");
}

#[test]
fn close_after_flush_sends_everything_then_closes() {
    let mut p = Pair::new(11);
    p.establish();
    for i in 0..5u8 {
        p.a.send(p.now, ChannelId(0x20), pattern(5000, i)).unwrap();
    }
    p.a.close_after_flush();
    assert_eq!(
        p.a.send(p.now, ChannelId(0x20), Bytes::new()),
        Err(SendError::Closed)
    );
    p.step();
    assert_eq!(p.received_b(ChannelId(0x20)).len(), 5);
    assert_eq!(closed(&p.events_a), Some(&CloseReason::Local));
}

#[test]
fn receive_rate_limit_holds_on_virtual_time() {
    let config = ConnectionConfig {
        send_rate: 0,
        recv_rate: 100_000,
        ..ConnectionConfig::default()
    };
    let mut p = Pair::with_config(12, config);
    p.establish();
    let t0 = p.now;
    for i in 0..2u8 {
        p.a.send(p.now, ChannelId(0x40), pattern(250_000, i))
            .unwrap();
    }
    p.run_until(Duration::from_secs(30), |p| {
        p.received_b(ChannelId(0x40)).len() == 2
    });
    let elapsed = (p.now - t0).as_secs_f64();
    // 500 kB processed at 100 kB/s: about 5 s.
    assert!((4.7..=5.4).contains(&elapsed), "{elapsed}");
    assert!(p.b.wants_read());
}

#[test]
fn byte_by_byte_delivery_works_end_to_end() {
    let mut p = Pair::new(13);
    p.set_max_chunk(1);
    p.establish();
    p.a.send(p.now, ChannelId(0x21), pattern(2500, 1)).unwrap();
    p.b.send(p.now, ChannelId(0x20), pattern(10, 2)).unwrap();
    p.run_until(Duration::from_secs(1), |p| {
        p.received_b(ChannelId(0x21)).len() == 1
            && messages(&p.events_a, ChannelId(0x20)).len() == 1
    });
    assert_eq!(p.received_b(ChannelId(0x21))[0], pattern(2500, 1));
}
