//! The 1044-byte encrypted frames of an established SecretConnection (spec 2.3, 2.4).

use bytes::BytesMut;

use crate::crypto::{BoundKey, FrameKey, TAG_LEN, frame_nonce};

/// Most data bytes in one frame (`dataMaxSize`).
pub const DATA_MAX_SIZE: usize = 1024;
/// Plaintext frame size: LE32 length prefix plus [`DATA_MAX_SIZE`] bytes (`totalFrameSize`).
pub const TOTAL_FRAME_SIZE: usize = 4 + DATA_MAX_SIZE;
/// Size of every sealed frame on the wire.
pub const SEALED_FRAME_SIZE: usize = TOTAL_FRAME_SIZE + TAG_LEN;

/// How far around the expected nonce a frame that fails to decrypt is tried again, only to
/// name the failure (replayed or reordered); the connection is closed either way.
const DIAGNOSIS_WINDOW: u64 = 8;

/// Why a frame could not be sealed or opened. Every error is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame does not authenticate under any nearby nonce: it was altered in transit or
    /// sealed with another key.
    #[error("failed to decrypt SecretConnection frame {nonce}: tampered or foreign data")]
    Tampered {
        /// The receive nonce counter the frame was expected at.
        nonce: u64,
    },
    /// The frame authenticates under an earlier nonce: the peer (or a middlebox) sent it again.
    #[error(
        "replayed SecretConnection frame: expected nonce {expected}, frame is from nonce {found}"
    )]
    Replayed {
        /// The receive nonce counter the frame was expected at.
        expected: u64,
        /// The earlier nonce it authenticates under.
        found: u64,
    },
    /// The frame authenticates under a later nonce: frames arrived out of order or one is missing.
    #[error(
        "reordered SecretConnection frame: expected nonce {expected}, frame is from nonce {found}"
    )]
    Reordered {
        /// The receive nonce counter the frame was expected at.
        expected: u64,
        /// The later nonce it authenticates under.
        found: u64,
    },
    /// The stream ended inside a frame.
    #[error("SecretConnection stream ended inside a frame ({buffered} of 1044 bytes received)")]
    Truncated {
        /// How many bytes of the frame arrived.
        buffered: usize,
    },
    /// The decrypted length prefix is above 1024.
    #[error("SecretConnection frame claims {0} data bytes, more than 1024")]
    ChunkTooLong(u32),
    /// The 64-bit nonce counter is used up; the connection must be closed (it never wraps).
    #[error("SecretConnection nonce counter exhausted; the connection must be closed")]
    NonceExhausted,
}

/// Builds and seals outgoing frames with the send key and its nonce counter.
#[derive(Clone)]
pub struct Sealer {
    key: FrameKey,
    nonce: u64,
}

impl Sealer {
    /// A sealer for the send key `key`, nonce counter at 0. The handshake builds this; it is
    /// public for benchmarks and tests that work on raw keys.
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer::with_nonce_counter(key, 0)
    }

    /// A sealer whose nonce counter starts at `counter` (tests of nonce exhaustion only).
    #[doc(hidden)]
    #[must_use]
    pub fn with_nonce_counter(key: &[u8; 32], counter: u64) -> Sealer {
        Sealer {
            key: FrameKey::new(key),
            nonce: counter,
        }
    }

    /// The nonce counter the next frame will use.
    #[must_use]
    pub fn nonce_counter(&self) -> u64 {
        self.nonce
    }

    /// Splits `plaintext` into chunks of at most 1024 bytes and appends one whole 1044-byte frame
    /// per chunk to `out` (nothing for an empty `plaintext`). Padding is zero.
    ///
    /// Nonce exhaustion is an error before any frame is appended, never a wrap: the counter
    /// value `2^64-1` is never used (spec 2.4).
    pub fn seal(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
        let frames = plaintext.len().div_ceil(DATA_MAX_SIZE);
        let frames_u64 = u64::try_from(frames).map_err(|_| FrameError::NonceExhausted)?;
        // Every frame needs a nonce strictly below u64::MAX.
        if frames_u64 > u64::MAX - self.nonce {
            return Err(FrameError::NonceExhausted);
        }
        if frames == 0 {
            return Ok(());
        }
        out.reserve(frames * SEALED_FRAME_SIZE);
        let key = self.key.bind();
        for chunk in plaintext.chunks(DATA_MAX_SIZE) {
            let start = out.len();
            // Length prefix, data, zero padding: each byte written once (no zero fill first).
            // chunk.len() ≤ 1024, so it fits in a u32.
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
            out.extend_from_slice(chunk);
            out.resize(start + TOTAL_FRAME_SIZE, 0);
            let tag = key.seal(frame_nonce(self.nonce), &mut out[start..]);
            out.extend_from_slice(&tag);
            self.nonce += 1;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("nonce", &self.nonce)
            .finish()
    }
}

/// Opens incoming frames with the receive key and its nonce counter; a byte stream in, a byte
/// stream out (frame boundaries carry no meaning, spec 2.3).
#[derive(Clone)]
pub struct Opener {
    key: FrameKey,
    nonce: u64,
    /// A partial frame: `partial[..partial_len]`. Allocated when a partial frame arrives and
    /// freed when a read ends on a frame boundary (an idle connection holds none); frames are
    /// decrypted in the output buffer itself, so there is no other work space.
    partial: Option<Box<[u8; SEALED_FRAME_SIZE]>>,
    partial_len: usize,
    /// Plaintext recovered during the handshake and not yet handed out.
    pending: BytesMut,
    /// Set after the first error: the stream cannot be resynchronised.
    failed: Option<FrameError>,
}

impl Opener {
    /// An opener for the receive key `key`, nonce counter at 0. The handshake builds this; it is
    /// public for benchmarks and tests that work on raw keys.
    #[must_use]
    pub fn new(key: &[u8; 32]) -> Opener {
        Opener::with_nonce_counter(key, 0)
    }

    /// An opener whose nonce counter starts at `counter` (tests of nonce exhaustion only).
    #[doc(hidden)]
    #[must_use]
    pub fn with_nonce_counter(key: &[u8; 32], counter: u64) -> Opener {
        Opener {
            key: FrameKey::new(key),
            nonce: counter,
            partial: None,
            partial_len: 0,
            pending: BytesMut::new(),
            failed: None,
        }
    }

    /// The nonce counter the next frame must have been sealed with.
    #[must_use]
    pub fn nonce_counter(&self) -> u64 {
        self.nonce
    }

    /// How many bytes of an incomplete frame are buffered (at most 1043).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.partial_len
    }

    /// Plaintext received before the session started (kept by the handshake). An empty one
    /// keeps no allocation: the handshake's buffer (a frame or more) would otherwise stay with
    /// every connection whose peer sent nothing early, 1 KiB each.
    pub(crate) fn set_pending(&mut self, pending: BytesMut) {
        self.pending = if pending.is_empty() {
            BytesMut::new()
        } else {
            pending
        };
    }

    /// Feeds ciphertext in any chunking; appends the recovered plaintext to `out`. A partial
    /// frame (at most 1043 bytes) is buffered until the rest arrives. After an error every
    /// further call fails with the same error.
    pub fn open(&mut self, mut ciphertext: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if !self.pending.is_empty() {
            out.extend_from_slice(&self.pending);
            self.pending = BytesMut::new();
        }
        // Room for every frame's body up front (each is decrypted in `out`, then trimmed), so
        // that `out` grows at most once per call.
        let whole = (self.partial_len + ciphertext.len()) / SEALED_FRAME_SIZE;
        out.reserve(whole * TOTAL_FRAME_SIZE);
        // ring's key object, built once per call and only when a frame completes.
        let key = (whole > 0).then(|| self.key.bind());
        if self.partial_len > 0
            && let Some(mut partial) = self.partial.take()
        {
            let take = (SEALED_FRAME_SIZE - self.partial_len).min(ciphertext.len());
            let (head, rest) = ciphertext.split_at(take);
            partial[self.partial_len..self.partial_len + take].copy_from_slice(head);
            self.partial_len += take;
            ciphertext = rest;
            let complete = self.partial_len == SEALED_FRAME_SIZE;
            let result = match &key {
                Some(key) if complete => {
                    self.partial_len = 0;
                    self.open_frame(key, &partial[..], out)
                }
                _ => Ok(()),
            };
            self.partial = Some(partial);
            result?;
            if !complete {
                return Ok(());
            }
        }
        let mut frames = ciphertext.chunks_exact(SEALED_FRAME_SIZE);
        if let Some(key) = &key {
            for frame in &mut frames {
                self.open_frame(key, frame, out)?;
            }
        }
        let rest = frames.remainder();
        if rest.is_empty() {
            // Held only while a frame is partial: thousands of idle connections (a simulated
            // network, a seed's peers) would otherwise keep 1 KiB each.
            self.partial = None;
        } else {
            let partial = self
                .partial
                .get_or_insert_with(|| Box::new([0u8; SEALED_FRAME_SIZE]));
            partial[..rest.len()].copy_from_slice(rest);
        }
        self.partial_len = rest.len();
        Ok(())
    }

    /// Call at end of stream: an error if the stream stopped inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.partial_len {
            0 => Ok(()),
            buffered => Err(FrameError::Truncated { buffered }),
        }
    }

    /// Opens one whole sealed frame (`frame.len() == SEALED_FRAME_SIZE`).
    fn open_frame(
        &mut self,
        key: &BoundKey,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        let result = self.try_open_frame(key, frame, out);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// Decrypts the frame's body where its plaintext belongs, in `out`, so that no work copy
    /// is needed: the body is appended so that its 4-byte length prefix lands on the last (up
    /// to) 4 bytes already in `out`, which are saved and put back after decryption; when `out`
    /// held fewer than 4 bytes, its front is advanced past the prefix instead (O(1) for a
    /// `BytesMut`). The ciphertext `frame` stays untouched for the failure diagnosis.
    fn try_open_frame(
        &mut self,
        key: &BoundKey,
        frame: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        if self.nonce == u64::MAX {
            return Err(FrameError::NonceExhausted);
        }
        let (body, tag) = frame.split_at(TOTAL_FRAME_SIZE);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let start = out.len();
        let kept = start.min(4);
        let base = start - kept;
        let mut saved = [0u8; 4];
        saved[..kept].copy_from_slice(&out[base..start]);
        out.truncate(base);
        out.extend_from_slice(body);
        if !key.open(frame_nonce(self.nonce), &mut out[base..], &tag_bytes) {
            out.truncate(base);
            out.extend_from_slice(&saved[..kept]);
            return Err(self.diagnose(key, body, &tag_bytes));
        }
        self.nonce += 1;
        let prefix = &out[base..base + 4];
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len as usize > DATA_MAX_SIZE {
            out.truncate(base);
            out.extend_from_slice(&saved[..kept]);
            return Err(FrameError::ChunkTooLong(len));
        }
        // The data is at out[base + 4..]; the saved bytes go right before it.
        out.truncate(base + 4 + len as usize);
        out[base + 4 - kept..base + 4].copy_from_slice(&saved[..kept]);
        if kept < 4 {
            // base == 0: drop the prefix bytes no saved byte covers.
            bytes::Buf::advance(out, 4 - kept);
        }
        Ok(())
    }

    /// Names a frame that failed to authenticate at the expected nonce by trying a few nonces
    /// before and after it. Runs only on the failure path (the connection then closes).
    fn diagnose(&self, key: &BoundKey, body: &[u8], tag: &[u8; TAG_LEN]) -> FrameError {
        let expected = self.nonce;
        let mut work = [0u8; TOTAL_FRAME_SIZE];
        let work = &mut work[..];
        for distance in 1..=DIAGNOSIS_WINDOW {
            if let Some(found) = expected.checked_sub(distance) {
                work.copy_from_slice(body);
                if key.open(frame_nonce(found), work, tag) {
                    return FrameError::Replayed { expected, found };
                }
            }
            if let Some(found) = expected.checked_add(distance).filter(|n| *n < u64::MAX) {
                work.copy_from_slice(body);
                if key.open(frame_nonce(found), work, tag) {
                    return FrameError::Reordered { expected, found };
                }
            }
        }
        FrameError::Tampered { nonce: expected }
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("nonce", &self.nonce)
            .field("buffered", &self.partial_len)
            .field("pending", &self.pending.len())
            .finish()
    }
}

#[cfg(all(test, not(fuzzing)))]
mod tests {
    use super::*;

    #[test]
    fn round_trip_any_size() {
        let mut sealer = Sealer::new(&[1u8; 32]);
        let mut opener = Opener::new(&[1u8; 32]);
        for len in [0usize, 1, 1023, 1024, 1025, 5000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut wire = BytesMut::new();
            sealer.seal(&data, &mut wire).unwrap();
            assert_eq!(wire.len(), len.div_ceil(1024) * SEALED_FRAME_SIZE);
            let mut plain = BytesMut::new();
            opener.open(&wire, &mut plain).unwrap();
            assert_eq!(&plain[..], &data[..]);
        }
        assert_eq!(sealer.nonce_counter(), opener.nonce_counter());
    }

    /// Frames are decrypted in the output buffer: whatever it already held (0 to 5 bytes
    /// here, around the 4-byte prefix trick) stays in front of the new plaintext, in any
    /// chunking of the ciphertext, and a tampered frame leaves it as it was.
    #[test]
    fn open_keeps_what_out_held_in_any_chunking() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = BytesMut::new();
        Sealer::new(&[2u8; 32]).seal(&data, &mut wire).unwrap();
        for held in 0..6usize {
            for step in [1usize, 3, 1043, 1044, 1045, 2100, wire.len()] {
                let mut opener = Opener::new(&[2u8; 32]);
                let before: Vec<u8> = (0..held).map(|i| 0xa0 + i as u8).collect();
                let mut out = BytesMut::from(&before[..]);
                for piece in wire.chunks(step) {
                    opener.open(piece, &mut out).unwrap();
                }
                assert_eq!(&out[..held], &before[..], "held {held}, step {step}");
                assert_eq!(&out[held..], &data[..], "held {held}, step {step}");
            }
            let mut tampered = wire.clone();
            tampered[5] ^= 1;
            let before: Vec<u8> = (0..held).map(|i| 0xb0 + i as u8).collect();
            let mut out = BytesMut::from(&before[..]);
            let err = Opener::new(&[2u8; 32]).open(&tampered, &mut out);
            assert_eq!(err, Err(FrameError::Tampered { nonce: 0 }));
            assert_eq!(&out[..], &before[..]);
        }
    }

    /// What the handshake left over comes first at the next `open`; an empty leftover keeps
    /// no allocation (the handshake's buffer held 1 KiB per idle connection).
    #[test]
    fn handshake_leftover_is_delivered_first_and_an_empty_one_is_not_kept() {
        let mut opener = Opener::new(&[3u8; 32]);
        let mut spent = BytesMut::with_capacity(2 * TOTAL_FRAME_SIZE);
        spent.extend_from_slice(b"consumed");
        let _ = spent.split_to(8);
        opener.set_pending(spent);
        assert_eq!(opener.pending.capacity(), 0);

        let mut leftover = BytesMut::with_capacity(2 * TOTAL_FRAME_SIZE);
        leftover.extend_from_slice(b"early");
        opener.set_pending(leftover);
        let mut wire = BytesMut::new();
        Sealer::new(&[3u8; 32]).seal(b" data", &mut wire).unwrap();
        let mut plain = BytesMut::new();
        opener.open(&wire, &mut plain).unwrap();
        assert_eq!(&plain[..], b"early data");
        assert_eq!(opener.pending.capacity(), 0);
    }

    /// The partial-frame buffer exists only while a frame is incomplete, and a frame split
    /// anywhere still opens.
    #[test]
    fn partial_buffer_is_held_only_inside_a_frame() {
        let mut sealer = Sealer::new(&[2u8; 32]);
        let mut opener = Opener::new(&[2u8; 32]);
        let data: Vec<u8> = (0..3000).map(|i| (i % 251) as u8).collect();
        let mut wire = BytesMut::new();
        sealer.seal(&data, &mut wire).unwrap();
        let mut plain = BytesMut::new();
        // Inside the first frame, then up to the end of the second, then the rest.
        let (a, rest) = wire.split_at(700);
        let (b, c) = rest.split_at(2 * SEALED_FRAME_SIZE - 700);
        opener.open(a, &mut plain).unwrap();
        assert_eq!(opener.buffered(), 700);
        assert!(opener.partial.is_some());
        opener.open(b, &mut plain).unwrap();
        assert_eq!(opener.buffered(), 0);
        assert!(opener.partial.is_none(), "freed on a frame boundary");
        opener.open(&c[..10], &mut plain).unwrap();
        assert!(opener.partial.is_some());
        opener.open(&c[10..], &mut plain).unwrap();
        assert!(opener.partial.is_none());
        assert_eq!(&plain[..], &data[..]);
    }
}
