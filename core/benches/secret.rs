//! SecretConnection throughput and handshake rate.
//!
//! - `seal_1mib/*`, `open_1mib/*`: 1 MiB of data as 1024 frames of 1044 bytes, for both AEAD
//!   candidates (`ring` 0.17 and RustCrypto `chacha20poly1305` 0.10, each with the same framing
//!   work: length prefix, copy, seal in place, tag) and for our `Sealer`/`Opener` (which use the
//!   winner).
//! - `seal_frame/*`, `open_frame/*`: one frame (1024 data bytes) per call, as a connection
//!   seals and opens when one small batch of messages goes out or arrives: `ring` with its key
//!   object built once, against our `Sealer`/`Opener`, which build it per call.
//! - `handshake/pair`: a complete handshake of two nodes in memory (both sides' work).
//!
//! Every benchmark runs twice: with criterion's wall-clock timer, and (names prefixed `cpu_`)
//! with this thread's on-CPU time from `/proc/thread-self/schedstat`, the same kind of figure
//! `openssl speed` reports by default (user CPU time). On a loaded shared machine only the CPU
//! figures are comparable with openssl's. That counter advances at scheduler ticks, so the CPU runs
//! use flat sampling with 20 long samples.
//!
//! Run: `cargo bench -p cometmesh-core --bench secret -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items

use std::hint::black_box;

use bytes::BytesMut;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use cometmesh_core::identity::NodeKey;
use cometmesh_core::secret::{Handshake, Opener, Sealer};
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};

/// This thread's on-CPU time (Linux `/proc/thread-self/schedstat`, first field, nanoseconds).
struct ThreadCpu;

fn thread_cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("schedstat on-CPU nanoseconds")
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = Duration;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> Duration {
        Duration::from_nanos(thread_cpu_ns().saturating_sub(start))
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

const MIB: usize = 1 << 20;
const DATA: usize = 1024;
const PLAIN: usize = 1028;
const SEALED: usize = 1044;
const KEY: [u8; 32] = [7u8; 32];

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Frames `data` and seals each frame with `seal(nonce, body) -> tag`.
fn frame_all(
    data: &[u8],
    out: &mut BytesMut,
    mut seal: impl FnMut([u8; 12], &mut [u8]) -> [u8; 16],
) {
    out.clear();
    for (i, chunk) in data.chunks(DATA).enumerate() {
        let start = out.len();
        out.resize(start + SEALED, 0);
        let (body, tag) = out[start..].split_at_mut(PLAIN);
        body[..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        body[4..4 + chunk.len()].copy_from_slice(chunk);
        tag.copy_from_slice(&seal(nonce(i as u64), body));
    }
}

/// Opens every frame of `wire` with `open(nonce, body, tag) -> ok`, appending the data.
fn unframe_all(
    wire: &[u8],
    out: &mut BytesMut,
    work: &mut [u8; PLAIN],
    mut open: impl FnMut([u8; 12], &mut [u8], &[u8; 16]) -> bool,
) {
    out.clear();
    for (i, frame) in wire.chunks_exact(SEALED).enumerate() {
        work.copy_from_slice(&frame[..PLAIN]);
        let tag: [u8; 16] = frame[PLAIN..].try_into().unwrap();
        assert!(open(nonce(i as u64), work, &tag));
        let len = u32::from_le_bytes(work[..4].try_into().unwrap()) as usize;
        out.extend_from_slice(&work[4..4 + len]);
    }
}

fn ring_key() -> ring::aead::LessSafeKey {
    ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &KEY).unwrap(),
    )
}

fn ring_seal(key: &ring::aead::LessSafeKey, n: [u8; 12], body: &mut [u8]) -> [u8; 16] {
    let tag = key
        .seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(n),
            ring::aead::Aad::empty(),
            body,
        )
        .unwrap();
    tag.as_ref().try_into().unwrap()
}

fn ring_open(key: &ring::aead::LessSafeKey, n: [u8; 12], body: &mut [u8], tag: &[u8; 16]) -> bool {
    key.open_in_place_separate_tag(
        ring::aead::Nonce::assume_unique_for_key(n),
        ring::aead::Aad::empty(),
        ring::aead::Tag::from(*tag),
        body,
        0..,
    )
    .is_ok()
}

fn rc_seal(key: &chacha20poly1305::ChaCha20Poly1305, n: [u8; 12], body: &mut [u8]) -> [u8; 16] {
    key.encrypt_in_place_detached(&n.into(), b"", body)
        .unwrap()
        .into()
}

fn rc_open(
    key: &chacha20poly1305::ChaCha20Poly1305,
    n: [u8; 12],
    body: &mut [u8],
    tag: &[u8; 16],
) -> bool {
    key.decrypt_in_place_detached(&n.into(), b"", body, tag.into())
        .is_ok()
}

fn bench_seal<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let data: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let mut out = BytesMut::with_capacity(MIB / DATA * SEALED);
    let mut g = c.benchmark_group(format!("{prefix}seal_1mib"));
    // Equal-sized samples: the CPU timer has scheduler-tick resolution, so no tiny samples.
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(MIB as u64));
    let rk = ring_key();
    g.bench_function("ring", |b| {
        b.iter(|| {
            frame_all(black_box(&data), &mut out, |n, body| {
                ring_seal(&rk, n, body)
            })
        })
    });
    let ck = chacha20poly1305::ChaCha20Poly1305::new(&KEY.into());
    g.bench_function("rustcrypto", |b| {
        b.iter(|| frame_all(black_box(&data), &mut out, |n, body| rc_seal(&ck, n, body)))
    });
    g.bench_function("sealer", |b| {
        b.iter(|| {
            // A fresh sealer per iteration keeps the nonces in range; its cost is a key setup.
            let mut sealer = Sealer::new(&KEY);
            out.clear();
            sealer.seal(black_box(&data), &mut out).unwrap();
        })
    });
    g.finish();
}

fn bench_open<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let data: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let mut wire = BytesMut::new();
    Sealer::new(&KEY).seal(&data, &mut wire).unwrap();
    let mut out = BytesMut::with_capacity(MIB);
    let mut work = [0u8; PLAIN];
    let mut g = c.benchmark_group(format!("{prefix}open_1mib"));
    // Equal-sized samples: the CPU timer has scheduler-tick resolution, so no tiny samples.
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(MIB as u64));
    let rk = ring_key();
    g.bench_function("ring", |b| {
        b.iter(|| {
            unframe_all(black_box(&wire), &mut out, &mut work, |n, body, tag| {
                ring_open(&rk, n, body, tag)
            })
        })
    });
    let ck = chacha20poly1305::ChaCha20Poly1305::new(&KEY.into());
    g.bench_function("rustcrypto", |b| {
        b.iter(|| {
            unframe_all(black_box(&wire), &mut out, &mut work, |n, body, tag| {
                rc_open(&ck, n, body, tag)
            })
        })
    });
    g.bench_function("opener", |b| {
        b.iter(|| {
            let mut opener = Opener::new(&KEY);
            out.clear();
            opener.open(black_box(&wire), &mut out).unwrap();
            assert_eq!(out.len(), MIB);
        })
    });
    g.finish();
}

fn bench_frame<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let data: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let mut wire = BytesMut::new();
    Sealer::new(&KEY).seal(&data, &mut wire).unwrap();
    let frames: Vec<&[u8]> = wire.chunks_exact(SEALED).collect();
    let mut out = BytesMut::with_capacity(SEALED);
    let mut g = c.benchmark_group(format!("{prefix}seal_frame"));
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(DATA as u64));
    let rk = ring_key();
    let mut counter = 0u64;
    g.bench_function("ring", |b| {
        b.iter(|| {
            counter += 1;
            out.clear();
            out.resize(SEALED, 0);
            let (body, tag) = out.split_at_mut(PLAIN);
            body[..4].copy_from_slice(&(DATA as u32).to_le_bytes());
            body[4..].copy_from_slice(black_box(&data[..DATA]));
            tag.copy_from_slice(&ring_seal(&rk, nonce(counter), body));
        })
    });
    let mut sealer = Sealer::new(&KEY);
    g.bench_function("sealer", |b| {
        b.iter(|| {
            out.clear();
            sealer.seal(black_box(&data[..DATA]), &mut out).unwrap();
        })
    });
    g.finish();
    let mut g = c.benchmark_group(format!("{prefix}open_frame"));
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(DATA as u64));
    let mut work = [0u8; PLAIN];
    let mut i = 0usize;
    g.bench_function("ring", |b| {
        b.iter(|| {
            let frame = frames[i % frames.len()];
            work.copy_from_slice(&frame[..PLAIN]);
            let tag: [u8; 16] = frame[PLAIN..].try_into().unwrap();
            assert!(ring_open(
                &rk,
                nonce((i % frames.len()) as u64),
                &mut work,
                &tag
            ));
            out.clear();
            out.extend_from_slice(&work[4..]);
            i += 1;
        })
    });
    let mut opener = Opener::new(&KEY);
    let mut i = 0usize;
    g.bench_function("opener", |b| {
        b.iter(|| {
            if i == frames.len() {
                // The frames were sealed from nonce 0; start over (once per 1024 frames).
                opener = Opener::new(&KEY);
                i = 0;
            }
            out.clear();
            opener.open(black_box(frames[i]), &mut out).unwrap();
            i += 1;
        })
    });
    g.finish();
}

fn bench_handshake<M: Measurement>(c: &mut Criterion<M>, prefix: &str) {
    let ka = NodeKey::from_seed([1u8; 32]);
    let kb = NodeKey::from_seed([2u8; 32]);
    let mut g = c.benchmark_group(format!("{prefix}handshake"));
    // Equal-sized samples: the CPU timer has scheduler-tick resolution, so no tiny samples.
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    let mut counter = 0u8;
    g.bench_function("pair", |b| {
        b.iter(|| {
            counter = counter.wrapping_add(1);
            let mut a = Handshake::new(&ka, [counter; 32]);
            let mut b = Handshake::new(&kb, [counter ^ 0x80; 32]);
            while !(a.is_complete() && b.is_complete()) {
                while let Some(bytes) = a.poll_transmit() {
                    b.handle_received(&bytes).unwrap();
                }
                while let Some(bytes) = b.poll_transmit() {
                    a.handle_received(&bytes).unwrap();
                }
            }
            black_box((a.into_session().unwrap(), b.into_session().unwrap()))
        })
    });
    g.finish();
}

fn wall(c: &mut Criterion) {
    bench_seal(c, "");
    bench_open(c, "");
    bench_frame(c, "");
    bench_handshake(c, "");
}

fn cpu(c: &mut Criterion<ThreadCpu>) {
    bench_seal(c, "cpu_");
    bench_open(c, "cpu_");
    bench_frame(c, "cpu_");
    bench_handshake(c, "cpu_");
}

criterion_group!(wall_benches, wall);
criterion_group! {
    name = cpu_benches;
    config = Criterion::default().with_measurement(ThreadCpu).sample_size(20);
    targets = cpu
}
criterion_main!(wall_benches, cpu_benches);
