//! Persistence (G22, G6) and CometBFT `addrbook.json` import/export (spec 6.9).

mod addrbook_util;

use addrbook_util::*;
use cometmesh_core::addrbook::{AddrBook, AddrBookConfig, DecodeError, ImportError};
use rand_core::RngCore;

const SAMPLE: &str = include_str!("data/addrbook.json");
const LEGACY: &str = include_str!("data/addrbook1");

/// A small mixed book: new entries with several references, tried entries, bans.
fn small_book(seed: u64) -> AddrBook {
    let mut r = rng(seed);
    let mut b = book(seed);
    while b.len() < 40 {
        let a = netaddr(random_ip(&mut r), &mut r);
        if b.add(a, random_ip(&mut r), T0, &mut r).is_ok() {
            let _ = b.add(a, random_ip(&mut r), T0 + 1, &mut r);
            if r.next_u32().is_multiple_of(3) {
                let _ = b.mark_good(a.addr, T0 + 2, &mut r);
            }
        }
    }
    for _ in 0..3 {
        let a = netaddr(random_ip(&mut r), &mut r);
        b.add(a, random_ip(&mut r), T0, &mut r).unwrap();
        b.ban(a.id, a.addr.ip(), T0 + 3);
    }
    b.check().unwrap();
    b
}

/// Round trip gives structural equality and identical bytes (Bitcoin's `addrman_serdeser`).
#[test]
fn g22_round_trip() {
    let b = small_book(1);
    let bytes = b.encode();
    let d = AddrBook::decode(&bytes, AddrBookConfig::default()).unwrap();
    assert_eq!(d.encode(), bytes);
    assert_eq!(
        d.entries().collect::<Vec<_>>(),
        b.entries().collect::<Vec<_>>()
    );
    assert_eq!(
        (d.len_new(), d.len_tried(), d.len_banned()),
        (b.len_new(), b.len_tried(), b.len_banned())
    );
    assert!(d.len_banned() == 3);
    d.check().unwrap();
    let empty = book(2);
    let d = AddrBook::decode(&empty.encode(), AddrBookConfig::default()).unwrap();
    assert!(d.is_empty() && d.key() == empty.key());
}

/// Every proper prefix is rejected with a typed error.
#[test]
fn g22_every_truncation_rejected() {
    let bytes = small_book(3).encode();
    for n in 0..bytes.len() {
        match AddrBook::decode(&bytes[..n], AddrBookConfig::default()) {
            Err(DecodeError::Truncated | DecodeError::Checksum) => {}
            other => panic!("prefix {n}: {other:?}"),
        }
    }
}

/// 10^4 random bit flips are all rejected (G22).
#[test]
fn g22_bit_flips_rejected() {
    let bytes = small_book(4).encode();
    let mut r = rng(5);
    for _ in 0..10_000 {
        let mut f = bytes.clone();
        let bit = (r.next_u64() % (f.len() as u64 * 8)) as usize;
        f[bit / 8] ^= 1 << (bit % 8);
        assert!(
            AddrBook::decode(&f, AddrBookConfig::default()).is_err(),
            "bit {bit}"
        );
    }
}

/// Foreign and newer files are typed errors.
#[test]
fn g22_foreign_and_newer_files() {
    let cfg = AddrBookConfig::default;
    assert_eq!(
        AddrBook::decode(SAMPLE.as_bytes(), cfg()).unwrap_err(),
        DecodeError::Foreign
    );
    assert_eq!(
        AddrBook::decode(LEGACY.as_bytes(), cfg()).unwrap_err(),
        DecodeError::Foreign
    );
    assert_eq!(
        AddrBook::decode(b"", cfg()).unwrap_err(),
        DecodeError::Truncated
    );
    let mut newer = book(6).encode();
    newer[9] = 3;
    assert!(matches!(
        AddrBook::decode(&newer, cfg()),
        Err(DecodeError::UnsupportedVersion { found: 3, .. })
    ));
    // A correct checksum over inconsistent content is still refused.
    let mut bad = small_book(7).encode();
    let n = bad.len() - 32;
    bad[38] = bad[38].wrapping_add(1); // the low byte of the new-entry count
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(&bad[..n])
    };
    bad[n..].copy_from_slice(&digest);
    assert!(matches!(
        AddrBook::decode(&bad, cfg()),
        Err(DecodeError::Corrupt(_))
    ));
}

/// G6: a file written under another group map is rebucketed and passes the checker.
#[test]
fn g6_rebucket_on_group_map_change() {
    let b = small_book(8);
    let cfg = AddrBookConfig {
        ipv4_group_bits: 24,
        ..AddrBookConfig::default()
    };
    let d = AddrBook::decode(&b.encode(), cfg).unwrap();
    d.check().unwrap();
    assert!(d.len() >= b.len() * 9 / 10);
    for (a, _) in d.entries() {
        let buckets = d.new_buckets_of(&a.addr);
        assert!(buckets.len() <= 1);
    }
}

/// A realistic CometBFT `addrbook.json` imports: old entries to tried, private ones refused in
/// strict mode; export produces a file we (and CometBFT's layout) read back.
#[test]
fn import_and_export_cometbft_json() {
    let mut r = rng(9);
    let now = parse_now();
    let b = AddrBook::import_cometbft_json(SAMPLE, AddrBookConfig::default(), &mut r, now).unwrap();
    b.check().unwrap();
    assert_eq!(b.len(), 20, "two private addresses refused in strict mode");
    assert_eq!(b.len_tried(), 5);
    let v6: std::net::SocketAddr = "[2a01:4f8:10a:3a2::2]:26656".parse().unwrap();
    assert!(b.contains(&v6));
    let lax = AddrBookConfig {
        strict: false,
        ..AddrBookConfig::default()
    };
    assert_eq!(
        AddrBook::import_cometbft_json(SAMPLE, lax, &mut r, now)
            .unwrap()
            .len(),
        22
    );

    let out = b.export_cometbft_json();
    assert!(out.starts_with("{\n\t\"key\": \""));
    assert!(out.contains("\"bucket_type\": 2") && out.contains("0001-01-01T00:00:00Z"));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["key"].as_str().unwrap().len(), 24);
    for e in v["addrs"].as_array().unwrap() {
        for bkt in e["buckets"].as_array().unwrap() {
            let max = if e["bucket_type"] == 2 { 64 } else { 256 };
            assert!(bkt.as_u64().unwrap() < max);
        }
    }
    let again =
        AddrBook::import_cometbft_json(&out, AddrBookConfig::default(), &mut r, now).unwrap();
    assert_eq!(again.len(), b.len());
    assert_eq!(again.len_tried(), b.len_tried());
    let mut x: Vec<_> = again.entries().collect();
    let mut y: Vec<_> = b.entries().collect();
    x.sort();
    y.sort();
    assert_eq!(x, y);
}

fn parse_now() -> u64 {
    1_714_600_000 + 10 * 86_400
}

/// The 2017 legacy layout (`addrbook1`) and malformed files are typed errors, not panics.
#[test]
fn legacy_and_malformed_json_rejected() {
    let mut r = rng(10);
    let cfg = AddrBookConfig::default;
    assert!(matches!(
        AddrBook::import_cometbft_json(LEGACY, cfg(), &mut r, T0),
        Err(ImportError::Json(_))
    ));
    let bad_id = SAMPLE.replacen("76e97e7f6935242df4d8e0a7802c78252d0d6ed6", "xyz", 1);
    assert!(matches!(
        AddrBook::import_cometbft_json(&bad_id, cfg(), &mut r, T0),
        Err(ImportError::Entry { index: 0, .. })
    ));
    let bad_time = SAMPLE.replacen("2024-05-02T08:38:08.4239385Z", "yesterday", 1);
    assert!(AddrBook::import_cometbft_json(&bad_time, cfg(), &mut r, T0).is_err());
    for n in (0..SAMPLE.len()).step_by(97) {
        assert!(AddrBook::import_cometbft_json(&SAMPLE[..n], cfg(), &mut r, T0).is_err());
    }
    let empty = "{\"key\": \"000000000000000000000000\", \"addrs\": null}";
    assert!(
        AddrBook::import_cometbft_json(empty, cfg(), &mut r, T0)
            .unwrap()
            .is_empty()
    );
}

/// A format 1 file (written before a ban could leave out the IP) still loads, with its bans;
/// a book without id-only bans is written so that a format 1 reader still loads it.
#[test]
fn format_1_files_still_load() {
    let old = include_bytes!("data/addrbook_v1_bans.bin");
    assert_eq!((old[8], old[9]), (1, 1), "format 1, lowest compatible 1");
    let d = AddrBook::decode(old, AddrBookConfig::default()).unwrap();
    let b = small_book(42);
    assert_eq!(
        d.entries().collect::<Vec<_>>(),
        b.entries().collect::<Vec<_>>()
    );
    assert_eq!(d.len_banned(), 3);
    d.check().unwrap();
    let now = d.encode();
    assert_eq!(
        (now[8], now[9]),
        (2, 1),
        "format 2, readable by format 1 readers"
    );
    assert_eq!(now, b.encode());
    // Apart from the version byte (and so the checksum) and the order of each entry's bucket
    // list (ascending now, the order the references came before), the layout is format 1's;
    // a decoder places the references in any order.
    assert_eq!(now.len(), old.len());
    for (a, _) in b.entries() {
        assert_eq!(d.new_buckets_of(&a.addr), b.new_buckets_of(&a.addr));
        assert!(d.new_buckets_of(&a.addr).windows(2).all(|w| w[0] < w[1]));
    }
    assert!(
        b.entries()
            .any(|(a, _)| b.new_buckets_of(&a.addr).len() > 1),
        "the sample has entries with several references"
    );
}

/// A ban on the node id alone (duplicate IPs allowed) round-trips; such a file says it needs a
/// format 2 reader.
#[test]
fn id_only_ban_round_trips() {
    let mut r = rng(7);
    let mut b = small_book(5);
    let a = netaddr(random_ip(&mut r), &mut r);
    let neighbour = cometmesh_core::addr::NetAddr::new(
        id(&mut r),
        std::net::SocketAddr::new(a.addr.ip(), a.addr.port() + 1),
    );
    b.add(a, random_ip(&mut r), T0, &mut r).unwrap();
    b.add(neighbour, random_ip(&mut r), T0, &mut r).unwrap();
    assert!(b.ban_scoped(a.id, None, T0, std::time::Duration::from_secs(600)));
    assert!(
        b.contains(&neighbour.addr),
        "the neighbour on the same IP stays"
    );
    assert!(!b.contains(&a.addr));
    let bytes = b.encode();
    assert_eq!((bytes[8], bytes[9]), (2, 2));
    let d = AddrBook::decode(&bytes, AddrBookConfig::default()).unwrap();
    assert_eq!(d.encode(), bytes);
    assert!(d.is_id_banned(&a.id, T0 + 1));
    assert!(!d.is_ip_banned(&a.addr.ip(), T0 + 1));
    assert!(!d.is_id_banned(&a.id, T0 + 600));
    assert_eq!(d.len_banned(), 4);
    d.check().unwrap();
    // A format 1 file may not use the id-only tag.
    let mut v1 = bytes[..bytes.len() - 32].to_vec();
    v1[8] = 1;
    v1[9] = 1;
    let sum = {
        use sha2::Digest;
        sha2::Sha256::digest(&v1)
    };
    v1.extend_from_slice(&sum);
    assert!(matches!(
        AddrBook::decode(&v1, AddrBookConfig::default()),
        Err(DecodeError::Corrupt(_))
    ));
}
