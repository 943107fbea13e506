//! Fuzz entry points for `addrbook`: the file decoders and operation sequences.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::addr::NetAddr;
use crate::addrbook::{AddrBook, AddrBookConfig};
use crate::ids::NodeId;

/// Feeds arbitrary bytes to [`AddrBook::decode`], to the anchors decoder
/// ([`crate::engine::anchors::decode`]) and, if UTF-8, to the `addrbook.json` importer. Under `cfg(fuzzing)` the checksum is not enforced, so the parser behind it is
/// reached. Anything accepted must pass `check()`, and its encoding must reload to itself.
pub fn decode(data: &[u8]) {
    // The anchors file kept beside the book (G12): decode, and a round trip must agree.
    if let Ok(anchors) = crate::engine::anchors::decode(data) {
        assert!(anchors.len() <= crate::engine::anchors::MAX_ANCHORS);
        let bytes = crate::engine::anchors::encode(&anchors);
        assert_eq!(
            crate::engine::anchors::decode(&bytes).ok(),
            Some(anchors),
            "anchors round trip differs"
        );
    }
    if let Ok(book) = AddrBook::decode(data, AddrBookConfig::default()) {
        assert!(book.check().is_ok(), "decoded book fails check");
        let bytes = book.encode();
        match AddrBook::decode(&bytes, AddrBookConfig::default()) {
            Ok(again) => assert_eq!(again.encode(), bytes, "encode/decode is not stable"),
            Err(e) => panic!("own encoding refused: {e}"),
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        if let Ok(book) =
            AddrBook::import_cometbft_json(text, AddrBookConfig::default(), &mut rng, 1_700_000_000)
        {
            assert!(book.check().is_ok(), "imported book fails check");
        }
    }
}

struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }
}

/// A small address universe so that duplicates, shared groups and collisions are frequent.
fn addr(sel: u8, port: u8, idb: u8) -> NetAddr {
    let ip = if sel & 0x80 == 0 {
        IpAddr::V4(Ipv4Addr::new(
            20 + (sel & 0x7) * 3,
            (sel >> 3) & 0x3,
            sel,
            1,
        ))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2a01,
            u16::from(sel & 0x3),
            0,
            0,
            0,
            0,
            0,
            u16::from(sel),
        ))
    };
    let mut id = [0u8; 20];
    id[0] = idb & 0x1f;
    NetAddr::new(
        NodeId(id),
        SocketAddr::new(ip, 26_656 + u16::from(port & 0x7)),
    )
}

/// Interprets bytes as up to 10^4 book operations (add, attempt, fail, good, ban, reinstate,
/// resolve collisions, remove, pick, selection and untested, encode/decode) with a clock that moves forward;
/// `check()` must hold after every one (G23), and a final encode/decode round trip must agree.
pub fn ops(data: &[u8]) {
    let mut input = Input { data };
    let seed = u64::from(input.byte().unwrap_or(0));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut book = AddrBook::new(AddrBookConfig::default(), &mut rng);
    let mut now: u64 = 1_700_000_000;
    let mut n = 0;
    while let Some(op) = input.byte() {
        n += 1;
        if n > 10_000 {
            break;
        }
        let (a, b, c) = (
            input.byte().unwrap_or(0),
            input.byte().unwrap_or(0),
            input.byte().unwrap_or(0),
        );
        let na = addr(a, b, c);
        now += u64::from(b) * 97;
        match op % 12 {
            0..=2 => {
                let src = addr(c, 0, 0).addr.ip();
                let _ = book.add(na, src, now, &mut rng);
            }
            3 => book.mark_attempt(na.addr, now),
            4 => book.mark_failed(na.addr, now),
            5 => {
                let _ = book.mark_good(na.addr, now, &mut rng);
            }
            6 => {
                // Both ban scopes: id and IP, or the id alone (duplicate IPs allowed).
                if c & 1 == 0 {
                    let _ = book.ban(na.id, na.addr.ip(), now);
                } else {
                    let d = std::time::Duration::from_secs(u64::from(c) * 60);
                    let _ = book.ban_scoped(na.id, None, now, d);
                }
            }
            7 => {
                now += u64::from(c) * 3600;
                let _ = book.reinstate_expired(now, &mut rng);
            }
            8 => {
                let _ = book.resolve_collisions(now);
                let _ = book.tried_collision_to_test(&mut rng);
            }
            9 => book.remove(na.addr),
            10 => {
                let _ = book.pick(now, &mut rng, |x| x.addr.port() % 2 == u16::from(c % 2));
                let s = book.selection(now, &mut rng);
                assert!(s.len() <= 250 && s.len() <= book.len() * 23 / 100 + 1);
                // Builds the index of never-reached entries (then held to the book by `check`).
                let u = book.untested(now, usize::from(c % 16), |x| x.addr.port() % 3 != 0);
                assert!(u.len() <= usize::from(c % 16));
            }
            _ => {
                let re = AddrBook::decode(&book.encode(), AddrBookConfig::default());
                match re {
                    Ok(b2) => assert_eq!(b2.encode(), book.encode(), "round trip differs"),
                    Err(e) => panic!("own encoding refused: {e}"),
                }
            }
        }
        if let Err(e) = book.check() {
            panic!("after op {n} ({}): {e}", op % 12);
        }
    }
    if let Err(e) = book.check_full() {
        panic!("at the end: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed `addrbook_decode` seed runs clean; the format 2 book (an id-only ban)
    /// and the anchors file are valid, so the fuzzer starts past their checksums.
    #[test]
    fn decode_corpus_runs_clean() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/addrbook_decode");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("corpus dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in &names {
            decode(&std::fs::read(p).expect("seed"));
        }
        let book = std::fs::read(dir.join("ours_id_only_ban.bin")).expect("seed");
        let b = AddrBook::decode(&book, AddrBookConfig::default()).expect("a valid book");
        assert_eq!((book[8], book[9], b.len_banned()), (2, 2, 1));
        let anchors = std::fs::read(dir.join("anchors_two.bin")).expect("seed");
        assert_eq!(
            crate::engine::anchors::decode(&anchors).map(|a| a.len()),
            Ok(2)
        );
    }

    /// Both ban scopes reach the book in an op sequence (op 6 with an even and an odd operand).
    #[test]
    fn ops_with_both_ban_scopes_run_clean() {
        ops(&[
            1, 0, 5, 9, 2, 0, 5, 9, 2, 6, 5, 9, 2, 6, 6, 0, 3, 11, 0, 0, 0,
        ]);
    }
}
