//! Heap bytes per idle established `PeerConnection`, measured with dhat's counting allocator
//! (the crate supplies the `GlobalAlloc`; no unsafe code of ours). Builds 500 connected pairs
//! (1000 connections), drives each through the full handshake, drops everything but the
//! connections, and divides the live heap by the count; then again after each pair moved a
//! 1 MiB message both ways, to show that transfer buffers are released.
//!
//! Run: `cargo bench -p cometmesh-core --bench conn_memory`

#![allow(missing_docs)]

#[path = "../tests/conn_support/mod.rs"]
mod conn_support;

use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::conn::{ConnEvent, PeerConnection};
use cometmesh_core::ids::ChannelId;
use conn_support::{Pair, channels, key, node_info};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const PAIRS: usize = 500;

fn live() -> usize {
    dhat::HeapStats::get().curr_bytes
}

fn measure(traffic: bool) -> usize {
    let before = live();
    let mut conns: Vec<PeerConnection> = Vec::with_capacity(2 * PAIRS);
    let vec_bytes = live() - before;
    for i in 0..PAIRS {
        let mut pair = Pair::new(i as u64);
        pair.establish();
        if traffic {
            let big = Bytes::from(vec![7u8; 1024 * 1024]);
            pair.a.send(pair.now, ChannelId(0x40), big.clone()).unwrap();
            pair.b.send(pair.now, ChannelId(0x40), big).unwrap();
            pair.run_until(Duration::from_secs(10), |p| {
                p.events_a
                    .iter()
                    .chain(&p.events_b)
                    .filter(|e| matches!(e, ConnEvent::Message { .. }))
                    .count()
                    == 2
            });
            // Let the flush throttle and the stats decay run out.
            pair.run_until(Duration::from_secs(40), |p| {
                p.now >= p.start + Duration::from_secs(30)
            });
        }
        let Pair { a, b, .. } = pair;
        conns.push(a);
        conns.push(b);
    }
    let total = live() - before - vec_bytes;
    drop(conns);
    total / (2 * PAIRS)
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    // The shared parts an engine allocates once per node, not per connection; conn_support
    // builds them per connection, so they are measured alone and subtracted.
    let before = live();
    let shared = (channels(), std::sync::Arc::new(node_info(&key(1), "a")));
    let shared_bytes = live() - before;
    drop(shared);
    let idle = measure(false);
    let after_traffic = measure(true);
    let inline = std::mem::size_of::<PeerConnection>();
    println!("shared per-node parts (descriptors + local NodeInfo): {shared_bytes} B");
    println!(
        "size_of::<PeerConnection>() (the struct itself, wherever the engine keeps it): {inline} B"
    );
    println!(
        "heap owned per idle established connection: {} B (fresh), {} B (after 1 MiB each way)",
        idle - shared_bytes,
        after_traffic - shared_bytes
    );
    println!(
        "total per idle established connection (struct + owned heap): {} B (fresh), {} B (after traffic)",
        inline + idle - shared_bytes,
        inline + after_traffic - shared_bytes
    );
}
