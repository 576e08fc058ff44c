//! The Redis servers of the soak, and the cycle of faults injected into
//! them for real.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusebox_testkit::{command, RedisCluster, RedisServer};

use crate::Soak;

/// How much memory the service's Redis has.
const MAXMEMORY: &str = "64mb";

/// How long the service runs healthy after each fault.
const RECOVERY: Duration = Duration::from_secs(10);

/// The servers: the service's Redis, an empty spare it is made a replica
/// of (so that it refuses writes), and a cluster.
#[derive(Clone)]
pub(crate) struct Servers {
    pub(crate) port: u16,
    pub(crate) spare_port: u16,
    pub(crate) cluster_ports: Vec<u16>,
    main: Arc<Mutex<RedisServer>>,
    // Kept alive for as long as the soak runs.
    _spare: Arc<Mutex<RedisServer>>,
    cluster: Arc<Mutex<RedisCluster>>,
}

impl Servers {
    pub(crate) fn start() -> Result<Servers, String> {
        let main = RedisServer::try_start(&[
            "--maxmemory",
            MAXMEMORY,
            "--maxmemory-policy",
            "noeviction",
        ])?;
        let spare = RedisServer::try_start(&[])?;
        let cluster = RedisCluster::try_start(3, 1, &["--cluster-require-full-coverage", "no"])?;
        Ok(Servers {
            port: main.port(),
            spare_port: spare.port(),
            cluster_ports: cluster.nodes().iter().map(RedisServer::port).collect(),
            main: Arc::new(Mutex::new(main)),
            _spare: Arc::new(Mutex::new(spare)),
            cluster: Arc::new(Mutex::new(cluster)),
        })
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn cluster_urls(&self) -> Vec<String> {
        self.cluster_ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// Runs `f` on the service's Redis, off the runtime's threads.
    async fn main<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RedisServer) -> T + Send + 'static,
    ) -> T {
        let main = self.main.clone();
        tokio::task::spawn_blocking(move || f(&mut main.lock().unwrap()))
            .await
            .expect("a fault's thread")
    }

    async fn cluster<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RedisCluster) -> T + Send + 'static,
    ) -> T {
        let cluster = self.cluster.clone();
        tokio::task::spawn_blocking(move || f(&mut cluster.lock().unwrap()))
            .await
            .expect("a fault's thread")
    }
}

/// Sleeps `d` unless the soak stops first: whether it should go on.
async fn hold(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Relaxed) {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    !stop.load(Relaxed)
}

/// The faults, one after the other, with `RECOVERY` after each, until
/// `stop`. A fault that is under way when the soak stops is healed first.
pub(crate) async fn cycle(soak: Arc<Soak>, redis: Servers, stop: Arc<AtomicBool>) {
    let spare = redis.spare_port.to_string();
    let mut round = 0usize;
    hold(RECOVERY, &stop).await;
    while !stop.load(Relaxed) {
        round += 1;

        soak.fault("Redis killed (SIGKILL), down 5 s");
        redis.main(RedisServer::kill).await;
        hold(Duration::from_secs(5), &stop).await;
        redis.main(RedisServer::restart).await;
        soak.healed("Redis restarted, empty");
        if !hold(RECOVERY, &stop).await {
            break;
        }

        soak.fault("Redis paused (SIGSTOP) for 4 s");
        redis.main(RedisServer::pause).await;
        hold(Duration::from_secs(4), &stop).await;
        redis.main(RedisServer::resume).await;
        soak.healed("Redis resumed (SIGCONT)");
        if !hold(RECOVERY, &stop).await {
            break;
        }

        soak.fault("Redis out of memory (CONFIG SET maxmemory 1) for 6 s");
        redis
            .main(|r| r.cmd(&["CONFIG", "SET", "maxmemory", "1"]))
            .await;
        hold(Duration::from_secs(6), &stop).await;
        redis
            .main(|r| r.cmd(&["CONFIG", "SET", "maxmemory", MAXMEMORY]))
            .await;
        soak.healed("maxmemory restored");
        if !hold(RECOVERY, &stop).await {
            break;
        }

        soak.fault("Redis read-only (REPLICAOF an empty server) for 6 s");
        let spare2 = spare.clone();
        redis
            .main(move |r| r.cmd(&["REPLICAOF", "127.0.0.1", &spare2]))
            .await;
        hold(Duration::from_secs(6), &stop).await;
        redis.main(|r| r.cmd(&["REPLICAOF", "NO", "ONE"])).await;
        soak.healed("REPLICAOF NO ONE");
        if !hold(RECOVERY, &stop).await {
            break;
        }

        soak.fault("the near cache's tracking connection killed (CLIENT KILL)");
        let killed = redis.main(|r| kill_tracking(r.port())).await;
        soak.healed(&format!("tracking killed ({killed} connection)"));
        if !hold(RECOVERY, &stop).await {
            break;
        }

        // A primary of a different third of the slots each round.
        let slot = [0u16, 6000, 12000][round % 3];
        soak.fault(&format!("cluster: the primary of slot {slot} killed"));
        let said = redis.cluster(move |c| failover(c, slot)).await;
        soak.healed(&format!("cluster: {said}"));
        if !hold(RECOVERY, &stop).await {
            break;
        }
    }
}

/// `CLIENT KILL`s the connections named `fusebox-tracking`: how many.
fn kill_tracking(port: u16) -> usize {
    let list = command(port, &["CLIENT", "LIST"]).unwrap_or_default();
    list.lines()
        .filter(|l| l.contains("name=fusebox-tracking"))
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix("id="))
        .filter(|id| command(port, &["CLIENT", "KILL", "ID", id]).is_ok_and(|r| r.contains('1')))
        .count()
}

/// Kills the primary of `slot`, waits for its replica's promotion, then
/// brings the old primary back (it rejoins as a replica) and waits until
/// it has synced: what happened, in words.
fn failover(cluster: &mut RedisCluster, slot: u16) -> String {
    let Some(victim) = cluster.primary_of_slot(slot) else {
        return "no primary to kill".to_owned();
    };
    let port = cluster.nodes()[victim].port();
    let killed = Instant::now();
    cluster.node_mut(victim).kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let promoted = loop {
        match cluster.primary_of_slot(slot) {
            Some(p) if p != victim => break Some(p),
            _ if Instant::now() > deadline => break None,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let took = killed.elapsed().as_secs_f64();
    cluster.node_mut(victim).restart();
    let synced =
        cluster.wait_ok(Duration::from_secs(30)) && cluster.wait_synced(Duration::from_secs(30));
    match promoted {
        Some(p) => format!(
            "{port} killed, {} promoted after {took:.1} s; {port} back as a replica{}",
            cluster.nodes()[p].port(),
            if synced {
                ", synced"
            } else {
                ", NOT synced within 30 s"
            }
        ),
        None => format!("{port} killed, no replica promoted within 30 s; restarted"),
    }
}
