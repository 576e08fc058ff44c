//! Reads of several keys, and the count of every read.

use bytes::Bytes;

use super::{Backend, Cache};
use crate::near::Outcome;
use crate::request::{CacheRequest, CacheResponse};

impl<B: Backend> Cache<B> {
    /// Counts a read, in the near cache's tally or the cache's own
    /// ([`CACHE_READS_TOTAL`](crate::telemetry::CACHE_READS_TOTAL)).
    pub(super) fn count_read(&self, outcome: Outcome) {
        match (&self.shared.near, &self.shared.reads) {
            (Some(near), _) => near.tally.count(outcome),
            (None, Some(reads)) => reads.count(outcome),
            (None, None) => {}
        }
    }

    /// The values at `keys`, in order; `None` where absent or unanswered.
    pub async fn get_many<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Vec<Option<Bytes>> {
        // Keys over the cap are answered `None`, unsent; the rest go.
        let keys: Vec<Option<Bytes>> = keys
            .into_iter()
            .map(|k| self.checked_key("get_many", k.as_ref()))
            .collect();
        // Fresh L1 entries are answered here; the rest go.
        let near = self.near_fresh(&keys);
        let wanted = |i: usize| near.as_ref().is_none_or(|n| n[i].is_none());
        let sent: Vec<Bytes> = (keys.iter().enumerate())
            .filter(|&(i, _)| wanted(i))
            .filter_map(|(_, k)| k.clone())
            .collect();
        let n = sent.len();
        let values = match n {
            0 => Vec::new(),
            _ => match self.request(CacheRequest::GetMany(sent)).await {
                CacheResponse::Values(v) if v.len() == n => v,
                _ => vec![None; n],
            },
        };
        // What Redis answered (or failed to) counts like a `get`'s read.
        for v in &values {
            self.count_read(match v {
                Some(_) => Outcome::Hit,
                None => Outcome::Miss,
            });
        }
        let mut values = values.into_iter();
        (keys.iter().enumerate())
            .map(|(i, k)| match near.as_ref().and_then(|n| n[i].clone()) {
                Some(v) => Some(v),
                None => k.as_ref().and_then(|_| values.next().flatten()),
            })
            .collect()
    }
}
