//! The watchdog's own connection to Redis: connecting within the poll
//! timeout, reading `INFO`, and a cluster node's coverage setting.

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::State;
use crate::backend::{RedisError, Target};

impl State {
    pub(super) async fn connect(
        &mut self,
        target: &Target,
    ) -> Result<MultiplexedConnection, RedisError> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let t = self.config.timeout;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t));
        // Behind Sentinel, the primary the sentinels name now.
        let connect = async {
            let client = target.client().await?;
            client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .map_err(RedisError::from)
        };
        let conn = match tokio::time::timeout(t * 2, connect).await {
            Ok(r) => r?,
            Err(_) => return Err(RedisError::timeout()),
        };
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    pub(super) async fn read_info(&mut self, target: &Target) -> Result<String, RedisError> {
        let mut conn = self.connect(target).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("INFO")
            .arg("memory")
            .cmd("INFO")
            .arg("keyspace")
            .cmd("INFO")
            .arg("stats")
            .cmd("INFO")
            .arg("cluster");
        let texts: Vec<String> =
            match tokio::time::timeout(self.config.timeout, pipe.query_async(&mut conn)).await {
                Ok(r) => r?,
                Err(_) => return Err(RedisError::timeout()),
            };
        let text = texts.join("\r\n");
        if text.contains("cluster_enabled:1") {
            self.full_coverage = self.full_coverage(&mut conn).await;
        }
        Ok(text)
    }

    /// `cluster-require-full-coverage`, where `CONFIG GET` is allowed (a
    /// managed cluster may refuse it: then unknown).
    async fn full_coverage(&self, conn: &mut MultiplexedConnection) -> Option<bool> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("cluster-require-full-coverage");
        // A map in RESP3, pairs in RESP2: both read as one.
        let get = cmd.query_async::<std::collections::HashMap<String, String>>(conn);
        let reply = tokio::time::timeout(self.config.timeout, get)
            .await
            .ok()?
            .ok()?;
        Some(reply.get("cluster-require-full-coverage")? == "yes")
    }
}
