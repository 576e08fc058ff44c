//! Model checks (loom) of the near cache's two race guards, over every
//! interleaving of a read filling L1 with another client's write and its
//! invalidation, and with the tracking connection lost and regained.
//!
//! `scripts/loom.sh` runs them, and again with each seeded bug planted
//! (`near_no_recheck`, `near_any_generation`), which they must catch.

use std::sync::Arc;

use bytes::Bytes;
use loom::sync::atomic::{AtomicU64, Ordering::SeqCst};
use loom::thread;
use tokio::time::Instant;

use super::*;

/// A near cache, and "Redis": the version of the one key's value.
fn setup(tracked: bool) -> (Arc<Near>, Arc<AtomicU64>) {
    let near = Near::new(&NearCache::new(), &Arc::from("loom"), tracked);
    if tracked {
        near.tracking(true);
        near.renew(Instant::now(), Duration::from_secs(3600));
    }
    (Arc::new(near), Arc::new(AtomicU64::new(1)))
}

/// A read of `k`: its ticket, Redis's answer, and the fill.
fn read(near: &Near, redis: &AtomicU64) {
    let ticket = near.ticket(b"k");
    let version = redis.load(SeqCst);
    let value = Bytes::from(version.to_string());
    near.fill(Bytes::from_static(b"k"), Some((value, Ttl::Never)), ticket);
}

/// What a later read finds fresh in L1 is what Redis holds.
fn never_fresh_and_wrong(near: &Near, redis: &AtomicU64) {
    if let Some((entry, fresh)) = near.lookup(b"k", Instant::now()) {
        let now = redis.load(SeqCst).to_string();
        assert!(
            !fresh || entry.value == now.as_bytes(),
            "a fresh {:?} while Redis holds {now}",
            entry.value
        );
    }
}

#[test]
fn loom_a_read_racing_a_write_and_its_invalidation_never_stores_the_old_value() {
    loom::model(|| {
        let (near, redis) = setup(false);
        let reader = {
            let (near, redis) = (near.clone(), redis.clone());
            thread::spawn(move || read(&near, &redis))
        };
        // Another client's write, then its invalidation message.
        redis.store(2, SeqCst);
        near.invalidate(b"k");
        reader.join().unwrap();
        never_fresh_and_wrong(&near, &redis);
    });
}

#[test]
fn loom_a_read_across_lost_tracking_is_never_fresh() {
    loom::model(|| {
        let (near, redis) = setup(true);
        let reader = {
            let (near, redis) = (near.clone(), redis.clone());
            thread::spawn(move || read(&near, &redis))
        };
        // Tracking drops; a write's invalidation is lost with it; tracking
        // comes back.
        near.tracking(false);
        redis.store(2, SeqCst);
        near.tracking(true);
        near.renew(Instant::now(), Duration::from_secs(3600));
        reader.join().unwrap();
        never_fresh_and_wrong(&near, &redis);
    });
}
