//! A Redis Cluster of the caller's own on loopback: primaries with
//! replicas, a short node timeout so that failovers take seconds, every
//! node a [`RedisServer`] that can be killed, paused or restarted.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{RedisServer, INSTALL_HINT};

/// A free port whose cluster bus port (10000 above it) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = crate::free_port();
        let bus = port.checked_add(10000).filter(|_| port >= 1024);
        if bus.is_some_and(|bus| std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok()) {
            return port;
        }
    }
}

/// A cluster of `redis-server --cluster-enabled yes` processes, created
/// with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas` replicas each, plus
    /// `extra` arguments for every node (e.g.
    /// `["--cluster-require-full-coverage", "no"]`), and waits until every
    /// node says the cluster is ok. `cluster-node-timeout` is 1 s unless
    /// `extra` says otherwise.
    ///
    /// # Panics
    ///
    /// If the cluster cannot be made, saying why.
    pub fn start(primaries: usize, replicas: usize, extra: &[&str]) -> Self {
        Self::try_start(primaries, replicas, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`start`](Self::start), saying why not instead of panicking.
    pub fn try_start(primaries: usize, replicas: usize, extra: &[&str]) -> Result<Self, String> {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ];
        if !extra.contains(&"--cluster-node-timeout") {
            args.extend(["--cluster-node-timeout", "1000"]);
        }
        args.extend(extra);
        let nodes = (0..primaries * (1 + replicas))
            .map(|_| RedisServer::try_start_on(cluster_port(), &args))
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli ({e}): {INSTALL_HINT}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        let cluster = RedisCluster { nodes };
        if !cluster.wait_ok(Duration::from_secs(20)) {
            return Err("the cluster did not become ok within 20 s".into());
        }
        // A replica that never synced is never promoted: wait for every
        // replication link.
        if !cluster.wait_synced(Duration::from_secs(20)) {
            return Err("the replicas did not sync within 20 s".into());
        }
        Ok(cluster)
    }

    /// Every node, in the order they were started (primaries first).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`, to kill, pause or restart.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs a command on the first node that answers.
    pub fn cmd(&self, args: &[&str]) -> String {
        self.nodes
            .iter()
            .find_map(|n| n.try_cmd(args).ok())
            .unwrap_or_else(|| panic!("{args:?}: no node answers"))
    }

    /// The slot of `key`, as Redis computes it (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let reply = self.cmd(&["CLUSTER", "KEYSLOT", key]);
        reply
            .trim_start_matches(':')
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The node that serves `slot` as a live primary, as the running nodes
    /// see it (`CLUSTER NODES`): `None` while no primary holds it.
    pub fn primary_of_slot(&self, slot: u16) -> Option<usize> {
        let nodes = self.cmd(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                continue;
            }
            let flags = fields[2];
            if !flags.contains("master") || flags.contains("fail") {
                continue;
            }
            let holds = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if holds {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())?;
                return self.nodes.iter().position(|n| n.port() == port);
            }
        }
        None
    }

    /// The node that serves `key` as a live primary.
    pub fn primary_of(&self, key: &str) -> Option<usize> {
        self.primary_of_slot(self.slot_of(key))
    }

    /// Waits until every running replica says `master_link_status:up`.
    pub fn wait_synced(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let synced = self
                .nodes
                .iter()
                .all(|n| match n.try_cmd(&["INFO", "replication"]) {
                    Ok(info) => {
                        !info.contains("role:slave") || info.contains("master_link_status:up")
                    }
                    Err(_) => true,
                });
            if synced {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let ok = self
                .nodes
                .iter()
                .all(|n| match n.try_cmd(&["CLUSTER", "INFO"]) {
                    Ok(info) => info.contains("cluster_state:ok"),
                    Err(_) => true, // a killed node has no say
                });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}
