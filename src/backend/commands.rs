//! Cache requests as Redis commands, and their replies as responses.

use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionLike;

use crate::request::{CacheRequest, CacheResponse};

/// A TTL in milliseconds as Redis takes it: at least 1, and at most 2^62
/// (Redis refuses an expiry that overflows its clock, so a `max_ttl` of
/// `Duration::MAX` means "millions of years", not "refused").
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, 1 << 62)
}

/// `call`, given up with a timeout error after `deadline`.
pub(super) async fn within<T>(
    deadline: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, super::error::RedisError>>,
) -> Result<T, super::error::RedisError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(super::error::RedisError::timeout()))
}

/// What `PTTL` answered, as a TTL: -1 is no expiry; -2, gone since the
/// `GET` (kept 0 ms).
pub(super) fn ttl_of(pttl: i64) -> crate::request::Ttl {
    use crate::request::Ttl;
    match u64::try_from(pttl) {
        Ok(ms) => Ttl::After(Duration::from_millis(ms)),
        Err(_) if pttl == -1 => Ttl::Never,
        Err(_) => Ttl::After(Duration::ZERO),
    }
}

/// `SET key value [PX ttl]`.
pub(super) fn set_cmd(key: &[u8], value: &[u8], ttl: crate::request::Ttl) -> redis::Cmd {
    // Sized once: grown argument by argument, it is reallocated each time.
    let mut cmd = redis::Cmd::with_capacity(5, 3 + key.len() + value.len() + 2 + 20);
    cmd.arg("SET").arg(key).arg(value);
    if let crate::request::Ttl::After(d) = ttl {
        cmd.arg("PX").arg(millis(d));
    }
    cmd
}

/// Runs one request on one connection.
pub(super) async fn execute<C: ConnectionLike + Send>(
    conn: &mut C,
    request: &CacheRequest,
) -> redis::RedisResult<CacheResponse> {
    use crate::request::Ttl;
    Ok(match request {
        CacheRequest::Get(key) => {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&key[..]).query_async(conn).await?;
            CacheResponse::Value(v.map(Bytes::from))
        }
        CacheRequest::GetWithTtl(key) => {
            let (v, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&key[..])
                .cmd("PTTL")
                .arg(&key[..])
                .query_async(conn)
                .await?;
            CacheResponse::ValueWithTtl(v.map(|v| (Bytes::from(v), ttl_of(pttl))))
        }
        CacheRequest::GetMany(keys) => {
            if keys.is_empty() {
                return Ok(CacheResponse::Values(Vec::new()));
            }
            let mut cmd = redis::cmd("MGET");
            for key in keys {
                cmd.arg(&key[..]);
            }
            let v: Vec<Option<Vec<u8>>> = cmd.query_async(conn).await?;
            CacheResponse::Values(v.into_iter().map(|v| v.map(Bytes::from)).collect())
        }
        CacheRequest::Set { key, value, ttl } => {
            let _: redis::Value = set_cmd(key, value, *ttl).query_async(conn).await?;
            CacheResponse::Written(true)
        }
        CacheRequest::SetIfAbsent { key, value, ttl } => {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key[..]).arg(&value[..]).arg("NX");
            if let Ttl::After(d) = *ttl {
                cmd.arg("PX").arg(millis(d));
            }
            let v: redis::Value = cmd.query_async(conn).await?;
            CacheResponse::Written(!matches!(v, redis::Value::Nil))
        }
        CacheRequest::Delete(keys) => {
            if keys.is_empty() {
                return Ok(CacheResponse::Deleted(0));
            }
            let mut cmd = redis::cmd("DEL");
            for key in keys {
                cmd.arg(&key[..]);
            }
            CacheResponse::Deleted(cmd.query_async(conn).await?)
        }
        CacheRequest::Expire { key, ttl } => {
            let n: u64 = redis::cmd("PEXPIRE")
                .arg(&key[..])
                .arg(millis(*ttl))
                .query_async(conn)
                .await?;
            CacheResponse::Expired(n == 1)
        }
    })
}
