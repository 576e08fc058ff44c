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
}

impl ShardError {
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

    /// Always: the shard's own breaker counted it.
    fn contained(&self) -> bool {
        true
    }
}
