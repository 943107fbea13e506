//! The address book (spec 6, peer-management.md): new and tried tables, bans, persistence.
//!
//! A Bitcoin-Core-addrman-style book that CometBFT's legacy `p2p/pex` book is a 2014 copy of,
//! with the 2015 eclipse countermeasures applied:
//! - **geometry** of today's addrman: new 1024×64, tried 256×64; one source group reaches at
//!   most 64 new buckets (G1), one address group at most 8 tried buckets (G2); an address holds at
//!   most 8 new references, each extra one exponentially less likely;
//! - **keyed, fixed slots**: bucket and slot are SipHash-2-4 of the address (and source) group
//!   under a 128-bit key drawn from the injected RNG at creation and persisted (G3), so an
//!   attacker cannot aim at an honest entry and a reload reproduces every slot;
//! - **no honest deletion by flooding**: an occupied slot is taken over only if its occupant is
//!   terrible, or holds a duplicate reference while the newcomer has none (G4);
//! - **entries keyed by IP:port**, the node id an attribute; ≤ 4 ports per IP (G5);
//! - **uniform picks** inside a table from a dense index (no bucket-first bias), a configurable
//!   tried/new coin (50/50 by default, G8), a recency penalty (G9);
//! - **test-before-evict** for tried collisions (G11);
//! - **bans** of node id *and* IP, atomic with removal from the tables; expiry reinstates into
//!   *new* only (G14–G16); failed dials make an entry terrible, never banned;
//! - a **consistency checker** [`AddrBook::check`] (G23) and a versioned, checksummed
//!   [`encoding`](AddrBook::encode) (G22), plus CometBFT `addrbook.json` import/export (spec 6.9).
//!
//! Time is [`UnixTime`] seconds passed in by the caller; `0` means "never". Every decision that
//! depends on order uses the RNG passed in or vectors, never hash-map iteration order.

mod bans;
mod check;
mod codec;
mod entry;
mod group;
mod index;
mod json;
#[cfg(test)]
mod limit_tests;
mod select;
mod slab;
mod table;
mod untested;
mod v6pool;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use entry::{Entry, PackedIp, Stamp};
use hashbrown::{HashMap, HashSet};
use index::Indexes;
use rand_core::RngCore;
use select::uniform;
use siphasher::sip::SipHasher24;
use slab::Slab;
use smallvec::SmallVec;
use std::hash::Hasher;
use table::SlotTable;
use untested::UntestedIndex;
use v6pool::V6Pool;

use crate::addr::NetAddr;
use crate::ids::NodeId;

pub use codec::DecodeError;
pub use group::Group;
pub(crate) use group::{is_routable, is_valid};
pub use json::ImportError;

/// The book's clock: seconds since the Unix epoch, as persisted. `0` means "never".
pub type UnixTime = u64;

/// Number of new buckets.
pub const NEW_BUCKETS: usize = 1024;
/// Number of tried buckets.
pub const TRIED_BUCKETS: usize = 256;
/// Slots per bucket.
pub const BUCKET_SIZE: usize = 64;
/// New buckets reachable from one source group (G1).
pub const NEW_BUCKETS_PER_SOURCE_GROUP: u64 = 64;
/// Tried buckets reachable from one address group (G2).
pub const TRIED_BUCKETS_PER_GROUP: u64 = 8;
/// Most new-table references one address may hold.
pub const MAX_NEW_REFS: u8 = 8;
/// Most ports kept for one IP (G5).
pub const MAX_PORTS_PER_IP: usize = 4;
/// Most tried collisions waiting for test-before-evict (G11).
pub const MAX_TRIED_COLLISIONS: usize = 10;
/// Most ban records kept; when full, the one expiring first is dropped.
pub const MAX_BANS: usize = 16_384;
/// Most entries a ban record keeps for reinstatement.
pub const MAX_SAVED_PER_BAN: usize = 16;
/// Below this many entries the book [needs more](AddrBook::needs_more) (spec 6.1).
pub const NEED_ADDRESS_THRESHOLD: usize = 1000;
/// Most addresses in one PEX reply (spec 6.1, G19).
pub const MAX_SELECTION: usize = 250;
/// Percentage of the book a PEX reply may reveal (G19).
pub const SELECTION_PERCENT: usize = 23;

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// An incumbent that succeeded this recently is never displaced (G11).
const REPLACEMENT_WINDOW: u64 = 4 * HOUR;
/// An unresolved tried collision older than this is force-resolved (G11).
const TEST_WINDOW: u64 = 40 * MINUTE;
/// An entry attempted this recently has its selection chance divided by 100 (G9).
const RECENT_ATTEMPT: u64 = 10 * MINUTE;
const HORIZON: u64 = 30 * DAY;
const RETRIES: u32 = 3;
const MAX_FAILURES: u32 = 10;
const MIN_FAIL: u64 = 7 * DAY;
const EMPTY: u32 = u32::MAX;

/// Tunables of the book. `Default` gives the documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrBookConfig {
    /// `addr_book_strict`: reject private and non-routable addresses (spec 6.10). Default true.
    pub strict: bool,
    /// How long a ban lasts. Default 24 h.
    pub ban_duration: Duration,
    /// Prefix length of an IPv4 group. Default 16.
    pub ipv4_group_bits: u8,
    /// Prefix length of an IPv6 group. Default 32.
    pub ipv6_group_bits: u8,
    /// Percentage of picks drawn from tried when both tables are non-empty. Default 50 (G8).
    pub tried_bias_percent: u8,
    /// Most expired bans reinstated per hour (G16). Default 100.
    pub max_reinstatements_per_hour: u32,
    /// Smallest PEX reply (capped by the book size). Default 0, so a reply never exceeds 23 %
    /// of the book (G19); CometBFT uses 32, which helps tiny networks bootstrap.
    pub min_selection: usize,
    /// Most ports kept for one IP (G5). Default [`MAX_PORTS_PER_IP`]; a local test network whose
    /// nodes all listen on one loopback address raises it.
    pub max_ports_per_ip: usize,
}

impl Default for AddrBookConfig {
    fn default() -> Self {
        AddrBookConfig {
            strict: true,
            ban_duration: Duration::from_secs(DAY),
            ipv4_group_bits: 16,
            ipv6_group_bits: 32,
            tried_bias_percent: 50,
            max_reinstatements_per_hour: 100,
            min_selection: 0,
            max_ports_per_ip: MAX_PORTS_PER_IP,
        }
    }
}

/// What [`AddrBook::add`] did with an acceptable address.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AddOutcome {
    /// A new entry was created in the new table.
    Added,
    /// The address was known; it got another new-table reference.
    NewReference,
    /// The address was known; only its last-heard time was refreshed.
    Known,
}

/// Why [`AddrBook::add`] refused an address.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddRejected {
    /// The address is one of ours.
    #[error("address is our own")]
    OwnAddress,
    /// The node id or the IP is banned.
    #[error("address is banned")]
    Banned,
    /// The node id is private (`private_peer_ids`).
    #[error("node id is private")]
    PrivateId,
    /// Strict mode and the address is private or non-routable (spec 6.10).
    #[error("address is not routable")]
    NonRoutable,
    /// Unspecified IP, broadcast, documentation range or port 0.
    #[error("address is invalid")]
    Invalid,
    /// The IP already has the maximum number of ports in the book (G5).
    #[error("too many ports for this ip")]
    TooManyPorts,
    /// The slot this address maps to holds a live entry, which is kept (G4).
    #[error("slot taken by a live entry")]
    SlotTaken,
}

/// What [`AddrBook::mark_good`] did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GoodOutcome {
    /// The entry is not in the book.
    Unknown,
    /// The entry was already in tried; its success time was refreshed.
    AlreadyTried,
    /// The entry moved from new to tried.
    Promoted,
    /// Its tried slot is held by another entry: the pair waits for test-before-evict (see
    /// [`AddrBook::tried_collision_to_test`] and [`AddrBook::resolve_collisions`]).
    Collision {
        /// The incumbent to test.
        incumbent: NetAddr,
    },
}

/// A violated invariant found by [`AddrBook::check`].
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("address book inconsistent: {0}")]
pub struct CheckError(pub String);

/// A ban record: a node id, and the IP it came from when the ban covers the IP too (see
/// [`AddrBook::ban_scoped`]), banned until `until`, with the entries removed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ban {
    id: NodeId,
    ip: Option<IpAddr>,
    until: UnixTime,
    /// Entries removed when banning, reinstated into new on expiry (address, original source).
    saved: SmallVec<[(NetAddr, IpAddr); 1]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Collision {
    entry: u32,
    since: UnixTime,
}

/// The address book. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct AddrBook {
    config: AddrBookConfig,
    key: [u8; 16],
    k0: u64,
    k1: u64,
    entries: Slab,
    free: Vec<u32>,
    /// The entries' IPv6 addresses and sources, each once.
    v6: V6Pool,
    /// Entry by IP:port, entries by IP and by node id.
    index: Indexes,
    /// The never-reached entries in order, once [`AddrBook::untested`] was asked.
    untested: UntestedIndex,
    new_table: SlotTable,
    tried_table: SlotTable,
    /// Occupied slots of each table, kept exact by the only two writers of the tables
    /// (`set_new_slot`, `set_tried_slot`), so `check` needs no full scan.
    new_used: usize,
    tried_used: usize,
    new_list: Vec<u32>,
    tried_list: Vec<u32>,
    collisions: Vec<Collision>,
    bans: Vec<Ban>,
    ban_ids: HashMap<NodeId, UnixTime>,
    ban_ips: HashMap<IpAddr, UnixTime>,
    /// Last time any connection succeeded (failures before it are not ours, G10).
    last_good: UnixTime,
    reinstate_window: (UnixTime, u32),
    own: HashSet<SocketAddr>,
    private_ids: HashSet<NodeId>,
    persistent_ids: HashSet<NodeId>,
    persistent_addrs: HashSet<SocketAddr>,
}

impl AddrBook {
    /// An empty book whose placement key is drawn from `rng` (and persisted by [`Self::encode`]).
    pub fn new(config: AddrBookConfig, rng: &mut impl RngCore) -> AddrBook {
        let mut key = [0u8; 16];
        while key == [0u8; 16] {
            rng.fill_bytes(&mut key);
        }
        Self::with_key(config, key)
    }

    fn with_key(config: AddrBookConfig, key: [u8; 16]) -> AddrBook {
        let mut k = [0u8; 8];
        k.copy_from_slice(&key[..8]);
        let k0 = u64::from_le_bytes(k);
        k.copy_from_slice(&key[8..]);
        let k1 = u64::from_le_bytes(k);
        AddrBook {
            config,
            key,
            k0,
            k1,
            entries: Slab::default(),
            free: Vec::new(),
            v6: V6Pool::default(),
            index: Indexes::default(),
            untested: None,
            new_table: SlotTable::new(NEW_BUCKETS * BUCKET_SIZE),
            tried_table: SlotTable::new(TRIED_BUCKETS * BUCKET_SIZE),
            new_used: 0,
            tried_used: 0,
            new_list: Vec::new(),
            tried_list: Vec::new(),
            collisions: Vec::new(),
            bans: Vec::new(),
            ban_ids: HashMap::new(),
            ban_ips: HashMap::new(),
            last_good: 0,
            reinstate_window: (0, 0),
            own: HashSet::new(),
            private_ids: HashSet::new(),
            persistent_ids: HashSet::new(),
            persistent_addrs: HashSet::new(),
        }
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &AddrBookConfig {
        &self.config
    }

    /// The secret placement key (persisted; never put it on the wire).
    #[must_use]
    pub fn key(&self) -> [u8; 16] {
        self.key
    }

    // ----- placement -------------------------------------------------------------------------

    fn hash(&self, parts: &[&[u8]]) -> u64 {
        let mut h = SipHasher24::new_with_keys(self.k0, self.k1);
        for p in parts {
            h.write(p);
        }
        h.finish()
    }

    /// The group of `ip` under this book's configuration (the engine uses it for outbound
    /// diversity, G7).
    #[must_use]
    pub fn group_of(&self, ip: &IpAddr) -> Group {
        group::group_of(
            ip,
            self.config.strict,
            self.config.ipv4_group_bits,
            self.config.ipv6_group_bits,
        )
    }

    fn addr_bytes(addr: &SocketAddr, out: &mut [u8; 19]) -> usize {
        match addr.ip() {
            IpAddr::V4(v4) => {
                out[0] = 4;
                out[1..5].copy_from_slice(&v4.octets());
                out[5..7].copy_from_slice(&addr.port().to_be_bytes());
                7
            }
            IpAddr::V6(v6) => {
                out[0] = 6;
                out[1..17].copy_from_slice(&v6.octets());
                out[17..19].copy_from_slice(&addr.port().to_be_bytes());
                19
            }
        }
    }

    /// The new bucket of `addr` learned from `source`.
    #[must_use]
    pub fn new_bucket(&self, addr: &SocketAddr, source: &IpAddr) -> usize {
        let (mut ga, mut gs) = ([0u8; 17], [0u8; 17]);
        let la = self.group_of(&addr.ip()).hash_bytes(&mut ga);
        let ls = self.group_of(source).hash_bytes(&mut gs);
        let h1 = self.hash(&[b"N1", &ga[..la], &gs[..ls]]) % NEW_BUCKETS_PER_SOURCE_GROUP;
        let h2 = self.hash(&[b"N2", &gs[..ls], &h1.to_le_bytes()]);
        (h2 % NEW_BUCKETS as u64) as usize
    }

    /// The tried bucket of `addr`.
    #[must_use]
    pub fn tried_bucket(&self, addr: &SocketAddr) -> usize {
        let mut ab = [0u8; 19];
        let la = Self::addr_bytes(addr, &mut ab);
        let mut ga = [0u8; 17];
        let lg = self.group_of(&addr.ip()).hash_bytes(&mut ga);
        let h1 = self.hash(&[b"T1", &ab[..la]]) % TRIED_BUCKETS_PER_GROUP;
        let h2 = self.hash(&[b"T2", &ga[..lg], &h1.to_le_bytes()]);
        (h2 % TRIED_BUCKETS as u64) as usize
    }

    fn slot(&self, tried: bool, bucket: usize, addr: &SocketAddr) -> usize {
        let mut ab = [0u8; 19];
        let la = Self::addr_bytes(addr, &mut ab);
        let tag: &[u8] = if tried { b"K" } else { b"N" };
        let h = self.hash(&[tag, &(bucket as u64).to_le_bytes(), &ab[..la]]);
        (h % BUCKET_SIZE as u64) as usize
    }

    fn new_pos(&self, bucket: usize, addr: &SocketAddr) -> usize {
        bucket * BUCKET_SIZE + self.slot(false, bucket, addr)
    }

    fn tried_pos(&self, addr: &SocketAddr) -> usize {
        let b = self.tried_bucket(addr);
        b * BUCKET_SIZE + self.slot(true, b, addr)
    }

    // ----- small helpers ---------------------------------------------------------------------

    /// The IP of the peer that told us about `e` (its own IP for a self-announcement).
    fn source(&self, e: &Entry) -> IpAddr {
        e.source_ip(&self.v6)
    }

    /// The new buckets referencing entry `idx`, ascending: its anchor when it has one
    /// reference, else the buckets of the new-table slots holding it (a scan of the table,
    /// which only promotions, deletions and exports of entries with several references pay).
    fn new_buckets(&self, idx: u32) -> SmallVec<[u16; MAX_NEW_REFS as usize]> {
        match self.entry(idx) {
            Some(e) if e.new_refs() > 1 => self
                .new_table
                .positions_of(idx)
                .iter()
                .map(|&p| (p / BUCKET_SIZE) as u16)
                .collect(),
            Some(e) => e.anchor().into_iter().collect(),
            None => SmallVec::new(),
        }
    }

    /// `(entry, bucket)` of every new-table reference held by an entry with several, sorted:
    /// one pass over the table for an export, where [`Self::new_buckets`] per entry would scan
    /// the table once for each such entry.
    fn multi_refs(&self) -> Vec<(u32, u16)> {
        // References per entry, counted by a first pass over the table: reading an entry per
        // slot instead (the slab is the book's largest part) made a full book's encoding slower.
        let mut held = vec![0u8; self.entries.len()];
        self.new_table.for_each_occupied(|_, idx| {
            if let Some(n) = held.get_mut(idx as usize) {
                *n = n.saturating_add(1);
            }
        });
        let mut refs = Vec::new();
        if held.iter().any(|&n| n > 1) {
            self.new_table.for_each_occupied(|pos, idx| {
                if held.get(idx as usize).is_some_and(|&n| n > 1) {
                    refs.push((idx, (pos / BUCKET_SIZE) as u16));
                }
            });
            refs.sort_unstable();
        }
        refs
    }

    /// [`Self::new_buckets`] of entry `e` at `idx`, with the references of entries with several taken from
    /// `multi` ([`Self::multi_refs`]).
    fn new_buckets_in<'a>(
        multi: &'a [(u32, u16)],
        idx: u32,
        e: &Entry,
    ) -> impl Iterator<Item = u16> + 'a {
        let (one, several) = if e.new_refs() > 1 {
            let start = multi.partition_point(|&(i, _)| i < idx);
            let len = multi[start..]
                .iter()
                .take_while(|&&(i, _)| i == idx)
                .count();
            (None, &multi[start..start + len])
        } else {
            (e.anchor(), &[][..])
        };
        one.into_iter().chain(several.iter().map(|&(_, b)| b))
    }

    /// The only writer of the new table: keeps `new_used` exact.
    fn set_new_slot(&mut self, pos: usize, idx: u32) {
        let was = self.new_table.get(pos) != EMPTY;
        self.new_table.set(pos, idx);
        match (was, idx != EMPTY) {
            (false, true) => self.new_used += 1,
            (true, false) => self.new_used -= 1,
            _ => {}
        }
    }

    /// The only writer of the tried table: keeps `tried_used` exact.
    fn set_tried_slot(&mut self, pos: usize, idx: u32) {
        let was = self.tried_table.get(pos) != EMPTY;
        self.tried_table.set(pos, idx);
        match (was, idx != EMPTY) {
            (false, true) => self.tried_used += 1,
            (true, false) => self.tried_used -= 1,
            _ => {}
        }
    }

    fn entry(&self, idx: u32) -> Option<&Entry> {
        self.entries.get(idx)
    }

    /// The entry stored for this IP:port.
    fn entry_at(&self, addr: &SocketAddr) -> Option<&Entry> {
        self.idx_of(addr).and_then(|i| self.entry(i))
    }

    fn entry_mut(&mut self, idx: u32) -> Option<&mut Entry> {
        self.entries.get_mut(idx)
    }

    /// Whether the entry's id or address is persistent (its address is unpacked only when
    /// some persistent address is configured).
    fn entry_persistent(&self, e: &Entry) -> bool {
        self.persistent_ids.contains(&e.id)
            || (!self.persistent_addrs.is_empty()
                && self.persistent_addrs.contains(&e.socket(&self.v6)))
    }

    fn terrible(&self, e: &Entry, now: UnixTime) -> bool {
        if self.entry_persistent(e) {
            return false;
        }
        is_terrible(e, now)
    }

    // ----- configuration of special addresses ------------------------------------------------

    /// Records one of our own listen or external addresses: it is removed from the book and
    /// never added again.
    pub fn add_our_address(&mut self, addr: SocketAddr) {
        self.own.insert(addr);
        self.remove(addr);
    }

    /// Sets the private node ids (`private_peer_ids`): never added, never gossiped.
    pub fn set_private_ids(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        // Removals go in the caller's order, never in the set's (randomly seeded) hash order:
        // the order decides which slots are freed first, and so the book's later layout.
        let ids: Vec<NodeId> = ids.into_iter().collect();
        self.private_ids = ids.iter().copied().collect();
        let drop: Vec<SocketAddr> = ids
            .iter()
            .flat_map(|&id| self.with_id(id))
            .filter_map(|i| self.entry(i).map(|e| e.socket(&self.v6)))
            .collect();
        for a in drop {
            self.remove(a);
        }
    }

    /// Marks a persistent peer (by id and by address): never banned, never evicted or dropped,
    /// never terrible.
    pub fn set_persistent(&mut self, addr: NetAddr) {
        self.persistent_ids.insert(addr.id);
        self.persistent_addrs.insert(addr.addr);
    }

    // ----- add -------------------------------------------------------------------------------

    /// Adds `addr` heard from `source` (the IP of the peer that told us; the address's own IP
    /// for a self-announcement). Placement depends on the groups of both (G1, G2).
    ///
    /// A known IP:port keeps its node id whatever id is announced (G5); it only refreshes its
    /// last-heard time and may gain one more new-table reference (probability 2^-refs, ≤ 8).
    pub fn add(
        &mut self,
        addr: NetAddr,
        source: IpAddr,
        now: UnixTime,
        rng: &mut impl RngCore,
    ) -> Result<AddOutcome, AddRejected> {
        let ip = addr.addr.ip();
        if self.own.contains(&addr.addr) {
            return Err(AddRejected::OwnAddress);
        }
        if !group::is_valid(&ip) || addr.addr.port() == 0 {
            return Err(AddRejected::Invalid);
        }
        if self.is_banned(&addr.id, &ip, now) {
            return Err(AddRejected::Banned);
        }
        if self.private_ids.contains(&addr.id) {
            return Err(AddRejected::PrivateId);
        }
        if self.config.strict && !group::is_routable(&ip) {
            return Err(AddRejected::NonRoutable);
        }
        if let Some(idx) = self.idx_of(&addr.addr) {
            return Ok(self.add_known(idx, source, now, rng));
        }
        if self.ports_at(ip) >= self.config.max_ports_per_ip {
            return Err(AddRejected::TooManyPorts);
        }
        let bucket = self.new_bucket(&addr.addr, &source);
        let pos = self.new_pos(bucket, &addr.addr);
        if !self.make_room_new(pos, now) {
            return Err(AddRejected::SlotTaken);
        }
        let entry = Entry::new(addr.id, addr.addr.port(), now);
        let idx = self.insert_entry(entry, ip, source);
        self.place_new(idx, bucket, pos);
        Ok(AddOutcome::Added)
    }

    fn add_known(
        &mut self,
        idx: u32,
        source: IpAddr,
        now: UnixTime,
        rng: &mut impl RngCore,
    ) -> AddOutcome {
        let place = self.untested_place(idx);
        let Some(e) = self.entry_mut(idx) else {
            return AddOutcome::Known;
        };
        e.last_seen = Stamp::at(e.last_seen.get().max(now));
        self.untested_moved(idx, place);
        let Some(e) = self.entry(idx) else {
            return AddOutcome::Known;
        };
        if e.tried() || e.new_refs() >= MAX_NEW_REFS {
            return AddOutcome::Known;
        }
        let refs = u32::from(e.new_refs());
        let addr = e.socket(&self.v6);
        // One more reference with probability 2^-refs.
        if refs > 0 && rng.next_u32() & ((1u32 << refs) - 1) != 0 {
            return AddOutcome::Known;
        }
        let bucket = self.new_bucket(&addr, &source);
        let pos = self.new_pos(bucket, &addr);
        if self.new_table.get(pos) == idx {
            return AddOutcome::Known;
        }
        let occupant = self.new_table.get(pos);
        if occupant != EMPTY {
            // Take over only a terrible occupant, or a duplicate reference (never its last one).
            // (Bitcoin's rule: the newcomer already has references, so only a terrible
            // occupant gives way.)
            let replace = self.entry(occupant).is_some_and(|o| self.terrible(o, now));
            if !replace {
                return AddOutcome::Known;
            }
            self.clear_new_pos(pos);
        }
        self.place_new(idx, bucket, pos);
        AddOutcome::NewReference
    }

    /// Frees new-table position `pos` for a newcomer with no references: true if it is free.
    fn make_room_new(&mut self, pos: usize, now: UnixTime) -> bool {
        let occupant = self.new_table.get(pos);
        if occupant == EMPTY {
            return true;
        }
        let Some(o) = self.entry(occupant) else {
            return false;
        };
        if self.entry_persistent(o) {
            return false;
        }
        if self.terrible(o, now) || o.new_refs() > 1 {
            self.clear_new_pos(pos);
            return true;
        }
        false
    }

    /// Puts `entry`, at `ip` and heard from `source`, into a slot, its list and the indexes.
    fn insert_entry(&mut self, mut entry: Entry, ip: IpAddr, source: IpAddr) -> u32 {
        entry.set_ip(PackedIp::intern(ip, &mut self.v6));
        match source {
            IpAddr::V4(v4) => entry.set_source_v4(v4),
            IpAddr::V6(_) if source == ip => entry.set_source_handle(v6pool::OWN),
            IpAddr::V6(v6) => entry.set_source_handle(self.v6.intern(v6)),
        }
        let idx = match self.free.pop() {
            Some(i) => i,
            None => self.entries.push_slot(),
        };
        let list = if entry.tried() {
            &mut self.tried_list
        } else {
            &mut self.new_list
        };
        entry.list_pos = list.len() as u32;
        slab::push_compact(list, idx);
        self.entries.put(idx, entry);
        self.index_insert(idx);
        self.untested_moved(idx, None);
        idx
    }

    /// Puts a reference to `idx` at new position `pos` of `bucket` (callers keep an entry at
    /// [`MAX_NEW_REFS`] or fewer; one more is not placed).
    fn place_new(&mut self, idx: u32, bucket: usize, pos: usize) {
        if self
            .entry_mut(idx)
            .is_some_and(|e| e.push_bucket(bucket as u16))
        {
            self.set_new_slot(pos, idx);
        }
    }

    /// Removes the reference at new position `pos`; deletes the entry if it was its last.
    fn clear_new_pos(&mut self, pos: usize) {
        let idx = self.new_table.get(pos);
        if idx == EMPTY {
            return;
        }
        self.set_new_slot(pos, EMPTY);
        let bucket = (pos / BUCKET_SIZE) as u16;
        let (reanchor, last) = match self.entry_mut(idx) {
            Some(e) => (e.remove_bucket(bucket), e.new_refs() == 0),
            None => (false, false),
        };
        if reanchor {
            let next = self.new_table.positions_of(idx).first().copied();
            if let (Some(p), Some(e)) = (next, self.entry_mut(idx)) {
                e.set_anchor((p / BUCKET_SIZE) as u16);
            }
        }
        if last {
            self.delete_entry(idx);
        }
    }

    fn list_remove(&mut self, tried: bool, pos: u32) {
        let list = if tried {
            &mut self.tried_list
        } else {
            &mut self.new_list
        };
        let pos = pos as usize;
        if pos >= list.len() {
            return;
        }
        list.swap_remove(pos);
        if let Some(&moved) = list.get(pos)
            && let Some(e) = self.entry_mut(moved)
        {
            e.list_pos = pos as u32;
        }
    }

    fn list_push(&mut self, idx: u32, tried: bool) {
        let list = if tried {
            &mut self.tried_list
        } else {
            &mut self.new_list
        };
        let pos = list.len() as u32;
        slab::push_compact(list, idx);
        if let Some(e) = self.entry_mut(idx) {
            e.list_pos = pos;
        }
    }

    /// Deletes an entry that holds no table reference any more (or detaches it first).
    fn delete_entry(&mut self, idx: u32) {
        let place = self.untested_place(idx);
        let buckets = self.new_buckets(idx);
        self.index_remove(idx);
        let Some(e) = self.entries.take(idx) else {
            return;
        };
        let addr = e.socket(&self.v6);
        e.packed_ip().release(&mut self.v6);
        if let Err(handle) = e.source() {
            self.v6.release(handle);
        }
        for b in buckets {
            let pos = self.new_pos(usize::from(b), &addr);
            if self.new_table.get(pos) == idx {
                self.set_new_slot(pos, EMPTY);
            }
        }
        if e.tried() {
            let pos = self.tried_pos(&addr);
            if self.tried_table.get(pos) == idx {
                self.set_tried_slot(pos, EMPTY);
            }
        }
        // list_remove needs the moved entry present; `e` is already taken out.
        self.list_remove(e.tried(), e.list_pos);
        self.collisions.retain(|c| c.entry != idx);
        self.free.push(idx);
        self.untested_moved(idx, place);
    }

    /// Removes the entry at `addr`, if any.
    pub fn remove(&mut self, addr: SocketAddr) {
        if let Some(idx) = self.idx_of(&addr) {
            self.delete_entry(idx);
        }
    }

    // ----- attempts, failures, success --------------------------------------------------------

    /// Records that we are dialing `addr` now (feeds the recency penalty, G9).
    pub fn mark_attempt(&mut self, addr: SocketAddr, now: UnixTime) {
        if let Some(idx) = self.idx_of(&addr)
            && let Some(e) = self.entry_mut(idx)
        {
            e.last_attempt = Stamp::at(now);
        }
    }

    /// Records a failed dial. The failure counts only if some connection succeeded since the
    /// entry was last counted, so our own outage does not burn the book (G10). An entry that
    /// becomes terrible is dropped from new, or moved from tried back to new; it is never
    /// banned (G14). Persistent peers are never dropped.
    pub fn mark_failed(&mut self, addr: SocketAddr, now: UnixTime) {
        let Some(idx) = self.idx_of(&addr) else {
            return;
        };
        let last_good = self.last_good;
        let persistent = self.entry(idx).is_some_and(|e| self.entry_persistent(e));
        let Some(e) = self.entry_mut(idx) else {
            return;
        };
        e.last_attempt = Stamp::at(now);
        if e.last_count_attempt.get() < last_good || e.last_count_attempt.get() == 0 {
            e.last_count_attempt = Stamp::at(now);
            e.set_attempts(e.attempts().saturating_add(1));
        }
        let failed_out = (e.last_success.get() == 0 && e.attempts() >= RETRIES)
            || (now.saturating_sub(e.last_success.get()) > MIN_FAIL
                && e.attempts() >= MAX_FAILURES);
        if persistent || !failed_out {
            return;
        }
        if e.tried() {
            self.demote(idx, now);
        } else {
            self.delete_entry(idx);
        }
    }

    /// Moves a tried entry back to new (its source's bucket); dropped if no room there.
    fn demote(&mut self, idx: u32, now: UnixTime) {
        let Some(e) = self.entry(idx) else {
            return;
        };
        let (addr, source, list_pos) = (e.socket(&self.v6), self.source(e), e.list_pos);
        let tpos = self.tried_pos(&addr);
        if self.tried_table.get(tpos) == idx {
            self.set_tried_slot(tpos, EMPTY);
        }
        self.list_remove(true, list_pos);
        if let Some(e) = self.entry_mut(idx) {
            e.set_tried(false);
        }
        self.list_push(idx, false);
        let bucket = self.new_bucket(&addr, &source);
        let pos = self.new_pos(bucket, &addr);
        if self.make_room_new(pos, now) {
            self.place_new(idx, bucket, pos);
        } else {
            self.delete_entry(idx);
        }
    }

    /// Records a successful connection and promotes the entry to tried. If its tried slot is
    /// held by another entry, nothing is evicted: the pair waits for test-before-evict (G11).
    pub fn mark_good(
        &mut self,
        addr: SocketAddr,
        now: UnixTime,
        rng: &mut impl RngCore,
    ) -> GoodOutcome {
        let _ = rng;
        self.last_good = self.last_good.max(now);
        let Some(idx) = self.idx_of(&addr) else {
            return GoodOutcome::Unknown;
        };
        let place = self.untested_place(idx);
        let Some(e) = self.entry_mut(idx) else {
            return GoodOutcome::Unknown;
        };
        e.last_success = Stamp::at(now);
        e.last_attempt = Stamp::at(now);
        e.last_seen = Stamp::at(e.last_seen.get().max(now));
        e.set_attempts(0);
        let tried = e.tried();
        self.untested_moved(idx, place);
        if tried {
            return GoodOutcome::AlreadyTried;
        }
        let tpos = self.tried_pos(&addr);
        let occupant = self.tried_table.get(tpos);
        if occupant != EMPTY {
            let incumbent = match self.entry(occupant) {
                Some(o) => o.addr(&self.v6),
                None => return GoodOutcome::Unknown,
            };
            if !self.collisions.iter().any(|c| c.entry == idx)
                && self.collisions.len() < MAX_TRIED_COLLISIONS
            {
                self.collisions.push(Collision {
                    entry: idx,
                    since: now,
                });
            }
            return GoodOutcome::Collision { incumbent };
        }
        self.promote(idx, tpos);
        GoodOutcome::Promoted
    }

    /// Moves new entry `idx` into the free tried position `tpos`.
    fn promote(&mut self, idx: u32, tpos: usize) {
        let buckets = self.new_buckets(idx);
        let Some(e) = self.entry_mut(idx) else {
            return;
        };
        e.clear_buckets();
        let list_pos = e.list_pos;
        let Some(addr) = self.entry(idx).map(|e| e.socket(&self.v6)) else {
            return;
        };
        for b in buckets {
            let pos = self.new_pos(usize::from(b), &addr);
            if self.new_table.get(pos) == idx {
                self.set_new_slot(pos, EMPTY);
            }
        }
        self.list_remove(false, list_pos);
        if let Some(e) = self.entry_mut(idx) {
            e.set_tried(true);
        }
        self.list_push(idx, true);
        self.set_tried_slot(tpos, idx);
        self.collisions.retain(|c| c.entry != idx);
    }

    /// The incumbent of a buffered tried collision that the engine should test with a feeler
    /// connection (its outcome goes to `mark_good` / `mark_failed`), if any.
    #[must_use]
    pub fn tried_collision_to_test(&self, rng: &mut impl RngCore) -> Option<NetAddr> {
        if self.collisions.is_empty() {
            return None;
        }
        let c = self.collisions[uniform(rng, self.collisions.len())];
        let e = self.entry(c.entry)?;
        let occupant = self.tried_table.get(self.tried_pos(&e.socket(&self.v6)));
        self.entry(occupant).map(|o| o.addr(&self.v6))
    }

    /// Resolves buffered tried collisions (Bitcoin's `ResolveCollisions`): an incumbent that
    /// succeeded within 4 h stays; one attempted within 4 h (more than a minute ago) without
    /// success is swapped out to new; a collision unresolved for 40 min is forced. Returns how
    /// many newcomers entered tried.
    pub fn resolve_collisions(&mut self, now: UnixTime) -> usize {
        let mut swapped = 0;
        let pending = std::mem::take(&mut self.collisions);
        for c in pending {
            let Some(e) = self.entry(c.entry) else {
                continue;
            };
            if e.tried() {
                continue;
            }
            let tpos = self.tried_pos(&e.socket(&self.v6));
            let occupant = self.tried_table.get(tpos);
            if occupant == EMPTY {
                self.promote(c.entry, tpos);
                swapped += 1;
                continue;
            }
            let Some(o) = self.entry(occupant) else {
                continue;
            };
            let keep = self.entry_persistent(o)
                || now.saturating_sub(o.last_success.get()) < REPLACEMENT_WINDOW;
            let tested_dead = !keep
                && now.saturating_sub(o.last_attempt.get()) < REPLACEMENT_WINDOW
                && now.saturating_sub(o.last_attempt.get()) > MINUTE;
            let stale = !keep
                && now.saturating_sub(o.last_attempt.get()) >= REPLACEMENT_WINDOW
                && now.saturating_sub(c.since) > TEST_WINDOW;
            if keep {
                continue;
            }
            if tested_dead || stale {
                self.demote(occupant, now);
                if let Some(tpos) = self
                    .entry(c.entry)
                    .map(|e| self.tried_pos(&e.socket(&self.v6)))
                    .filter(|&p| self.tried_table.get(p) == EMPTY)
                {
                    self.promote(c.entry, tpos);
                    swapped += 1;
                }
            } else {
                self.collisions.push(c);
            }
        }
        swapped
    }

    /// Number of buffered tried collisions (≤ 10).
    #[must_use]
    pub fn len_collisions(&self) -> usize {
        self.collisions.len()
    }

    // ----- queries ---------------------------------------------------------------------------

    /// Number of entries (new + tried).
    #[must_use]
    pub fn len(&self) -> usize {
        self.new_list.len() + self.tried_list.len()
    }

    /// Number of entries in new.
    #[must_use]
    pub fn len_new(&self) -> usize {
        self.new_list.len()
    }

    /// Number of entries in tried.
    #[must_use]
    pub fn len_tried(&self) -> usize {
        self.tried_list.len()
    }

    /// True if the book holds no entry.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if the book has fewer than 1000 entries (spec 6.1): time to ask for more.
    #[must_use]
    pub fn needs_more(&self) -> bool {
        self.len() < NEED_ADDRESS_THRESHOLD
    }

    /// True if an entry exists for this IP:port.
    #[must_use]
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.idx_of(addr).is_some()
    }

    /// The stored entry (id and address) for this IP:port.
    #[must_use]
    pub fn get(&self, addr: &SocketAddr) -> Option<NetAddr> {
        self.entry_at(addr).map(|e| e.addr(&self.v6))
    }

    /// True if the entry for this IP:port is in tried.
    #[must_use]
    pub fn is_tried(&self, addr: &SocketAddr) -> bool {
        self.entry_at(addr).is_some_and(|e| e.tried())
    }

    /// Failed attempts counted for this IP:port, if known.
    #[must_use]
    pub fn attempts(&self, addr: &SocketAddr) -> Option<u32> {
        self.entry_at(addr).map(|e| e.attempts())
    }

    /// The source IP recorded for this IP:port, if known.
    #[must_use]
    pub fn source_of(&self, addr: &SocketAddr) -> Option<IpAddr> {
        self.entry_at(addr).map(|e| self.source(e))
    }

    /// True if the entry is terrible at `now` (excluded from PEX replies, first to be replaced).
    #[must_use]
    pub fn is_terrible(&self, addr: &SocketAddr, now: UnixTime) -> bool {
        self.entry_at(addr).is_some_and(|e| self.terrible(e, now))
    }

    /// Every entry with its table (`true` = tried), in index order (tests, export, simulation).
    pub fn entries(&self) -> impl Iterator<Item = (NetAddr, bool)> + '_ {
        self.new_list
            .iter()
            .chain(self.tried_list.iter())
            .filter_map(|&i| self.entry(i))
            .map(|e| (e.addr(&self.v6), e.tried()))
    }

    /// The new buckets referencing this IP:port (empty if tried or unknown).
    #[must_use]
    pub fn new_buckets_of(&self, addr: &SocketAddr) -> Vec<usize> {
        self.idx_of(addr)
            .map(|idx| {
                self.new_buckets(idx)
                    .iter()
                    .map(|&b| usize::from(b))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tried bucket holding this IP:port, if it is in tried.
    #[must_use]
    pub fn tried_bucket_of(&self, addr: &SocketAddr) -> Option<usize> {
        self.entry_at(addr)
            .filter(|e| e.tried())
            .map(|e| self.tried_bucket(&e.socket(&self.v6)))
    }
}

/// Bitcoin's `IsTerrible` (without the persistent-peer exemption).
fn is_terrible(e: &Entry, now: UnixTime) -> bool {
    if e.last_attempt.get() != 0 && now.saturating_sub(e.last_attempt.get()) < MINUTE {
        return false;
    }
    if e.last_seen.get() > now.saturating_add(10 * MINUTE) {
        return true;
    }
    if now.saturating_sub(e.last_seen.get()) > HORIZON {
        return true;
    }
    if e.last_success.get() == 0 && e.attempts() >= RETRIES {
        return true;
    }
    now.saturating_sub(e.last_success.get()) > MIN_FAIL && e.attempts() >= MAX_FAILURES
}
