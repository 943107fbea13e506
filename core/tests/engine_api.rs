//! The engine's API contract without a network: admission, dials, timers, channels, the
//! persistent-peer schedule on a virtual clock.
#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the virtual clock

use std::time::{Duration, Instant};

use bytes::Bytes;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::engine::{
    ChannelDescriptor, ConfigError, DialError, DialFailReason, DialFailure, Engine, EngineConfig,
    EngineError, Event, Input, Output, PeerState, Refused, SendError, backoff,
};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::{ChannelId, ConnId};

fn config() -> EngineConfig {
    let mut c = EngineConfig::default();
    c.chain_id = "test".into();
    c.listen_addr = "20.0.0.1:26656".parse().unwrap();
    c
}

fn addr(seed: u8, ip: &str) -> NetAddr {
    NetAddr::new(
        NodeKey::from_seed([seed; 32]).node_id(),
        ip.parse().unwrap(),
    )
}

fn engine(c: EngineConfig, t0: Instant) -> Engine {
    Engine::new(c, NodeKey::from_seed([1; 32]), [9; 32], t0, 1_750_000_000).unwrap()
}

fn drain(e: &mut Engine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

#[test]
fn config_is_validated() {
    let t0 = Instant::now();
    let mut c = config();
    c.chain_id.clear();
    assert_eq!(
        Engine::new(c, NodeKey::from_seed([1; 32]), [0; 32], t0, 0).unwrap_err(),
        ConfigError::EmptyChainId
    );
    let mut c = config();
    c.persistent_peers = vec![addr(1, "1.1.1.1:1")];
    assert!(matches!(
        Engine::new(c, NodeKey::from_seed([1; 32]), [0; 32], t0, 0),
        Err(ConfigError::OwnId(_))
    ));
}

#[test]
fn channels_register_before_start_and_pex_is_reserved() {
    let t0 = Instant::now();
    let mut e = engine(config(), t0);
    let mut d = ChannelDescriptor::pex();
    assert_eq!(e.add_channel(d), Err(ConfigError::ReservedChannel));
    d.id = ChannelId(0x20);
    e.add_channel(d).unwrap();
    assert_eq!(
        e.add_channel(d),
        Err(ConfigError::DuplicateChannel(ChannelId(0x20)))
    );
    // Advertised in registration order, PEX last.
    assert_eq!(
        e.node_info().channels.as_slice(),
        &[ChannelId(0x20), ChannelId::PEX]
    );
    e.dial(t0, addr(2, "30.0.0.1:26656")).unwrap();
    d.id = ChannelId(0x21);
    assert_eq!(e.add_channel(d), Err(ConfigError::AlreadyStarted));
}

#[test]
fn dial_refusals_and_timeout() {
    let t0 = Instant::now();
    let mut c = config();
    c.pex = false;
    let mut e = engine(c, t0);
    let me = NetAddr::new(e.node_id(), "20.0.0.1:26656".parse().unwrap());
    assert_eq!(e.dial(t0, me), Err(DialError::SelfDial));
    let a = addr(2, "30.0.0.1:26656");
    let conn = e.dial(t0, a).unwrap();
    assert!(
        matches!(drain(&mut e)[..], [Output::Dial { conn: c, addr: x }] if c == conn && x == a.addr)
    );
    assert_eq!(e.dial(t0, a), Err(DialError::AlreadyDialing));
    assert_eq!(
        e.dial(t0, addr(3, "30.0.0.1:26657")),
        Err(DialError::DuplicateIp)
    );
    assert_eq!(e.peer_state(&a.id), Some(PeerState::Dialing));
    assert_eq!(e.num_dialing(), 1);
    // No answer within dial_timeout (3 s): the engine closes and reports the failure.
    let deadline = e.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(3));
    e.handle_timeout(deadline);
    let out = drain(&mut e);
    assert!(matches!(out[0], Output::Close { conn: c } if c == conn));
    assert!(matches!(
        &out[1],
        Output::Event(Event::DialFailed { addr: x, reason: DialFailReason::Timeout }) if **x == a
    ));
    assert_eq!(e.peer_state(&a.id), None);
    // The adapter reports the close; then the id is gone for good.
    e.handle_input(
        deadline,
        Input::Closed {
            conn,
            cause: cometmesh_core::engine::CloseCause::Local,
        },
    )
    .unwrap();
    assert_eq!(
        e.handle_input(deadline, Input::Sent { conn, len: 1 }),
        Err(EngineError::UnknownConn(conn))
    );
    assert!(!e.has_conn(conn));
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let t0 = Instant::now();
    let mut e = engine(config(), t0);
    let bogus = ConnId(77);
    assert_eq!(
        e.handle_input(t0, Input::Connected { conn: bogus }),
        Err(EngineError::UnknownConn(bogus))
    );
    let conn = e.dial(t0, addr(2, "30.0.0.1:26656")).unwrap();
    assert!(matches!(
        e.handle_input(
            t0,
            Input::Received {
                conn,
                bytes: Bytes::from_static(b"x")
            }
        ),
        Err(EngineError::Unexpected { .. })
    ));
    assert_eq!(
        e.send(
            t0,
            addr(2, "30.0.0.1:26656").id,
            ChannelId(0x20),
            Bytes::new()
        ),
        Err(SendError::UnknownPeer)
    );
}

#[test]
fn poll_timeout_is_now_while_outputs_are_queued() {
    let t0 = Instant::now();
    let mut e = engine(config(), t0);
    let t1 = t0 + Duration::from_millis(5);
    e.dial(t1, addr(2, "30.0.0.1:26656")).unwrap();
    assert_eq!(e.poll_timeout(), Some(t1));
    let _ = drain(&mut e);
    assert!(e.poll_timeout().unwrap() > t1);
}

#[test]
fn admission_limits_and_duplicate_ip() {
    let t0 = Instant::now();
    let mut c = config();
    c.max_num_inbound_peers = 2;
    let mut e = engine(c, t0);
    e.accept(t0, "40.0.0.1:5000".parse().unwrap()).unwrap();
    assert_eq!(
        e.accept(t0, "40.0.0.1:5001".parse().unwrap()),
        Err(Refused::DuplicateIp)
    );
    e.accept(t0, "40.1.0.1:5000".parse().unwrap()).unwrap();
    assert_eq!(
        e.accept(t0, "40.2.0.1:5000".parse().unwrap()),
        Err(Refused::TooManyInbound)
    );
    assert_eq!(e.counters().refused, 2);
    assert_eq!(e.counters().accepted, 2);
}

#[test]
fn unconditional_ids_raise_the_concurrent_inbound_limit() {
    let t0 = Instant::now();
    let mut c = config();
    c.max_num_inbound_peers = 1;
    c.unconditional_peer_ids = vec![addr(5, "1.1.1.1:1").id];
    let mut e = engine(c, t0);
    e.accept(t0, "40.0.0.1:5000".parse().unwrap()).unwrap();
    e.accept(t0, "40.1.0.1:5000".parse().unwrap()).unwrap();
    assert_eq!(
        e.accept(t0, "40.2.0.1:5000".parse().unwrap()),
        Err(Refused::TooManyInbound)
    );
}

/// G18 on a virtual clock: first dial after U[0, 3 s); after the k-th consecutive failure the
/// next dial comes min(2^k s, 300 s) + U[0, 1 s) later, forever.
#[test]
fn persistent_redial_schedule_is_exact() {
    let t0 = Instant::now();
    let p = addr(2, "30.0.0.1:26656");
    let mut c = config();
    c.pex = false;
    c.persistent_peers = vec![p];
    let mut e = engine(c, t0);
    assert_eq!(e.peer_state(&p.id), Some(PeerState::Candidate));
    assert!(drain(&mut e).is_empty());
    let mut now = t0;
    let mut dials = Vec::new();
    for k in 0..14u32 {
        let at = e.poll_timeout().expect("a redial is always scheduled");
        assert!(at >= now);
        let gap = at - now;
        if k == 0 {
            assert!(gap < Duration::from_secs(3), "start-up jitter {gap:?}");
        } else {
            let base = backoff::persistent_base_delay(k - 1, Duration::from_secs(300));
            assert!(
                gap >= base && gap < base + Duration::from_secs(1),
                "k={k}: {gap:?}"
            );
        }
        now = at;
        e.handle_timeout(now);
        let out = drain(&mut e);
        let conn = match out.as_slice() {
            [Output::Dial { conn, addr }] if *addr == p.addr => *conn,
            other => panic!("expected one dial, got {other:?}"),
        };
        dials.push(now - t0);
        assert_eq!(e.peer_state(&p.id), Some(PeerState::Dialing));
        e.handle_input(
            now,
            Input::DialFailed {
                conn,
                error: DialFailure::Refused,
            },
        )
        .unwrap();
        let out = drain(&mut e);
        assert!(matches!(
            out.as_slice(),
            [Output::Event(Event::DialFailed { .. })]
        ));
        assert_eq!(e.peer_state(&p.id), Some(PeerState::Reconnecting));
    }
    // Never banned, whatever the failures.
    assert!(!e.is_banned(&p.id, now));
    assert_eq!(dials.len(), 14);
}

#[test]
fn failed_dials_never_ban() {
    let t0 = Instant::now();
    let mut c = config();
    c.pex = false;
    let mut e = engine(c, t0);
    let a = addr(2, "30.0.0.1:26656");
    let mut now = t0;
    for _ in 0..40 {
        let conn = e.dial(now, a).unwrap();
        let _ = drain(&mut e);
        e.handle_input(
            now,
            Input::DialFailed {
                conn,
                error: DialFailure::Refused,
            },
        )
        .unwrap();
        let _ = drain(&mut e);
        now += Duration::from_secs(1);
    }
    assert!(!e.is_banned(&a.id, now));
    assert!(!e.addr_book().is_banned(&a.id, &a.addr.ip(), 1_750_000_100));
    assert_eq!(e.counters().dial_failures, 40);
    assert_eq!(e.counters().bans, 0);
}

/// An admitted inbound connection that fails its handshake is reported with its reason (it is
/// not a peer, so there is no `PeerDown`), closed, and counted.
#[test]
fn failed_inbound_handshake_is_reported() {
    let t0 = Instant::now();
    let mut e = engine(config(), t0);
    let remote = "30.0.0.7:40000".parse().unwrap();
    let conn = e.accept(t0, remote).unwrap();
    let _ = drain(&mut e);
    e.handle_input(
        t0,
        Input::Received {
            conn,
            bytes: Bytes::from_static(&[0xff; 16]),
        },
    )
    .unwrap();
    let out = drain(&mut e);
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Event(Event::InboundFailed { remote: r, .. }) if *r == remote)
        ),
        "{out:?}"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Close { conn: c } if *c == conn))
    );
    assert_eq!(e.counters().inbound_failures, 1);
}

/// A persistent peer given by DNS name is dialled by name at every redial (`Output::DialName`,
/// never an address the engine made up); `Input::Resolved` gives the connection its address,
/// which the dial's outcome then reports. An unresolved name is an ordinary failed dial.
#[test]
fn persistent_peer_by_name_is_dialled_by_name_each_time() {
    let t0 = Instant::now();
    let id = NodeKey::from_seed([2; 32]).node_id();
    let named: cometmesh_core::addr::PeerAddr =
        format!("{id}@Peer.Example.test:26656").parse().unwrap();
    let mut c = config();
    c.pex = false;
    c.add_persistent_peer(&named);
    let mut e = engine(c, t0);
    let mut now = t0;
    for (k, resolved) in [Some("30.0.0.1:26656"), None, Some("30.0.0.2:26656")]
        .into_iter()
        .enumerate()
    {
        now = e.poll_timeout().expect("a redial is scheduled");
        e.handle_timeout(now);
        let conn = match drain(&mut e).as_slice() {
            [Output::DialName { conn, name }] => {
                assert_eq!(name.to_string(), "peer.example.test:26656", "dial {k}");
                *conn
            }
            other => panic!("dial {k}: expected a dial by name, got {other:?}"),
        };
        let error = match resolved {
            Some(a) => {
                let a: std::net::SocketAddr = a.parse().unwrap();
                e.handle_input(now, Input::Resolved { conn, addr: a })
                    .unwrap();
                DialFailure::Refused
            }
            None => DialFailure::Unresolved,
        };
        e.handle_input(now, Input::DialFailed { conn, error })
            .unwrap();
        match drain(&mut e).as_slice() {
            [Output::Event(Event::DialFailed { addr, reason })] => {
                assert_eq!(addr.id, id);
                assert!(
                    matches!(reason, DialFailReason::Io(e) if *e == error),
                    "dial {k}: {reason:?}"
                );
                if let Some(a) = resolved {
                    assert_eq!(addr.addr, a.parse().unwrap(), "dial {k}");
                }
            }
            other => panic!("dial {k}: {other:?}"),
        }
    }
    assert!(now > t0);
}
