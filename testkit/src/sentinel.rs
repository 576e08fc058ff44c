//! A primary with replicas watched by Sentinels, on loopback, with short
//! timeouts so that a failover takes seconds; every process a
//! [`RedisServer`] that can be killed, paused or restarted.

use std::time::{Duration, Instant};

use crate::{free_port, RedisServer};

/// The name the sentinels know the primary by.
pub const SERVICE: &str = "fusebox";

/// A primary, its replicas and the sentinels that watch them.
pub struct RedisSentinel {
    /// The primary first (as started), then the replicas.
    data: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// Starts a primary with `replicas` replicas and `sentinels` sentinels
    /// (quorum: a majority of them), each sentinel counting the primary
    /// down after 500 ms without an answer, and waits until every replica
    /// has synced and every sentinel knows the others and every replica.
    ///
    /// # Panics
    ///
    /// If the set cannot be made, saying why.
    pub fn start(replicas: usize, sentinels: usize) -> Self {
        Self::try_start(replicas, sentinels).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`start`](Self::start), saying why not instead of panicking.
    pub fn try_start(replicas: usize, sentinels: usize) -> Result<Self, String> {
        let primary = RedisServer::try_start(&[])?;
        let primary_port = primary.port().to_string();
        let mut data = vec![primary];
        for _ in 0..replicas {
            data.push(RedisServer::try_start(&[
                "--replicaof",
                "127.0.0.1",
                &primary_port,
            ])?);
        }
        let quorum = sentinels / 2 + 1;
        let conf = format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {SERVICE} 500\n\
             sentinel failover-timeout {SERVICE} 2000\n\
             sentinel parallel-syncs {SERVICE} 1\n"
        );
        let sentinels = (0..sentinels)
            .map(|_| RedisServer::try_start_with_conf(free_port(), &conf, &["--sentinel"]))
            .collect::<Result<Vec<_>, _>>()?;
        let set = RedisSentinel { data, sentinels };
        // A sentinel learns of replicas from the primary's `INFO`, polled
        // every 10 s, and of other sentinels from hellos every 2 s: about
        // 10 s unloaded; a suite loading both cores has taken over 20 s.
        if !set.wait_ready(replicas, Duration::from_secs(45)) {
            return Err(
                "the sentinels did not learn of each other and the replicas within 45 s".into(),
            );
        }
        Ok(set)
    }

    /// `redis+sentinel://127.0.0.1:<port>,…/fusebox`: every sentinel and the
    /// service name.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// The data nodes: the first primary, then the replicas, in the order
    /// they were started (roles change with failovers; see
    /// [`primary`](Self::primary)).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.data
    }

    /// Data node `i`, to kill, pause or restart.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.data[i]
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// Sentinel `i`, to kill, pause or restart.
    pub fn sentinel_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.sentinels[i]
    }

    /// The data node the first sentinel that answers names as primary.
    pub fn primary(&self) -> Option<usize> {
        let reply = self.sentinels.iter().find_map(|s| {
            s.try_cmd(&["SENTINEL", "get-master-addr-by-name", SERVICE])
                .ok()
        })?;
        let port: u16 = reply.lines().nth(1)?.trim().parse().ok()?;
        self.data.iter().position(|n| n.port() == port)
    }

    /// Waits until the sentinels name a primary other than node `old` and
    /// that node says it is one; the new primary's index.
    pub fn wait_failover(&self, old: usize, limit: Duration) -> Option<usize> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(new) = self.primary().filter(|&p| p != old) {
                let role = self.data[new].try_cmd(&["ROLE"]).unwrap_or_default();
                if role.starts_with("master") {
                    return Some(new);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn wait_ready(&self, replicas: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let others = self.sentinels.len().saturating_sub(1);
        while Instant::now() < deadline {
            let synced = self.data[1..].iter().all(|r| {
                r.try_cmd(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            });
            let known = self.sentinels.iter().all(|s| {
                s.try_cmd(&["SENTINEL", "MASTER", SERVICE])
                    .is_ok_and(|reply| {
                        field(&reply, "num-other-sentinels") == Some(others)
                            && field(&reply, "num-slaves") == Some(replicas)
                    })
            });
            if synced && known {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// The number after `name` in a flat name/value reply, one item a line.
fn field(reply: &str, name: &str) -> Option<usize> {
    let mut lines = reply.lines();
    lines.find(|l| l.trim() == name)?;
    lines.next()?.trim().parse().ok()
}
