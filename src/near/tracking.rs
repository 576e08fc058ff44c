//! The tracking connection: RESP3 `CLIENT TRACKING ON BCAST PREFIX
//! <prefix>` on a connection of its own, whose invalidation pushes remove
//! L1 entries as they arrive (in the connection's own task, with no hop
//! through a channel).
//!
//! While it is up, the near cache's entries may be fresh; the moment it is
//! lost — a disconnection pushed by redis-rs, or a `PING` unanswered within
//! [`PING_DEADLINE`] — none is, and it is made again every [`RETRY`] until
//! Redis takes it. The task stops when the cache is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::Near;
use crate::backend::RedisConfig;

/// How often the connection is checked with a `PING`.
const PING_EVERY: Duration = Duration::from_millis(250);
/// A `PING` unanswered this long means the connection is lost: the longest
/// a silently dropped connection can leave entries counted fresh is this
/// and [`PING_EVERY`].
const PING_DEADLINE: Duration = Duration::from_millis(500);
/// How long after a loss the connection is made again.
const RETRY: Duration = Duration::from_millis(200);
/// How long an answer on the tracking connection lets entries be fresh: a
/// `PING` interval and deadline, and room for a late timer. The longest a
/// tracking task that died unnoticed leaves entries fresh.
pub(crate) const LEASE: Duration = Duration::from_millis(1000);

/// The name the connection gives itself (`CLIENT LIST` shows it).
pub(crate) const CLIENT_NAME: &str = "fusebox-tracking";

/// Runs the tracking connection for `near` until `near` is dropped.
pub(crate) async fn run(near: Weak<Near>, config: RedisConfig, prefix: Bytes, name: Arc<str>) {
    let mut warned = false;
    loop {
        let lost = session(&near, &config, &prefix).await;
        let Some(strong) = near.upgrade() else { return };
        strong.tracking(false);
        drop(strong);
        match lost {
            Ok(false) => return,
            Ok(true) => {
                tracing::warn!(
                    target: "fusebox::cache", cache = &*name, addr = config.addr(),
                    "near cache: tracking connection lost; L1 serves nothing fresh until it is back"
                );
                warned = false;
            }
            // Once per run of failures: a Redis down for minutes does not
            // log every 200 ms.
            Err(e) if !warned => {
                tracing::warn!(
                    target: "fusebox::cache", cache = &*name, addr = config.addr(), error = %e,
                    "near cache: no tracking connection; L1 serves nothing fresh until there is one"
                );
                warned = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(RETRY).await;
        if near.strong_count() == 0 {
            return;
        }
    }
}

/// One connection's life: `Ok(true)` if it was up and then lost,
/// `Ok(false)` once the cache is gone, an error if it could not be made.
async fn session(near: &Weak<Near>, config: &RedisConfig, prefix: &Bytes) -> Result<bool, String> {
    let lost = Arc::new(Notify::new());
    let pushes = {
        let (near, lost) = (near.clone(), lost.clone());
        move |push: PushInfo| {
            pushed(&near, &lost, push);
            Ok::<(), std::convert::Infallible>(())
        }
    };
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(PING_DEADLINE))
        .set_push_sender(pushes);
    let limit = config.connect_timeout.saturating_mul(2);
    let connect = async {
        let client = config.target.client().await.map_err(|e| e.to_string())?;
        client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
            .map_err(|e| e.to_string())
    };
    let mut conn = tokio::time::timeout(limit, connect)
        .await
        .map_err(|_| "connect timed out".to_owned())??;
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    if !prefix.is_empty() {
        tracking.arg("PREFIX").arg(&prefix[..]);
    }
    let setup = async {
        // The name is for operators (`CLIENT LIST`); a user not allowed to
        // set it still tracks.
        let _ = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(CLIENT_NAME)
            .query_async::<()>(&mut conn)
            .await;
        tracking.query_async::<()>(&mut conn).await
    };
    match tokio::time::timeout(PING_DEADLINE, setup).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("CLIENT TRACKING refused: {e}")),
        Err(_) => return Err("CLIENT TRACKING timed out".to_owned()),
    }
    match near.upgrade() {
        Some(near) => {
            near.renew(tokio::time::Instant::now(), LEASE);
            near.tracking(true);
        }
        None => return Ok(false),
    }
    loop {
        if tokio::time::timeout(PING_EVERY, lost.notified())
            .await
            .is_ok()
        {
            return Ok(true);
        }
        if near.strong_count() == 0 {
            return Ok(false);
        }
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<()>(&mut conn);
        let answered = match tokio::time::timeout(PING_DEADLINE, ping).await {
            Ok(Ok(())) => true,
            // An error reply is an answer: the connection is alive (under
            // `MISCONF`, Redis refuses `PING` while it serves reads and
            // sends invalidations).
            Ok(Err(e)) => e.code().is_some(),
            Err(_) => false,
        };
        if !answered {
            return Ok(true);
        }
        match near.upgrade() {
            Some(near) => near.renew(tokio::time::Instant::now(), LEASE),
            None => return Ok(false),
        }
    }
}

/// One push from Redis, in the connection's task.
fn pushed(near: &Weak<Near>, lost: &Notify, push: PushInfo) {
    match push.kind {
        PushKind::Invalidate => {
            let Some(near) = near.upgrade() else { return };
            match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key {
                            near.invalidate(key);
                        }
                    }
                }
                // A flush: every key may have changed.
                _ => near.invalidate_all(),
            }
        }
        PushKind::Disconnection => {
            if let Some(near) = near.upgrade() {
                near.tracking(false);
            }
            lost.notify_one();
        }
        _ => {}
    }
}

/// The tracking task of a cache: stopped when the last clone of the cache
/// is dropped, and started again on the current runtime by
/// [`revive`](Self::revive) if it stopped with the runtime it ran on.
pub(crate) struct TrackingTask {
    handle: std::sync::Mutex<tokio::task::AbortHandle>,
    near: Weak<Near>,
    config: RedisConfig,
    prefix: Bytes,
    name: Arc<str>,
}

impl std::fmt::Debug for TrackingTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackingTask")
            .field("addr", &self.config.addr())
            .finish_non_exhaustive()
    }
}

impl TrackingTask {
    /// Spawns the tracking connection of `near` (inside a tokio runtime).
    pub(crate) fn spawn(
        near: &Arc<Near>,
        config: RedisConfig,
        prefix: Bytes,
        name: Arc<str>,
    ) -> Self {
        let near = Arc::downgrade(near);
        let task = tokio::spawn(run(
            near.clone(),
            config.clone(),
            prefix.clone(),
            name.clone(),
        ));
        TrackingTask {
            handle: std::sync::Mutex::new(task.abort_handle()),
            near,
            config,
            prefix,
            name,
        }
    }

    /// Starts the task again on the current runtime if it has stopped (the
    /// runtime it was spawned on ended). Cheap when it runs: one `try_lock`.
    pub(crate) fn revive(&self) {
        let Ok(mut handle) = self.handle.try_lock() else {
            return;
        };
        if !handle.is_finished() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::info!(
            target: "fusebox::cache", cache = &*self.name, addr = self.config.addr(),
            "near cache: the tracking task had stopped with its runtime; started again"
        );
        let task = run(
            self.near.clone(),
            self.config.clone(),
            self.prefix.clone(),
            self.name.clone(),
        );
        *handle = runtime.spawn(task).abort_handle();
    }
}

impl Drop for TrackingTask {
    fn drop(&mut self) {
        self.handle
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .abort();
    }
}
