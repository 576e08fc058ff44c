//! Redis behind Sentinel: the primary a set of sentinels names, asked of
//! them all at once through redis-rs's sentinel client, the first valid
//! answer taken.
//!
//! URL: `redis+sentinel://[user[:password]@]host[:port][,host[:port]…]/service[/db][?protocol=resp2]`;
//! the credentials are the data nodes' (sentinels are reached without, or
//! with [`sentinel_password`](super::RedisConfigBuilder::sentinel_password)),
//! and a sentinel's port defaults to 26379.

use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::error::RedisError;

/// The URL scheme of a Redis behind Sentinel.
pub(crate) const SCHEME: &str = "redis+sentinel://";

/// The sentinels of one service, each a redis-rs [`Sentinel`] of its own
/// behind a lock of its own: a sentinel that hangs holds up only the
/// lookups through itself, and the others answer meanwhile (redis-rs's one
/// `Sentinel` over every address takes their answers in order, so the
/// first one hung would hold every lookup up).
pub(crate) struct Sentinels {
    each: Box<[tokio::sync::Mutex<Sentinel>]>,
    service: String,
    node: SentinelNodeConnectionInfo,
    settings: RedisConnectionInfo,
}

/// A sentinel URL taken apart.
pub(crate) struct Parsed {
    pub(crate) sentinels: Vec<(String, u16)>,
    pub(crate) service: String,
    /// The data nodes' credentials, database and protocol.
    pub(crate) settings: RedisConnectionInfo,
}

/// Takes a `redis+sentinel://` URL apart; the error says what is wrong
/// without echoing the URL (it may hold a password).
pub(crate) fn parse(url: &str) -> Result<Parsed, &'static str> {
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or("must start with redis+sentinel://")?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = rest
        .split_once('/')
        .ok_or("names no service: redis+sentinel://host:port/<service>")?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (service, db) = match path.split_once('/') {
        Some((s, db)) => (s, Some(db)),
        None => (path, None),
    };
    if service.is_empty() {
        return Err("names no service: redis+sentinel://host:port/<service>");
    }
    let sentinels = hosts
        .split(',')
        .map(host_port)
        .collect::<Option<Vec<_>>>()
        .ok_or("has a sentinel address that is not host[:port]")?;
    // The data nodes' settings, parsed (and percent-decoded) by redis-rs
    // from the same URL with a placeholder host.
    let mut data = String::from("redis://");
    if let Some(u) = userinfo {
        data.push_str(u);
        data.push('@');
    }
    data.push_str("sentinel.invalid/");
    data.push_str(db.filter(|d| !d.is_empty()).unwrap_or("0"));
    if let Some(q) = query {
        data.push('?');
        data.push_str(q);
    }
    let settings = data
        .into_connection_info()
        .map_err(|_| "has credentials, a database or options redis-rs cannot read")?
        .redis_settings()
        .clone();
    Ok(Parsed {
        sentinels,
        service: service.to_owned(),
        settings,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 26379.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = match s.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok().filter(|&p| p != 0)?,
        None => 26379,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

impl Sentinels {
    /// Sentinels for `parsed`, authenticating to them with `auth`
    /// (username, password) when given. Connects nothing.
    pub(crate) fn new(
        parsed: Parsed,
        auth: Option<(Option<String>, String)>,
    ) -> redis::RedisResult<Self> {
        let each = parsed
            .sentinels
            .into_iter()
            .map(|(host, port)| {
                let mut info = ConnectionAddr::Tcp(host, port).into_connection_info()?;
                if let Some((user, password)) = &auth {
                    let mut s = RedisConnectionInfo::default().set_password(password);
                    if let Some(user) = user {
                        s = s.set_username(user);
                    }
                    info = info.set_redis_settings(s);
                }
                Ok(tokio::sync::Mutex::new(Sentinel::build(vec![info])?))
            })
            .collect::<redis::RedisResult<_>>()?;
        Ok(Sentinels {
            each,
            node: SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(parsed.settings.clone()),
            service: parsed.service,
            settings: parsed.settings,
        })
    }

    pub(crate) fn settings(&self) -> &RedisConnectionInfo {
        &self.settings
    }

    /// The primary, as the first sentinel to answer names it (redis-rs
    /// checks that the node named is not flagged down and says `ROLE`
    /// master). All are asked at once; the first valid answer wins.
    pub(crate) async fn primary(&self) -> Result<redis::Client, RedisError> {
        let mut lookups: FuturesUnordered<_> = self
            .each
            .iter()
            .map(|sentinel| async move {
                let mut sentinel = sentinel.lock().await;
                sentinel
                    .async_master_for(&self.service, Some(&self.node))
                    .await
            })
            .collect();
        let mut worst: Option<redis::RedisError> = None;
        while let Some(lookup) = lookups.next().await {
            match lookup {
                Ok(client) => return Ok(client),
                // An error about the primary itself (refused, wrong
                // password) says more than one about a sentinel.
                Err(e) => {
                    if worst
                        .as_ref()
                        .is_none_or(|w| about_sentinel(w) && !about_sentinel(&e))
                    {
                        worst = Some(e);
                    }
                }
            }
        }
        Err(match worst {
            Some(e) if about_sentinel(&e) => RedisError::no_primary(Some(e)),
            Some(e) => RedisError::from(e),
            None => RedisError::no_primary(None),
        })
    }
}

/// Whether `e` is the sentinels' failure (none named a valid primary, none
/// answered), not the primary's.
fn about_sentinel(e: &redis::RedisError) -> bool {
    use redis::ErrorKind as K;
    matches!(
        e.kind(),
        K::MasterNameNotFoundBySentinel | K::NoValidReplicasFoundBySentinel | K::EmptySentinelList
    )
}
