//! `get_or_load`: a miss loads once per key however many callers miss
//! together (the single flight of [`crate::flight`]), and stores the value.

use std::future::Future;

use bytes::Bytes;

use super::Cache;
use crate::flight::Coalesced;
use crate::near::Outcome;
use crate::request::Ttl;

impl<B: super::Backend> Cache<B> {
    /// The value at `key`; on a miss, runs `load`, stores its value with the
    /// default TTL, and returns it.
    ///
    /// Concurrent misses for one key in this process share one `load` call
    /// (single flight): the others wait for it and take its value. If that
    /// call fails or is cancelled, one waiter loads in its place. Only keys
    /// being loaded right now are remembered. `load`'s errors are returned;
    /// cache errors never are (a failed store is counted and skipped).
    ///
    /// With a [near cache](super::CacheBuilder::near_cache), a `load` that
    /// fails is answered with the value L1 last had for `key`, if it is
    /// not more than [`stale_for`](crate::cache::NearCache::stale_for) past
    /// its lifetime (counted `stale`), rather than with the error.
    pub async fn get_or_load<F, Fut, V, E>(
        &self,
        key: impl AsRef<[u8]>,
        load: F,
    ) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        V: Into<Bytes>,
    {
        let key = key.as_ref();
        let Some(near) = self.shared.near.clone() else {
            if let Some(v) = self.get(key).await {
                return Ok(v);
            }
            return self
                .load_through(key, || async { Ok(load().await?.into()) })
                .await;
        };
        let Some(full) = self.checked_key("get", key) else {
            return load().await.map(Into::into);
        };
        let read = self.near_read(&near, full).await;
        if let Some(v) = read.value {
            near.tally.count(read.outcome);
            return Ok(v);
        }
        let loaded = self
            .load_through(key, || async { Ok(load().await?.into()) })
            .await;
        // The loader failed: the value L1 had, if not too stale.
        let now = tokio::time::Instant::now();
        match (loaded, read.previous) {
            (Err(_), Some(entry)) if near.servable_stale(&entry, now) => {
                near.tally.count(Outcome::Stale);
                Ok(entry.value)
            }
            (loaded, _) => {
                near.tally.count(read.outcome);
                loaded
            }
        }
    }

    /// The single flight behind `get_or_load`: runs `load` unless another
    /// caller is loading `key`, in which case it takes that caller's value.
    async fn load_through<F, Fut, E>(&self, key: &[u8], load: F) -> Result<Bytes, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, E>>,
    {
        let ttl = self.shared.options.default_ttl;
        let loaded = self
            .coalesce(key, load, |load| async move {
                let value = load().await?;
                Ok((value.clone(), Some((value, ttl))))
            })
            .await?;
        match loaded {
            Coalesced::Led(value) | Coalesced::Shared(value, _) => Ok(value),
            // The leader's answer was not for sharing (an HTTP layer's,
            // under the same key): load, without storing over it.
            Coalesced::Direct(load) => load().await,
        }
    }

    /// Single flight: the first caller for `key` runs `load` with `work`;
    /// callers that arrive meanwhile wait for it. `load` returns its own
    /// result and, if it may be shared, the bytes to store (with their TTL)
    /// and hand to the waiters. When it may not be shared, the waiters are
    /// told to do the work themselves ([`Coalesced::Direct`]); when it fails
    /// or is cancelled, one waiter leads in its place. A caller that did not
    /// lead gets `work` back.
    pub(crate) async fn coalesce<A, T, F, Fut, E>(
        &self,
        key: &[u8],
        work: A,
        load: F,
    ) -> Result<Coalesced<T, A>, E>
    where
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, Ttl)>), E>>,
    {
        let full = self.key(key);
        let stored = full.clone();
        self.shared
            .flights
            .coalesce(&full, work, load, |value, ttl| async move {
                let _ = self.write_full(stored, value, ttl, false).await;
            })
            .await
    }
}
