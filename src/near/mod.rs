//! The near cache: an in-process L1 in front of Redis, bounded in bytes,
//! kept consistent by Redis itself, and kept through Redis outages.
//!
//! * **Store**: [quick_cache] (chosen by measurement, `benches/l1.rs`: 3–4×
//!   moka's throughput, one and two threads), weighed in bytes.
//! * **Freshness**: an entry is fresh until its lifetime ends — never later
//!   than the key's TTL in Redis, read with the value — and, under
//!   [`Invalidation::Tracking`], only while the tracking connection that
//!   would have told us of a change is up (the *generation*, below).
//! * **Invalidation**: RESP3 `CLIENT TRACKING … BCAST PREFIX <prefix>` on a
//!   connection of its own ([`tracking`]): any client's change to a key
//!   removes its entry. The cache's own changes remove it too, before they
//!   are sent and when they are answered. Not seen: `SWAPDB` (Redis 7.0
//!   sends no invalidation for it; `FLUSHDB`/`FLUSHALL` clear L1): after
//!   a swap, the old database's values are served from L1 for at most
//!   their lifetime ([`NearCache::lifetime`], 60 s by default): lower it where
//!   databases are swapped under a running cache.
//! * **Stale**: an entry that is no longer fresh stays, up to
//!   [`NearCache::stale_for`] past its lifetime, for the reads that Redis
//!   fails to answer.
//!
//! Freshness needs evidence: under tracking, an entry is fresh only while
//! the tracking connection has answered recently (a *lease*, renewed by
//! every answer to its `PING`, [`tracking::LEASE`] long). A tracking task
//! that stops silently — dropped with the runtime it was spawned on —
//! leaves nothing fresh once its lease runs out, and the next read that
//! goes to Redis starts it again on its own runtime.
//!
//! Two races are closed here. A read that fetched a value just before
//! another client changed it must not store it after the invalidation
//! arrived: each read takes a [`Ticket`] (a version of its key's bucket,
//! bumped by every invalidation) before asking Redis, and stores only if
//! the version has not moved (checked again after storing). And entries
//! stored while invalidations could have been missed must never count as
//! fresh: the generation is odd while tracking is up and is bumped when it
//! goes down and again when it comes back, and an entry is fresh only in
//! the generation it was fetched in.
//!
//! [quick_cache]: https://docs.rs/quick_cache

use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::request::Ttl;

mod settings;
mod tally;
pub(crate) mod tracking;

pub use settings::{Invalidation, NearCache};
pub use tally::NearStats;
pub(crate) use tally::{Outcome, Tally};

/// Invalidation versions, one per bucket of keys (by hash).
const BUCKETS: usize = 4096;

/// Bytes counted for an entry beyond its key and value: the entry itself
/// and the store's own bookkeeping for it.
const ENTRY_OVERHEAD: u64 = 96;

/// What a read finds in L1.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    fresh_until: Instant,
    stale_until: Instant,
    /// When Redis drops the key, as read with the value (`None`: never).
    expires_at: Option<Instant>,
    generation: u64,
}

impl Entry {
    /// How long Redis keeps the key from `now`, as read with the value
    /// (`None`: no expiry).
    pub(crate) fn ttl_left(&self, now: Instant) -> Option<std::time::Duration> {
        self.expires_at.map(|at| at.saturating_duration_since(now))
    }
}

#[derive(Clone, Copy, Debug)]
struct Weight;

impl quick_cache::Weighter<Bytes, Entry> for Weight {
    fn weight(&self, key: &Bytes, entry: &Entry) -> u64 {
        (key.len() + entry.value.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// Taken before a read asks Redis; lets its answer be stored only if
/// nothing invalidated the key meanwhile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    at: Instant,
    generation: u64,
    bucket: usize,
    version: u32,
}

/// The near cache of one [`Cache`](crate::cache::Cache).
pub(crate) struct Near {
    store: quick_cache::sync::Cache<Bytes, Entry, Weight>,
    /// Odd while entries may be fresh (tracking up, or not tracked).
    generation: AtomicU64,
    /// Entries may be fresh only before this moment (ns since `epoch`):
    /// pushed on by each answer on the tracking connection; `u64::MAX`
    /// when not tracked.
    alive_until: AtomicU64,
    epoch: Instant,
    buckets: Box<[AtomicU32]>,
    lifetime: Duration,
    stale_for: Duration,
    pub(crate) tally: tally::Tally,
    /// Under the model checks: the store's own locking, made visible to
    /// loom (which cannot see inside quick_cache).
    #[cfg(fusebox_loom)]
    store_lock: crate::sync::Mutex<()>,
}

/// What [`Near::hold`] returns: nothing in the normal build.
#[cfg(not(fusebox_loom))]
struct Held;

impl std::fmt::Debug for Near {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Near")
            .field("entries", &self.store.len())
            .field("bytes", &self.store.weight())
            .field("fresh", &self.can_be_fresh())
            .finish_non_exhaustive()
    }
}

impl Near {
    /// An empty near cache: with `tracked`, nothing is fresh until
    /// [`tracking`](Self::tracking) says the connection is up.
    pub(crate) fn new(settings: &NearCache, name: &Arc<str>, tracked: bool) -> Self {
        let items = (settings.max_bytes / 256).clamp(16, 1 << 24) as usize;
        Near {
            store: quick_cache::sync::Cache::with_weighter(items, settings.max_bytes, Weight),
            generation: AtomicU64::new(if tracked { 0 } else { 1 }),
            alive_until: AtomicU64::new(if tracked { 0 } else { u64::MAX }),
            epoch: Instant::now(),
            buckets: (0..BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            lifetime: settings.lifetime,
            stale_for: settings.stale_for,
            tally: tally::Tally::new(name),
            #[cfg(fusebox_loom)]
            store_lock: crate::sync::Mutex::new(()),
        }
    }

    /// Held around each store operation: under the model checks, the
    /// happens-before that quick_cache's locks give; nothing otherwise.
    #[cfg(not(fusebox_loom))]
    #[inline(always)]
    fn hold(&self) -> Held {
        Held
    }

    #[cfg(fusebox_loom)]
    fn hold(&self) -> loom::sync::MutexGuard<'_, ()> {
        self.store_lock.lock().unwrap()
    }

    fn can_be_fresh(&self) -> bool {
        self.generation.load(Ordering::Acquire) % 2 == 1 && self.alive_at(Instant::now())
    }

    /// Whether the tracking connection's lease holds at `now`.
    fn alive_at(&self, now: Instant) -> bool {
        self.since_epoch(now) < self.alive_until.load(Ordering::Acquire)
    }

    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The tracking connection answered at `at`: entries may be fresh
    /// until `lease` after it.
    pub(crate) fn renew(&self, at: Instant, lease: Duration) {
        let until = self
            .since_epoch(at)
            .saturating_add(u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX));
        self.alive_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Whether entries can be fresh now only for want of a tracking answer
    /// (the lease ran out while the generation says up): the tracking task
    /// may have stopped with its runtime.
    pub(crate) fn lease_lapsed(&self) -> bool {
        self.generation.load(Ordering::Acquire) % 2 == 1 && !self.alive_at(Instant::now())
    }

    /// The entry at `key`, and whether it is fresh at `now`.
    pub(crate) fn lookup(&self, key: &[u8], now: Instant) -> Option<(Entry, bool)> {
        let entry = {
            let _held = self.hold();
            self.store.get(key)?
        };
        let generation = self.generation.load(Ordering::Acquire);
        let fresh = now < entry.fresh_until
            && (entry.generation == generation || crate::sync::seeded("near_any_generation"))
            && generation % 2 == 1
            && self.alive_at(now);
        Some((entry, fresh))
    }

    /// Whether `entry` may be served while Redis fails, at `now`.
    /// How long an entry is fresh at most.
    #[cfg(feature = "http")]
    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How long past its lifetime an entry may still be served stale.
    #[cfg(feature = "http")]
    pub(crate) fn stale_for(&self) -> Duration {
        self.stale_for
    }

    pub(crate) fn servable_stale(&self, entry: &Entry, now: Instant) -> bool {
        !self.stale_for.is_zero() && now < entry.stale_until
    }

    /// What a read of `key` takes before asking Redis.
    pub(crate) fn ticket(&self, key: &[u8]) -> Ticket {
        let bucket = bucket_of(key);
        Ticket {
            // The version first: an invalidation after it is seen on
            // storing, one before it is already applied.
            version: self.buckets[bucket].load(Ordering::Acquire),
            generation: self.generation.load(Ordering::Acquire),
            at: Instant::now(),
            bucket,
        }
    }

    /// Stores what Redis answered for `key` under `ticket`: the value and
    /// its remaining TTL, or `None` if the key is absent.
    pub(crate) fn fill(&self, key: Bytes, answer: Option<(Bytes, Ttl)>, ticket: Ticket) {
        let Some((value, ttl)) = answer else {
            let _held = self.hold();
            self.store.remove(&key[..]);
            return;
        };
        let (lifetime, expires_at) = match ttl {
            Ttl::After(left) => (left.min(self.lifetime), Some(later(ticket.at, left))),
            Ttl::Never => (self.lifetime, None),
        };
        if lifetime.is_zero() {
            return;
        }
        let moved = || self.buckets[ticket.bucket].load(Ordering::Acquire) != ticket.version;
        if moved() {
            return;
        }
        let fresh_until = later(ticket.at, lifetime);
        let entry = Entry {
            value,
            fresh_until,
            stale_until: later(fresh_until, self.stale_for),
            expires_at,
            generation: ticket.generation,
        };
        {
            let _held = self.hold();
            self.store.insert(key.clone(), entry);
        }
        // Only a race reaches this: the loom model kills its mutants.
        if moved() && !crate::sync::seeded("near_no_recheck") {
            let _held = self.hold();
            self.store.remove(&key[..]);
        }
    }

    /// `key` changed (another client's write, or this cache's own): its
    /// entry goes, and reads in flight for it will not store theirs.
    pub(crate) fn invalidate(&self, key: &[u8]) {
        self.buckets[bucket_of(key)].fetch_add(1, Ordering::AcqRel);
        let removed = {
            let _held = self.hold();
            self.store.remove(key).is_some()
        };
        if removed {
            self.tally.invalidated();
        }
    }

    /// Every key may have changed (`FLUSHALL`, `FLUSHDB`): nothing stays.
    pub(crate) fn invalidate_all(&self) {
        for bucket in self.buckets.iter() {
            bucket.fetch_add(1, Ordering::AcqRel);
        }
        self.generation.fetch_add(2, Ordering::AcqRel);
        let _held = self.hold();
        self.store.clear();
    }

    /// The tracking connection is up (entries fetched from now on may be
    /// fresh) or lost (none is fresh any more). Either way, entries of the
    /// generation before are stale from now on.
    pub(crate) fn tracking(&self, up: bool) {
        let changed = self
            .generation
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |g| {
                (g % 2 == u64::from(!up)).then_some(g + 1)
            });
        if !up {
            self.alive_until.store(0, Ordering::Release);
        }
        if changed.is_ok() && !up {
            self.tally.tracking_lost();
        }
    }

    pub(crate) fn stats(&self) -> NearStats {
        self.tally.stats(
            self.store.len() as u64,
            self.store.weight(),
            self.can_be_fresh(),
        )
    }

    /// The bytes the store holds for its entries and its tables, as the
    /// store reckons them.
    #[cfg(all(test, not(fusebox_loom)))]
    pub(crate) fn memory_used(&self) -> u64 {
        let used = self.store.memory_used();
        (used.entries + used.map) as u64
    }
}

/// `at + d`, or as far as an `Instant` goes.
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// FNV-1a over the key, into a bucket index. (A worse hash only makes
/// more reads of unrelated keys skip storing: mutants of its mixing are
/// equivalent for correctness.)
fn bucket_of(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) % BUCKETS
}

#[cfg(all(test, fusebox_loom))]
mod models;
#[cfg(all(test, not(fusebox_loom)))]
mod tests;
