//! An expiry policy held on the server side: keys that match a policy's
//! pattern and have no TTL are given the policy's (`EXPIRE key ttl NX`) as
//! the sampler's paced `SCAN` meets them, whoever wrote them.
//!
//! It never touches a key that has a TTL (`NX`: not even one given between
//! the sampler's `TTL` and the `EXPIRE`) or that matches no policy. On
//! Redis before 7, which has no `NX`, the same check-and-set runs as one
//! Lua script per key, atomic as `NX` is.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::sampler::bounded;

/// One rule: keys matching `pattern` (a Redis glob: `*`, `?`, `[…]`, `\`)
/// that have no TTL get `ttl`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExpiryRule {
    pub(crate) pattern: String,
    pub(crate) ttl: Duration,
}

/// What one policy did since the watchdog started, or in a dry run would
/// have done.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PolicyCount {
    /// The policy's pattern.
    pub pattern: String,
    /// The TTL it gives, in seconds.
    pub ttl_secs: u64,
    /// Keys without TTL given the policy's TTL.
    pub expired: u64,
    /// In a dry run: keys without TTL that would have been given it.
    pub would_expire: u64,
}

/// The policies and what they did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Expiry {
    /// The watchdog's name (the metrics label).
    name: String,
    rules: Vec<ExpiryRule>,
    pub(crate) dry_run: bool,
    pub(crate) counts: Vec<PolicyCount>,
    /// Whether this Redis refused `EXPIRE … NX` (before 7): the script is
    /// used instead.
    no_nx: bool,
}

/// The longest TTL a policy may give.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Expiry {
    pub(crate) fn new(name: &str, rules: Vec<ExpiryRule>, dry_run: bool) -> Self {
        let counts = rules
            .iter()
            .map(|p| PolicyCount {
                pattern: p.pattern.clone(),
                ttl_secs: secs(p.ttl),
                ..PolicyCount::default()
            })
            .collect();
        Expiry {
            name: name.to_owned(),
            rules,
            dry_run,
            counts,
            no_nx: false,
        }
    }

    /// The first policy `key` matches.
    pub(crate) fn policy_of(&self, key: &[u8]) -> Option<usize> {
        self.rules
            .iter()
            .position(|p| glob(p.pattern.as_bytes(), key))
    }

    /// Holds the keys found without TTL (each with its policy) to their
    /// policies: in a dry run, counts them.
    pub(crate) async fn apply(
        &mut self,
        conn: &mut MultiplexedConnection,
        keys: &[(Vec<u8>, usize)],
        timeout: Duration,
    ) -> redis::RedisResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        if self.dry_run {
            for (_, i) in keys {
                self.counts[*i].would_expire += 1;
                self.count(*i, "dry_run");
            }
            return Ok(());
        }
        let replies = match self.no_nx {
            false => {
                let mut pipe = redis::pipe();
                for (key, i) in keys {
                    pipe.cmd("EXPIRE")
                        .arg(key)
                        .arg(secs(self.rules[*i].ttl))
                        .arg("NX");
                }
                match bounded(timeout, pipe.query_async::<Vec<i64>>(conn)).await {
                    Err(e) if refuses_nx(&e) => {
                        self.no_nx = true;
                        return Box::pin(self.apply(conn, keys, timeout)).await;
                    }
                    replies => replies?,
                }
            }
            true => {
                let mut pipe = redis::pipe();
                for (key, i) in keys {
                    pipe.cmd("EVAL")
                        .arg(NX_SCRIPT)
                        .arg(1)
                        .arg(key)
                        .arg(secs(self.rules[*i].ttl));
                }
                bounded(timeout, pipe.query_async::<Vec<i64>>(conn)).await?
            }
        };
        for ((_, i), reply) in keys.iter().zip(replies) {
            if reply == 1 {
                self.counts[*i].expired += 1;
                self.count(*i, "applied");
            }
        }
        Ok(())
    }

    fn count(&self, rule: usize, mode: &'static str) {
        crate::telemetry::watchdog_key_expired(&self.name, &self.rules[rule].pattern, mode);
    }
}

/// `EXPIRE key ttl NX` for a Redis without `NX`: only a key without TTL.
const NX_SCRIPT: &str =
    "if redis.call('TTL', KEYS[1]) == -1 then return redis.call('EXPIRE', KEYS[1], ARGV[1]) end return 0";

/// Whether Redis refused `EXPIRE`'s `NX` (Redis before 7).
fn refuses_nx(e: &redis::RedisError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    e.code() == Some("ERR")
        && (text.contains("wrong number")
            || text.contains("syntax")
            || text.contains("unsupported"))
}

/// A TTL in whole seconds, at least 1.
fn secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// Whether `key` matches the Redis glob `pattern` (`*`, `?`, `[abc]`,
/// `[a-z]`, `[^a]`, `\` escapes), as `SCAN … MATCH` and `KEYS` do. Linear
/// backtracking on the last `*`: no pattern makes it exponential.
pub(crate) fn glob(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, k));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => {
                let (matched, len) = class(&pattern[p..], key[k]);
                matched.then_some(len)
            }
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == key[k]).then_some(2),
            Some(c) => (*c == key[k]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(len), _) => {
                p += len;
                k += 1;
            }
            // Mismatch: the last `*` takes one more byte.
            (None, Some((sp, sk))) => {
                star = Some((sp, sk + 1));
                p = sp + 1;
                k = sk + 1;
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// A `[…]` class at the start of `pattern`: whether `c` is in it, and how
/// many pattern bytes it spans (to the end, if unclosed).
fn class(pattern: &[u8], c: u8) -> (bool, usize) {
    let mut i = 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (a, b) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            matched |= (a..=b).contains(&c);
            i += 3;
        } else {
            matched |= pattern[i] == c;
            i += 1;
        }
    }
    (matched != negate, (i + 1).min(pattern.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_redis_does() {
        let yes = [
            ("jobs:done:*", "jobs:done:1"),
            ("jobs:done:*", "jobs:done:"),
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h\\*llo", "h*llo"),
            ("*:done:*", "queue:a:done:7"),
            ("a*b*c", "aXbYbZc"),
        ];
        for (p, k) in yes {
            assert!(glob(p.as_bytes(), k.as_bytes()), "{p} ~ {k}");
        }
        let no = [
            ("jobs:done:*", "jobs:todo:1"),
            ("jobs:done:*", "xjobs:done:1"),
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h\\*llo", "hello"),
            ("a*b*c", "aXbYbZ"),
            ("", "a"),
        ];
        for (p, k) in no {
            assert!(!glob(p.as_bytes(), k.as_bytes()), "{p} !~ {k}");
        }
        // Never exponential: a pathological pattern on a long key.
        let key = vec![b'a'; 10_000];
        assert!(!glob(b"*a*a*a*a*a*a*a*a*b", &key));
    }

    #[test]
    fn ttls_are_whole_seconds_of_at_least_one() {
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_millis(1500)), 2);
        assert_eq!(secs(Duration::from_secs(72 * 3600)), 259_200);
    }

    /// Against a real redis-server: the `NX` of `EXPIRE … NX`, and the
    /// script used where Redis has no `NX`, keep the TTL a key gained
    /// between the sampler's `TTL` and the `EXPIRE`.
    #[tokio::test]
    async fn a_key_that_gained_a_ttl_meanwhile_keeps_it_with_nx_or_the_script() {
        let redis = fusebox_testkit::RedisServer::start(&[]);
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let reader = conn.clone();
        let ttl_of = |key: &'static str| {
            let mut conn = reader.clone();
            async move {
                redis::cmd("TTL")
                    .arg(key)
                    .query_async::<i64>(&mut conn)
                    .await
                    .unwrap()
            }
        };
        let rule = ExpiryRule {
            pattern: "jobs:*".into(),
            ttl: Duration::from_secs(3600),
        };
        for script in [false, true] {
            let mut expiry = Expiry::new("test", vec![rule.clone()], false);
            expiry.no_nx = script;
            let (gained, bare): (&'static str, &'static str) = match script {
                false => ("jobs:gained", "jobs:bare"),
                true => ("jobs:gained2", "jobs:bare2"),
            };
            // Both were found without TTL; one gained a TTL since.
            let _: () = redis::cmd("SET")
                .arg(gained)
                .arg("x")
                .arg("EX")
                .arg(100)
                .query_async(&mut conn)
                .await
                .unwrap();
            let _: () = redis::cmd("SET")
                .arg(bare)
                .arg("x")
                .query_async(&mut conn)
                .await
                .unwrap();
            let found = [
                (gained.as_bytes().to_vec(), 0),
                (bare.as_bytes().to_vec(), 0),
            ];
            expiry
                .apply(&mut conn, &found, Duration::from_secs(2))
                .await
                .unwrap();
            assert_eq!(expiry.counts[0].expired, 1, "script: {script}");
            assert!(
                (1..=100).contains(&ttl_of(gained).await),
                "script: {script}"
            );
            assert!(
                (3500..=3600).contains(&ttl_of(bare).await),
                "script: {script}"
            );
        }
    }
}
