//! The `[p2p]` keys, declared once. Each key is one entry of the table below: its doc, field
//! name (= the TOML key), type, default, the comment lines `init` writes above it, and what it
//! sets in the engine's [`EngineConfig`]. From that one entry come the [`P2pConfig`] field and
//! default, the reader, [`P2P_KEYS`] (what a seed's chain table accepts), the written file and
//! [`P2pConfig::apply_to`]. Adding a key is one entry here (and a line in `cli/README.md` if
//! operators should know it).

use std::time::Duration;

use cometmesh_core::engine::EngineConfig;

use super::{ConfigError, Section, quote};
use crate::duration::format_go_duration;

/// A value a `[p2p]` key can hold: how it is read (with CometBFT's lenient rules) and written.
trait P2pValue {
    fn read(s: &Section<'_>, name: &str, out: &mut Self) -> Result<(), ConfigError>;
    fn render(&self) -> String;
}

impl P2pValue for String {
    fn read(s: &Section<'_>, name: &str, out: &mut Self) -> Result<(), ConfigError> {
        s.string(name, out)
    }
    fn render(&self) -> String {
        quote(self)
    }
}

impl P2pValue for bool {
    fn read(s: &Section<'_>, name: &str, out: &mut Self) -> Result<(), ConfigError> {
        s.boolean(name, out)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl P2pValue for u32 {
    fn read(s: &Section<'_>, name: &str, out: &mut Self) -> Result<(), ConfigError> {
        s.integer(name, out)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl P2pValue for u64 {
    fn read(s: &Section<'_>, name: &str, out: &mut Self) -> Result<(), ConfigError> {
        s.integer(name, out)
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl P2pValue for Duration {
    fn read(s: &Section<'_>, name: &str, out: &mut Self) -> Result<(), ConfigError> {
        s.duration(name, out)
    }
    fn render(&self) -> String {
        quote(&format_go_duration(*self))
    }
}

macro_rules! p2p_keys {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty = $default:expr,
        toml [$($line:literal),* $(,)?]
        $(engine |$p:ident, $c:ident| $apply:expr)?;
    )*) => {
        /// The `[p2p]` section (spec section 8). Address lists stay strings here, as in the
        /// file; [`crate::settings`] turns them into typed, resolved values.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct P2pConfig {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl Default for P2pConfig {
            fn default() -> Self {
                P2pConfig { $($name: $default,)* }
            }
        }

        /// Every key of `[p2p]` this file reads (a seed config rejects any other in a chain
        /// table).
        pub const P2P_KEYS: &[&str] = &[$(stringify!($name)),*];

        impl P2pConfig {
            /// The keys of `s` into `self` (absent keys keep their values).
            pub(super) fn read(&mut self, s: &Section<'_>) -> Result<(), ConfigError> {
                $(P2pValue::read(s, stringify!($name), &mut self.$name)?;)*
                Ok(())
            }

            /// The keys in CometBFT's order, each after its comment lines.
            pub(super) fn write(&self, line: &mut dyn FnMut(&str)) {
                $(
                    $(line($line);)*
                    line(&format!("{} = {}", stringify!($name), P2pValue::render(&self.$name)));
                )*
            }

            /// Sets the engine's fields that these keys configure. The address lists and the
            /// listen addresses are resolved by [`crate::settings`] and set by
            /// [`crate::node::engine_config`].
            pub fn apply_to(&self, c: &mut EngineConfig) {
                $($({
                    let $p = self;
                    let $c = &mut *c;
                    $apply;
                })?)*
            }
        }
    };
}

p2p_keys! {
    /// `laddr`: TCP listen address, `tcp://0.0.0.0:26656` by default.
    laddr: String = "tcp://0.0.0.0:26656".to_owned(),
    toml ["", "# TCP address to accept peer connections on"];

    /// `external_address`: `host:port` advertised to peers; empty to advertise `laddr`.
    external_address: String = String::new(),
    toml [
        "",
        "# host:port that peers should dial to reach this node, sent in the handshake.",
        "# When empty, the listen address is advertised. Example: 159.89.10.97:26656",
    ];

    /// `seeds`: comma-separated `id@host:port`.
    seeds: String = String::new(),
    toml [
        "",
        "# Seed nodes (comma-separated id@host:port) asked for addresses when the",
        "# address book runs short. A host may be a DNS name, resolved whenever the",
        "# seed is dialled",
    ];

    /// `persistent_peers`: comma-separated `id@host:port`, always dialed and redialed.
    persistent_peers: String = String::new(),
    toml [
        "",
        "# Peers (comma-separated id@host:port) dialed at start and redialed forever;",
        "# a host may be a DNS name, resolved again at every redial",
    ];

    /// `addr_book_file`: address-book path, relative to the home unless absolute.
    addr_book_file: String = "config/addrbook.json".to_owned(),
    toml ["", "# Where the address book of known peers is kept"];

    /// `addr_book_strict`: refuse non-routable addresses.
    addr_book_strict: bool = true,
    toml [
        "",
        "# true: keep only publicly routable addresses in the address book.",
        "# Set false on private or local networks.",
    ]
    engine |p, c| {
        c.addr_book_strict = p.addr_book_strict;
        c.addr_book.strict = p.addr_book_strict;
    };

    /// `max_num_inbound_peers`.
    max_num_inbound_peers: u32 = 40,
    toml ["", "# Most peers that may connect to us"]
    engine |p, c| c.max_num_inbound_peers = p.max_num_inbound_peers as usize;

    /// `max_num_outbound_peers`.
    max_num_outbound_peers: u32 = 10,
    toml [
        "",
        "# How many peers we dial ourselves (persistent peers count, unless also",
        "# unconditional)",
    ]
    engine |p, c| c.max_num_outbound_peers = p.max_num_outbound_peers as usize;

    /// `unconditional_peer_ids`: comma-separated ids exempt from the limits.
    unconditional_peer_ids: String = String::new(),
    toml [
        "",
        "# Node ids (comma-separated) that are always let in and redialed, whatever the",
        "# limits above",
    ];

    /// `persistent_peers_max_dial_period`: cap on the redial back-off (zero: no cap).
    persistent_peers_max_dial_period: Duration = Duration::ZERO,
    toml [
        "",
        "# Longest wait between redials of a persistent peer (0s: plain exponential",
        "# back-off)",
    ]
    // 0s keeps the engine's cap (CometBFT's exponential back-off is effectively capped too).
    engine |p, c| if !p.persistent_peers_max_dial_period.is_zero() {
        c.persistent_redial_cap = p
            .persistent_peers_max_dial_period
            .max(Duration::from_secs(1));
    };

    /// `flush_throttle_timeout`: longest delay before buffered packets are flushed.
    flush_throttle_timeout: Duration = Duration::from_millis(10),
    toml ["", "# Longest delay before queued packets are written to the connection"]
    engine |p, c| c.connection.flush_throttle = p.flush_throttle_timeout;

    /// `max_packet_msg_payload_size`: PacketMsg chunk size; must match the peers.
    max_packet_msg_payload_size: u32 = 1024,
    toml ["", "# Bytes of message data per packet; every peer must use the same value"]
    engine |p, c| c.connection.max_packet_payload = p.max_packet_msg_payload_size as usize;

    /// `send_rate`: bytes per second, local only.
    send_rate: u64 = 5_120_000,
    toml ["", "# Sending limit per connection, in bytes per second"]
    engine |p, c| c.connection.send_rate = p.send_rate;

    /// `recv_rate`: bytes per second, local only.
    recv_rate: u64 = 5_120_000,
    toml ["", "# Receiving limit per connection, in bytes per second"]
    engine |p, c| c.connection.recv_rate = p.recv_rate;

    /// `pex`: run the peer-exchange reactor.
    pex: bool = true,
    toml ["", "# Run the peer-exchange (PEX) reactor, which finds peers by gossip"]
    engine |p, c| c.pex = p.pex;

    /// `seed_mode`: crawl the network and answer address requests, then hang up.
    seed_mode: bool = false,
    toml [
        "",
        "# Seed mode: crawl the network for addresses, answer each address request and",
        "# hang up. Needs pex = true.",
    ]
    engine |p, c| c.seed_mode = p.seed_mode;

    /// `private_peer_ids`: comma-separated ids never stored or gossiped.
    private_peer_ids: String = String::new(),
    toml ["", "# Node ids (comma-separated) never stored in the address book nor gossiped"];

    /// `allow_duplicate_ip`: accept several peers from one IP (and ban node ids only, not IPs).
    allow_duplicate_ip: bool = false,
    toml [
        "",
        "# Accept more than one peer from the same IP address (needed on one machine).",
        "# This also sets what a ban covers: with false a ban covers the offender's node id",
        "# and IP; with true (many honest nodes share an IP) only its node id. Bans persist",
        "# with the address book (docs/bans.md).",
    ]
    engine |p, c| c.allow_duplicate_ip = p.allow_duplicate_ip;

    /// `handshake_timeout`: CometBFT's key, read and written back but not applied, as CometBFT
    /// does not apply it either (its transport cuts each handshake phase at 3 s).
    handshake_timeout: Duration = Duration::from_secs(20),
    toml [
        "",
        "# Time limits of a new connection. handshake_timeout is CometBFT's key and, as in",
        "# CometBFT, not applied: each handshake phase is cut at handshake_phase_timeout.",
    ];

    /// `handshake_phase_timeout` (cometmesh's own key): the limit on each handshake phase
    /// (SecretConnection, then NodeInfo). Default 3 s, CometBFT's effective value; raising it
    /// lets a silent connection hold an inbound slot longer.
    handshake_phase_timeout: Duration = Duration::from_secs(3),
    toml [
        "# cometmesh only: the limit on each handshake phase (SecretConnection, NodeInfo).",
        "# CometBFT's is a fixed 3s; a longer one lets silent connections hold inbound slots.",
    ]
    engine |p, c| {
        c.handshake_timeout = p.handshake_phase_timeout.max(Duration::from_millis(1));
        c.connection.handshake_timeout = c.handshake_timeout;
    };

    /// `dial_timeout`.
    dial_timeout: Duration = Duration::from_secs(3),
    toml []
    engine |p, c| c.dial_timeout = p.dial_timeout.max(Duration::from_millis(1));

    /// `seed_disconnect_wait` (cometmesh's own key): how long a seed holds a connection it
    /// crawled (CometBFT hard-codes 28 h).
    seed_disconnect_wait: Duration = Duration::from_secs(28 * 3600),
    toml [
        "",
        "# cometmesh only: seed mode settings that CometBFT hard-codes (its values are the",
        "# defaults). How long the seed holds a connection it crawled: the crawled node then",
        "# has no reason to dial the seed again.",
    ]
    engine |p, c| c.seed_disconnect_wait = p.seed_disconnect_wait;

    /// `seed_crawl_period` (cometmesh's own key): mean period of the seed's crawl pass
    /// (CometBFT hard-codes 30 s).
    seed_crawl_period: Duration = Duration::from_secs(30),
    toml ["# Mean period of the seed's crawl pass (each pass lands within +/- 25 % of it)"]
    engine |p, c| c.crawl_period = p.seed_crawl_period.max(Duration::from_millis(100));

    /// `seed_min_time_between_crawls` (cometmesh's own key): a seed crawls one address at most
    /// this often (CometBFT hard-codes 2 m).
    seed_min_time_between_crawls: Duration = Duration::from_secs(120),
    toml ["# The seed crawls one address at most this often"]
    engine |p, c| c.min_time_between_crawls = p.seed_min_time_between_crawls;

    /// `seed_min_reply_size` (cometmesh's own key): the least number of addresses in a seed's
    /// PEX reply, when its book has them (CometBFT hard-codes 32).
    seed_min_reply_size: u64 = 32,
    toml ["# The least number of addresses in the seed's PEX reply, when its book has them"]
    // A seed exists to hand out addresses: give CometBFT's smallest reply (32) rather than
    // the 23 %-of-the-book rule alone, which leaves a young seed answering with nothing.
    engine |p, c| if p.seed_mode {
        c.addr_book.min_selection = usize::try_from(p.seed_min_reply_size).unwrap_or(usize::MAX);
    };

    /// `seed_vetted_window` (cometmesh's own key): a seed serves only addresses it reached
    /// itself within this window, most recent first; `0s` serves a random selection of its
    /// book, reached or not, as CometBFT does. Default 24 h.
    seed_vetted_window: Duration = Duration::from_secs(24 * 3600),
    toml [
        "# The seed serves only addresses it reached itself (its own dial completed the",
        "# handshake) within this window, most recent first; \"0s\" serves a random",
        "# selection of its address book, reached or not, as CometBFT does",
    ]
    engine |p, c| c.seed_vetted_window = p.seed_vetted_window;

    /// `feeler_interval` (cometmesh's own key): mean period of feeler connections that test
    /// addresses before one may replace another in the book (test-before-evict); 0s: off.
    feeler_interval: Duration = Duration::from_secs(120),
    toml [
        "",
        "# cometmesh only: defences CometBFT does not have (docs/bans.md, engine docs).",
        "# Mean period of feeler connections: one short extra connection that tests an",
        "# address before it may replace another in the book (test-before-evict). 0s: off.",
    ]
    // Below 1 s (but not off) a feeler period is raised to 1 s, the engine's floor.
    engine |p, c| c.feeler_interval = if p.feeler_interval.is_zero() {
        Duration::ZERO
    } else {
        p.feeler_interval.max(Duration::from_secs(1))
    };

    /// `inbound_attempts_per_ip_per_minute` (cometmesh's own key): inbound connection attempts
    /// allowed per remote IP and minute before the handshake; 0: no limit (CometBFT has none).
    inbound_attempts_per_ip_per_minute: u64 = 10,
    toml [
        "# Inbound connection attempts allowed per remote IP, and per address group",
        "# (/16), in a minute, checked before any handshake work; loopback and private",
        "# addresses are not limited. 0: no limit. When every inbound slot holds a peer, a",
        "# newcomer may evict one from the most-represented group, never a protected one.",
    ]
    engine |p, c| c.inbound_attempts_per_ip_per_minute =
        u32::try_from(p.inbound_attempts_per_ip_per_minute).unwrap_or(u32::MAX);

    /// `inbound_attempts_per_group_per_minute` (cometmesh's own key): the same per address
    /// group (/16); 0: no limit.
    inbound_attempts_per_group_per_minute: u64 = 60,
    toml []
    engine |p, c| c.inbound_attempts_per_group_per_minute =
        u32::try_from(p.inbound_attempts_per_group_per_minute).unwrap_or(u32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The keys `init` writes under `[p2p]` are exactly the keys read (and accepted in a
    /// seed's chain table), in one order.
    #[test]
    fn written_keys_are_the_known_keys() {
        let text = Config::default().to_toml();
        let p2p = &text[text.find("[p2p]\n").unwrap()..text.find("[instrumentation]").unwrap()];
        let written: Vec<&str> = p2p
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(" = "))
            .map(|l| l.split(" = ").next().unwrap())
            .collect();
        assert_eq!(written, P2P_KEYS);
    }

    /// Each key with an engine field sets it, with the CLI's floors applied.
    #[test]
    fn keys_reach_the_engine_config() {
        let text = "[p2p]\nmax_num_inbound_peers = 7\nmax_num_outbound_peers = 3\n\
                    addr_book_strict = false\nallow_duplicate_ip = true\npex = false\n\
                    seed_mode = true\nseed_min_reply_size = 50\ndial_timeout = \"0s\"\n\
                    handshake_phase_timeout = \"4s\"\nflush_throttle_timeout = \"10ms\"\n\
                    send_rate = 11\nrecv_rate = 12\nmax_packet_msg_payload_size = 2048\n\
                    persistent_peers_max_dial_period = \"100ms\"\nfeeler_interval = \"200ms\"\n\
                    seed_crawl_period = \"1ms\"\nseed_disconnect_wait = \"1h\"\n\
                    seed_min_time_between_crawls = \"5m\"\nseed_vetted_window = \"0s\"\n\
                    inbound_attempts_per_ip_per_minute = 99999999999\n\
                    inbound_attempts_per_group_per_minute = 5\n";
        let p = Config::parse(text).unwrap().p2p;
        let mut c = EngineConfig::default();
        p.apply_to(&mut c);
        assert_eq!((c.max_num_inbound_peers, c.max_num_outbound_peers), (7, 3));
        assert!(!c.addr_book_strict && !c.addr_book.strict);
        assert!(c.allow_duplicate_ip && !c.pex && c.seed_mode);
        assert_eq!(c.addr_book.min_selection, 50);
        assert_eq!(c.dial_timeout, Duration::from_millis(1), "floor of 1 ms");
        assert_eq!(c.handshake_timeout, Duration::from_secs(4));
        assert_eq!(c.connection.handshake_timeout, Duration::from_secs(4));
        assert_eq!(c.connection.flush_throttle, Duration::from_millis(10));
        assert_eq!((c.connection.send_rate, c.connection.recv_rate), (11, 12));
        assert_eq!(c.connection.max_packet_payload, 2048);
        assert_eq!(
            c.persistent_redial_cap,
            Duration::from_secs(1),
            "floor of 1 s"
        );
        assert_eq!(c.feeler_interval, Duration::from_secs(1), "floor of 1 s");
        assert_eq!(
            c.crawl_period,
            Duration::from_millis(100),
            "floor of 100 ms"
        );
        assert_eq!(c.seed_disconnect_wait, Duration::from_secs(3600));
        assert_eq!(c.min_time_between_crawls, Duration::from_secs(300));
        assert_eq!(c.seed_vetted_window, Duration::ZERO);
        assert_eq!(c.inbound_attempts_per_ip_per_minute, u32::MAX, "saturates");
        assert_eq!(c.inbound_attempts_per_group_per_minute, 5);
    }

    /// Keys left at their defaults keep the engine's own values where the CLI means "keep"
    /// (a zero redial cap, the reply size outside seed mode, feelers off at 0s).
    #[test]
    fn defaults_keep_the_engines_values() {
        let p = P2pConfig {
            feeler_interval: Duration::ZERO,
            ..P2pConfig::default()
        };
        let mut c = EngineConfig::default();
        p.apply_to(&mut c);
        let e = EngineConfig::default();
        assert_eq!(c.persistent_redial_cap, e.persistent_redial_cap);
        assert_eq!(c.addr_book.min_selection, e.addr_book.min_selection);
        assert_eq!(c.feeler_interval, Duration::ZERO);
    }
}
