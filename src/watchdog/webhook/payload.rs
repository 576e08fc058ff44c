//! An alert as the JSON body of a webhook: one document that a Slack-style
//! incoming webhook reads (`text`) and an Alertmanager-style receiver reads
//! (Alertmanager's webhook format, version 4: `status`, `alerts`, labels,
//! annotations, `startsAt`, `endsAt`, `fingerprint`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::super::{Alert, Warning};

/// What an alert is, for a receiver: its name and labels identify it (the
/// fingerprint), and `firing` says whether it starts or ends.
#[derive(Debug, PartialEq)]
pub(super) struct Described {
    pub(super) labels: Vec<(&'static str, String)>,
    pub(super) firing: bool,
    pub(super) summary: String,
}

impl Described {
    /// Identifies the alert across its firing and its resolution
    /// (FNV-1a over its labels, as 16 hex digits).
    pub(super) fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in &self.labels {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0xff]) {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// The labels, state and summary of `alert` from the watchdog `watchdog`.
pub(super) fn describe(watchdog: &str, alert: &Alert) -> Described {
    let mut labels = Vec::with_capacity(5);
    let (name, severity, firing, extra) = match alert {
        Alert::Node { node, alert } => {
            let mut inner = describe(watchdog, alert);
            inner.labels.push(("node", node.clone()));
            return inner;
        }
        Alert::Usage { level, raised, .. } => (
            "RedisMemoryLevel",
            if *level >= 0.9 { "critical" } else { "warning" },
            *raised,
            Some(("level", format!("{:.0}%", level * 100.0))),
        ),
        Alert::Leeway { raised, .. } => ("RedisMemoryLeeway", "critical", *raised, None),
        Alert::Warning(w) | Alert::WarningCleared(w) => (
            "RedisDangerousSetting",
            "warning",
            matches!(alert, Alert::Warning(_)),
            Some(("setting", warning_name(w).to_owned())),
        ),
        Alert::Down { .. } | Alert::Up => (
            "RedisDown",
            "critical",
            matches!(alert, Alert::Down { .. }),
            None,
        ),
        Alert::Policy {
            pattern, raised, ..
        } => (
            "RedisKeysWithoutTtl",
            "warning",
            *raised,
            Some(("pattern", pattern.clone())),
        ),
    };
    labels.push(("alertname", name.to_owned()));
    labels.push(("watchdog", watchdog.to_owned()));
    labels.push(("severity", severity.to_owned()));
    labels.extend(extra);
    Described {
        labels,
        firing,
        summary: alert.to_string(),
    }
}

fn warning_name(w: &Warning) -> &'static str {
    match w {
        Warning::NoMaxmemory => "no_maxmemory",
        Warning::KeysWithoutTtlNeverEvicted { .. } => "keys_without_ttl_never_evicted",
        Warning::FullCoverageRequired => "full_coverage_required",
    }
}

/// The body for `alert`, which fired at `started` (now, if it is firing)
/// and, if it is resolved, ended `now`.
pub(super) fn body(d: &Described, started: SystemTime, now: SystemTime) -> Vec<u8> {
    let labels: Map<String, Value> = d
        .labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(v.as_str())))
        .collect();
    let (status, ends) = match d.firing {
        true => ("firing", "0001-01-01T00:00:00Z".to_owned()),
        false => ("resolved", rfc3339(now)),
    };
    let watchdog = d
        .labels
        .iter()
        .find(|(k, _)| *k == "watchdog")
        .map_or("", |(_, v)| v.as_str());
    let text = format!(
        "{} [fusebox watchdog {watchdog}] {}",
        if d.firing { "FIRING" } else { "RESOLVED" },
        d.summary
    );
    let alertname = labels.get("alertname").cloned().unwrap_or_default();
    let doc = json!({
        "text": text,
        "version": "4",
        "receiver": "fusebox",
        "status": status,
        "groupKey": format!("{{}}:{{alertname={alertname}}}"),
        "truncatedAlerts": 0,
        "groupLabels": { "alertname": alertname },
        "commonLabels": labels,
        "commonAnnotations": { "summary": d.summary },
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": { "summary": d.summary },
            "startsAt": rfc3339(started),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": format!("{:016x}", d.fingerprint()),
        }],
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// `t` as RFC 3339 in UTC, to the millisecond.
pub(super) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_796_428_800_123), "2026-12-05T00:00:00.123Z");
        assert_eq!(at(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn firing_and_resolved_share_a_fingerprint_and_carry_both_formats() {
        let up = describe(
            "sessions",
            &Alert::Usage {
                level: 0.5,
                ratio: 0.61,
                raised: true,
            },
        );
        let down = describe(
            "sessions",
            &Alert::Usage {
                level: 0.5,
                ratio: 0.4,
                raised: false,
            },
        );
        assert_eq!(up.fingerprint(), down.fingerprint());
        let other = describe(
            "sessions",
            &Alert::Usage {
                level: 0.9,
                ratio: 0.95,
                raised: true,
            },
        );
        assert_ne!(up.fingerprint(), other.fingerprint());
        let t = UNIX_EPOCH + Duration::from_secs(1_796_428_800);
        let doc: Value = serde_json::from_slice(&body(&down, t, t)).unwrap();
        assert!(doc["text"].as_str().unwrap().starts_with("RESOLVED"));
        assert_eq!(doc["status"], "resolved");
        assert_eq!(doc["alerts"][0]["labels"]["alertname"], "RedisMemoryLevel");
        assert_eq!(doc["alerts"][0]["labels"]["level"], "50%");
        assert_eq!(doc["alerts"][0]["endsAt"], "2026-12-05T00:00:00.000Z");
        let node = describe(
            "cluster",
            &Alert::Node {
                node: "10.0.0.1:7000".into(),
                alert: Box::new(Alert::Down {
                    error: "refused".into(),
                }),
            },
        );
        assert!(node.firing);
        assert!(node.labels.contains(&("node", "10.0.0.1:7000".into())));
    }
}
