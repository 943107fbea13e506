//! The few cryptographic primitives of the SecretConnection, behind one small interface.
//!
//! Everything the handshake and the frames need is here: X25519, HKDF-SHA256 (96 bytes), the
//! merlin transcript challenge, ChaCha20-Poly1305 (via `ring`, chosen by measurement, see
//! `bench/README.md`), Ed25519 signing and verification. Under `cfg(fuzzing)` an insecure shim replaces
//! the DH, the AEAD and signature verification so that fuzzers reach the code behind the MAC;
//! with feature `sim` the simulator can switch to the same shim per step (its modelled-crypto
//! mode, for scale runs, which also skips signing); builds without either never compile it.

/// The HKDF `info` string (spec 2.1).
const HKDF_INFO: &[u8] = b"TENDERMINT_SECRET_CONNECTION_KEY_AND_CHALLENGE_GEN";
/// The merlin transcript label (spec 2.1).
const TRANSCRIPT_LABEL: &[u8] = b"TENDERMINT_SECRET_CONNECTION_TRANSCRIPT_HASH";

/// Length of the Poly1305 tag appended to each sealed frame.
pub(crate) const TAG_LEN: usize = 16;

/// HKDF-SHA256 with IKM = `dh`, no salt, the SecretConnection info string, 96 bytes out
/// (spec 2.2 step 7).
pub(crate) fn hkdf96(dh: &[u8; 32]) -> [u8; 96] {
    let mut okm = [0u8; 96];
    // 96 ≤ 255 * 32, so expansion cannot fail; an error here would be a bug, not peer input.
    hkdf::Hkdf::<sha2::Sha256>::new(None, dh)
        .expand(HKDF_INFO, &mut okm)
        .expect("96 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// The merlin transcript challenge over the sorted ephemeral keys and the DH output
/// (spec 2.2 steps 4, 6 and 8).
pub(crate) fn transcript_challenge(lo: &[u8; 32], hi: &[u8; 32], dh: &[u8; 32]) -> [u8; 32] {
    let mut transcript = merlin::Transcript::new(TRANSCRIPT_LABEL);
    transcript.append_message(b"EPHEMERAL_LOWER_PUBLIC_KEY", lo);
    transcript.append_message(b"EPHEMERAL_UPPER_PUBLIC_KEY", hi);
    transcript.append_message(b"DH_SECRET", dh);
    let mut challenge = [0u8; 32];
    transcript.challenge_bytes(b"SECRET_CONNECTION_MAC", &mut challenge);
    challenge
}

/// The 12-byte AEAD nonce for frame counter `counter`: four zero bytes, then LE64 (spec 2.4).
pub(crate) fn frame_nonce(counter: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

#[cfg(all(not(fuzzing), not(any(feature = "sim", feature = "fuzzing"))))]
pub(crate) use real::{BoundKey, FrameKey, diffie_hellman, verify_ed25519, x25519_public};

#[cfg(fuzzing)]
pub(crate) use shim::{BoundKey, FrameKey, diffie_hellman, verify_ed25519, x25519_public};

/// Signs the handshake's challenge with our node key (plain Ed25519).
#[cfg(not(all(not(fuzzing), any(feature = "sim", feature = "fuzzing"))))]
pub(crate) fn sign_ed25519(key: &crate::identity::NodeKey, message: &[u8]) -> [u8; 64] {
    key.sign(message)
}

#[cfg(all(not(fuzzing), any(feature = "sim", feature = "fuzzing")))]
pub(crate) use modelled::sign_ed25519;
#[cfg(all(not(fuzzing), any(feature = "sim", feature = "fuzzing")))]
pub(crate) use modelled::with_modelled_crypto;
#[cfg(all(not(fuzzing), any(feature = "sim", feature = "fuzzing")))]
pub(crate) use modelled::{BoundKey, FrameKey, diffie_hellman, verify_ed25519, x25519_public};

/// Under `cfg(fuzzing)` the shim is always in force: nothing to switch.
#[cfg(all(fuzzing, any(feature = "sim", feature = "fuzzing")))]
pub(crate) fn with_modelled_crypto<T>(_modelled: bool, f: impl FnOnce() -> T) -> T {
    f()
}

/// Features `sim` and `fuzzing` (which compile the simulator): the real primitives, or the shim's while this thread runs a simulator
/// step with `SimConfig::modelled_crypto` (see [`with_modelled_crypto`]). Builds without the
/// simulator never compile the switch.
#[cfg(all(not(fuzzing), any(feature = "sim", feature = "fuzzing")))]
mod modelled {
    use std::cell::Cell;

    use super::{TAG_LEN, real, shim};

    thread_local! {
        static MODELLED: Cell<bool> = const { Cell::new(false) };
    }

    fn on() -> bool {
        MODELLED.with(Cell::get)
    }

    /// Runs `f` with the shim's primitives on this thread when `modelled` (and the real ones
    /// otherwise), then restores what was in force.
    pub(crate) fn with_modelled_crypto<T>(modelled: bool, f: impl FnOnce() -> T) -> T {
        let before = MODELLED.with(|m| m.replace(modelled));
        let out = f();
        MODELLED.with(|m| m.set(before));
        out
    }

    pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        if on() {
            shim::x25519_public(secret)
        } else {
            real::x25519_public(secret)
        }
    }

    pub(crate) fn diffie_hellman(secret: &[u8; 32], their_public: &[u8; 32]) -> Option<[u8; 32]> {
        if on() {
            shim::diffie_hellman(secret, their_public)
        } else {
            real::diffie_hellman(secret, their_public)
        }
    }

    pub(crate) fn verify_ed25519(public_key: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
        if on() {
            shim::verify_ed25519(public_key, message, sig)
        } else {
            real::verify_ed25519(public_key, message, sig)
        }
    }

    /// Signs with our node key; while modelled, 64 zero bytes (the shim accepts every
    /// signature, and the auth message keeps its size).
    pub(crate) fn sign_ed25519(key: &crate::identity::NodeKey, message: &[u8]) -> [u8; 64] {
        if on() { [0u8; 64] } else { key.sign(message) }
    }

    /// A frame key made while modelled stays modelled (and a real one real) for its life.
    /// The real key is boxed so that the enum stays a pointer wide: a modelled scale run
    /// holds hundreds of thousands of connection ends, two keys each, all of them the shim's
    /// empty one. Builds without the simulator use `real::FrameKey` directly.
    #[derive(Clone)]
    pub(crate) enum FrameKey {
        Real(Box<real::FrameKey>),
        Modelled(shim::FrameKey),
    }

    /// A [`FrameKey`] ready to seal and open, for the length of one batch of frames.
    #[allow(clippy::large_enum_variant)] // lives on the stack for one call, never stored
    pub(crate) enum BoundKey {
        Real(real::BoundKey),
        Modelled(shim::BoundKey),
    }

    impl FrameKey {
        pub(crate) fn new(key: &[u8; 32]) -> Self {
            if on() {
                FrameKey::Modelled(shim::FrameKey::new(key))
            } else {
                FrameKey::Real(Box::new(real::FrameKey::new(key)))
            }
        }

        pub(crate) fn bind(&self) -> BoundKey {
            match self {
                FrameKey::Real(k) => BoundKey::Real(k.bind()),
                FrameKey::Modelled(k) => BoundKey::Modelled(k.bind()),
            }
        }
    }

    impl BoundKey {
        pub(crate) fn seal(&self, nonce: [u8; 12], buf: &mut [u8]) -> [u8; TAG_LEN] {
            match self {
                BoundKey::Real(k) => k.seal(nonce, buf),
                BoundKey::Modelled(k) => k.seal(nonce, buf),
            }
        }

        pub(crate) fn open(&self, nonce: [u8; 12], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
            match self {
                BoundKey::Real(k) => k.open(nonce, buf, tag),
                BoundKey::Modelled(k) => k.open(nonce, buf, tag),
            }
        }
    }
}

#[cfg(not(fuzzing))]
mod real {
    use super::TAG_LEN;

    /// The X25519 public key of a 32-byte secret (clamped internally, as X25519 does).
    pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        let secret = x25519_dalek::StaticSecret::from(*secret);
        x25519_dalek::PublicKey::from(&secret).to_bytes()
    }

    /// X25519 DH; `None` when the output is all zeros (a low-order remote point, spec 2.2 step 5).
    pub(crate) fn diffie_hellman(secret: &[u8; 32], their_public: &[u8; 32]) -> Option<[u8; 32]> {
        let secret = x25519_dalek::StaticSecret::from(*secret);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*their_public));
        shared.was_contributory().then(|| shared.to_bytes())
    }

    /// Plain Ed25519 verification (RFC 8032); false for a key that is not a curve point.
    pub(crate) fn verify_ed25519(public_key: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
            return false;
        };
        // Non-strict RFC 8032 verification: honest signatures pass it as they pass Go's x/crypto
        // (v0.34/v0.37) and ZIP-215 (v0.38) rules (spec 2.2 step 12).
        ed25519_dalek::Verifier::verify(&key, message, &ed25519_dalek::Signature::from_bytes(sig))
            .is_ok()
    }

    /// One direction's ChaCha20-Poly1305 key (RFC 8439): its 32 bytes. `ring`'s key object
    /// is built by [`FrameKey::bind`] for each batch of frames and dropped after it: ring sizes
    /// that object for AES-GCM (544 bytes, where ChaCha20 needs the 32), and each connection
    /// end holds two keys for its whole life, so keeping ring's objects would cost about
    /// 1 KiB per idle connection end; building one costs a few copies of the key per batch.
    #[derive(Clone)]
    pub(crate) struct FrameKey([u8; 32]);

    /// `ring`'s ChaCha20-Poly1305 key, for one batch of frames.
    pub(crate) struct BoundKey(ring::aead::LessSafeKey);

    impl FrameKey {
        /// A key from 32 bytes.
        pub(crate) fn new(key: &[u8; 32]) -> Self {
            FrameKey(*key)
        }

        /// `ring`'s key object for this key.
        pub(crate) fn bind(&self) -> BoundKey {
            let unbound = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.0)
                .expect("ChaCha20-Poly1305 takes a 32-byte key");
            BoundKey(ring::aead::LessSafeKey::new(unbound))
        }
    }

    impl BoundKey {
        /// Encrypts `buf` in place (empty AAD) and returns the tag.
        pub(crate) fn seal(&self, nonce: [u8; 12], buf: &mut [u8]) -> [u8; TAG_LEN] {
            let tag = self
                .0
                .seal_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    buf,
                )
                .expect("a 1028-byte frame is far below the ChaCha20-Poly1305 limit");
            let mut out = [0u8; TAG_LEN];
            out.copy_from_slice(tag.as_ref());
            out
        }

        /// Decrypts `buf` in place if `tag` authenticates it; false otherwise (contents then
        /// unspecified).
        pub(crate) fn open(&self, nonce: [u8; 12], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
            self.0
                .open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::empty(),
                    ring::aead::Tag::from(*tag),
                    buf,
                    0..,
                )
                .is_ok()
        }
    }
}

/// INSECURE stand-ins for fuzzing (like rustls' fuzzing provider) and for the simulator's
/// modelled-crypto mode: the DH never fails, the AEAD is the identity with a fixed all-zero
/// tag, and every signature verifies. Frame sizes and framing are those of the real AEAD.
#[cfg(any(fuzzing, feature = "sim", feature = "fuzzing"))]
mod shim {
    use super::TAG_LEN;

    /// Identity "public key".
    pub(crate) fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
        *secret
    }

    /// Never fails: XOR of the two inputs.
    pub(crate) fn diffie_hellman(secret: &[u8; 32], their_public: &[u8; 32]) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        for (o, (a, b)) in out.iter_mut().zip(secret.iter().zip(their_public)) {
            *o = a ^ b;
        }
        Some(out)
    }

    /// Accepts every signature.
    pub(crate) fn verify_ed25519(_public_key: &[u8; 32], _message: &[u8], _sig: &[u8; 64]) -> bool {
        true
    }

    /// Identity AEAD whose tag is 16 zero bytes.
    #[derive(Clone)]
    pub(crate) struct FrameKey;

    /// The shim's key for a batch of frames: the same nothing.
    pub(crate) struct BoundKey;

    impl FrameKey {
        /// Ignores the key.
        pub(crate) fn new(_key: &[u8; 32]) -> Self {
            FrameKey
        }

        /// Nothing to build.
        pub(crate) fn bind(&self) -> BoundKey {
            BoundKey
        }
    }

    impl BoundKey {
        /// Leaves `buf` as it is; the tag is all zeros.
        pub(crate) fn seal(&self, _nonce: [u8; 12], _buf: &mut [u8]) -> [u8; TAG_LEN] {
            [0u8; TAG_LEN]
        }

        /// Accepts exactly the all-zero tag.
        pub(crate) fn open(&self, _nonce: [u8; 12], _buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
            *tag == [0u8; TAG_LEN]
        }
    }
}

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).expect("64 hex characters");
        out
    }

    /// Merlin's published "test protocol" KAT, through the same crate and calls we use.
    #[test]
    fn merlin_simple_kat() {
        let mut t = merlin::Transcript::new(b"test protocol");
        t.append_message(b"some label", b"some data");
        let mut c = [0u8; 32];
        t.challenge_bytes(b"challenge", &mut c);
        assert_eq!(
            c,
            hex32("d5a21972d0d5fe320c0d263fac7fffb8145aa640af6e9bca177c03c7efcf0615")
        );
    }

    #[test]
    fn all_zero_dh_is_rejected() {
        // The identity point (u = 0) is low order: the output is all zeros.
        assert_eq!(diffie_hellman(&[7u8; 32], &[0u8; 32]), None);
        // u = 1 has order 4.
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(diffie_hellman(&[7u8; 32], &one), None);
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = FrameKey::new(&[9u8; 32]).bind();
        let mut buf = *b"hello frame";
        let tag = key.seal(frame_nonce(3), &mut buf);
        let sealed = buf;
        assert!(key.open(frame_nonce(3), &mut buf, &tag));
        assert_eq!(&buf, b"hello frame");
        let mut wrong_nonce = sealed;
        assert!(!key.open(frame_nonce(4), &mut wrong_nonce, &tag));
        let mut flipped = sealed;
        flipped[0] ^= 1;
        assert!(!key.open(frame_nonce(3), &mut flipped, &tag));
    }
}
