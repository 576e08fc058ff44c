//! Multi-key calls on a cluster: split by slot, sent at once, put back
//! together; a failing shard costs only its own keys.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use super::slots::by_slot;
use super::{ShardError, Shared};
use crate::request::{CacheRequest, CacheResponse};

/// Each slot group's positions and answer, and the first failure.
type PerSlot = (Vec<(Vec<usize>, Option<CacheResponse>)>, Option<ShardError>);

impl Shared {
    /// `keys`, one `MGET` per slot, the slots at once: a failing shard's
    /// keys are `None`. Fails only when every slot failed.
    pub(super) async fn get_many(
        self: &Arc<Self>,
        keys: Vec<Bytes>,
        until: Instant,
    ) -> Result<CacheResponse, ShardError> {
        let mut values = vec![None; keys.len()];
        for (idx, answer) in self.per_slot(&keys, CacheRequest::GetMany, until).await? {
            if let Some(CacheResponse::Values(found)) = answer {
                for (i, v) in idx.into_iter().zip(found) {
                    values[i] = v;
                }
            }
        }
        Ok(CacheResponse::Values(values))
    }

    /// One `DEL` per slot. When some shards failed: what the others
    /// deleted, and which keys were not (a failure: an invalidation that
    /// did not happen never reads as one that did).
    pub(super) async fn delete_many(
        self: &Arc<Self>,
        keys: Vec<Bytes>,
        until: Instant,
    ) -> Result<CacheResponse, ShardError> {
        let (answers, failed) = self
            .per_slot_failures(&keys, CacheRequest::Delete, until)
            .await?;
        let (mut deleted, mut skipped) = (0, Vec::new());
        for (idx, answer) in answers {
            match answer {
                Some(CacheResponse::Deleted(n)) => deleted += n,
                _ => skipped.extend(idx),
            }
        }
        match failed {
            Some(e) if !skipped.is_empty() => {
                skipped.sort_unstable();
                Ok(CacheResponse::DeletedExcept {
                    deleted,
                    skipped,
                    reason: crate::request::Fault::reason(&e),
                })
            }
            _ => Ok(CacheResponse::Deleted(deleted)),
        }
    }

    /// `keys` grouped by slot, one `request` per slot, all at once: each
    /// group's positions and answer (`None` where its shard failed). An
    /// error only when every group failed.
    async fn per_slot(
        self: &Arc<Self>,
        keys: &[Bytes],
        request: fn(Vec<Bytes>) -> CacheRequest,
        until: Instant,
    ) -> Result<Vec<(Vec<usize>, Option<CacheResponse>)>, ShardError> {
        Ok(self.per_slot_failures(keys, request, until).await?.0)
    }

    /// [`per_slot`](Self::per_slot), with the first failure if any.
    async fn per_slot_failures(
        self: &Arc<Self>,
        keys: &[Bytes],
        request: fn(Vec<Bytes>) -> CacheRequest,
        until: Instant,
    ) -> Result<PerSlot, ShardError> {
        let groups = by_slot(keys);
        let calls = groups.iter().map(|(slot, idx)| {
            let keys = idx.iter().map(|&i| keys[i].clone()).collect();
            self.on_shard(*slot, request(keys), until)
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut first_error = None;
        let mut out = Vec::with_capacity(groups.len());
        for ((_, idx), answer) in groups.into_iter().zip(answers) {
            match answer {
                Ok(response) => out.push((idx, Some(response))),
                Err(e) => {
                    first_error.get_or_insert(e);
                    out.push((idx, None));
                }
            }
        }
        match first_error {
            Some(e) if out.iter().all(|(_, a)| a.is_none()) => Err(e),
            failed => Ok((out, failed)),
        }
    }
}
