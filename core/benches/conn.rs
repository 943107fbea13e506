//! Throughput of a connected pair of `PeerConnection`s in memory, encryption on: the whole
//! pipeline (scheduler, packet encoding, ChaCha20-Poly1305 frames, opening, decoding,
//! reassembly) for 64 B, 1 KiB and 64 KiB messages. Rate limits are off (0) so the figure is
//! the CPU cost, and virtual time jumps over the flush throttle.
//!
//! Run: `cargo bench -p cometmesh-core --bench conn`

#![allow(missing_docs)] // criterion_group! generates undocumented items

#[path = "../tests/conn_support/mod.rs"]
mod conn_support;

use std::time::Duration;

use bytes::Bytes;
use cometmesh_core::conn::{ConnEvent, ConnectionConfig};
use cometmesh_core::ids::ChannelId;
use conn_support::Pair;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("conn_pair");
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    for (name, size, count) in [
        ("64B", 64usize, 1000usize),
        ("1KiB", 1024, 1000),
        ("64KiB", 64 * 1024, 16),
    ] {
        let config = ConnectionConfig {
            send_rate: 0,
            recv_rate: 0,
            ..ConnectionConfig::default()
        };
        let mut pair = Pair::with_config(1, config);
        pair.set_max_chunk(64 * 1024);
        pair.establish();
        let msg = Bytes::from(vec![0xab; size]);
        group.throughput(Throughput::Bytes((size * count) as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                pair.events_b.clear();
                for _ in 0..count {
                    pair.a.send(pair.now, ChannelId(0x40), msg.clone()).unwrap();
                }
                let mut received = 0;
                while received < count {
                    if !pair.step() {
                        pair.advance(Duration::from_secs(1));
                    }
                    received = pair
                        .events_b
                        .iter()
                        .filter(|e| matches!(e, ConnEvent::Message { .. }))
                        .count();
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
