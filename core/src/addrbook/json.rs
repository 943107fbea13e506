//! CometBFT `addrbook.json` import and export (spec 6.9).

use std::net::{IpAddr, SocketAddr};

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AddrBook, AddrBookConfig, EMPTY, UnixTime};
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

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parses a Go RFC 3339 (optionally nano) timestamp to Unix seconds; times before 1970
/// (including Go's zero time `0001-01-01T00:00:00Z`) give 0, "never".
pub(crate) fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start || i - start > 9 {
            return None;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some(u64::try_from(secs).unwrap_or(0))
}

/// Formats Unix seconds as Go's RFC 3339 (whole seconds print no fraction); 0 is Go's zero time.
pub(crate) fn format_rfc3339(t: UnixTime) -> String {
    if t == 0 {
        return "0001-01-01T00:00:00Z".to_owned();
    }
    let t = t.min(253_402_300_799) as i64; // 9999-12-31T23:59:59Z
    let (days, rem) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
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
            let Some(&idx) = book.by_addr.get(&p.addr.addr) else {
                continue;
            };
            if let Some(e) = book.entry_mut(idx) {
                e.attempts = p.attempts;
                e.last_attempt = p.last_attempt.min(now);
                e.last_success = p.last_success.min(now);
            }
            if p.old {
                let tpos = book.tried_pos(&p.addr.addr);
                let fresh = book.entry(idx).is_some_and(|e| !e.tried);
                if fresh && book.tried_table[tpos] == EMPTY {
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
        let key: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let mut addrs = Vec::with_capacity(self.len());
        for &idx in self.new_list.iter().chain(self.tried_list.iter()) {
            let Some(e) = self.entry(idx) else { continue };
            let mut buckets: Vec<u32> = Vec::new();
            if e.tried {
                buckets.push((self.tried_bucket(&e.addr.addr) % LEGACY_OLD_BUCKETS) as u32);
            } else {
                for &b in &e.new_buckets {
                    let b = (usize::from(b) % LEGACY_NEW_BUCKETS) as u32;
                    if !buckets.contains(&b) && buckets.len() < LEGACY_MAX_NEW_REFS {
                        buckets.push(b);
                    }
                }
            }
            let src_id = if e.source == e.addr.addr.ip() {
                e.addr.id.to_string()
            } else {
                "0".repeat(40)
            };
            addrs.push(JsonKnown {
                addr: JsonNetAddr {
                    id: e.addr.id.to_string(),
                    ip: e.addr.addr.ip().to_string(),
                    port: e.addr.addr.port(),
                },
                src: JsonNetAddr {
                    id: src_id,
                    ip: e.source.to_string(),
                    port: 0,
                },
                buckets: Some(buckets),
                attempts: i32::try_from(e.attempts).unwrap_or(i32::MAX),
                bucket_type: if e.tried {
                    BUCKET_TYPE_OLD
                } else {
                    BUCKET_TYPE_NEW
                },
                last_attempt: format_rfc3339(e.last_attempt),
                last_success: format_rfc3339(e.last_success),
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
    }
}
