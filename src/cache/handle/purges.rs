//! HTTP purges, held by the process that made them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::Cache;

/// Purges this process made: the URL's marker and its time, so that this
/// process never serves what they purged. One Redis did not take (down,
/// paused, out of memory, read-only) is held until no entry it could hide
/// can be served any more, from Redis once it is back or from the near
/// cache meanwhile. One Redis took is held too, for as long as a copy
/// fetched before it could still be served without the marker being read
/// back (Redis dying just after taking it, while the near cache still
/// holds the page but not the marker). When in doubt, miss: past
/// [`LOCAL_PURGES`] markers, every entry fetched before now is treated as
/// purged.
#[derive(Debug, Default)]
pub(crate) struct LocalPurges {
    /// Whether any purge is held: the common case reads only this.
    any: AtomicBool,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// Each marker's purge time, and until when (ms) it must be held.
    markers: HashMap<Vec<u8>, (u64, u64)>,
    /// Everything fetched at or before this (ms) is purged.
    floor: u64,
}

/// How many URLs' purges a process holds before it purges everything.
pub(crate) const LOCAL_PURGES: usize = 4096;

impl LocalPurges {
    /// Holds a purge of `marker` at `at` (ms) for at least `keep`; markers
    /// whose time to be held has passed are dropped when room is needed.
    pub(crate) fn hold(&self, marker: &[u8], at: u64, keep: Duration) {
        let until = at.saturating_add(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.markers.len() >= LOCAL_PURGES && !held.markers.contains_key(marker) {
            held.markers.retain(|_, (_, until)| *until > at);
            if held.markers.len() >= LOCAL_PURGES {
                held.markers = HashMap::new();
                held.floor = held.floor.max(at);
            }
        }
        if held.floor < at {
            let (t, u) = held.markers.entry(marker.to_vec()).or_default();
            *t = (*t).max(at);
            *u = (*u).max(until);
        }
        self.any.store(true, Ordering::Release);
    }

    /// The time (ms) of the last purge held here for `marker`: 0 if none.
    pub(crate) fn of(&self, marker: &[u8]) -> u64 {
        if !self.any.load(Ordering::Acquire) {
            return 0;
        }
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.markers
            .get(marker)
            .map_or(0, |(t, _)| *t)
            .max(held.floor)
    }
}

impl<B> Cache<B> {
    /// The purges of HTTP responses this process holds, and how long to
    /// hold one: (Redis did not take it) as long as a stored entry may be
    /// served at all, (Redis took it) as long as a near cache may serve a
    /// copy without reading the marker back, or a minute without one (a
    /// read of the page answered, and of its marker not, as Redis died).
    pub(crate) fn local_purges(&self) -> (&LocalPurges, Duration, Duration) {
        let near = self.shared.near.as_ref();
        let stale = near.map(|n| n.stale_for()).unwrap_or_default();
        let untaken = self.shared.options.max_ttl.saturating_add(stale);
        let taken = near.map_or(Duration::from_secs(60), |n| {
            n.lifetime().saturating_add(stale)
        });
        (&self.shared.purges, untaken, taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_purges_are_per_url_keep_the_latest_and_overflow_into_a_floor() {
        let held = LocalPurges::default();
        let day = Duration::from_secs(86_400);
        assert_eq!(held.of(b"a"), 0, "nothing held");
        held.hold(b"a", 100, day);
        held.hold(b"a", 50, day);
        assert_eq!((held.of(b"a"), held.of(b"b")), (100, 0));
        // Past its time, a marker stays while there is room.
        held.hold(b"short", 1, Duration::from_millis(1));
        held.hold(b"c", 200, day);
        assert_eq!(held.of(b"short"), 1);
        // Full: markers past the horizon make room first.
        let held = LocalPurges::default();
        for i in 0..LOCAL_PURGES as u64 {
            held.hold(&i.to_be_bytes(), 1 + i % 2, Duration::from_millis(1000));
        }
        held.hold(b"new", 1001, Duration::from_millis(1000));
        assert_eq!(held.of(b"new"), 1001);
        assert_eq!(held.of(&1u64.to_be_bytes()), 2, "still within its horizon");
        assert_eq!(held.of(&0u64.to_be_bytes()), 0, "past its horizon, dropped");
        // Full of live markers: everything fetched until now is purged.
        let held = LocalPurges::default();
        for i in 0..LOCAL_PURGES as u64 {
            held.hold(&i.to_be_bytes(), 10, Duration::MAX);
        }
        held.hold(b"one more", 20, Duration::MAX);
        assert_eq!(held.of(b"never purged"), 20);
        assert_eq!(held.of(&0u64.to_be_bytes()), 20);
        assert_eq!(held.held.lock().unwrap().markers.len(), 0);
        // A purge older than the floor adds nothing; a later one does.
        held.hold(b"x", 15, Duration::MAX);
        held.hold(b"y", 30, Duration::MAX);
        assert_eq!((held.of(b"x"), held.of(b"y")), (20, 30));
        // Each marker is dropped for room only once its own time is up.
        let held = LocalPurges::default();
        held.hold(b"long", 1, Duration::MAX);
        for i in 0..LOCAL_PURGES as u64 - 1 {
            held.hold(&i.to_be_bytes(), 1, Duration::from_millis(10));
        }
        held.hold(b"later", 100, Duration::from_millis(10));
        assert_eq!((held.of(b"long"), held.of(b"later")), (1, 100));
        assert_eq!(held.of(&0u64.to_be_bytes()), 0);
    }
}
