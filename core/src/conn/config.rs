//! Per-connection settings (spec 3.1, 4.3–4.6), shared by every connection through an `Arc`.

use std::time::Duration;

/// Timers, rate limits and buffer bounds of a peer connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Deadline for the SecretConnection handshake, and again for the NodeInfo exchange (3 s).
    pub handshake_timeout: Duration,
    /// How often a Ping is sent (60 s).
    pub ping_interval: Duration,
    /// How long a Pong may take (45 s).
    pub pong_timeout: Duration,
    /// Longest time written packets wait before they are flushed (10 ms, the default of CometBFT
    /// v0.39 and later; v0.34 and v0.38 used 100 ms).
    pub flush_throttle: Duration,
    /// Send rate limit in bytes per second (5 120 000; 0 = unlimited).
    pub send_rate: u64,
    /// Receive rate limit in bytes per second (5 120 000; 0 = unlimited).
    pub recv_rate: u64,
    /// Largest PacketMsg payload, sent and accepted (1024; must match the peer's).
    pub max_packet_payload: usize,
    /// Bytes handed to the adapter (or ready for it) but not yet reported taken by the socket
    /// through `handle_sent`; no new packets are produced above it (512 KiB).
    pub send_budget: usize,
    /// PacketMsgs written per scheduling batch (10).
    pub packets_per_batch: usize,
    /// Received plaintext that may wait for the receive rate limit; more closes the connection
    /// (1 MiB). Adapters stop reading while `PeerConnection::wants_read` is false.
    pub recv_backlog: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            handshake_timeout: Duration::from_secs(3),
            ping_interval: Duration::from_secs(60),
            pong_timeout: Duration::from_secs(45),
            flush_throttle: Duration::from_millis(10),
            send_rate: 5_120_000,
            recv_rate: 5_120_000,
            max_packet_payload: 1024,
            send_budget: 512 * 1024,
            packets_per_batch: 10,
            recv_backlog: 1024 * 1024,
        }
    }
}
