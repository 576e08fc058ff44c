//! How to reach Redis, and how long to wait for it.

use std::fmt;
use std::time::Duration;

use redis::IntoConnectionInfo;

use self::url::{protocol, url_fault};
use super::target::Target;
use crate::error::ConfigError;

mod url;

/// Connection settings for [`RedisBackend`](super::RedisBackend): the
/// address and credentials (from a URL) and every deadline.
///
/// Its `Debug` shows the address and database, never the password.
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) target: Target,
    /// `host:port`, the socket path, or `<service> via <sentinels>`, for
    /// logs (no credentials).
    pub(crate) addr: String,
    pub(crate) resp3: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) checkout_timeout: Duration,
    /// Connections for reads; writes have as many more of their own.
    pub(crate) connections: u32,
    /// Calls in flight on one connection beyond which calls are shed.
    pub(crate) max_in_flight: usize,
    /// The most calls sent as one command; 1: none gathered.
    pub(crate) max_batch: usize,
}

/// The default number of read connections: one per core this process may
/// use (its CPU quota counts), at most 4.
fn default_connections() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4) as u32)
}

impl RedisConfig {
    /// Starts a configuration from a URL: `redis://[user[:password]@]host[:port][/db]`,
    /// `rediss://…` (TLS; needs the `tls` feature, else it is refused at
    /// build time), `unix:///path/to.sock[?db=N]`, or
    /// `redis+sentinel://[user[:password]@]host[:port][,host[:port]…]/service[/db]`
    /// (needs the `sentinel` feature): the primary the sentinels name for
    /// `service`, asked of them for every new connection, so that after a
    /// failover connections go to the new primary. The credentials there
    /// are the data nodes'; a sentinel's port defaults to 26379.
    ///
    /// Connections use RESP3 unless the URL says `?protocol=resp2` (needed
    /// for Redis older than 6): with RESP3 a dropped connection is noticed
    /// from a push message, without a `PING` per checkout.
    pub fn builder(url: impl AsRef<str>) -> RedisConfigBuilder {
        RedisConfigBuilder {
            url: url.as_ref().to_owned(),
            connect_timeout: Duration::from_millis(50),
            response_timeout: Duration::from_millis(50),
            checkout_timeout: Duration::from_millis(50),
            connections: default_connections(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_batch: DEFAULT_MAX_BATCH,
            #[cfg(feature = "sentinel")]
            sentinel_auth: None,
            #[cfg(feature = "tls")]
            tls_root_cert: None,
        }
    }

    /// The address connected to (`host:port` or a socket path).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Which Redis and database this is, for telling caches on the same
    /// one apart: the address and the database number.
    pub(crate) fn identity(&self) -> String {
        format!("{}/{}", self.addr, self.target.settings().db())
    }

    /// The settings of a backend whose connections are leased from a
    /// user's pool (`label` names it in logs): `deadline` bounds the wait
    /// for a connection, and each response.
    #[cfg(any(feature = "bb8", feature = "deadpool"))]
    pub(crate) fn leased(
        lease: std::sync::Arc<dyn super::lease::Lease>,
        label: &str,
        deadline: Duration,
    ) -> RedisConfig {
        RedisConfig {
            target: Target::Leased(lease),
            addr: label.to_owned(),
            resp3: false,
            connect_timeout: deadline,
            response_timeout: deadline,
            checkout_timeout: deadline,
            connections: 1,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }

    /// The longest a call can take: checking a connection out, then the
    /// response.
    pub fn call_deadline(&self) -> Duration {
        self.checkout_timeout + self.response_timeout
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.target.settings();
        f.debug_struct("RedisConfig")
            .field("addr", &self.addr)
            .field("db", &info.db())
            .field("username", &info.username())
            .field("password", &info.password().map(|_| "<redacted>"))
            .field("resp3", &self.resp3)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("connections", &self.connections)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

/// Calls in flight per connection, by default.
const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Calls sent as one command, at most, by default.
const DEFAULT_MAX_BATCH: usize = 128;

/// Builds a [`RedisConfig`]; see [`RedisConfig::builder`].
#[must_use]
#[derive(Clone)]
pub struct RedisConfigBuilder {
    url: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    checkout_timeout: Duration,
    connections: u32,
    max_in_flight: usize,
    max_batch: usize,
    #[cfg(feature = "sentinel")]
    sentinel_auth: Option<(Option<String>, String)>,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
}

impl fmt::Debug for RedisConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfigBuilder")
            .field("url", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("connections", &self.connections)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl RedisConfigBuilder {
    /// The longest a new connection may take, TCP connect and handshake
    /// (`HELLO`, `AUTH`, `SELECT`) included. Defaults to 50 ms.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The longest a command waits for its response. Defaults to 50 ms.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// The longest a call waits for a connection when it has none (a new one
    /// being made: keep it at least the connect timeout, or calls made while
    /// the first connection is being set up are misses, and count against
    /// the breaker). A refused connect is answered at once, not after this.
    /// Defaults to 50 ms.
    pub fn checkout_timeout(mut self, d: Duration) -> Self {
        self.checkout_timeout = d;
        self
    }

    /// How many multiplexed connections reads are spread over, by thread:
    /// each thread that calls keeps to one of them, so that the threads of
    /// a runtime do not contend for one connection's state (its queue, its
    /// counts: memory every core writes on every call). Writes, deletes and
    /// expiries have as many connections of their own, spread the same
    /// way, so a write Redis holds up never holds reads up. Connections are
    /// made on demand: a runtime with fewer threads than this uses fewer.
    /// Under concurrent load each also gets a batch connection beside it
    /// (see [`max_batch`](Self::max_batch)): count up to four times this
    /// against Redis's `maxclients`.
    ///
    /// Defaults to one per core this process may use (a tokio runtime's
    /// default worker count), at most 4. On one 2-core machine, 64 tasks of
    /// `get`s ran ×1.3 faster on two connections than on one and `set`s
    /// ×1.1, from the two workers no longer sharing one; `1` suits a
    /// single-threaded runtime, or a Redis short of connections.
    pub fn connections(mut self, n: u32) -> Self {
        self.connections = n;
        self
    }

    /// How many calls may be in flight on one connection. A call beyond
    /// that is not sent: it is answered at once as a miss (or a skipped
    /// write) with reason `overloaded`, which never counts against the
    /// breaker. Without a limit, a burst larger than a connection can
    /// answer within the response deadline queues, times out as a whole
    /// and opens the breaker (20 000 concurrent calls on one connection did
    /// here). Raise it with [`connections`](Self::connections) for more
    /// concurrency. Defaults to 1024; must be in 1..=1 000 000.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.max_in_flight = calls;
        self
    }

    /// The most concurrent calls sent to Redis as one command. A `get`
    /// that finds its connection idle goes out at once, alone; while calls
    /// are in flight, later `get`s queue and go out together as one `MGET`
    /// (a near cache's reads as one `MGET` and their `PTTL`s), and `set`s
    /// as one pipeline, up to two batches in flight at a time; each caller
    /// still gets its own answer within its own deadline. There is no
    /// timer, so a few concurrent callers wait for nothing. A failed batch
    /// counts once against the breaker, not once per caller.
    ///
    /// Over plain TCP, batches go out on a connection of their own beside
    /// each of the backend's (named `fusebox-batch` in `CLIENT LIST`; made
    /// when the first batch forms, logged in and on the database as the
    /// other): its replies are read straight into each caller's answer,
    /// which is what lets a batch cost less than the calls in it. Where
    /// Redis refuses it that connection (`maxclients`), the calls queued on
    /// it go over the other instead, as every later batch does; so do
    /// batches over TLS, a Unix socket or a pool's connections.
    ///
    /// What it saves is Redis's work per command and the client's per
    /// round trip: on one 2-core machine with Redis beside its clients, 64
    /// tasks ran ×2.2 of a raw multiplexed connection with `get`s (~20
    /// keys per `MGET`) and ×1.8 with `set`s, 4 tasks of `get`s ×1.1
    /// (BENCHMARKS.md has the figures); it pays more where Redis or the
    /// network, not the client, is the bottleneck.
    ///
    /// `1` sends every call as a command of its own, and makes no batch
    /// connection: choose it when something between the cache and Redis
    /// cannot take `MGET` (a proxy that splits or refuses multi-key
    /// commands), when Redis's per command statistics (`INFO
    /// commandstats`, the slow log, `MONITOR`) must show each `GET`, or
    /// when Redis's `maxclients` has no room for a second connection beside
    /// each of the backend's. Defaults to 128; must be in 1..=10 000.
    pub fn max_batch(mut self, calls: usize) -> Self {
        self.max_batch = calls;
        self
    }

    /// For `redis+sentinel://`: the password (and username, for an ACL user)
    /// the sentinels require (`requirepass` in their own config), which is
    /// not the data nodes' (those are in the URL). Defaults to none.
    #[cfg(feature = "sentinel")]
    pub fn sentinel_password(mut self, username: Option<&str>, password: impl AsRef<str>) -> Self {
        self.sentinel_auth = Some((username.map(str::to_owned), password.as_ref().to_owned()));
        self
    }

    /// For `rediss://`: trust only this CA certificate (PEM) instead of the
    /// system's roots. Defaults to the system's roots.
    #[cfg(feature = "tls")]
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
        self
    }

    /// Validates the settings. Never connects: Redis being down is not a
    /// configuration error.
    pub fn build(self) -> Result<RedisConfig, ConfigError> {
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("checkout_timeout", self.checkout_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new("Redis", field, "must be more than zero"));
            }
            if d > Duration::from_secs(60) {
                return Err(ConfigError::new("Redis", field, "must be at most 60 s"));
            }
        }
        if !(1..=64).contains(&self.connections) {
            return Err(ConfigError::new(
                "Redis",
                "connections",
                "must be in 1..=64",
            ));
        }
        if !(1..=1_000_000).contains(&self.max_in_flight) {
            return Err(ConfigError::new(
                "Redis",
                "max_in_flight",
                "must be in 1..=1000000",
            ));
        }
        if !(1..=10_000).contains(&self.max_batch) {
            return Err(ConfigError::new(
                "Redis",
                "max_batch",
                "must be in 1..=10000",
            ));
        }
        if self.url.starts_with("redis+sentinel://") {
            return self.sentinel();
        }
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"]
            .iter()
            .any(|s| self.url.starts_with(s));
        if !scheme_ok {
            // The URL itself is never echoed: it may hold a password.
            return Err(ConfigError::new(
                "Redis",
                "url",
                "must start with redis://, rediss://, unix:// or redis+sentinel://",
            ));
        }
        if self.url.starts_with("rediss://") && !cfg!(feature = "tls") {
            return Err(ConfigError::new(
                "Redis",
                "url",
                "rediss:// (TLS) needs fusebox's `tls` feature",
            ));
        }
        let info = self.url.as_str().into_connection_info().map_err(|e| {
            ConfigError::new(
                "Redis",
                "url",
                match url_fault(&self.url) {
                    Some(fault) => format!("not a valid redis URL: {fault}"),
                    None => format!("not a valid redis URL ({})", e.category()),
                },
            )
        })?;
        let (settings, resp3) = protocol(&self.url, info.redis_settings().clone());
        let addr = info.addr().to_string();
        let info = info.set_redis_settings(settings);
        let client = self.client(info).map_err(|e| {
            ConfigError::new("Redis", "url", format!("not usable ({})", e.category()))
        })?;
        Ok(self.config(Target::Direct(Box::new(client)), addr, resp3))
    }

    fn config(&self, target: Target, addr: String, resp3: bool) -> RedisConfig {
        RedisConfig {
            target,
            addr,
            resp3,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            checkout_timeout: self.checkout_timeout,
            connections: self.connections,
            max_in_flight: self.max_in_flight,
            max_batch: self.max_batch,
        }
    }

    #[cfg(not(feature = "sentinel"))]
    fn sentinel(self) -> Result<RedisConfig, ConfigError> {
        Err(ConfigError::new(
            "Redis",
            "url",
            "redis+sentinel:// needs fusebox's `sentinel` feature",
        ))
    }

    #[cfg(feature = "sentinel")]
    fn sentinel(self) -> Result<RedisConfig, ConfigError> {
        use super::sentinel::{parse, Sentinels};
        let mut parsed = parse(&self.url).map_err(|why| ConfigError::new("Redis", "url", why))?;
        let (settings, resp3) = protocol(&self.url, parsed.settings);
        parsed.settings = settings;
        let hosts: Vec<String> = parsed
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        let addr = format!("{} via {}", parsed.service, hosts.join(","));
        let sentinels = Sentinels::new(parsed, self.sentinel_auth.clone()).map_err(|e| {
            ConfigError::new("Redis", "url", format!("not usable ({})", e.category()))
        })?;
        let target = Target::Sentinel(std::sync::Arc::new(sentinels));
        Ok(self.config(target, addr, resp3))
    }

    #[cfg(not(feature = "tls"))]
    fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        redis::Client::open(info)
    }

    #[cfg(feature = "tls")]
    fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        // The process-wide rustls provider, unless the application chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        match &self.tls_root_cert {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
    }
}
