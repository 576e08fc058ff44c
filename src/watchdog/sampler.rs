//! Which key prefixes hold the memory of keys without a TTL: a bounded,
//! rate-limited `SCAN` sampler, and the pure grouping behind it.
//!
//! Cost, per round: one `SCAN … COUNT n` and one pipeline of `TTL` and
//! `MEMORY USAGE … SAMPLES 0` per key returned (and of `EXPIRE … NX` for
//! those an expiry policy holds), for at most `samples_per_round` keys,
//! paced to `keys_per_second` and to Redis's own latency (each step waits
//! as long again as Redis took over it). `SCAN` never blocks
//! Redis the way `KEYS` does; `MEMORY USAGE … SAMPLES 0` is O(1) for strings
//! and bounded for collections.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// How much of the no-TTL memory one key pattern holds, in the sample.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PrefixShare {
    /// The pattern: the key with id-like segments replaced by `*`
    /// (`queue:todo:completed:*`).
    pub pattern: String,
    /// Sampled keys without TTL matching it.
    pub keys: u64,
    /// Their bytes (`MEMORY USAGE`).
    pub bytes: u64,
    /// Their share of all sampled no-TTL bytes.
    pub share: f64,
}

/// The pattern a key belongs to: `:`-separated segments, with id-like ones
/// (numbers, long hex strings, UUIDs) replaced by `*`. Bounded in length.
pub(super) fn pattern(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    let mut out = String::new();
    for (i, segment) in key.split(':').enumerate() {
        if i > 0 {
            out.push(':');
        }
        if out.len() > 96 {
            out.push('*');
            break;
        }
        if id_like(segment) {
            out.push('*');
        } else {
            out.extend(segment.chars().take(64));
        }
    }
    out
}

fn id_like(s: &str) -> bool {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    digits || hex
}

/// No-TTL bytes by pattern, with a bound on how many patterns are kept.
#[derive(Clone, Debug, Default)]
pub(super) struct Tally {
    by_pattern: HashMap<String, (u64, u64)>,
    total_bytes: u64,
    /// Keys sampled (with or without TTL).
    pub sampled: u64,
}

const MAX_PATTERNS: usize = 1000;
const OTHER: &str = "(other patterns)";

impl Tally {
    /// Counts one sampled key without TTL.
    pub(super) fn add(&mut self, key: &[u8], bytes: u64) {
        let mut p = pattern(key);
        if self.by_pattern.len() >= MAX_PATTERNS && !self.by_pattern.contains_key(&p) {
            p = OTHER.to_owned();
        }
        let e = self.by_pattern.entry(p).or_default();
        e.0 += 1;
        e.1 += bytes;
        self.total_bytes += bytes;
    }

    /// The `n` patterns holding most no-TTL bytes.
    pub(super) fn top(&self, n: usize) -> Vec<PrefixShare> {
        let mut v: Vec<PrefixShare> = self
            .by_pattern
            .iter()
            .map(|(p, (keys, bytes))| PrefixShare {
                pattern: p.clone(),
                keys: *keys,
                bytes: *bytes,
                share: if self.total_bytes == 0 {
                    0.0
                } else {
                    *bytes as f64 / self.total_bytes as f64
                },
            })
            .collect();
        v.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        v.truncate(n);
        v
    }
}

/// The sampler's progress through the keyspace.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    cursor: u64,
    current: Tally,
    /// The last full pass over the keyspace, if one finished.
    complete: Option<Tally>,
}

impl Sampler {
    /// The best tally so far: the last full pass, else the current one.
    pub(crate) fn tally(&self) -> &Tally {
        self.complete.as_ref().unwrap_or(&self.current)
    }

    /// One round: up to `samples` keys, paced to `per_second`, each call
    /// bounded by `timeout`; keys without TTL held to `expiry`'s policies.
    pub(crate) async fn round(
        &mut self,
        conn: &mut MultiplexedConnection,
        samples: usize,
        per_second: u32,
        timeout: Duration,
        expiry: &mut super::expiry::Expiry,
    ) -> redis::RedisResult<()> {
        let batch = samples.clamp(1, 100);
        let mut done = 0;
        while done < samples {
            let started = tokio::time::Instant::now();
            let (next, keys): (u64, Vec<Vec<u8>>) = bounded(
                timeout,
                redis::cmd("SCAN")
                    .arg(self.cursor)
                    .arg("COUNT")
                    .arg(batch)
                    .query_async(conn),
            )
            .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("TTL").arg(key);
                    pipe.cmd("MEMORY")
                        .arg("USAGE")
                        .arg(key)
                        .arg("SAMPLES")
                        .arg(0);
                }
                let replies: Vec<Option<i64>> = bounded(timeout, pipe.query_async(conn)).await?;
                let mut held = Vec::new();
                for (key, pair) in keys.iter().zip(replies.chunks(2)) {
                    self.current.sampled += 1;
                    if let [Some(-1), bytes] = pair {
                        let bytes = bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
                        self.current.add(key, bytes);
                        if let Some(rule) = expiry.policy_of(key) {
                            held.push((key.clone(), rule));
                        }
                    }
                }
                expiry.apply(conn, &held, timeout).await?;
            }
            done += keys.len().max(1);
            self.cursor = next;
            if next == 0 {
                self.complete = Some(std::mem::take(&mut self.current));
                break;
            }
            // Pace: `keys.len()` keys may take no less than this, nor less
            // than twice the time Redis took over them: a Redis slow to
            // answer (loaded, or a large `SCAN` step) is left at least half
            // its time for everyone else.
            let floor = Duration::from_secs_f64(keys.len() as f64 / f64::from(per_second.max(1)));
            let floor = floor.max(started.elapsed().saturating_mul(2));
            tokio::time::sleep_until(started + floor).await;
        }
        Ok(())
    }
}

/// `f`, failed as a timeout after `timeout`.
pub(super) async fn bounded<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_stars() {
        assert_eq!(
            pattern(b"queue:todo:completed:12345"),
            "queue:todo:completed:*"
        );
        assert_eq!(pattern(b"user:42:profile"), "user:*:profile");
        assert_eq!(
            pattern(b"sess:3f2a9c1e-77aa-4b1c-9d2e-0f1e2d3c4b5a"),
            "sess:*"
        );
        assert_eq!(pattern(b"config"), "config");
        assert_eq!(pattern(b"cache:page:home"), "cache:page:home");
        assert_eq!(pattern(&[0xff, b':', b'1']), "\u{fffd}:*");
        assert_eq!(pattern(&[b'z'; 10_000]).len(), 64);
        let long: Vec<u8> = (0..200).flat_map(|_| b"ab:".to_vec()).collect();
        assert!(pattern(&long).len() < 110);
    }

    #[test]
    fn the_tally_ranks_patterns_by_bytes() {
        let mut t = Tally::default();
        for i in 0..93 {
            t.add(format!("queue:todo:completed:{i}").as_bytes(), 100);
        }
        for i in 0..7 {
            t.add(format!("user:{i}:profile").as_bytes(), 100);
        }
        let top = t.top(5);
        assert_eq!(top[0].pattern, "queue:todo:completed:*");
        assert_eq!(top[0].keys, 93);
        assert!((top[0].share - 0.93).abs() < 1e-9);
        assert_eq!(top[1].pattern, "user:*:profile");
    }

    #[test]
    fn patterns_are_bounded() {
        let mut t = Tally::default();
        for i in 0..5000 {
            t.add(format!("k{i}x").as_bytes(), 1);
        }
        assert!(t.by_pattern.len() <= MAX_PATTERNS + 1);
        assert_eq!(t.total_bytes, 5000);
    }
}
