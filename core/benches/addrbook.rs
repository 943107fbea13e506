//! Address-book benchmarks with the book at capacity (peer-management.md G24): add, good (of
//! entries with one and with several new references), select (full and almost empty), selection(250), untested(30) (a seed's crawl refill), encode,
//! decode. The group `addrbook_sizes` repeats add, select, selection(250), untested(30) and
//! encode on books filled by 4 000, 40 000 and 400 000 offers (the cost curve of
//! bench/README.md).
//!
//! `cargo bench -p cometmesh-core --bench addrbook`

#![allow(missing_docs)]
// A benchmark measures wall time (`iter_custom` times batches itself); the core never does.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cometmesh_core::NodeId;
use cometmesh_core::addr::NetAddr;
use cometmesh_core::addrbook::{AddrBook, AddrBookConfig};
use criterion::{Criterion, criterion_group, criterion_main};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const NOW: u64 = 1_700_000_000;

fn random_addr(r: &mut impl RngCore) -> NetAddr {
    let mut id = [0u8; 20];
    r.fill_bytes(&mut id);
    let h = r.next_u32().to_be_bytes();
    let ip = IpAddr::V4(Ipv4Addr::new(1 + h[0] % 99, h[1], h[2], h[3]));
    NetAddr::new(NodeId(id), SocketAddr::new(ip, 26656))
}

fn random_ip(r: &mut impl RngCore) -> IpAddr {
    random_addr(r).addr.ip()
}

/// A book filled the way a busy node fills it: 400,000 offers from random sources, a quarter
/// of the successful ones promoted, so both tables are (nearly) full.
fn full_book(r: &mut ChaCha20Rng) -> (AddrBook, Vec<SocketAddr>) {
    book_of(400_000, r)
}

/// A book filled by `offers` offers as [`full_book`].
fn book_of(offers: u32, r: &mut ChaCha20Rng) -> (AddrBook, Vec<SocketAddr>) {
    let mut b = AddrBook::new(AddrBookConfig::default(), r);
    let mut new_entries = Vec::new();
    for i in 0..offers {
        let a = random_addr(r);
        if b.add(a, random_ip(r), NOW, r).is_ok() {
            if i % 4 == 0 {
                let _ = b.mark_good(a.addr, NOW, r);
            }
            if !b.is_tried(&a.addr) {
                new_entries.push(a.addr);
            }
        }
    }
    new_entries.retain(|a| b.contains(a) && !b.is_tried(a));
    (b, new_entries)
}

fn bench(c: &mut Criterion) {
    let mut r = ChaCha20Rng::seed_from_u64(1);
    let (book, new_entries) = full_book(&mut r);
    eprintln!(
        "book: {} entries ({} new, {} tried); encoded {} bytes",
        book.len(),
        book.len_new(),
        book.len_tried(),
        book.encode().len()
    );
    let mut g = c.benchmark_group("addrbook");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let offers: Vec<(NetAddr, IpAddr)> = (0..100_000)
        .map(|_| (random_addr(&mut r), random_ip(&mut r)))
        .collect();
    g.bench_function("add (full book)", |bch| {
        bch.iter_custom(|iters| {
            let mut b = book.clone();
            let mut rr = ChaCha20Rng::seed_from_u64(iters);
            let start = Instant::now();
            for i in 0..iters as usize {
                let (a, s) = offers[i % offers.len()];
                let _ = black_box(b.add(a, s, NOW + 60, &mut rr));
            }
            start.elapsed()
        })
    });

    g.bench_function("good (new → tried, full book)", |bch| {
        bch.iter_custom(|iters| {
            let mut b = book.clone();
            let mut rr = ChaCha20Rng::seed_from_u64(iters);
            let start = Instant::now();
            for i in 0..iters as usize {
                let _ =
                    black_box(b.mark_good(new_entries[i % new_entries.len()], NOW + 60, &mut rr));
            }
            start.elapsed()
        })
    });

    // Addresses heard from several peers hold several new references, as many do in a real
    // book; promoting one finds its references in the (dense) new table.
    let mut multi_book = book.clone();
    let mut multi = Vec::new();
    for &a in new_entries.iter().take(4000) {
        let heard = NetAddr::new(NodeId([7; 20]), a);
        for _ in 0..40 {
            let _ = multi_book.add(heard, random_ip(&mut r), NOW, &mut r);
        }
        if multi_book.new_buckets_of(&a).len() > 1 {
            multi.push(a);
        }
    }
    eprintln!("{} entries with several new references", multi.len());
    g.bench_function(
        "good (new → tried, several references, full book)",
        |bch| {
            // Each promotion on a fresh copy (a promoted entry would only be refreshed).
            bch.iter_custom(|iters| {
                let mut rr = ChaCha20Rng::seed_from_u64(iters);
                let mut spent = Duration::ZERO;
                let mut b = multi_book.clone();
                for i in 0..iters as usize {
                    if i > 0 && i % multi.len() == 0 {
                        b = multi_book.clone();
                    }
                    let start = Instant::now();
                    let _ = black_box(b.mark_good(multi[i % multi.len()], NOW + 60, &mut rr));
                    spent += start.elapsed();
                }
                spent
            })
        },
    );

    g.bench_function("select (full book)", |bch| {
        let mut rr = ChaCha20Rng::seed_from_u64(2);
        bch.iter(|| black_box(book.pick(NOW + 60, &mut rr, |_| true)))
    });

    let mut almost_empty = AddrBook::new(AddrBookConfig::default(), &mut r);
    let one = random_addr(&mut r);
    let _ = almost_empty.add(one, one.addr.ip(), NOW, &mut r);
    almost_empty.mark_attempt(one.addr, NOW + 30);
    g.bench_function("select (1 entry, recently tried)", |bch| {
        let mut rr = ChaCha20Rng::seed_from_u64(3);
        bch.iter(|| black_box(almost_empty.pick(NOW + 60, &mut rr, |_| true)))
    });

    g.bench_function("selection(250) (full book)", |bch| {
        let mut rr = ChaCha20Rng::seed_from_u64(4);
        bch.iter(|| black_box(book.selection(NOW + 60, &mut rr)))
    });

    // The first call builds the book's index of never-reached entries; the iterations
    // measure the calls after it, as a seed's crawler makes them.
    g.bench_function("untested(30) (full book)", |bch| {
        let mut b = book.clone();
        bch.iter(|| black_box(b.untested(NOW + 60, 30, |_| true)))
    });

    g.bench_function("encode (full book)", |bch| {
        bch.iter(|| black_box(book.encode()))
    });

    let bytes = book.encode();
    g.bench_function("decode (full book, with check)", |bch| {
        bch.iter(|| black_box(AddrBook::decode(&bytes, AddrBookConfig::default()).map(|b| b.len())))
    });
    let rebucket_cfg = AddrBookConfig {
        ipv4_group_bits: 24,
        ..AddrBookConfig::default()
    };
    g.bench_function("decode + rebucket (full book)", |bch| {
        bch.iter(|| black_box(AddrBook::decode(&bytes, rebucket_cfg.clone()).map(|b| b.len())))
    });
    g.finish();
}

/// add, select, selection(250), untested(30) and encode at three sizes of the book.
fn sizes(c: &mut Criterion) {
    let mut g = c.benchmark_group("addrbook_sizes");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for offers in [4_000u32, 40_000, 400_000] {
        let mut r = ChaCha20Rng::seed_from_u64(u64::from(offers));
        let (book, _) = book_of(offers, &mut r);
        eprintln!(
            "{offers} offers: {} entries ({} new, {} tried)",
            book.len(),
            book.len_new(),
            book.len_tried()
        );
        let fresh: Vec<(NetAddr, IpAddr)> = (0..100_000)
            .map(|_| (random_addr(&mut r), random_ip(&mut r)))
            .collect();
        g.bench_function(format!("add ({offers} offers)"), |bch| {
            bch.iter_custom(|iters| {
                let mut b = book.clone();
                let mut rr = ChaCha20Rng::seed_from_u64(iters);
                let start = Instant::now();
                for i in 0..iters as usize {
                    let (a, s) = fresh[i % fresh.len()];
                    let _ = black_box(b.add(a, s, NOW + 60, &mut rr));
                }
                start.elapsed()
            })
        });
        g.bench_function(format!("select ({offers} offers)"), |bch| {
            let mut rr = ChaCha20Rng::seed_from_u64(2);
            bch.iter(|| black_box(book.pick(NOW + 60, &mut rr, |_| true)))
        });
        g.bench_function(format!("selection(250) ({offers} offers)"), |bch| {
            let mut rr = ChaCha20Rng::seed_from_u64(4);
            bch.iter(|| black_box(book.selection(NOW + 60, &mut rr)))
        });
        g.bench_function(format!("untested(30) ({offers} offers)"), |bch| {
            let mut b = book.clone();
            bch.iter(|| black_box(b.untested(NOW + 60, 30, |_| true)))
        });
        g.bench_function(format!("encode ({offers} offers)"), |bch| {
            bch.iter(|| black_box(book.encode()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, sizes);
criterion_main!(benches);
