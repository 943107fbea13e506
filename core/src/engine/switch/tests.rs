//! Unit tests of the engine glue that need its private parts.

#![allow(clippy::disallowed_methods)] // Instant::now() only anchors the test clock

use super::*;
use crate::addrbook::AddRejected;

/// An inbound peer that connects from a routable IP has that IP as the source of the listen
/// address it announces, whatever address it claims (G1 confinement).
#[test]
fn routable_inbound_peer_is_sourced_by_its_connection() {
    let now = Instant::now();
    let c = EngineConfig {
        chain_id: "t".into(),
        listen_addr: ([20, 0, 0, 1], 26656).into(),
        ..EngineConfig::default()
    };
    let mut e =
        Engine::new(c, NodeKey::from_seed([10; 32]), [7; 32], now, 1_700_000_000).expect("engine");
    let from = SocketAddr::from(([30, 0, 0, 1], 40000));
    let claimed = SocketAddr::from(([40, 9, 0, 1], 26656));
    let conn = e.accept(now, from).expect("accepted");
    let mut info = e.node_info().clone();
    info.id = NodeKey::from_seed([11; 32]).node_id();
    info.listen_addr = format!("tcp://{claimed}");
    e.pex_add_peer(now, conn, Direction::Inbound, Origin::Inbound, &info, from);
    assert_eq!(
        e.addr_book().new_buckets_of(&claimed),
        vec![e.addr_book().new_bucket(&claimed, &from.ip())]
    );
}

/// Regression (loopback `ten_nodes_discover_through_one_seed`): inbound peers that listen
/// on distinct IPs but all dial from 127.0.0.1 (not routable) are each recorded with
/// themselves as source.
/// With the connection's IP as source, two of them could meet in one new-table slot and
/// the second was refused (`SlotTaken`) for good.
#[test]
fn inbound_peer_is_its_own_source() {
    let now = Instant::now();
    let unix = 1_700_000_000;
    let mut c = EngineConfig {
        chain_id: "t".into(),
        listen_addr: ([127, 0, 0, 1], 26656).into(),
        addr_book_strict: false,
        allow_duplicate_ip: true,
        ..EngineConfig::default()
    };
    c.addr_book.ipv4_group_bits = 32;
    let mut e = Engine::new(c, NodeKey::from_seed([10; 32]), [7; 32], now, unix).expect("engine");
    let from = SocketAddr::from(([127, 0, 0, 1], 40000));
    let id = |n: u8| NodeKey::from_seed([n; 32]).node_id();
    // Find two listen addresses that collide when both are heard from 127.0.0.1.
    let first = SocketAddr::from(([127, 0, 0, 2], 26656));
    let mut probe = e.addr_book().clone();
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    assert!(
        probe
            .add(NetAddr::new(id(11), first), from.ip(), unix, &mut rng)
            .is_ok()
    );
    let bucket = probe.new_bucket(&first, &from.ip());
    let same_bucket: Vec<SocketAddr> = (3..=254u8)
        .map(|i| SocketAddr::from(([127, 0, 0, i], 0)))
        .filter(|a| probe.new_bucket(a, &from.ip()) == bucket)
        .collect();
    let second = same_bucket
        .into_iter()
        .flat_map(|a| (1024..=u16::MAX).map(move |p| SocketAddr::new(a.ip(), p)))
        .find(
            |&s| match probe.add(NetAddr::new(id(12), s), from.ip(), unix, &mut rng) {
                Ok(_) => {
                    probe.remove(s);
                    false
                }
                Err(r) => r == AddRejected::SlotTaken,
            },
        )
        .expect("a colliding pair of addresses");
    for (n, listen) in [(11, first), (12, second)] {
        let conn = e.accept(now, from).expect("accepted");
        let mut info = e.node_info().clone();
        info.id = id(n);
        info.listen_addr = format!("tcp://{listen}");
        e.pex_add_peer(now, conn, Direction::Inbound, Origin::Inbound, &info, from);
    }
    for a in [first, second] {
        assert!(
            e.addr_book().entries().any(|(x, _)| x.addr == a),
            "{a} is in the book"
        );
    }
    for a in [first, second] {
        assert_eq!(
            e.addr_book().new_buckets_of(&a),
            vec![e.addr_book().new_bucket(&a, &a.ip())],
            "{a} is its own source"
        );
    }
}
