//! CometBFT `addrbook.json` import and export (spec 6.9).

use std::net::{IpAddr, SocketAddr};

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{AddrBook, AddrBookConfig, EMPTY, Stamp, UnixTime};
use crate::addr::NetAddr;
use crate::ids::NodeId;

/// Why a CometBFT `addrbook.json` could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Not JSON of the current layout (this includes the 2017 capitalised layout).
    #[error("not a cometbft addrbook.json: {0}")]
    Json(#[from] serde_json::Error),
    /// An entry has a malformed field.
    #[error("addrbook.json entry {index}: {reason}")]
    Entry {
        /// Position of the entry in `addrs`.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

#[derive(Serialize, Deserialize)]
struct JsonNetAddr {
    id: String,
    ip: String,
    port: u16,
}

#[derive(Serialize, Deserialize)]
struct JsonKnown {
    addr: JsonNetAddr,
    src: JsonNetAddr,
    buckets: Option<Vec<u32>>,
    attempts: i32,
    bucket_type: u8,
    last_attempt: String,
    last_success: String,
    last_ban_time: String,
}

#[derive(Serialize, Deserialize)]
struct JsonBook {
    key: String,
    addrs: Option<Vec<JsonKnown>>,
}

const BUCKET_TYPE_NEW: u8 = 1;
const BUCKET_TYPE_OLD: u8 = 2;
/// CometBFT's bucket counts (spec 6.1): exported indices must be below them.
const LEGACY_NEW_BUCKETS: usize = 256;
const LEGACY_OLD_BUCKETS: usize = 64;
const LEGACY_MAX_NEW_REFS: usize = 4;

/// Parses a Go RFC 3339 (optionally nano) timestamp to Unix seconds; times before 1970
/// (including Go's zero time `0001-01-01T00:00:00Z`) give 0, "never".
pub(crate) fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(u64::try_from(t.unix_timestamp()).unwrap_or(0))
}

/// Formats Unix seconds as Go's RFC 3339 (whole seconds print no fraction); 0 is Go's zero time.
pub(crate) fn format_rfc3339(t: UnixTime) -> String {
    /// 9999-12-31T23:59:59Z, the last instant RFC 3339's four-digit year can write.
    const LAST: i64 = 253_402_300_799;
    if t == 0 {
        return "0001-01-01T00:00:00Z".to_owned();
    }
    let secs = i64::try_from(t).map_or(LAST, |s| s.min(LAST));
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned())
}

fn parse_netaddr(a: &JsonNetAddr) -> Option<NetAddr> {
    let id: NodeId = a.id.parse().ok()?;
    let ip: IpAddr = a.ip.parse().ok()?;
    Some(NetAddr::new(id, SocketAddr::new(ip, a.port)))
}

impl AddrBook {
    /// Imports a CometBFT `addrbook.json` (spec 6.9). A fresh placement key is drawn from `rng`
    /// (CometBFT's `key` is not a placement key we can reuse). Old (`bucket_type` 2) entries
    /// are promoted to tried where their slot is free; entries our rules refuse (non-routable
    /// in strict mode, fifth port of an IP, slot taken, ...) are skipped. A malformed file or
    /// entry is an error and nothing is imported.
    pub fn import_cometbft_json(
        json: &str,
        config: AddrBookConfig,
        rng: &mut impl RngCore,
        now: UnixTime,
    ) -> Result<AddrBook, ImportError> {
        let file: JsonBook = serde_json::from_str(json)?;
        let addrs = file.addrs.unwrap_or_default();
        struct Parsed {
            addr: NetAddr,
            src: IpAddr,
            old: bool,
            attempts: u32,
            last_attempt: UnixTime,
            last_success: UnixTime,
        }
        let mut parsed = Vec::with_capacity(addrs.len());
        for (index, k) in addrs.iter().enumerate() {
            let bad = |reason| ImportError::Entry { index, reason };
            let addr = parse_netaddr(&k.addr).ok_or(bad("bad addr"))?;
            let src: IpAddr = k.src.ip.parse().map_err(|_| bad("bad src ip"))?;
            let old = match k.bucket_type {
                BUCKET_TYPE_NEW => false,
                BUCKET_TYPE_OLD => true,
                _ => return Err(bad("bad bucket_type")),
            };
            let last_attempt = parse_rfc3339(&k.last_attempt).ok_or(bad("bad last_attempt"))?;
            let last_success = parse_rfc3339(&k.last_success).ok_or(bad("bad last_success"))?;
            parse_rfc3339(&k.last_ban_time).ok_or(bad("bad last_ban_time"))?;
            parsed.push(Parsed {
                addr,
                src,
                old,
                attempts: u32::try_from(k.attempts).unwrap_or(0),
                last_attempt,
                last_success,
            });
        }
        let mut book = AddrBook::new(config, rng);
        for p in parsed {
            if book.add(p.addr, p.src, now, rng).is_err() {
                continue;
            }
            let Some(idx) = book.idx_of(&p.addr.addr) else {
                continue;
            };
            let place = book.untested_place(idx);
            if let Some(e) = book.entry_mut(idx) {
                e.set_attempts(p.attempts);
                e.last_attempt = Stamp::at(p.last_attempt.min(now));
                e.last_success = Stamp::at(p.last_success.min(now));
            }
            book.untested_moved(idx, place);
            if p.old {
                let tpos = book.tried_pos(&p.addr.addr);
                let fresh = book.entry(idx).is_some_and(|e| !e.tried());
                if fresh && book.tried_table.get(tpos) == EMPTY {
                    book.promote(idx, tpos);
                }
            }
        }
        Ok(book)
    }

    /// Exports the entries as a CometBFT `addrbook.json` (spec 6.9, tab-indented). Bucket
    /// indices are reduced to CometBFT's ranges (256 new, 64 old) so its loader accepts them;
    /// the `key` is derived from ours by a one-way hash, never ours. The source's node id is
    /// not kept by us: the entry's own id is written for a self-announcement, zeros otherwise.
    #[must_use]
    pub fn export_cometbft_json(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"cometmesh addrbook.json key")
            .chain_update(self.key)
            .finalize();
        let key = hex::encode(&digest[..12]);
        let mut addrs = Vec::with_capacity(self.len());
        let multi = self.multi_refs();
        for &idx in self.new_list.iter().chain(self.tried_list.iter()) {
            let Some(e) = self.entry(idx) else { continue };
            let mut buckets: Vec<u32> = Vec::new();
            if e.tried() {
                buckets.push((self.tried_bucket(&e.socket(&self.v6)) % LEGACY_OLD_BUCKETS) as u32);
            } else {
                for b in Self::new_buckets_in(&multi, idx, e) {
                    let b = (usize::from(b) % LEGACY_NEW_BUCKETS) as u32;
                    if !buckets.contains(&b) && buckets.len() < LEGACY_MAX_NEW_REFS {
                        buckets.push(b);
                    }
                }
            }
            let source = self.source(e);
            let src_id = if source == e.ip(&self.v6) {
                e.id.to_string()
            } else {
                "0".repeat(40)
            };
            addrs.push(JsonKnown {
                addr: JsonNetAddr {
                    id: e.id.to_string(),
                    ip: e.ip(&self.v6).to_string(),
                    port: e.socket(&self.v6).port(),
                },
                src: JsonNetAddr {
                    id: src_id,
                    ip: source.to_string(),
                    port: 0,
                },
                buckets: Some(buckets),
                attempts: i32::try_from(e.attempts()).unwrap_or(i32::MAX),
                bucket_type: if e.tried() {
                    BUCKET_TYPE_OLD
                } else {
                    BUCKET_TYPE_NEW
                },
                last_attempt: format_rfc3339(e.last_attempt.get()),
                last_success: format_rfc3339(e.last_success.get()),
                last_ban_time: format_rfc3339(0),
            });
        }
        let file = JsonBook {
            key,
            addrs: Some(addrs),
        };
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        // Serializing plain strings and integers into a Vec cannot fail.
        if file.serialize(&mut ser).is_err() {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_go_forms() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("0001-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.123456789Z"),
            Some(1_714_564_800)
        );
        assert_eq!(
            parse_rfc3339("2017-11-07T01:11:34.692278-07:00"),
            Some(1_510_042_294)
        );
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00"), None);
        assert_eq!(parse_rfc3339("2024-13-01T12:00:00Z"), None);
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00.Z"), None);
        for t in [1u64, 1_714_564_800, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(format_rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(0), "0001-01-01T00:00:00Z");
    }
}
