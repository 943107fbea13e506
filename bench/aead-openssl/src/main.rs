//! Seals and opens 1 MiB as 1024 SecretConnection frames (LE32 length, 1024 data bytes, 16-byte
//! tag, LE64 nonce counter) with several ChaCha20-Poly1305 implementations, timed on this
//! thread's CPU time (`/proc/thread-self/schedstat`, like `openssl speed`'s default user-time
//! figure). Every candidate must produce ring's frames byte for byte and open them.

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;

const MIB: usize = 1 << 20;
const PLAIN: usize = 1028;
const SEALED: usize = 1044;
const KEY: [u8; 32] = [7u8; 32];

fn seconds() -> f64 {
    std::env::var("SECONDS_PER_CASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0)
}

fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// Frames and seals `data` into `out` with `seal(nonce, body, tag)`.
fn frame_all(data: &[u8], out: &mut Vec<u8>, seal: &mut dyn FnMut([u8; 12], &mut [u8], &mut [u8])) {
    out.clear();
    for (i, chunk) in data.chunks(1024).enumerate() {
        let start = out.len();
        out.resize(start + SEALED, 0);
        let (body, tag) = out[start..].split_at_mut(PLAIN);
        body[..4].copy_from_slice(&(chunk.len() as u32).to_le_bytes());
        body[4..4 + chunk.len()].copy_from_slice(chunk);
        seal(nonce(i as u64), body, tag);
    }
}

/// Opens every sealed frame of `sealed`: copies it into `work` (the opener's read buffer) and
/// calls `open(nonce, body, tag)`, which decrypts `body` in place and checks `tag`.
fn open_all(
    sealed: &[u8],
    work: &mut [u8; SEALED],
    open: &mut dyn FnMut([u8; 12], &mut [u8], &[u8]) -> bool,
) {
    for (i, frame) in sealed.chunks(SEALED).enumerate() {
        work.copy_from_slice(frame);
        let (body, tag) = work.split_at_mut(PLAIN);
        assert!(open(nonce(i as u64), body, tag), "frame {i} must open");
    }
}

/// Runs `f` (one MiB of work) for about `seconds()` of CPU time; returns MB/s (10^6 bytes).
fn measure(name: &str, f: &mut dyn FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let start = cpu_ns();
    let mut runs = 0u64;
    while cpu_ns() - start < (seconds() * 1e9) as u64 {
        for _ in 0..20 {
            f();
        }
        runs += 20;
    }
    let secs = (cpu_ns() - start) as f64 / 1e9;
    let mbs = runs as f64 * MIB as f64 / secs / 1e6;
    println!("{name:<44} {mbs:>8.0} MB/s (CPU time, {runs} MiB)");
    mbs
}

fn main() {
    let data: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let mut out = Vec::with_capacity(MIB / 1024 * SEALED);
    let mut work = [0u8; SEALED];
    let only = std::env::args().nth(1).unwrap_or_default();
    let run = |name: &str| only.is_empty() || name.contains(&only);

    // ring 0.17: the baseline (what core/src/crypto.rs uses).
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &KEY).unwrap(),
    );
    let mut ring_seal = |n: [u8; 12], body: &mut [u8], tag: &mut [u8]| {
        let t = key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(n),
                ring::aead::Aad::empty(),
                body,
            )
            .unwrap();
        tag.copy_from_slice(t.as_ref());
    };
    frame_all(&data, &mut out, &mut ring_seal);
    let reference = out.clone();
    let mut ring_open = |n: [u8; 12], body: &mut [u8], tag: &[u8]| {
        key.open_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(n),
            ring::aead::Aad::empty(),
            ring::aead::Tag::try_from(tag).unwrap(),
            body,
            0..,
        )
        .is_ok()
    };
    if run("ring") {
        measure("seal ring 0.17", &mut || {
            frame_all(&data, &mut out, &mut ring_seal)
        });
        measure("open ring 0.17", &mut || {
            open_all(&reference, &mut work, &mut ring_open)
        });
    }

    // aws-lc-rs: the same (ring-compatible) API over AWS-LC.
    let aws = aws_lc_rs::aead::LessSafeKey::new(
        aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &KEY).unwrap(),
    );
    let mut aws_seal = |n: [u8; 12], body: &mut [u8], tag: &mut [u8]| {
        let t = aws
            .seal_in_place_separate_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(n),
                aws_lc_rs::aead::Aad::empty(),
                body,
            )
            .unwrap();
        tag.copy_from_slice(t.as_ref());
    };
    let mut aws_open = |n: [u8; 12], body: &mut [u8], tag: &[u8]| {
        aws.open_separate_gather(
            aws_lc_rs::aead::Nonce::assume_unique_for_key(n),
            aws_lc_rs::aead::Aad::empty(),
            &body.to_vec(),
            tag,
            body,
        )
        .is_ok()
    };
    if run("aws") {
        frame_all(&data, &mut out, &mut aws_seal);
        assert_eq!(out, reference, "aws-lc-rs must agree with ring");
        measure("seal aws-lc-rs 1.19", &mut || {
            frame_all(&data, &mut out, &mut aws_seal)
        });
        measure("open aws-lc-rs 1.19 (+1 KiB copy)", &mut || {
            open_all(&reference, &mut work, &mut aws_open)
        });
    }

    // OpenSSL (system libcrypto) with ONE reused cipher context: only the IV per frame.
    let mut ctx = CipherCtx::new().unwrap();
    ctx.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(&KEY), None)
        .unwrap();
    let mut dctx = CipherCtx::new().unwrap();
    dctx.decrypt_init(Some(Cipher::chacha20_poly1305()), Some(&KEY), None)
        .unwrap();
    let mut scratch = [0u8; 16];
    let mut ossl_seal = |n: [u8; 12], body: &mut [u8], tag: &mut [u8]| {
        ctx.encrypt_init(None, None, Some(&n)).unwrap();
        ctx.cipher_update_inplace(body, PLAIN).unwrap();
        ctx.cipher_final(&mut scratch).unwrap();
        ctx.tag(tag).unwrap();
    };
    let mut scratch2 = [0u8; 16];
    let mut ossl_open = |n: [u8; 12], body: &mut [u8], tag: &[u8]| {
        dctx.decrypt_init(None, None, Some(&n)).unwrap();
        dctx.set_tag(tag).unwrap();
        dctx.cipher_update_inplace(body, PLAIN).unwrap();
        dctx.cipher_final(&mut scratch2).is_ok()
    };
    if run("openssl") {
        frame_all(&data, &mut out, &mut ossl_seal);
        assert_eq!(out, reference, "openssl must agree with ring");
        measure(
            &format!(
                "seal openssl ({}, reused CipherCtx)",
                openssl::version::version()
            ),
            &mut || frame_all(&data, &mut out, &mut ossl_seal),
        );
        measure("open openssl (reused CipherCtx)", &mut || {
            open_all(&reference, &mut work, &mut ossl_open)
        });
    }

    // RustCrypto chacha20poly1305 0.11 (AVX2; AVX-512 ChaCha20 with --cfg chacha20_avx512).
    {
        use chacha20poly1305::aead::{AeadInOut, KeyInit};
        let rc = chacha20poly1305::ChaCha20Poly1305::new(&KEY.into());
        let mut rc_seal = |n: [u8; 12], body: &mut [u8], tag: &mut [u8]| {
            let t = rc
                .encrypt_inout_detached(&n.into(), &[], body.into())
                .unwrap();
            tag.copy_from_slice(&t);
        };
        let mut rc_open = |n: [u8; 12], body: &mut [u8], tag: &[u8]| {
            let t: [u8; 16] = tag.try_into().unwrap();
            rc.decrypt_inout_detached(&n.into(), &[], body.into(), &t.into())
                .is_ok()
        };
        if run("rustcrypto") {
            frame_all(&data, &mut out, &mut rc_seal);
            assert_eq!(out, reference, "chacha20poly1305 must agree with ring");
            measure("seal rustcrypto chacha20poly1305 0.11", &mut || {
                frame_all(&data, &mut out, &mut rc_seal)
            });
            measure("open rustcrypto chacha20poly1305 0.11", &mut || {
                open_all(&reference, &mut work, &mut rc_open)
            });
        }
    }

    // graviola 0.4.
    let gv = graviola::aead::ChaCha20Poly1305::new(KEY);
    let mut gv_seal = |n: [u8; 12], body: &mut [u8], tag: &mut [u8]| {
        gv.encrypt(&n, &[], body, tag.try_into().unwrap());
    };
    let mut gv_open =
        |n: [u8; 12], body: &mut [u8], tag: &[u8]| gv.decrypt(&n, &[], body, tag).is_ok();
    if run("graviola") {
        frame_all(&data, &mut out, &mut gv_seal);
        assert_eq!(out, reference, "graviola must agree with ring");
        measure("seal graviola 0.4", &mut || {
            frame_all(&data, &mut out, &mut gv_seal)
        });
        measure("open graviola 0.4", &mut || {
            open_all(&reference, &mut work, &mut gv_open)
        });
    }
}
