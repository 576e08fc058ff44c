//! The error of a call to one shard.

use std::fmt;
use std::sync::Arc;

use super::super::error::RedisError;
use crate::request::{Fault, Reason};

/// A failed call to one shard of a cluster: which primary, and why (its
/// breaker was open, or the call failed and was counted by that breaker).
#[derive(Debug)]
pub struct ShardError {
    pub(super) shard: Arc<str>,
    pub(super) error: crate::breaker::Error<RedisError>,
    /// No shard's breaker saw it: no connection to the cluster could be
    /// had at all.
    pub(super) whole: bool,
}

impl ShardError {
    /// This failure as the whole cluster's (no connection at all).
    pub(super) fn whole(mut self) -> Self {
        self.whole = true;
        self
    }

    /// The primary (`host:port`) the call went to.
    pub fn shard(&self) -> &str {
        &self.shard
    }
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}: {}", self.shard, self.error)
    }
}

impl std::error::Error for ShardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.error {
            crate::breaker::Error::Open(open) => Some(open),
            crate::breaker::Error::Inner(e) => Some(e),
        }
    }
}

impl Fault for ShardError {
    fn reason(&self) -> Reason {
        self.error.reason()
    }

    /// Yes when the shard's own breaker counted it; no when no
    /// connection to the cluster could be had (then the cache's breaker
    /// counts it, and opens while the whole cluster is unreachable).
    fn contained(&self) -> bool {
        !self.whole
    }
}
