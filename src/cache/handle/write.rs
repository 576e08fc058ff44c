//! Writes: the size caps, the TTL each write is sent with (clamped,
//! jittered; a zero TTL refused), and the answer callers see.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use bytes::Bytes;

use super::{Backend, Cache, Deletion, Write};
use crate::request::{CacheRequest, CacheResponse, Reason, Ttl};

impl<B: Backend> Cache<B> {
    pub(super) async fn write(&self, key: &[u8], value: Bytes, ttl: Ttl, if_absent: bool) -> Write {
        self.write_full(self.key(key), value, ttl, if_absent).await
    }

    /// Writes `value` at `key` for exactly the maximum TTL, never
    /// jittered: for a marker that must outlive every value written before
    /// it (the HTTP layer's purge markers).
    #[cfg(feature = "http")]
    pub(crate) async fn set_for_max_ttl(&self, key: &[u8], value: Bytes, if_absent: bool) -> Write {
        let ttl = Ttl::After(self.shared.options.max_ttl);
        self.write_resolved(self.key(key), value, ttl, if_absent)
            .await
    }

    pub(crate) async fn write_full(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Ttl,
        if_absent: bool,
    ) -> Write {
        if ttl == Ttl::After(Duration::ZERO) {
            return self.zero_ttl(if if_absent { "set_if_absent" } else { "set" });
        }
        let ttl = match self.ttl_of(ttl) {
            Some(d) => Ttl::After(d),
            None => Ttl::Never,
        };
        self.write_resolved(key, value, ttl, if_absent).await
    }

    /// A write whose TTL is final (clamped, jittered, not zero).
    async fn write_resolved(&self, key: Bytes, value: Bytes, ttl: Ttl, if_absent: bool) -> Write {
        let options = &self.shared.options;
        if value.len() > options.max_value_size || key.len() > options.max_key_size {
            let op = if if_absent { "set_if_absent" } else { "set" };
            crate::telemetry::cache_fail_open(&options.name, op, Reason::TooLarge.as_str());
            return Write::Skipped(Reason::TooLarge);
        }
        let request = if if_absent {
            CacheRequest::SetIfAbsent { key, value, ttl }
        } else {
            CacheRequest::Set { key, value, ttl }
        };
        self.changed(request).await
    }

    /// Sends a change, with the near cache's entries of its keys removed
    /// before it is sent and again once it is answered: a read that
    /// fetched the old value meanwhile does not keep it.
    pub(super) async fn changed(&self, request: CacheRequest) -> Write {
        written(self.changed_answer(request).await)
    }

    /// [`changed`](Self::changed), with the answer as it came.
    async fn changed_answer(&self, request: CacheRequest) -> CacheResponse {
        let Some(near) = self.shared.near.as_deref() else {
            return self.request(request).await;
        };
        let keys: Vec<Bytes> = match &request {
            CacheRequest::Delete(keys) => keys.clone(),
            CacheRequest::Set { key, .. }
            | CacheRequest::SetIfAbsent { key, .. }
            | CacheRequest::Expire { key, .. } => vec![key.clone()],
            _ => Vec::new(),
        };
        let invalidate = || keys.iter().for_each(|key| near.invalidate(key));
        invalidate();
        let response = self.request(request).await;
        invalidate();
        response
    }

    /// Deletes every key of `keys` in one call (on a cluster, one per
    /// slot): [`Write::Done`] if any was deleted, [`Write::Unchanged`] if
    /// none existed, [`Write::Skipped`] if the delete of any key was not
    /// done — a failed invalidation never reads as success, in part or in
    /// whole. Keys over the cap are not sent (counted, reason
    /// `too_large`). [`delete_many_detailed`](Self::delete_many_detailed)
    /// says which keys were skipped.
    pub async fn delete_many<K: AsRef<[u8]>>(&self, keys: impl IntoIterator<Item = K>) -> Write {
        self.delete_many_detailed(keys).await.write
    }

    /// [`delete_many`](Self::delete_many), saying which keys' deletes were
    /// not done.
    pub async fn delete_many_detailed<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Deletion {
        let mut skipped = Vec::new();
        let mut sent = Vec::new();
        let mut positions = Vec::new();
        for (i, key) in keys.into_iter().enumerate() {
            match self.checked_key("delete", key.as_ref()) {
                Some(full) => {
                    sent.push(full);
                    positions.push(i);
                }
                None => skipped.push(i),
            }
        }
        let too_large = (!skipped.is_empty()).then_some(Reason::TooLarge);
        if sent.is_empty() {
            let write = too_large.map_or(Write::Unchanged, Write::Skipped);
            return Deletion { write, skipped };
        }
        let (write, failed) = match self.changed_answer(CacheRequest::Delete(sent)).await {
            CacheResponse::DeletedExcept {
                skipped: failed,
                reason,
                ..
            } => {
                let name = &self.shared.options.name;
                crate::telemetry::cache_fail_open(name, "delete", reason.as_str());
                (Write::Skipped(reason), failed)
            }
            answer => {
                let write = written(answer);
                let failed = match write {
                    Write::Skipped(_) => (0..positions.len()).collect(),
                    _ => Vec::new(),
                };
                (write, failed)
            }
        };
        skipped.extend(failed.into_iter().filter_map(|i| positions.get(i).copied()));
        skipped.sort_unstable();
        let write = match (write, too_large) {
            (Write::Skipped(reason), _) => Write::Skipped(reason),
            (_, Some(reason)) => Write::Skipped(reason),
            (write, None) => write,
        };
        Deletion { write, skipped }
    }

    /// A zero TTL is the caller's mistake (a key that lives 0 ms), never
    /// sent: skipped, counted and answered as such, not `Done`.
    pub(super) fn zero_ttl(&self, op: &'static str) -> Write {
        crate::telemetry::cache_fail_open(&self.shared.options.name, op, Reason::Rejected.as_str());
        Write::Skipped(Reason::Rejected)
    }

    /// The TTL to send: clamped and jittered; `None` for no expiry.
    pub(super) fn ttl_of(&self, ttl: Ttl) -> Option<Duration> {
        let options = &self.shared.options;
        let Ttl::After(d) = ttl else { return None };
        if d > options.max_ttl {
            crate::telemetry::ttl_capped(&options.name);
        }
        let d = d.min(options.max_ttl);
        if options.ttl_jitter == 0.0 {
            return Some(d);
        }
        let unit = unit_random();
        let cut = d.mul_f64(options.ttl_jitter * unit);
        Some((d - cut).max(Duration::from_millis(1)))
    }
}

/// What a change's answer says became of it.
fn written(response: CacheResponse) -> Write {
    match response {
        CacheResponse::Deleted(0)
        | CacheResponse::Written(false)
        | CacheResponse::Expired(false) => Write::Unchanged,
        CacheResponse::Deleted(_) | CacheResponse::Written(true) | CacheResponse::Expired(true) => {
            Write::Done
        }
        CacheResponse::Skipped(reason)
        | CacheResponse::Miss(reason)
        | CacheResponse::DeletedExcept { reason, .. } => Write::Skipped(reason),
        _ => Write::Skipped(Reason::Other),
    }
}

/// A random number in [0, 1).
pub(super) fn unit_random() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

/// A random `u64` without a dependency: `RandomState` is seeded per
/// instance from the OS and a counter.
fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}
