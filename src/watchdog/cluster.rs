//! A watchdog over every primary of a Redis Cluster: one node watchdog per
//! primary (its own connection, forecast, levels and sampler), the primaries
//! found with `CLUSTER NODES` on every round, and one report where the node
//! that will fill first decides (a cluster is full when one shard is).

use std::collections::HashMap;
use std::sync::Arc;

use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::sync::broadcast;

use super::task::{lock, Shared};
use super::*;
use crate::backend::Target;

impl Watchdog {
    /// Watches every primary of the cluster that `seeds` (clients for any
    /// of its nodes) belong to.
    pub(super) fn spawn_cluster(mut config: WatchdogConfig, seeds: Vec<redis::Client>) -> Self {
        crate::telemetry::describe();
        let name = config.name.clone();
        let hooks = std::mem::take(&mut config.webhooks);
        Self::start(&name, &hooks, move |shared| {
            supervise(config, seeds, shared)
        })
    }
}

/// Finds the primaries every round, keeps a node watchdog for each, and
/// merges their reports. Node alerts are forwarded as they come, as
/// [`Alert::Node`].
async fn supervise(
    config: WatchdogConfig,
    seeds: Vec<redis::Client>,
    shared: std::sync::Weak<Shared>,
) {
    let mut nodes: HashMap<String, Watchdog> = HashMap::new();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let template = seeds[0].clone();
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Asked of the seeds, then of the primaries known: any node that
        // answers knows the whole cluster.
        let mut known: Vec<redis::Client> = seeds.clone();
        known.extend(nodes.keys().filter_map(|a| node_client(&template, a)));
        match primaries(&known, config.timeout).await {
            Some(found) => {
                nodes.retain(|addr, _| found.contains(addr));
                for addr in found {
                    if nodes.contains_key(&addr) {
                        continue;
                    }
                    let Some(client) = node_client(&template, &addr) else {
                        continue;
                    };
                    let mut node_config = config.clone();
                    node_config.name = format!("{}@{addr}", config.name);
                    let node = Watchdog::spawn(node_config, Target::Direct(Box::new(client)));
                    tokio::spawn(forward(
                        node.subscribe(),
                        addr.clone(),
                        Arc::downgrade(&shared),
                    ));
                    nodes.insert(addr, node);
                }
            }
            // No node answers: the node watchdogs say so themselves; with
            // none yet, the cluster is down.
            None if nodes.is_empty() => {
                let mut report = lock(&shared.report);
                report.status = Status::Down;
                report.last_error = Some("no cluster node answers CLUSTER NODES".into());
                continue;
            }
            None => {}
        }
        let mut reports: Vec<Report> = nodes
            .iter()
            .map(|(addr, w)| {
                let mut r = w.report();
                r.node = Some(addr.clone());
                r
            })
            .collect();
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        *lock(&shared.report) = merge(&config.name, reports);
    }
}

/// Re-sends one node's alerts as the cluster's, until either side is gone.
async fn forward(
    mut alerts: broadcast::Receiver<Alert>,
    node: String,
    cluster: std::sync::Weak<Shared>,
) {
    loop {
        let alert = match alerts.recv().await {
            Ok(a) => a,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let _ = cluster.alerts.send(Alert::Node {
            node: node.clone(),
            alert: Box::new(alert),
        });
    }
}

/// The addresses of the primaries that hold slots, from the first of
/// `clients` to answer `CLUSTER NODES`.
async fn primaries(clients: &[redis::Client], timeout: std::time::Duration) -> Option<Vec<String>> {
    for client in clients {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let ask = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut conn)
                .await
        };
        if let Ok(Ok(text)) = tokio::time::timeout(timeout * 2, ask).await {
            return Some(parse_primaries(&text));
        }
    }
    None
}

/// `ip:port` of every `master` line of `CLUSTER NODES` that holds slots (a
/// failed primary not yet replaced still does: it is watched, and down).
pub(super) fn parse_primaries(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let holds_slots = fields.len() > 8;
            let primary = fields.get(2)?.split(',').any(|f| f == "master");
            let addr = fields.get(1)?.split(['@', ',']).next()?;
            (primary && holds_slots && !addr.starts_with(':')).then(|| addr.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A client for the node at `addr` (`ip:port`), with the template's
/// credentials, database, protocol and TLS.
fn node_client(template: &redis::Client, addr: &str) -> Option<redis::Client> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let info = template.get_connection_info();
    let node = match info.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    let node = node
        .into_connection_info()
        .ok()?
        .set_redis_settings(info.redis_settings().clone());
    redis::Client::open(node).ok()
}

/// One report for the cluster: the node that fills first decides the
/// forecast, the figures and the patterns; the worst node decides the
/// status; alerts raised and warnings anywhere stand.
pub(super) fn merge(name: &str, nodes: Vec<Report>) -> Report {
    let mut report = Report::starting(name);
    // The node that fills first: the shortest forecast, else the highest
    // usage, else the first.
    let decider = nodes
        .iter()
        .filter(|r| r.seconds_to_full.is_some())
        .min_by(|a, b| {
            a.seconds_to_full
                .partial_cmp(&b.seconds_to_full)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .or_else(|| {
            nodes.iter().filter(|r| r.ratio.is_some()).max_by(|a, b| {
                a.ratio
                    .partial_cmp(&b.ratio)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
        })
        .or_else(|| nodes.first());
    if let Some(d) = decider {
        report.node = d.node.clone();
        report.info = d.info.clone();
        report.limit = d.limit;
        report.growth_bytes_per_sec = d.growth_bytes_per_sec;
        report.seconds_to_full = d.seconds_to_full;
        report.no_ttl_prefixes = d.no_ttl_prefixes.clone();
        report.evicted_since_last = d.evicted_since_last;
        report.expired_since_last = d.expired_since_last;
    }
    report.ratio = nodes.iter().filter_map(|r| r.ratio).reduce(f64::max);
    report.status = [
        Status::Down,
        Status::Degraded,
        Status::Starting,
        Status::Healthy,
    ]
    .into_iter()
    .find(|s| nodes.iter().any(|r| r.status == *s))
    .unwrap_or(Status::Starting);
    for r in &nodes {
        report.levels_raised.extend(&r.levels_raised);
        report.leeway_alert |= r.leeway_alert;
        report.keys_sampled += r.keys_sampled;
        for (i, p) in r.expiry.iter().enumerate() {
            match report.expiry.get_mut(i) {
                Some(total) => {
                    total.expired += p.expired;
                    total.would_expire += p.would_expire;
                }
                None => report.expiry.push(p.clone()),
            }
        }
        report.shedding_writes |= r.shedding_writes;
        for w in &r.warnings {
            if !report.warnings.contains(w) {
                report.warnings.push(w.clone());
            }
        }
        if report.last_error.is_none() {
            if let (Some(e), Some(node)) = (&r.last_error, &r.node) {
                report.last_error = Some(format!("{node}: {e}"));
            }
        }
    }
    report.levels_raised.sort_by(f64::total_cmp);
    report.levels_raised.dedup();
    report.nodes = nodes;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(addr: &str, status: Status, ratio: f64, to_full: Option<f64>) -> Report {
        let mut r = Report::starting(addr);
        r.node = Some(addr.into());
        r.status = status;
        r.ratio = Some(ratio);
        r.seconds_to_full = to_full;
        r
    }

    #[test]
    fn the_node_that_fills_first_decides_and_the_worst_status_stands() {
        let merged = merge(
            "c",
            vec![
                node("a:1", Status::Healthy, 0.8, None),
                node("b:2", Status::Degraded, 0.3, Some(100.0)),
                node("c:3", Status::Healthy, 0.2, Some(5000.0)),
            ],
        );
        assert_eq!(merged.node.as_deref(), Some("b:2"), "the shortest forecast");
        assert_eq!(merged.seconds_to_full, Some(100.0));
        assert_eq!(merged.ratio, Some(0.8), "the highest usage stands");
        assert_eq!(merged.status, Status::Degraded);
        // Without forecasts, the fullest node; a node down makes it down.
        let merged = merge(
            "c",
            vec![
                node("a:1", Status::Down, 0.1, None),
                node("b:2", Status::Healthy, 0.6, None),
            ],
        );
        assert_eq!(merged.node.as_deref(), Some("b:2"));
        assert_eq!(merged.status, Status::Down);
        assert_eq!(merged.nodes.len(), 2);
    }

    #[test]
    fn primaries_holding_slots_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,host-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7004@17004 master,fail - 0 0 5 disconnected
f6 :0@0 master,noaddr - 0 0 0 disconnected 100
";
        assert_eq!(
            parse_primaries(text),
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
    }

    proptest::proptest! {
        /// `CLUSTER NODES` text is untrusted: any text gives a list, never
        /// a panic.
        #[test]
        fn any_nodes_text_parses_without_panicking(
            text in "[ -~\\n]{0,400}",
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = parse_primaries(&text);
            let _ = parse_primaries(&String::from_utf8_lossy(&noise));
        }
    }
}
