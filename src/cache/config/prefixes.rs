//! The prefixes of this process's live caches, by Redis (address and
//! database): two whose prefixes nest (`app:` and `app:v2:`) would read
//! and overwrite each other's keys, so the second is refused at build.
//! Equal prefixes are one namespace, shared on purpose. Caches over a
//! backend given with `backend` (a pool, a client, a cluster) are not
//! seen here: their Redis is not known.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::ConfigError;

struct Claimed {
    id: u64,
    redis: String,
    prefix: Vec<u8>,
    name: String,
}

static CLAIMED: Mutex<Vec<Claimed>> = Mutex::new(Vec::new());

/// A live cache's prefix on its Redis; released when the cache (its last
/// clone) is dropped.
#[derive(Debug)]
pub(crate) struct PrefixClaim(u64);

/// Claims `prefix` on `redis` for the cache `name`, unless a live cache's
/// prefix there nests with it.
pub(crate) fn claim(redis: String, prefix: &[u8], name: &str) -> Result<PrefixClaim, ConfigError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
    let nests =
        |other: &[u8]| other != prefix && (other.starts_with(prefix) || prefix.starts_with(other));
    if let Some(other) = claimed
        .iter()
        .find(|c| c.redis == redis && nests(&c.prefix))
    {
        return Err(ConfigError::new(
            "cache",
            "prefix",
            format!(
                "\"{}\" nests with the prefix \"{}\" of cache \"{}\" on the same Redis: their keys would collide; choose prefixes neither of which begins the other",
                String::from_utf8_lossy(prefix).escape_debug(),
                String::from_utf8_lossy(&other.prefix).escape_debug(),
                other.name.escape_debug(),
            ),
        ));
    }
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    claimed.push(Claimed {
        id,
        redis,
        prefix: prefix.to_vec(),
        name: name.to_owned(),
    });
    Ok(PrefixClaim(id))
}

impl Drop for PrefixClaim {
    fn drop(&mut self) {
        let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
        claimed.retain(|c| c.id != self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_prefixes_on_one_redis_are_refused_while_the_first_lives() {
        let redis = || "prefix-test:6379/0".to_owned();
        let app = claim(redis(), b"app:", "a").unwrap();
        let err = claim(redis(), b"app:v2:", "b").unwrap_err();
        assert_eq!(err.field(), "prefix");
        assert!(err.to_string().contains("app:v2:"), "{err}");
        assert!(
            claim(redis(), b"", "c").is_err(),
            "the empty prefix nests with all"
        );
        let same = claim(redis(), b"app:", "d").expect("one namespace, shared");
        let other_db = claim("prefix-test:6379/1".to_owned(), b"app:v2:", "e").unwrap();
        let sibling = claim(redis(), b"apq:", "f").unwrap();
        drop((app, same));
        let v2 = claim(redis(), b"app:v2:", "b").expect("the first is gone");
        drop((other_db, sibling, v2));
    }
}
