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

pub(crate) use glob::glob;

mod glob;

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
    /// Per policy: its [`Alert::Policy`] state.
    stretches: Vec<Stretch>,
}

/// A policy's alert: raised when it acts, cleared after a quiet stretch.
#[derive(Clone, Copy, Debug, Default)]
struct Stretch {
    /// Its count at the last poll.
    last: u64,
    /// Its count before it was raised.
    start: u64,
    /// Polls since it last acted.
    quiet: u32,
    raised: bool,
}

/// The longest TTL a policy may give.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Expiry {
    pub(crate) fn new(name: &str, rules: Vec<ExpiryRule>, dry_run: bool) -> Self {
        let counts: Vec<_> = rules
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
            stretches: vec![Stretch::default(); counts.len()],
            counts,
            no_nx: false,
        }
    }

    /// The alerts one poll calls for: a policy's is raised when it acts
    /// after a quiet stretch, and cleared after
    /// [`POLICY_QUIET_POLLS`](super::alert::POLICY_QUIET_POLLS) polls
    /// without acting.
    pub(crate) fn alerts(&mut self) -> Vec<super::Alert> {
        let mut alerts = Vec::new();
        let counts = self.rules.iter().zip(&self.counts);
        for ((rule, count), s) in counts.zip(&mut self.stretches) {
            let total = count.expired + count.would_expire;
            let acted = total > s.last;
            // Whether it stands raised after this poll.
            let raise = match (s.raised, acted) {
                (false, true) => {
                    s.start = s.last;
                    true
                }
                (true, true) => {
                    s.quiet = 0;
                    true
                }
                (true, false) => {
                    s.quiet += 1;
                    s.quiet < super::alert::POLICY_QUIET_POLLS
                }
                (false, false) => false,
            };
            s.last = total;
            if raise != s.raised {
                s.raised = raise;
                s.quiet = 0;
                alerts.push(super::Alert::Policy {
                    pattern: rule.pattern.clone(),
                    ttl: rule.ttl,
                    keys: total - s.start,
                    dry_run: self.dry_run,
                    raised: raise,
                });
            }
        }
        alerts
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

/// The expiry policies can work as given.
pub(super) fn check(c: &super::WatchdogConfig) -> Result<(), crate::error::ConfigError> {
    if !c.expiry.is_empty() && c.samples_per_round == 0 {
        return Err(crate::error::ConfigError::new(
            "watchdog",
            "expire",
            "needs the sampler: samples_per_round must be at least 1",
        ));
    }
    check_rules(&c.expiry, "watchdog")
}

/// At most 64 rules, each with a pattern of 1 to 1024 bytes and a TTL of
/// 1 s to 100 years.
pub(crate) fn check_rules(
    rules: &[ExpiryRule],
    builder: &'static str,
) -> Result<(), crate::error::ConfigError> {
    let refuse = |why: String| Err(crate::error::ConfigError::new(builder, "expire", why));
    if rules.len() > 64 {
        return refuse(format!("at most 64 policies, got {}", rules.len()));
    }
    for rule in rules {
        if rule.pattern.is_empty() || rule.pattern.len() > 1024 {
            return refuse("a pattern must be 1 to 1024 bytes".into());
        }
        if rule.ttl < Duration::from_secs(1) || rule.ttl > MAX_TTL {
            return refuse(format!(
                "the TTL of {:?} must be 1 s to 100 years, got {:?}",
                rule.pattern, rule.ttl
            ));
        }
    }
    Ok(())
}

/// `EXPIRE key ttl NX` for a Redis without `NX`: only a key without TTL.
pub(crate) const NX_SCRIPT: &str =
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
pub(crate) fn secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_alert_rises_when_it_acts_and_clears_after_a_quiet_stretch() {
        let rule = |p: &str| ExpiryRule {
            pattern: p.into(),
            ttl: Duration::from_secs(60),
        };
        let mut e = Expiry::new("w", vec![rule("a:*"), rule("b:*")], false);
        let quiet = super::super::POLICY_QUIET_POLLS;
        assert!(e.alerts().is_empty());
        e.counts[0].expired = 3;
        let raised = e.alerts();
        assert!(
            matches!(&raised[..], [super::super::Alert::Policy { pattern, keys: 3, raised: true, .. }] if pattern == "a:*")
        );
        // Acting again inside the stretch restarts its quiet count.
        for _ in 1..quiet {
            assert!(e.alerts().is_empty());
        }
        e.counts[0].expired = 5;
        // The poll that sees it act, then all but the last quiet one.
        for _ in 0..quiet {
            assert!(e.alerts().is_empty());
        }
        let cleared = e.alerts();
        assert!(
            matches!(
                &cleared[..],
                [super::super::Alert::Policy {
                    keys: 5,
                    raised: false,
                    ..
                }]
            ),
            "{cleared:?}"
        );
        assert!(e.alerts().is_empty());
        // A new stretch counts from where the last ended.
        e.counts[0].expired = 6;
        assert!(matches!(
            &e.alerts()[..],
            [super::super::Alert::Policy {
                keys: 1,
                raised: true,
                ..
            }]
        ));
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
