//! Address-book limits that a deployment may tune.

#[path = "addrbook_util/mod.rs"]
mod addrbook_util;

use std::net::SocketAddr;

use addrbook_util::*;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{AddOutcome, AddRejected, AddrBook, AddrBookConfig};

const T0: u64 = 1_700_000_000;

/// A local test network listens on one loopback IP: raising the per-IP port cap keeps every node,
/// and the raised cap is still a cap, enforced on the next port and kept across a save and load.
#[test]
fn ports_per_ip_is_configurable_and_still_enforced() {
    let mut r = rng(7);
    let config = AddrBookConfig {
        strict: false,
        max_ports_per_ip: 12,
        ..AddrBookConfig::default()
    };
    let mut book = AddrBook::new(config.clone(), &mut r);
    let ip = "127.0.0.1".parse().unwrap();
    // One (group, source group) pair maps to one new bucket, so two ports may hash to the same
    // slot there (`SlotTaken`); the port cap must not be what refuses them.
    let mut port = 26_000u16;
    while book.len() < 12 {
        port += 1;
        let a = NetAddr::new(id(&mut r), SocketAddr::new(ip, port));
        match book.add(a, ip, T0, &mut r) {
            Ok(AddOutcome::Added) | Err(AddRejected::SlotTaken) => {}
            other => panic!("port {port}: {other:?}"),
        }
        book.check().unwrap();
        assert!(
            port < 26_200,
            "a 64-slot bucket takes 12 addresses long before this"
        );
    }
    let thirteenth = NetAddr::new(id(&mut r), SocketAddr::new(ip, 27_000));
    assert_eq!(
        book.add(thirteenth, ip, T0, &mut r),
        Err(AddRejected::TooManyPorts)
    );
    let reloaded = AddrBook::decode(&book.encode(), config).unwrap();
    assert_eq!(reloaded.len(), 12);
    reloaded.check().unwrap();
}
