//! The SecretConnection handshake state machine (spec 2.2): ephemeral X25519 keys in clear
//! text, then the AuthSigMessage through the first encrypted frame.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use prost::Message;

use super::delimited::DelimitedReader;
use super::frame::{FrameError, Opener, Sealer};
use crate::crypto;
use crate::identity::NodeKey;
use crate::wire::codec::CodecError;
use crate::wire::limits::MAX_HANDSHAKE_MSG_SIZE;
use crate::wire::proto::{AuthSigMessage, BytesValue, PublicKey, public_key};

/// Most plaintext bytes buffered after the peer's AuthSig before the caller takes the session
/// (1 MiB); one byte more is [`HandshakeError::TooMuchEarlyData`].
pub const MAX_EARLY_DATA: usize = 1 << 20;

/// Why a handshake failed. The connection must then be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A length prefix is not a valid uvarint.
    #[error("malformed length prefix in the {0} message")]
    MalformedLength(&'static str),
    /// A handshake message claims more than 1 MiB.
    #[error("the {what} message claims {len} bytes, more than the 1 MiB limit")]
    MessageTooLong {
        /// Which message.
        what: &'static str,
        /// The claimed length.
        len: u64,
    },
    /// The ephemeral-key message is not a valid `BytesValue`.
    #[error("the ephemeral key message is not valid protobuf: {0}")]
    MalformedEphemeral(String),
    /// The ephemeral public key is not 32 bytes.
    #[error("the ephemeral public key has {0} bytes, expected 32")]
    EphemeralKeyLength(usize),
    /// Both sides sent the same ephemeral public key.
    #[error("the peer sent our own ephemeral public key")]
    EqualEphemeralKeys,
    /// The X25519 output is all zeros: the peer sent a low-order point.
    #[error("the peer's ephemeral key is a low-order point (all-zero shared secret)")]
    LowOrderPoint,
    /// An encrypted frame of the handshake failed.
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
    /// The AuthSigMessage is not valid protobuf.
    #[error("the auth signature message is not valid protobuf: {0}")]
    MalformedAuthSig(String),
    /// The AuthSigMessage carries no public key (or an unknown key type).
    #[error("the auth signature message carries no public key")]
    MissingPublicKey,
    /// The public key is not Ed25519.
    #[error("the peer's public key is {0}, expected ed25519")]
    UnsupportedKeyType(&'static str),
    /// The Ed25519 public key is not 32 bytes.
    #[error("the peer's ed25519 public key has {0} bytes, expected 32")]
    PublicKeyLength(usize),
    /// The signature is not 64 bytes.
    #[error("the peer's signature has {0} bytes, expected 64")]
    SignatureLength(usize),
    /// The signature does not verify over the challenge.
    #[error("the peer's signature over the handshake challenge is invalid")]
    BadSignature,
    /// The stream ended before the handshake completed.
    #[error("the connection closed during the handshake")]
    UnexpectedEof,
    /// More than 1 MiB arrived after the handshake before the session was taken.
    #[error("more than 1 MiB of data arrived before the session was started")]
    TooMuchEarlyData,
    /// `into_session` was called before the handshake completed.
    #[error("the handshake is not complete")]
    Incomplete,
    /// The handshake failed earlier; the error was returned then.
    #[error("the handshake already failed")]
    AlreadyFailed,
}

/// What the key schedule derived from the ephemeral exchange (spec 2.2 steps 3–8).
/// Exposed for known-answer tests. Its `Debug` output shows no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySchedule {
    /// Whether our ephemeral public key is the smaller one.
    pub loc_is_least: bool,
    /// The X25519 shared secret.
    pub dh_secret: [u8; 32],
    /// The 96 HKDF output bytes.
    pub okm: [u8; 96],
    /// Our receive key.
    pub recv_key: [u8; 32],
    /// Our send key.
    pub send_key: [u8; 32],
    /// The merlin challenge both sides sign.
    pub challenge: [u8; 32],
}

impl std::fmt::Debug for KeySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySchedule")
            .field("loc_is_least", &self.loc_is_least)
            .finish_non_exhaustive()
    }
}

/// Splits the HKDF output into (recv, send) keys by `loc_is_least` (spec 2.2 step 7).
#[must_use]
pub fn split_keys(okm: &[u8; 96], loc_is_least: bool) -> ([u8; 32], [u8; 32]) {
    let mut first = [0u8; 32];
    let mut second = [0u8; 32];
    first.copy_from_slice(&okm[..32]);
    second.copy_from_slice(&okm[32..64]);
    if loc_is_least {
        (first, second)
    } else {
        (second, first)
    }
}

/// Derives the key schedule from our ephemeral secret and the peer's ephemeral public key.
fn key_schedule(
    local_secret: &[u8; 32],
    local_public: &[u8; 32],
    remote_public: &[u8; 32],
) -> Result<KeySchedule, HandshakeError> {
    if local_public == remote_public {
        return Err(HandshakeError::EqualEphemeralKeys);
    }
    let loc_is_least = local_public < remote_public;
    let (lo, hi) = if loc_is_least {
        (local_public, remote_public)
    } else {
        (remote_public, local_public)
    };
    let dh_secret =
        crypto::diffie_hellman(local_secret, remote_public).ok_or(HandshakeError::LowOrderPoint)?;
    let okm = crypto::hkdf96(&dh_secret);
    let (recv_key, send_key) = split_keys(&okm, loc_is_least);
    let challenge = crypto::transcript_challenge(lo, hi, &dh_secret);
    Ok(KeySchedule {
        loc_is_least,
        dh_secret,
        okm,
        recv_key,
        send_key,
        challenge,
    })
}

/// The 35-byte cleartext ephemeral-key message: `22 0a 20 ‖ key` (spec 2.2 step 2).
#[must_use]
pub fn ephemeral_message(ephemeral_public: &[u8; 32]) -> [u8; 35] {
    let mut msg = [0u8; 35];
    msg[..3].copy_from_slice(&[0x22, 0x0a, 0x20]);
    msg[3..].copy_from_slice(ephemeral_public);
    msg
}

/// The uvarint-delimited AuthSigMessage plaintext (103 bytes for Ed25519, spec 2.2 step 11).
#[must_use]
pub fn auth_sig_message(public_key: &[u8; 32], signature: &[u8; 64]) -> Vec<u8> {
    AuthSigMessage {
        pub_key: Some(PublicKey {
            sum: Some(public_key::Sum::Ed25519(public_key.to_vec())),
        }),
        sig: signature.to_vec(),
    }
    .encode_length_delimited_to_vec()
}

#[derive(Clone)]
enum State {
    /// Waiting for the peer's cleartext ephemeral key.
    AwaitingEphemeral { reader: DelimitedReader },
    /// Keys derived; waiting for the peer's AuthSigMessage through the frames.
    AwaitingAuthSig {
        challenge: [u8; 32],
        sealer: Sealer,
        opener: Opener,
        plaintext: BytesMut,
        reader: DelimitedReader,
    },
    /// The peer is authenticated; bytes that follow are kept for the session.
    Authenticated {
        remote_public_key: [u8; 32],
        sealer: Sealer,
        opener: Opener,
        plaintext: BytesMut,
    },
    /// A previous call failed.
    Failed,
}

impl State {
    /// The authenticated state holding `early_data`, unless that is more than
    /// [`MAX_EARLY_DATA`].
    fn authenticated(
        remote_public_key: [u8; 32],
        sealer: Sealer,
        opener: Opener,
        early_data: BytesMut,
    ) -> Result<State, HandshakeError> {
        if early_data.len() > MAX_EARLY_DATA {
            return Err(HandshakeError::TooMuchEarlyData);
        }
        Ok(State::Authenticated {
            remote_public_key,
            sealer,
            opener,
            plaintext: early_data,
        })
    }
}

/// One side's handshake state machine. There are no roles: both sides run the same steps.
///
/// Drive it by sending what [`Handshake::poll_transmit`] yields and feeding what arrives to
/// [`Handshake::handle_received`], until [`Handshake::is_complete`]; then take the session.
/// `Clone` lets tests and fuzzers branch a handshake; a clone holds the same secrets.
#[derive(Clone)]
pub struct Handshake {
    local: NodeKey,
    ephemeral_secret: [u8; 32],
    ephemeral_public: [u8; 32],
    schedule: Option<KeySchedule>,
    transmit: VecDeque<Bytes>,
    state: State,
}

impl Handshake {
    /// Starts a handshake for `local`; `ephemeral_secret` is 32 bytes from the caller's (seeded)
    /// RNG. The ephemeral-key message is queued at once.
    #[must_use]
    pub fn new(local: &NodeKey, ephemeral_secret: [u8; 32]) -> Handshake {
        let ephemeral_public = crypto::x25519_public(&ephemeral_secret);
        let mut transmit = VecDeque::with_capacity(2);
        transmit.push_back(Bytes::copy_from_slice(&ephemeral_message(
            &ephemeral_public,
        )));
        Handshake {
            local: local.clone(),
            ephemeral_secret,
            ephemeral_public,
            schedule: None,
            transmit,
            state: State::AwaitingEphemeral {
                reader: DelimitedReader::new(MAX_HANDSHAKE_MSG_SIZE),
            },
        }
    }

    /// Our ephemeral X25519 public key.
    #[must_use]
    pub fn ephemeral_public_key(&self) -> [u8; 32] {
        self.ephemeral_public
    }

    /// The derived keys and challenge, once the peer's ephemeral key has arrived.
    #[must_use]
    pub fn key_schedule(&self) -> Option<&KeySchedule> {
        self.schedule.as_ref()
    }

    /// Bytes to put on the wire: first the 35-byte ephemeral message, then (once the peer's
    /// ephemeral key has arrived) the AuthSigMessage alone in its 1044-byte frame.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.pop_front()
    }

    /// Feeds received bytes, in any chunking. Consumes everything it is given; bytes after the
    /// handshake are kept for the session (up to 1 MiB).
    pub fn handle_received(&mut self, data: &[u8]) -> Result<(), HandshakeError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        match self.step(state, data) {
            Ok(state) => {
                self.state = state;
                Ok(())
            }
            Err(err) => {
                self.state = State::Failed;
                Err(err)
            }
        }
    }

    /// Call when the stream ends: an error unless the handshake already completed.
    pub fn handle_eof(&mut self) -> Result<(), HandshakeError> {
        match self.state {
            State::Authenticated { .. } => Ok(()),
            State::Failed => Err(HandshakeError::AlreadyFailed),
            _ => {
                self.state = State::Failed;
                Err(HandshakeError::UnexpectedEof)
            }
        }
    }

    /// True once the peer is authenticated and all our handshake bytes have been taken with
    /// [`Handshake::poll_transmit`].
    #[must_use]
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Authenticated { .. }) && self.transmit.is_empty()
    }

    /// After completion: the authenticated session. Its opener already holds whatever arrived
    /// after the peer's AuthSigMessage.
    pub fn into_session(self) -> Result<SecretSession, HandshakeError> {
        if !self.transmit.is_empty() {
            return Err(HandshakeError::Incomplete);
        }
        match self.state {
            State::Authenticated {
                remote_public_key,
                sealer,
                mut opener,
                plaintext,
                ..
            } => {
                opener.set_pending(plaintext);
                Ok(SecretSession {
                    remote_public_key,
                    sealer,
                    opener,
                })
            }
            State::Failed => Err(HandshakeError::AlreadyFailed),
            _ => Err(HandshakeError::Incomplete),
        }
    }

    fn step(&mut self, state: State, data: &[u8]) -> Result<State, HandshakeError> {
        match state {
            State::AwaitingEphemeral { mut reader } => {
                let (used, body) = reader
                    .feed(data)
                    .map_err(|e| prefix_error(e, "ephemeral key"))?;
                let Some(body) = body else {
                    return Ok(State::AwaitingEphemeral { reader });
                };
                let next = self.got_ephemeral(&body)?;
                self.step(next, &data[used..])
            }
            State::AwaitingAuthSig {
                challenge,
                sealer,
                mut opener,
                mut plaintext,
                mut reader,
            } => {
                opener.open(data, &mut plaintext)?;
                let (used, body) = reader
                    .feed(&plaintext)
                    .map_err(|e| prefix_error(e, "auth signature"))?;
                let _ = plaintext.split_to(used);
                let Some(body) = body else {
                    return Ok(State::AwaitingAuthSig {
                        challenge,
                        sealer,
                        opener,
                        plaintext,
                        reader,
                    });
                };
                let remote_public_key = verify_auth_sig(&body, &challenge)?;
                State::authenticated(remote_public_key, sealer, opener, plaintext)
            }
            State::Authenticated {
                remote_public_key,
                sealer,
                mut opener,
                mut plaintext,
            } => {
                // Decrypting never grows the data, so this holds at most what we were given.
                opener.open(data, &mut plaintext)?;
                State::authenticated(remote_public_key, sealer, opener, plaintext)
            }
            State::Failed => Err(HandshakeError::AlreadyFailed),
        }
    }

    /// The peer's ephemeral key arrived: derive the keys, queue our AuthSig frame.
    fn got_ephemeral(&mut self, body: &[u8]) -> Result<State, HandshakeError> {
        let msg = BytesValue::decode(body)
            .map_err(|e| HandshakeError::MalformedEphemeral(e.to_string()))?;
        let remote: [u8; 32] = msg
            .value
            .as_slice()
            .try_into()
            .map_err(|_| HandshakeError::EphemeralKeyLength(msg.value.len()))?;
        let schedule = key_schedule(&self.ephemeral_secret, &self.ephemeral_public, &remote)?;
        self.ephemeral_secret = [0u8; 32];
        let mut sealer = Sealer::new(&schedule.send_key);
        let opener = Opener::new(&schedule.recv_key);
        let signature = crate::crypto::sign_ed25519(&self.local, &schedule.challenge);
        let auth = auth_sig_message(&self.local.public_key(), &signature);
        let mut frame = BytesMut::new();
        sealer.seal(&auth, &mut frame)?;
        self.transmit.push_back(frame.freeze());
        let challenge = schedule.challenge;
        self.schedule = Some(schedule);
        Ok(State::AwaitingAuthSig {
            challenge,
            sealer,
            opener,
            plaintext: BytesMut::new(),
            reader: DelimitedReader::new(MAX_HANDSHAKE_MSG_SIZE),
        })
    }
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::AwaitingEphemeral { .. } => "awaiting ephemeral key",
            State::AwaitingAuthSig { .. } => "awaiting auth signature",
            State::Authenticated { .. } => "authenticated",
            State::Failed => "failed",
        };
        f.debug_struct("Handshake")
            .field("local", &self.local)
            .field("state", &state)
            .finish()
    }
}

/// Names the handshake message whose length prefix failed.
fn prefix_error(err: CodecError, what: &'static str) -> HandshakeError {
    match err {
        CodecError::TooLarge { len, .. } => HandshakeError::MessageTooLong { what, len },
        CodecError::VarintOverflow | CodecError::Decode(_) => HandshakeError::MalformedLength(what),
    }
}

/// Decodes and checks the peer's AuthSigMessage (spec 2.2 step 12); returns its public key.
fn verify_auth_sig(body: &[u8], challenge: &[u8; 32]) -> Result<[u8; 32], HandshakeError> {
    let msg = AuthSigMessage::decode(body)
        .map_err(|e| HandshakeError::MalformedAuthSig(e.to_string()))?;
    let key = match msg.pub_key.and_then(|k| k.sum) {
        Some(public_key::Sum::Ed25519(key)) => key,
        Some(public_key::Sum::Secp256k1(_)) => {
            return Err(HandshakeError::UnsupportedKeyType("secp256k1"));
        }
        None => return Err(HandshakeError::MissingPublicKey),
    };
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| HandshakeError::PublicKeyLength(key.len()))?;
    let sig: [u8; 64] = msg
        .sig
        .as_slice()
        .try_into()
        .map_err(|_| HandshakeError::SignatureLength(msg.sig.len()))?;
    if !crypto::verify_ed25519(&key, challenge, &sig) {
        return Err(HandshakeError::BadSignature);
    }
    Ok(key)
}

/// An authenticated SecretConnection session: the peer's static key and the two frame
/// directions.
#[derive(Debug)]
pub struct SecretSession {
    /// The peer's authenticated Ed25519 public key; its node id is
    /// [`NodeId::from_public_key`](crate::ids::NodeId::from_public_key) of it.
    pub remote_public_key: [u8; 32],
    /// Seals what we send.
    pub sealer: Sealer,
    /// Opens what we receive; already holds anything received after the peer's AuthSig.
    pub opener: Opener,
}

impl SecretSession {
    /// The peer's node id.
    #[must_use]
    pub fn remote_node_id(&self) -> crate::ids::NodeId {
        crate::ids::NodeId::from_public_key(&self.remote_public_key)
    }
}
