//! `get_or_load`: a miss loads once per key however many callers miss
//! together (the single flight of [`crate::flight`]), and stores the value.

use std::future::Future;

use bytes::Bytes;

use super::Cache;
use std::time::Duration;

use super::near::{ttl_left, NearRead};
use super::write::unit_random;
use crate::flight::Coalesced;
use crate::near::Outcome;
use crate::request::{CacheRequest, CacheResponse, Ttl};

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
        let near = self.shared.near.clone();
        let early = self.shared.options.early_refresh > 0.0;
        if near.is_none() && !early {
            if let Some(v) = self.get(key).await {
                return Ok(v);
            }
            return self
                .load_through(key, || async { Ok(load().await?.into()) })
                .await;
        }
        let Some(full) = self.checked_key("get", key) else {
            return load().await.map(Into::into);
        };
        let read = match &near {
            Some(near) => self.near_read(near, full).await,
            None => self.read_with_ttl(full).await,
        };
        let count = |outcome| self.count_read(outcome);
        if let Some(v) = read.value {
            count(read.outcome);
            if read.outcome != Outcome::Stale && self.refresh_due(read.left) {
                return Ok(self.refresh(key, v, load).await);
            }
            return Ok(v);
        }
        let loaded = self
            .load_through(key, || async { Ok(load().await?.into()) })
            .await;
        // The loader failed: the value L1 had, if not too stale.
        let now = tokio::time::Instant::now();
        match (loaded, read.previous, &near) {
            (Err(_), Some(entry), Some(near)) if near.servable_stale(&entry, now) => {
                count(Outcome::Stale);
                Ok(entry.value)
            }
            (loaded, _, _) => {
                count(read.outcome);
                loaded
            }
        }
    }

    /// A read with its TTL, without a near cache.
    async fn read_with_ttl(&self, full: Bytes) -> NearRead {
        let (value, left) = match self.request(CacheRequest::GetWithTtl(full)).await {
            CacheResponse::ValueWithTtl(Some((v, ttl))) => (Some(v), ttl_left(ttl)),
            _ => (None, None),
        };
        let outcome = if value.is_some() {
            Outcome::Hit
        } else {
            Outcome::Miss
        };
        NearRead {
            value,
            outcome,
            previous: None,
            left,
        }
    }

    /// Whether a value Redis keeps `left` longer is due an early refresh:
    /// never outside the window (the last `early_refresh` of the default
    /// TTL), then with a probability rising linearly to 1 at expiry.
    pub(super) fn refresh_due(&self, left: Option<Duration>) -> bool {
        let options = &self.shared.options;
        let (Some(left), Ttl::After(ttl)) = (left, options.default_ttl) else {
            return false;
        };
        let window = ttl.mul_f64(options.early_refresh).as_secs_f64();
        // At or before the window's start `due` is 0 or less (-inf for a
        // zero window, NaN for a zero window and nothing left, which no
        // comparison holds): never due, with no test of its own to get
        // wrong. `unit_random` is in [0, 1), so at expiry it always is
        // (and `<=` would differ from `<` only on a draw of exactly `due`:
        // one in 2^53).
        let due = 1.0 - left.as_secs_f64() / window;
        unit_random() < due
    }

    /// Loads `key` again ahead of its expiry, unless a load of it is under
    /// way; the new value, or `current` if it was not loaded.
    async fn refresh<F, Fut, V, E>(&self, key: &[u8], current: Bytes, load: F) -> Bytes
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        V: Into<Bytes>,
    {
        let ttl = self.shared.options.default_ttl;
        let refreshed = self
            .try_refresh(key, || async {
                let value: Bytes = load().await?.into();
                Ok::<_, E>((value.clone(), Some((value, ttl))))
            })
            .await;
        match refreshed {
            Some(Ok(value)) => value,
            _ => current,
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

    /// Runs `load` for `key` and stores what it may share, unless a load of
    /// `key` is under way (then `None` at once). Callers that miss `key`
    /// meanwhile share the result.
    pub(crate) async fn try_refresh<T, F, Fut, E>(
        &self,
        key: &[u8],
        load: F,
    ) -> Option<Result<T, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, Ttl)>), E>>,
    {
        let full = self.key(key);
        let stored = full.clone();
        self.shared
            .flights
            .try_lead(&full, load, |value, ttl| async move {
                let _ = self.write_full(stored, value, ttl, false).await;
            })
            .await
    }

    /// [`try_refresh`](Self::try_refresh) in a flight apart from the
    /// misses' (keyed `key` + `\0refresh`): it runs once per key at a time,
    /// but no miss waits on it, however long it takes.
    #[cfg(feature = "http")]
    pub(crate) async fn try_refresh_apart<T, F, Fut, E>(
        &self,
        key: &[u8],
        load: F,
    ) -> Option<Result<T, E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, Placed)>), E>>,
    {
        let mut flight = self.key(key).to_vec();
        flight.extend_from_slice(b"\0refresh");
        self.shared
            .flights
            .try_lead(&Bytes::from(flight), load, |value, placed| {
                self.place(value, placed)
            })
            .await
    }

    /// [`coalesce`](Self::coalesce) for the HTTP cache, whose leader says
    /// where what it shares is stored ([`Placed`]): a variant of a URL is
    /// not stored under the key its flight is on.
    #[cfg(feature = "http")]
    pub(crate) async fn coalesce_placed<A, T, F, Fut, E>(
        &self,
        key: &[u8],
        work: A,
        load: F,
    ) -> Result<Coalesced<T, A>, E>
    where
        F: FnOnce(A) -> Fut,
        Fut: Future<Output = Result<(T, Option<(Bytes, Placed)>), E>>,
    {
        self.shared
            .flights
            .coalesce(&self.key(key), work, load, |value, placed| {
                self.place(value, placed)
            })
            .await
    }

    /// Stores `value` where `placed` says, its index (if any) after it.
    #[cfg(feature = "http")]
    async fn place(&self, value: Bytes, placed: Placed) {
        let _ = self
            .write_full(self.key(&placed.at), value, placed.ttl, false)
            .await;
        if let Some((at, index)) = placed.index {
            let _ = self
                .write_full(self.key(&at), index, placed.ttl, false)
                .await;
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

/// Where the HTTP cache stores a response its flight shares.
#[cfg(feature = "http")]
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) ttl: Ttl,
    /// The key of the response (without the cache's prefix).
    pub(crate) at: Vec<u8>,
    /// An index to store beside it, and its key (a URL's variants).
    pub(crate) index: Option<(Vec<u8>, Bytes)>,
}
