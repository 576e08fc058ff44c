//! Redis errors, classified by what they say about Redis' health.

use std::fmt;

use crate::request::{Fault, Reason};

/// A failed Redis call: what went wrong, as a [`Reason`], and the client's
/// error when there is one.
///
/// Its `Display` and `Debug` never include credentials: connection errors
/// carry the address, never the URL.
#[derive(Clone)]
pub struct RedisError {
    reason: Reason,
    source: Option<redis::RedisError>,
    /// Set when a checkout timed out: the last error from connecting, which
    /// says *why* no connection could be had (refused, auth, timeout…).
    connect: Option<Reason>,
    /// Set on the second and later callers of a batch that failed as one
    /// round trip: the breaker counts the failure once, from the first.
    echo: bool,
}

impl RedisError {
    pub(crate) fn checkout_timeout(last_connect: Option<Reason>) -> Self {
        RedisError {
            reason: Reason::Unavailable,
            source: None,
            connect: last_connect,
            echo: false,
        }
    }

    /// A connect or call that hit its deadline without a client error.
    pub(crate) fn timeout() -> Self {
        RedisError {
            reason: Reason::Timeout,
            source: None,
            connect: None,
            echo: false,
        }
    }

    /// No sentinel named a usable primary; `source` is the sentinels' last
    /// word, if any.
    #[cfg(feature = "sentinel")]
    pub(crate) fn no_primary(source: Option<redis::RedisError>) -> Self {
        RedisError {
            reason: Reason::NoPrimary,
            source,
            connect: None,
            echo: false,
        }
    }

    /// A change not sent: its shard refused one within the write
    /// hold-down, for `reason`.
    #[cfg(feature = "cluster")]
    pub(crate) fn held_down(reason: Reason) -> Self {
        RedisError {
            reason,
            source: None,
            connect: None,
            echo: false,
        }
    }

    /// Where a surfaced `MOVED` or `ASK` pointed (`host:port`).
    #[cfg(feature = "cluster")]
    pub(crate) fn redirected_to(&self) -> Option<&str> {
        self.source.as_ref()?.redirect_node().map(|(addr, _)| addr)
    }

    /// This redirection, as what it says when it points at the very node
    /// the client could not reach: the slot's owner is down
    /// ([`Reason::Io`]), not moving.
    #[cfg(feature = "cluster")]
    pub(crate) fn owner_unreachable(mut self) -> Self {
        self.reason = Reason::Io;
        self
    }

    /// A call not sent: its connection had as many calls in flight as
    /// allowed.
    pub(crate) fn overloaded() -> Self {
        RedisError {
            reason: Reason::Overloaded,
            source: None,
            connect: None,
            echo: false,
        }
    }

    /// A reply that did not match the batch sent (as many answers as
    /// calls): never expected of Redis.
    pub(crate) fn unexpected_reply() -> Self {
        RedisError {
            reason: Reason::Other,
            source: None,
            connect: None,
            echo: false,
        }
    }

    /// A call whose batch was abandoned unsent: its runtime shut down.
    pub(crate) fn abandoned() -> Self {
        RedisError {
            reason: Reason::Io,
            source: None,
            connect: None,
            echo: false,
        }
    }

    /// This error, as one more caller of the batch that met it: the same
    /// reason, but not counted again by the breaker.
    pub(crate) fn echo(mut self) -> Self {
        self.echo = true;
        self
    }

    /// This error, as the answer to a write: a timeout becomes
    /// [`Reason::WriteTimeout`].
    pub(crate) fn on_write(mut self) -> Self {
        if self.reason == Reason::Timeout {
            self.reason = Reason::WriteTimeout;
        }
        self
    }

    /// Why the call failed.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// For a checkout that timed out ([`Reason::Unavailable`]): why the last
    /// attempt to connect failed, if one did (for example [`Reason::Auth`]
    /// for a wrong password, [`Reason::Io`] for a refused connection).
    pub fn connect_reason(&self) -> Option<Reason> {
        self.connect
    }

    /// The `redis` crate's error, if the client produced one.
    pub fn client_error(&self) -> Option<&redis::RedisError> {
        self.source.as_ref()
    }

    /// Whether the connection that produced this error should be dropped
    /// rather than reused.
    pub(crate) fn breaks_connection(&self) -> bool {
        match &self.source {
            Some(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_unrecoverable_error()
                    // A replica, or a primary demoted by a failover: the
                    // next connection re-resolves the host name, which may
                    // now point at the new primary.
                    || self.reason == Reason::ReadOnly
            }
            None => false,
        }
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        RedisError {
            reason: classify(&e),
            source: Some(e),
            connect: None,
            echo: false,
        }
    }
}

/// Maps a client error to a [`Reason`]. Looks inside pipeline errors, whose
/// own `code()` is `None`.
pub(crate) fn classify(e: &redis::RedisError) -> Reason {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    if e.is_timeout() {
        return Reason::Timeout;
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return Reason::Io;
    }
    if let Some(code) = e.code() {
        if code == "ERR" && e.to_string().contains("max number of clients") {
            return Reason::MaxClients;
        }
        if code == "CLUSTERDOWN" && e.to_string().contains("slot not served") {
            return Reason::SlotDown;
        }
        return by_code(code);
    }
    match e.kind() {
        K::Server(S::ReadOnly) => Reason::ReadOnly,
        K::Server(S::BusyLoading | S::MasterDown) => Reason::Busy,
        K::Server(S::ClusterDown) => Reason::ClusterDown,
        K::Server(S::TryAgain) => Reason::TryAgain,
        K::Server(S::Moved | S::Ask) => Reason::Redirected,
        K::MasterNameNotFoundBySentinel
        | K::NoValidReplicasFoundBySentinel
        | K::EmptySentinelList => Reason::NoPrimary,
        K::AuthenticationFailed => Reason::Auth,
        K::Server(S::NoPerm) => Reason::Auth,
        K::UnexpectedReturnType | K::Server(S::ResponseError) => Reason::Rejected,
        _ => match e.clone().into_server_errors() {
            // A pipeline: the worst of its commands' errors.
            Some(errors) => errors
                .iter()
                .map(|(_, err)| by_code(err.code()))
                .max_by_key(|r| severity(*r))
                .unwrap_or(Reason::Other),
            None => Reason::Other,
        },
    }
}

fn by_code(code: &str) -> Reason {
    match code {
        "OOM" => Reason::OutOfMemory,
        "READONLY" => Reason::ReadOnly,
        "MISCONF" => Reason::WritesStopped,
        "LOADING" | "MASTERDOWN" | "BUSY" => Reason::Busy,
        "CLUSTERDOWN" => Reason::ClusterDown,
        "TRYAGAIN" => Reason::TryAgain,
        "MOVED" | "ASK" => Reason::Redirected,
        "WRONGPASS" | "NOAUTH" | "NOPERM" => Reason::Auth,
        "WRONGTYPE" | "ERR" | "EXECABORT" | "NOSCRIPT" | "CROSSSLOT" => Reason::Rejected,
        _ => Reason::Other,
    }
}

/// Which reason wins when a pipeline holds several: health signals first.
fn severity(r: Reason) -> u8 {
    match r {
        Reason::OutOfMemory | Reason::ReadOnly | Reason::WritesStopped => 4,
        Reason::Busy
        | Reason::ClusterDown
        | Reason::SlotDown
        | Reason::Auth
        | Reason::MaxClients => 3,
        Reason::Other => 2,
        Reason::Rejected => 1,
        _ => 0,
    }
}

impl Fault for RedisError {
    fn reason(&self) -> Reason {
        self.reason
    }

    /// True for the second and later callers of a batch that failed as
    /// one round trip: the breaker has counted it once already.
    fn contained(&self) -> bool {
        self.echo
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.source, self.connect) {
            (Some(e), _) => write!(f, "redis {}: {e}", self.reason),
            (None, Some(last)) => write!(
                f,
                "redis unavailable: no connection within the checkout deadline (last connect error: {last})"
            ),
            (None, None) => match self.reason {
                Reason::Timeout => f.write_str("redis timeout: no answer within the deadline"),
                Reason::Io => f.write_str("redis connection broken"),
                Reason::NoPrimary => f.write_str("redis no_primary: no sentinel named a usable primary"),
                r if r.refuses_writes() => {
                    write!(f, "redis {r}: not sent, within the write hold-down")
                }
                _ => f.write_str("redis unavailable: no connection within the checkout deadline"),
            },
        }
    }
}

impl fmt::Debug for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisError")
            .field("reason", &self.reason)
            .field("connect", &self.connect)
            .field("source", &self.source)
            .finish()
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Fault for tower::BoxError {
    /// Looks for a known error in the box (a [`RedisError`], a
    /// [`BreakerOpen`]); anything else is [`Reason::Other`].
    ///
    /// [`RedisError`]: RedisError
    /// [`BreakerOpen`]: crate::breaker::BreakerOpen
    fn reason(&self) -> Reason {
        if let Some(e) = self.downcast_ref::<RedisError>() {
            e.reason()
        } else if self.is::<crate::breaker::BreakerOpen>() {
            Reason::BreakerOpen
        } else {
            Reason::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a client gets for a server's `-<reply>`.
    fn server(reply: &str) -> redis::RedisError {
        let value = redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap();
        value.extract_error().unwrap_err()
    }

    #[test]
    fn cluster_answers_are_told_apart() {
        let cases = [
            ("CLUSTERDOWN The cluster is down", Reason::ClusterDown),
            ("CLUSTERDOWN Hash slot not served", Reason::SlotDown),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                Reason::TryAgain,
            ),
            ("MOVED 3999 127.0.0.1:6381", Reason::Redirected),
            ("ASK 3999 127.0.0.1:6381", Reason::Redirected),
            (
                "LOADING Redis is loading the dataset in memory",
                Reason::Busy,
            ),
            (
                "READONLY You can't write against a read only replica.",
                Reason::ReadOnly,
            ),
            (
                "CROSSSLOT Keys in request don't hash to the same slot",
                Reason::Rejected,
            ),
        ];
        for (reply, reason) in cases {
            assert_eq!(RedisError::from(server(reply)).reason(), reason, "{reply}");
        }
    }
}
