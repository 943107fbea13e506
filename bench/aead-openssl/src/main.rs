//! Seals and opens 1 MiB as 1024 SecretConnection frames (LE32 length, 1024 data bytes, 16-byte
//! tag, LE64 nonce counter) with OpenSSL's and ring's ChaCha20-Poly1305, timed on this thread's
//! CPU time (`/proc/thread-self/schedstat`, like `openssl speed`'s default user-time figure).

use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;

const MIB: usize = 1 << 20;
const PLAIN: usize = 1028;
const SEALED: usize = 1044;
const KEY: [u8; 32] = [7u8; 32];
const SECONDS: f64 = 3.0;

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

/// Runs `f` (one MiB of work) for about SECONDS of CPU time; returns MB/s (10^6 bytes).
fn measure(name: &str, f: &mut dyn FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    let start = cpu_ns();
    let mut runs = 0u64;
    while cpu_ns() - start < (SECONDS * 1e9) as u64 {
        for _ in 0..20 {
            f();
        }
        runs += 20;
    }
    let secs = (cpu_ns() - start) as f64 / 1e9;
    let mbs = runs as f64 * MIB as f64 / secs / 1e6;
    println!("{name:<40} {mbs:>8.0} MB/s (CPU time, {runs} MiB)");
    mbs
}

fn main() {
    let data: Vec<u8> = (0..MIB).map(|i| i as u8).collect();
    let mut out = Vec::with_capacity(MIB / 1024 * SEALED);

    let mut ctx = CipherCtx::new().unwrap();
    ctx.encrypt_init(Some(Cipher::chacha20_poly1305()), Some(&KEY), None)
        .unwrap();
    let mut scratch = [0u8; 16];
    let ossl = measure("seal openssl (EVP)", &mut || {
        frame_all(&data, &mut out, &mut |n, body, tag| {
            ctx.encrypt_init(None, None, Some(&n)).unwrap();
            ctx.cipher_update_inplace(body, PLAIN).unwrap();
            ctx.cipher_final(&mut scratch).unwrap();
            ctx.tag(tag).unwrap();
        })
    });
    let sealed_by_openssl = out.clone();
    // Not a valid AEAD use (one nonce, no tags): only the streaming cipher work, as in
    // `openssl speed -evp` without `-aead`, to show how much the per-frame EVP calls cost.
    ctx.encrypt_init(None, None, Some(&nonce(0))).unwrap();
    measure("stream openssl (no per-frame init/tag)", &mut || {
        frame_all(&data, &mut out, &mut |_n, body, _tag| {
            ctx.cipher_update_inplace(body, PLAIN).unwrap();
        })
    });

    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &KEY).unwrap(),
    );
    let ring_mbs = measure("seal ring", &mut || {
        frame_all(&data, &mut out, &mut |n, body, tag| {
            let t = key
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(n),
                    ring::aead::Aad::empty(),
                    body,
                )
                .unwrap();
            tag.copy_from_slice(t.as_ref());
        })
    });
    assert_eq!(
        out, sealed_by_openssl,
        "both implementations must agree byte for byte"
    );
    println!(
        "ring / openssl-through-our-framing: {:.0} %",
        100.0 * ring_mbs / ossl
    );
}
