//! Our own address-book file format (G22): versioned, checksummed, never partially loaded.
//!
//! Layout (integers big-endian):
//!
//! | field | size |
//! |---|---|
//! | magic `CMADDRBK` | 8 |
//! | format version (2) | 1 |
//! | lowest compatible version (1, or 2 when a ban covers no IP): a reader older than this refuses the file | 1 |
//! | placement key | 16 |
//! | group map: strict flag, IPv4 bits, IPv6 bits | 3 |
//! | geometry: new buckets, tried buckets, bucket size | 2 + 2 + 2 |
//! | counts: new entries, tried entries, bans | 4 + 4 + 4 |
//! | last successful connection time | 8 |
//! | entries (new, then tried), bans | variable |
//! | SHA-256 of everything above | 32 |
//!
//! Entry: node id (20), address (IP tag 4/6, IP, port), source IP (tag, IP), last seen, last
//! attempt, last success, last counted attempt (8 each), attempts (4), tried flag (1), number
//! of new buckets (1) and each bucket index (2). Ban: node id, IP (tag 0 and nothing else for
//! a ban on the node id alone: format 2; format 1 always has an IP), until (8), number of
//! saved entries (1) and each saved address and source. Format 1 files (written before bans
//! could leave the IP out) are read as they are; a book with no id-only ban is written with
//! lowest compatible version 1, so an older cometmesh still reads it.
//!
//! Not persisted: buffered tried collisions (re-found by the next `mark_good`), the hourly
//! reinstatement budget, and our own, private and persistent addresses (configuration).
//!
//! The checksum is verified before anything is parsed, so a truncated or bit-flipped file is
//! rejected as a whole; a file whose group map or geometry differs from the configuration is
//! rebucketed from each entry's source (G6); the rebuilt book must pass [`AddrBook::check`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use super::{
    AddrBook, AddrBookConfig, BUCKET_SIZE, Ban, EMPTY, Entry, MAX_BANS, MAX_NEW_REFS,
    MAX_SAVED_PER_BAN, NEW_BUCKETS, Stamp, TRIED_BUCKETS, UnixTime,
};
use crate::addr::NetAddr;
use crate::ids::NodeId;

const MAGIC: &[u8; 8] = b"CMADDRBK";
const FORMAT_VERSION: u8 = 2;
/// The first format whose bans may leave the IP out (IP tag 0).
const OPTIONAL_BAN_IP: u8 = 2;
const HEADER_LEN: usize = 8 + 1 + 1 + 16 + 3 + 6 + 12 + 8;
const CHECKSUM_LEN: usize = 32;
/// Smallest encoded entry (IPv4 address and source, no bucket).
const MIN_ENTRY_LEN: usize = 20 + 7 + 5 + 32 + 4 + 1 + 1;
const MIN_BAN_LEN: usize = 20 + 1 + 8 + 1;

/// Why bytes could not be loaded as an address book.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before the header and checksum.
    #[error("address book file is truncated")]
    Truncated,
    /// The bytes are not a cometmesh address book (wrong magic).
    #[error("not a cometmesh address book file")]
    Foreign,
    /// Written by a newer version that this one cannot read.
    #[error("address book format {found} needs a newer cometmesh (we read up to {supported})")]
    UnsupportedVersion {
        /// The file's lowest compatible version.
        found: u8,
        /// The newest version we read.
        supported: u8,
    },
    /// The checksum does not match: a partial write or corruption.
    #[error("address book checksum mismatch (partial write or corruption)")]
    Checksum,
    /// The checksum matches but the content is inconsistent.
    #[error("address book is corrupt: {0}")]
    Corrupt(&'static str),
}

fn put_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            out.push(4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(6);
            out.extend_from_slice(&v6.octets());
        }
    }
}

fn put_netaddr(out: &mut Vec<u8>, a: &NetAddr) {
    out.extend_from_slice(a.id.as_bytes());
    put_ip(out, &a.addr.ip());
    out.extend_from_slice(&a.addr.port().to_be_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Corrupt("record runs past the end"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn ip(&mut self) -> Result<IpAddr, DecodeError> {
        match self.u8()? {
            4 => {
                let mut a = [0u8; 4];
                a.copy_from_slice(self.take(4)?);
                Ok(IpAddr::V4(Ipv4Addr::from(a)))
            }
            6 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(self.take(16)?);
                Ok(IpAddr::V6(Ipv6Addr::from(a)))
            }
            _ => Err(DecodeError::Corrupt("bad ip tag")),
        }
    }
    fn netaddr(&mut self) -> Result<NetAddr, DecodeError> {
        let mut id = [0u8; 20];
        id.copy_from_slice(self.take(20)?);
        let ip = self.ip()?;
        let port = self.u16()?;
        Ok(NetAddr::new(NodeId(id), SocketAddr::new(ip, port)))
    }
}

impl AddrBook {
    /// Encodes the whole book (entries, placement, bans, key) in our checksummed format (G22).
    /// Own, private and persistent addresses come from configuration and are not included.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.len() * 96 + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        let id_only_bans = self.bans.iter().any(|b| b.ip.is_none());
        out.push(if id_only_bans { OPTIONAL_BAN_IP } else { 1 });
        out.extend_from_slice(&self.key);
        out.push(u8::from(self.config.strict));
        out.push(self.config.ipv4_group_bits);
        out.push(self.config.ipv6_group_bits);
        out.extend_from_slice(&(NEW_BUCKETS as u16).to_be_bytes());
        out.extend_from_slice(&(TRIED_BUCKETS as u16).to_be_bytes());
        out.extend_from_slice(&(BUCKET_SIZE as u16).to_be_bytes());
        out.extend_from_slice(&(self.new_list.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.tried_list.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.bans.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.last_good.to_be_bytes());
        let multi = self.multi_refs();
        for &idx in self.new_list.iter().chain(self.tried_list.iter()) {
            let Some(e) = self.entry(idx) else { continue };
            out.extend_from_slice(e.id.as_bytes());
            put_ip(&mut out, &e.ip(&self.v6));
            out.extend_from_slice(&e.port().to_be_bytes());
            put_ip(&mut out, &self.source(e));
            for t in [
                e.last_seen,
                e.last_attempt,
                e.last_success,
                e.last_count_attempt,
            ] {
                out.extend_from_slice(&t.get().to_be_bytes());
            }
            out.extend_from_slice(&e.attempts().to_be_bytes());
            out.push(u8::from(e.tried()));
            out.push(e.new_refs());
            for b in Self::new_buckets_in(&multi, idx, e) {
                out.extend_from_slice(&b.to_be_bytes());
            }
        }
        for b in &self.bans {
            out.extend_from_slice(b.id.as_bytes());
            match &b.ip {
                Some(ip) => put_ip(&mut out, ip),
                None => out.push(0),
            }
            out.extend_from_slice(&b.until.to_be_bytes());
            out.push(b.saved.len() as u8);
            for (a, src) in &b.saved {
                put_netaddr(&mut out, a);
                put_ip(&mut out, src);
            }
        }
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Decodes a book written by [`Self::encode`]. Any truncation, bit flip, foreign or newer
    /// file is a typed error; nothing is ever partially loaded. If the file's group map or
    /// geometry differs from `config`, entries are rebucketed from their sources (G6).
    pub fn decode(bytes: &[u8], config: AddrBookConfig) -> Result<AddrBook, DecodeError> {
        if bytes.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(bytes) {
                DecodeError::Truncated
            } else {
                DecodeError::Foreign
            });
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(DecodeError::Foreign);
        }
        if bytes.len() >= MAGIC.len() + 2 && bytes[MAGIC.len() + 1] > FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: bytes[MAGIC.len() + 1],
                supported: FORMAT_VERSION,
            });
        }
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(DecodeError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        // Under the fuzzer the checksum is not enforced, so it can reach the parser behind it.
        if !cfg!(fuzzing) && Sha256::digest(body).as_slice() != sum {
            return Err(DecodeError::Checksum);
        }
        let version = body[MAGIC.len()];
        let mut r = Reader {
            buf: &body[MAGIC.len() + 2..],
        };
        let mut key = [0u8; 16];
        key.copy_from_slice(r.take(16)?);
        if key == [0u8; 16] {
            return Err(DecodeError::Corrupt("zero key"));
        }
        let strict = r.u8()? != 0;
        let (v4_bits, v6_bits) = (r.u8()?, r.u8()?);
        let geometry = (r.u16()?, r.u16()?, r.u16()?);
        let (n_new, n_tried, n_bans) = (r.u32()? as usize, r.u32()? as usize, r.u32()? as usize);
        let last_good = r.u64()?;
        let rebucket = strict != config.strict
            || v4_bits != config.ipv4_group_bits
            || v6_bits != config.ipv6_group_bits
            || geometry != (NEW_BUCKETS as u16, TRIED_BUCKETS as u16, BUCKET_SIZE as u16);
        let n = n_new.saturating_add(n_tried);
        if n > NEW_BUCKETS * BUCKET_SIZE + TRIED_BUCKETS * BUCKET_SIZE
            || n_bans > MAX_BANS
            || n.saturating_mul(MIN_ENTRY_LEN) + n_bans.saturating_mul(MIN_BAN_LEN) > r.buf.len()
        {
            return Err(DecodeError::Corrupt("counts out of range"));
        }
        let mut book = AddrBook::with_key(config, key);
        book.last_good = last_good;
        book.entries.reserve(n);
        book.index_reserve(n);
        book.new_list.reserve(n_new);
        book.tried_list.reserve(n_tried);
        for i in 0..n {
            let addr = r.netaddr()?;
            let source = r.ip()?;
            let (last_seen, last_attempt, last_success, last_count_attempt) =
                (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let attempts = r.u32()?;
            let tried = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(DecodeError::Corrupt("bad tried flag")),
            };
            if tried != (i >= n_new) {
                return Err(DecodeError::Corrupt("entry in the wrong table"));
            }
            let nb = r.u8()?;
            if (tried && nb != 0) || (!tried && (nb == 0 || nb > MAX_NEW_REFS)) {
                return Err(DecodeError::Corrupt("bad reference count"));
            }
            let mut buckets: SmallVec<[u16; 2]> = SmallVec::new();
            for _ in 0..nb {
                let b = r.u16()?;
                if usize::from(b) >= NEW_BUCKETS || buckets.contains(&b) {
                    return Err(DecodeError::Corrupt("bad bucket index"));
                }
                buckets.push(b);
            }
            if book.contains(&addr.addr) {
                return Err(DecodeError::Corrupt("duplicate address"));
            }
            if book.ports_at(addr.addr.ip()) >= book.config.max_ports_per_ip {
                return Err(DecodeError::Corrupt("too many ports for one ip"));
            }
            // Times after 2106 saturate (see `Stamp`), as they would in a running book.
            let mut entry = Entry::new(addr.id, addr.addr.port(), last_seen);
            entry.last_attempt = Stamp::at(last_attempt);
            entry.last_success = Stamp::at(last_success);
            entry.last_count_attempt = Stamp::at(last_count_attempt);
            entry.set_attempts(attempts);
            if rebucket {
                book.load_rebucketed(entry, addr.addr, source, tried);
            } else {
                book.load_placed(entry, addr.addr, source, tried, &buckets)?;
            }
        }
        for _ in 0..n_bans {
            let mut id = [0u8; 20];
            id.copy_from_slice(r.take(20)?);
            let ip = if version >= OPTIONAL_BAN_IP && r.buf.first() == Some(&0) {
                r.u8()?;
                None
            } else {
                Some(r.ip()?)
            };
            let until: UnixTime = r.u64()?;
            let ns = r.u8()?;
            if usize::from(ns) > MAX_SAVED_PER_BAN {
                return Err(DecodeError::Corrupt("too many saved entries in a ban"));
            }
            let mut saved = SmallVec::new();
            for _ in 0..ns {
                let a = r.netaddr()?;
                let src = r.ip()?;
                saved.push((a, src));
            }
            book.bans.push(Ban {
                id: NodeId(id),
                ip,
                until,
                saved,
            });
        }
        if !r.buf.is_empty() {
            return Err(DecodeError::Corrupt("trailing bytes"));
        }
        book.rebuild_ban_maps();
        book.check()
            .map_err(|_| DecodeError::Corrupt("inconsistent tables"))?;
        Ok(book)
    }

    /// Loads an entry at its stored positions; any clash is corruption.
    fn load_placed(
        &mut self,
        mut entry: Entry,
        addr: SocketAddr,
        source: IpAddr,
        tried: bool,
        buckets: &[u16],
    ) -> Result<(), DecodeError> {
        entry.set_tried(tried);
        if tried {
            let pos = self.tried_pos(&addr);
            if self.tried_table.get(pos) != EMPTY {
                return Err(DecodeError::Corrupt("tried slot clash"));
            }
            let idx = self.insert_entry(entry, addr.ip(), source);
            self.set_tried_slot(pos, idx);
        } else {
            let positions: SmallVec<[usize; 2]> = buckets
                .iter()
                .map(|&b| self.new_pos(usize::from(b), &addr))
                .collect();
            if positions.iter().any(|&p| self.new_table.get(p) != EMPTY) {
                return Err(DecodeError::Corrupt("new slot clash"));
            }
            let idx = self.insert_entry(entry, addr.ip(), source);
            for (&b, &p) in buckets.iter().zip(&positions) {
                self.place_new(idx, usize::from(b), p);
            }
        }
        Ok(())
    }

    /// Loads an entry under a different group map or geometry: tried entries go to their tried
    /// slot (or new on a clash), new ones to their source's bucket; a clash drops the newcomer.
    fn load_rebucketed(&mut self, entry: Entry, addr: SocketAddr, source: IpAddr, tried: bool) {
        if tried {
            let pos = self.tried_pos(&addr);
            if self.tried_table.get(pos) == EMPTY {
                let mut e = entry;
                e.set_tried(true);
                let idx = self.insert_entry(e, addr.ip(), source);
                self.set_tried_slot(pos, idx);
                return;
            }
        }
        let bucket = self.new_bucket(&addr, &source);
        let pos = self.new_pos(bucket, &addr);
        if self.new_table.get(pos) == EMPTY {
            let idx = self.insert_entry(entry, addr.ip(), source);
            self.place_new(idx, bucket, pos);
        }
    }
}
