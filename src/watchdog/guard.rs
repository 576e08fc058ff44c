//! Writes that cannot forget their TTL: the expiry policy held at the
//! source, on a redis-rs connection of the application's own. See
//! [`ExpiryGuard`].

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::expiry::{check_rules, glob, secs, ExpiryRule, NX_SCRIPT};
use crate::error::ConfigError;

mod commands;

use commands::{arg, created_keys, creates, has_word, set_has_ttl, Creates};

/// A redis-rs connection (`MultiplexedConnection`, `ConnectionManager`,
/// a cluster connection, a pooled one: any `redis::aio::ConnectionLike`)
/// whose writes to keys matching an expiry policy cannot leave a key
/// without a TTL.
///
/// For the code that writes keys with its own client — a job queue on a
/// `ConnectionManager`, say — where the outage this crate exists for
/// began: completed jobs written without expiry, for three weeks.
///
/// * A `SET` of a policy key without `EX`/`PX`/`EXAT`/`PXAT` is sent with
///   `PX` and the policy's TTL (its other options kept).
/// * A write that can create a policy key — strings (`SETNX`, `MSET`,
///   `INCR`, `APPEND`, `SETRANGE`, `GETSET`, `SETBIT`, `BITFIELD`,
///   `BITOP`), hashes (`HSET`, `HSETNX`, `HMSET`, `HINCRBY`…), lists
///   (`LPUSH`, `RPUSH`, `LMOVE`, `RPOPLPUSH` and their blocking forms),
///   sets (`SADD`, `SMOVE`, `S*STORE`), sorted sets and geo (`ZADD`,
///   `ZINCRBY`, `Z*STORE`, `ZRANGESTORE`, `GEOADD`, `GEOSEARCHSTORE`),
///   streams (`XADD`, `XGROUP CREATE … MKSTREAM`), HyperLogLogs
///   (`PFADD`, `PFMERGE`), `COPY`, `RENAME`, `RESTORE`, `SORT … STORE`, a
///   `SET … KEEPTTL` — is followed by `EXPIRE key ttl NX` in the same
///   pipeline, or inside the same `MULTI`/`EXEC` for a transaction
///   (`redis::pipe().atomic()`): a key that has a TTL keeps it. Its reply
///   is taken out: callers see the replies they asked for.
/// * Every other command passes untouched, and so does every key that
///   matches no policy. `PERSIST` is obeyed: it is the writer's explicit
///   choice.
///
/// Not inspected: scripts and functions (`EVAL`, `EVALSHA`, `FCALL`),
/// whose keys and writes cannot be known from outside, and a transaction
/// sent as separate `MULTI`, commands and `EXEC` (its `SET`s are still
/// given a TTL in place; the other writes pass untouched). For those,
/// the watchdog's server-side policy
/// ([`WatchdogBuilder::expire`](super::WatchdogBuilder::expire)) gives
/// the keys a TTL as its `SCAN` meets them.
///
/// On Redis before 7 (no `EXPIRE … NX`), the same check-and-set runs as a
/// one-key Lua script; the server's version is read once (`INFO server`),
/// at the first write that needs it. Clones share that knowledge.
///
/// ```no_run
/// use std::time::Duration;
/// use fusebox::watchdog::ExpiryGuard;
///
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let conn = client.get_multiplexed_async_connection().await?;
/// let mut conn = ExpiryGuard::builder()
///     .expire("jobs:done:*", Duration::from_secs(72 * 3600))
///     .wrap(conn)?;
/// // Stored with `PX 259200000`.
/// let () = redis::cmd("SET").arg("jobs:done:42").arg("ok").query_async(&mut conn).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ExpiryGuard<C> {
    inner: C,
    rules: Arc<[ExpiryRule]>,
    /// 0: not known yet, 1: `EXPIRE … NX`, 2: the script.
    nx: Arc<AtomicU8>,
    /// Inside a `MULTI` sent as a command of its own.
    in_multi: bool,
}

impl<C> fmt::Debug for ExpiryGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpiryGuard")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

/// Builds an [`ExpiryGuard`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ExpiryGuardBuilder {
    rules: Vec<ExpiryRule>,
}

impl ExpiryGuardBuilder {
    /// Keys matching `pattern` (a Redis glob: `*`, `?`, `[…]`, `\`) never
    /// go without a TTL: writes that would leave one without get `ttl`.
    /// The first matching policy applies. Refused at wrap: an empty pattern
    /// or one over 1024 bytes, a TTL under 1 s or over 100 years, more than
    /// 64 policies, or none.
    pub fn expire(mut self, pattern: impl Into<String>, ttl: Duration) -> Self {
        self.rules.push(ExpiryRule {
            pattern: pattern.into(),
            ttl,
        });
        self
    }

    /// Wraps `conn`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] (builder `"expiry guard"`, field `expire`) for a
    /// policy out of range, or none.
    pub fn wrap<C: ConnectionLike>(self, conn: C) -> Result<ExpiryGuard<C>, ConfigError> {
        if self.rules.is_empty() {
            return Err(ConfigError::new(
                "expiry guard",
                "expire",
                "no policy given: call `expire` before `wrap`",
            ));
        }
        check_rules(&self.rules, "expiry guard")?;
        Ok(ExpiryGuard {
            inner: conn,
            rules: self.rules.into(),
            nx: Arc::new(AtomicU8::new(0)),
            in_multi: false,
        })
    }
}

impl ExpiryGuard<()> {
    /// Starts an [`ExpiryGuardBuilder`].
    pub fn builder() -> ExpiryGuardBuilder {
        ExpiryGuardBuilder::default()
    }
}

impl<C> ExpiryGuard<C> {
    /// The wrapped connection.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The wrapped connection, unwrapped.
    pub fn into_inner(self) -> C {
        self.inner
    }

    /// The TTL of the first policy `key` matches.
    fn ttl_of(&self, key: &[u8]) -> Option<Duration> {
        let rule = self.rules.iter().find(|r| glob(r.pattern.as_bytes(), key));
        rule.map(|r| r.ttl)
    }

    /// What `cmd` needs: a `SET` rewritten, and keys to follow with an
    /// `EXPIRE … NX`. `None`: nothing, it passes untouched.
    fn plan(&self, cmd: &Cmd) -> Option<Plan> {
        let how = creates(arg(cmd, 0)?)?;
        let mut plan = Plan::default();
        for key in created_keys(cmd, how) {
            let Some(ttl) = self.ttl_of(key) else {
                continue;
            };
            if how == Creates::Set && !has_word(cmd, 3, b"KEEPTTL") {
                if !set_has_ttl(cmd) {
                    plan.rewritten = Some(with_ttl(cmd, ttl));
                }
            } else {
                plan.follow.push((key.to_vec(), ttl));
            }
        }
        (plan.rewritten.is_some() || !plan.follow.is_empty()).then_some(plan)
    }
}

/// What one command needs.
#[derive(Default)]
struct Plan {
    rewritten: Option<Cmd>,
    follow: Vec<(Vec<u8>, Duration)>,
}

/// `cmd` (a `SET` without a TTL) with `PX ttl`.
fn with_ttl(cmd: &Cmd, ttl: Duration) -> Cmd {
    let n = cmd.args_iter().len();
    let mut out = Cmd::with_capacity(n + 2, 0);
    for a in cmd.args_iter() {
        if let redis::Arg::Simple(a) = a {
            out.arg(a);
        }
    }
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    out.arg("PX").arg(ms);
    out
}

impl<C: ConnectionLike + Send> ExpiryGuard<C> {
    /// Whether this Redis takes `EXPIRE … NX` (7 and later): read once.
    async fn nx(&mut self) -> bool {
        match self.nx.load(Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        let info = self
            .inner
            .req_packed_command(redis::cmd("INFO").arg("server"))
            .await;
        let text = |v: &Value| match v {
            Value::BulkString(b) => version_major(&String::from_utf8_lossy(b)),
            Value::VerbatimString { text, .. } => version_major(text),
            _ => None,
        };
        let major = match info {
            // A cluster's answer, by node: the oldest decides.
            Ok(Value::Map(nodes)) => nodes
                .iter()
                .map(|(_, v)| text(v))
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().min()),
            Ok(v) => text(&v),
            // Not known now: the script, which every version runs; asked
            // again next time.
            Err(_) => return false,
        };
        // An answer without a version (INFO renamed, say): the script.
        let nx = major.is_some_and(|m| m >= 7);
        self.nx.store(if nx { 1 } else { 2 }, Relaxed);
        nx
    }

    /// Appends the commands that give `key` `ttl` unless it has one.
    fn push_follow(pipe: &mut Pipeline, nx: bool, key: &[u8], ttl: Duration) {
        match nx {
            true => pipe.cmd("EXPIRE").arg(key).arg(secs(ttl)).arg("NX"),
            false => pipe
                .cmd("EVAL")
                .arg(NX_SCRIPT)
                .arg(1)
                .arg(key)
                .arg(secs(ttl)),
        };
    }

    async fn command(&mut self, cmd: &Cmd) -> redis::RedisResult<Value> {
        let name = arg(cmd, 0).unwrap_or_default();
        let was_multi = self.in_multi;
        if name.eq_ignore_ascii_case(b"MULTI") {
            self.in_multi = true;
        } else if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
            self.in_multi = false;
        }
        let Some(plan) = self.plan(cmd) else {
            return self.inner.req_packed_command(cmd).await;
        };
        let first = plan.rewritten.as_ref().unwrap_or(cmd);
        if plan.follow.is_empty() || was_multi {
            // Inside a MULTI of separate commands, an EXPIRE would add a
            // reply to the EXEC the caller does not expect.
            return self.inner.req_packed_command(first).await;
        }
        let nx = self.nx().await;
        let mut pipe = Pipeline::with_capacity(1 + plan.follow.len());
        pipe.add_command(first.clone());
        for (key, ttl) in &plan.follow {
            Self::push_follow(&mut pipe, nx, key, *ttl);
        }
        let mut replies = self.inner.req_packed_commands(&pipe, 0, pipe.len()).await?;
        match replies.is_empty() {
            true => Err(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "no reply to the write",
            ))),
            false => replies.swap_remove(0).extract_error(),
        }
    }

    async fn pipeline(
        &mut self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        let tx = pipeline.is_transaction();
        let n = pipeline.len();
        // Only the shapes redis-rs sends are rewritten.
        let standard = match tx {
            true => (offset, count) == (n + 1, 1),
            false => (offset, count) == (0, n),
        };
        let plans: Vec<_> = match standard {
            true => pipeline.cmd_iter().map(|c| self.plan(c)).collect(),
            false => Vec::new(),
        };
        if plans.iter().all(Option::is_none) {
            return self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
        }
        let nx = self.nx().await;
        let extra: usize = plans.iter().flatten().map(|p| p.follow.len()).sum();
        let mut pipe = Pipeline::with_capacity(n + extra);
        let mut added = Vec::with_capacity(extra);
        for (cmd, plan) in pipeline.cmd_iter().zip(&plans) {
            let Some(plan) = plan else {
                pipe.add_command(cmd.clone());
                continue;
            };
            pipe.add_command(plan.rewritten.clone().unwrap_or_else(|| cmd.clone()));
            for (key, ttl) in &plan.follow {
                added.push(pipe.len());
                Self::push_follow(&mut pipe, nx, key, *ttl);
            }
        }
        let m = pipe.len();
        if !tx {
            let replies = self.inner.req_packed_commands(&pipe, 0, m).await?;
            return Ok(without(replies, &added));
        }
        pipe.atomic();
        let mut replies = self.inner.req_packed_commands(&pipe, m + 1, 1).await?;
        if let Some(Value::Array(items)) = replies.pop() {
            replies.push(Value::Array(without(items, &added)));
        } else {
            // EXEC answered nil (a WATCHed key changed): as it came.
            replies.push(Value::Nil);
        }
        Ok(replies)
    }
}

/// `replies` less those at `added` (sorted).
fn without(replies: Vec<Value>, added: &[usize]) -> Vec<Value> {
    let mut added = added.iter().peekable();
    let mut out = Vec::with_capacity(replies.len().saturating_sub(added.len()));
    for (i, v) in replies.into_iter().enumerate() {
        if added.next_if(|a| **a == i).is_none() {
            out.push(v);
        }
    }
    out
}

/// The major version in an `INFO server` text.
fn version_major(info: &str) -> Option<u32> {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))?;
    line.trim().split('.').next()?.parse().ok()
}

impl<C: ConnectionLike + Send> ConnectionLike for ExpiryGuard<C> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.pipeline(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests;
