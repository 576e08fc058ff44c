//! Reads and changes through the near cache: L1 first, Redis for what is
//! not fresh there, and L1's stale entries for the reads Redis fails.

use bytes::Bytes;
use tokio::time::Instant;

use super::{Backend, Cache};
use crate::near::{Near, Outcome};
use crate::request::{CacheRequest, CacheResponse, Reason};

impl<B: Backend> Cache<B> {
    /// `get` of a full key through `near`, counted.
    pub(super) async fn near_get(&self, near: &Near, key: Bytes) -> Option<Bytes> {
        let read = self.near_read(near, key).await;
        near.tally.count(read.outcome);
        read.value
    }

    /// A read of a full key through `near`, not yet counted: L1 if fresh,
    /// else Redis, else (Redis failing) L1 if not too stale.
    pub(super) async fn near_read(&self, near: &Near, key: Bytes) -> NearRead {
        let now = Instant::now();
        let found = match near.lookup(&key, now) {
            Some((entry, true)) => {
                let left = entry.ttl_left(now);
                return NearRead::of(Some(entry.value), Outcome::L1Hit, None).left(left);
            }
            Some((entry, false)) => Some(entry),
            None => None,
        };
        self.revive_tracking(near);
        let ticket = near.ticket(&key);
        match self.request(CacheRequest::GetWithTtl(key.clone())).await {
            CacheResponse::ValueWithTtl(answer) => {
                let value = answer.clone();
                near.fill(key, answer, ticket);
                match value {
                    Some((v, ttl)) => NearRead::of(Some(v), Outcome::Hit, None).left(ttl_left(ttl)),
                    None => NearRead::of(None, Outcome::Miss, found),
                }
            }
            // Shed by this process (Redis is not failing: the answer is one
            // call away) or refused unsent: a miss, never a stale value,
            // which may predate an invalidation that tracking missed.
            CacheResponse::Miss(Reason::Overloaded | Reason::Rejected | Reason::TooLarge) => {
                NearRead::of(None, Outcome::Miss, found)
            }
            // Redis did not answer: what L1 has, if not too old.
            _ => {
                let found = found.filter(|e| near.servable_stale(e, Instant::now()));
                match found {
                    Some(entry) => NearRead::of(Some(entry.value), Outcome::Stale, None),
                    None => NearRead::of(None, Outcome::Miss, None),
                }
            }
        }
    }

    /// On a read that goes to Redis anyway: if the tracking lease ran out
    /// while the generation says up, the tracking task may have stopped
    /// with its runtime; start it again here.
    fn revive_tracking(&self, near: &Near) {
        if near.lease_lapsed() {
            if let Some(task) = &self.shared.tracking {
                task.revive();
            }
        }
    }

    /// The fresh L1 values of `keys` (full keys), where there are any.
    pub(super) fn near_fresh(&self, keys: &[Option<Bytes>]) -> Option<Vec<Option<Bytes>>> {
        let near = self.shared.near.as_deref()?;
        let now = Instant::now();
        Some(
            keys.iter()
                .map(|k| {
                    let (entry, fresh) = near.lookup(k.as_ref()?, now)?;
                    fresh.then(|| {
                        near.tally.count(Outcome::L1Hit);
                        entry.value
                    })
                })
                .collect(),
        )
    }
}

/// A read through the near cache: its value and outcome, and on a miss the
/// L1 entry that was there (no longer fresh), for a loader that fails.
pub(super) struct NearRead {
    pub(super) value: Option<Bytes>,
    pub(super) outcome: Outcome,
    pub(super) previous: Option<crate::near::Entry>,
    /// For a value: how long Redis keeps it (`None`: no expiry, or not
    /// known).
    pub(super) left: Option<std::time::Duration>,
}

/// How long a key read with `ttl` is kept.
pub(super) fn ttl_left(ttl: crate::request::Ttl) -> Option<std::time::Duration> {
    match ttl {
        crate::request::Ttl::After(d) => Some(d),
        crate::request::Ttl::Never => None,
    }
}

impl NearRead {
    fn of(value: Option<Bytes>, outcome: Outcome, previous: Option<crate::near::Entry>) -> Self {
        NearRead {
            value,
            outcome,
            previous,
            left: None,
        }
    }

    fn left(mut self, left: Option<std::time::Duration>) -> Self {
        self.left = left;
        self
    }
}
