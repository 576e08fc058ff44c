//! `Cache-Control` directives (RFC 9111 §5.2) and the other header values
//! the caching rules read (`Age`, HTTP dates), parsed as a shared cache
//! must: directive names in any case, arguments as tokens or quoted
//! strings, commas inside quotes kept, the first of repeated directives
//! taken, and invalid numbers never read as a long lifetime.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::HeaderMap;

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2):
/// larger values count as this.
pub(super) const MAX_DELTA: u64 = 1 << 31;

/// A delta-seconds argument (`max-age=60`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delta {
    /// A valid number of seconds (clamped to 2^31).
    Secs(u64),
    /// Present but not a non-negative integer: the response is to be
    /// treated as stale (RFC 9111 §4.2.1), never as long-lived.
    Invalid,
}

impl Delta {
    /// The value in milliseconds; an invalid one is zero.
    pub(super) fn millis(self) -> u64 {
        match self {
            Delta::Secs(s) => s * 1000,
            Delta::Invalid => 0,
        }
    }
}

/// The directives of one message's `Cache-Control` header lines, request
/// or response. Qualified forms (`private="set-cookie"`,
/// `no-cache="x-token"`) count as the unqualified directive: the more
/// restrictive reading.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Directives {
    pub(super) no_store: bool,
    pub(super) no_cache: bool,
    pub(super) private: bool,
    pub(super) public: bool,
    pub(super) must_revalidate: bool,
    pub(super) proxy_revalidate: bool,
    pub(super) max_age: Option<Delta>,
    pub(super) s_maxage: Option<Delta>,
    /// Request only: the client wants a response fresh for this much longer.
    pub(super) min_fresh: Option<Delta>,
    pub(super) stale_while_revalidate: Option<Delta>,
    pub(super) stale_if_error: Option<Delta>,
}

impl Directives {
    /// The directives of every `Cache-Control` line of `headers`. A line
    /// that is not visible ASCII is ignored whole.
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let mut d = Directives::default();
        let lines = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok());
        for line in lines {
            for (name, arg) in split(line) {
                d.apply(&name.to_ascii_lowercase(), arg);
            }
        }
        d
    }

    fn apply(&mut self, name: &str, arg: Option<&str>) {
        // The first occurrence of a valued directive wins (RFC 9111 §4.2.1).
        let delta = |slot: &mut Option<Delta>| {
            if slot.is_none() {
                *slot = Some(arg.map_or(Delta::Invalid, parse_delta));
            }
        };
        match name {
            "no-store" => self.no_store = true,
            "no-cache" => self.no_cache = true,
            "private" => self.private = true,
            "public" => self.public = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "max-age" => delta(&mut self.max_age),
            "s-maxage" => delta(&mut self.s_maxage),
            "min-fresh" => delta(&mut self.min_fresh),
            "stale-while-revalidate" => delta(&mut self.stale_while_revalidate),
            "stale-if-error" => delta(&mut self.stale_if_error),
            _ => {}
        }
    }

    /// Whether a stale copy may ever be served (RFC 9111 §4.2.4): not
    /// when the response says `must-revalidate`, `proxy-revalidate`,
    /// `s-maxage` (for a shared cache) or `no-cache`, whatever RFC 5861's
    /// directives beside them say.
    pub(super) fn allows_stale(&self) -> bool {
        !(self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache)
    }
}

/// The request asks not to be answered from the cache: `Cache-Control:
/// no-cache` or `no-store`, or `Pragma: no-cache` (any case).
pub(super) fn request_refuses_stored(headers: &HeaderMap) -> bool {
    let d = Directives::of(headers);
    let pragma = headers
        .get_all(header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(split)
        .any(|(name, _)| name.eq_ignore_ascii_case("no-cache"));
    d.no_cache || d.no_store || pragma
}

/// `name[=arg]` items of a comma-separated header line; commas inside a
/// quoted argument do not split it, and a quoted argument is unquoted
/// (without unescaping: no directive read here needs it).
fn split(line: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    let mut rest = line;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("");
        if item.is_empty() {
            continue;
        }
        return Some(match item.split_once('=') {
            None => (item, None),
            Some((name, arg)) => {
                let arg = arg.trim();
                let arg = arg
                    .strip_prefix('"')
                    .and_then(|a| a.strip_suffix('"'))
                    .unwrap_or(arg);
                (name.trim(), Some(arg))
            }
        });
    })
}

/// delta-seconds: digits only; larger than 2^31 counts as 2^31.
fn parse_delta(arg: &str) -> Delta {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Delta::Invalid;
    }
    // All digits: only overflow can fail, and that is the cap.
    Delta::Secs(arg.parse::<u64>().map_or(MAX_DELTA, |s| s.min(MAX_DELTA)))
}

/// The `Age` of a message in seconds (RFC 9111 §5.1): the first member of
/// the first line; `None` when absent or invalid (then ignored).
pub(super) fn age(headers: &HeaderMap) -> Option<u64> {
    let line = headers.get(header::AGE)?.to_str().ok()?;
    let first = line.split(',').next()?.trim();
    match parse_delta(first) {
        Delta::Secs(s) => Some(s),
        Delta::Invalid => None,
    }
}

/// An HTTP date header, in ms since the Unix epoch: `None` when absent,
/// `Some(None)` when present but invalid.
pub(super) fn date(headers: &HeaderMap, name: &HeaderName) -> Option<Option<u64>> {
    let value = headers.get(name)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(millis),
    )
}

/// A duration in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Now, in ms since the Unix epoch (0 for a clock before it).
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(lines: &[&'static str]) -> Directives {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, HeaderValue::from_static(l));
        }
        Directives::of(&h)
    }

    #[test]
    fn quoted_commas_do_not_split_and_quotes_are_taken_off() {
        let items: Vec<_> =
            split(r#"private="set-cookie, x-user", max-age=60 , ,no-cache"#).collect();
        assert_eq!(
            items,
            [
                ("private", Some("set-cookie, x-user")),
                ("max-age", Some("60")),
                ("no-cache", None)
            ]
        );
        // A quote left open runs to the end of the line.
        let items: Vec<_> = split(r#"a="x, y, b=1"#).collect();
        assert_eq!(items, [("a", Some(r#""x, y, b=1"#))]);
        // One directive after a quoted one with a comma in it still counts.
        let d = cc(&[r#"no-cache="a, b", max-age=5"#]);
        assert_eq!(d.max_age, Some(Delta::Secs(5)));
    }

    #[test]
    fn stale_is_allowed_unless_a_directive_forbids_it() {
        assert!(cc(&["max-age=5, stale-if-error=60"]).allows_stale());
        for forbid in [
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage=5",
            "no-cache",
        ] {
            let d = cc(&["max-age=5, stale-if-error=60", forbid]);
            assert!(!d.allows_stale(), "{forbid}");
        }
    }

    #[test]
    fn names_are_read_in_any_case() {
        let d = cc(&["Private, No-Store, NO-CACHE, Public, Must-Revalidate, Proxy-Revalidate"]);
        assert!(d.private && d.no_store && d.no_cache && d.public);
        assert!(d.must_revalidate && d.proxy_revalidate);
        let d = cc(&["MAX-AGE=60, S-MaxAge=0, Stale-While-Revalidate=5, STALE-IF-ERROR=7"]);
        assert_eq!(d.max_age, Some(Delta::Secs(60)));
        assert_eq!(d.s_maxage, Some(Delta::Secs(0)));
        assert_eq!(d.stale_while_revalidate, Some(Delta::Secs(5)));
        assert_eq!(d.stale_if_error, Some(Delta::Secs(7)));
        assert!(!d.allows_stale(), "s-maxage forbids stale");
        assert_eq!(cc(&["Min-Fresh=3"]).min_fresh, Some(Delta::Secs(3)));
    }

    #[test]
    fn quoted_arguments_and_qualified_forms() {
        let d = cc(&[r#"private="set-cookie, x-a", max-age="30""#]);
        assert!(d.private, "qualified private still private");
        assert_eq!(d.max_age, Some(Delta::Secs(30)));
        let d = cc(&[r#"no-cache="x-token""#]);
        assert!(d.no_cache);
    }

    #[test]
    fn invalid_repeated_and_huge_values() {
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(Delta::Invalid));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(Delta::Invalid));
        assert_eq!(cc(&["max-age"]).max_age, Some(Delta::Invalid));
        assert_eq!(cc(&["max-age=1.5"]).max_age, Some(Delta::Invalid));
        assert_eq!(
            cc(&["max-age=10, max-age=99"]).max_age,
            Some(Delta::Secs(10))
        );
        assert_eq!(
            cc(&["max-age=10", "max-age=99"]).max_age,
            Some(Delta::Secs(10))
        );
        assert_eq!(
            cc(&["max-age=99999999999999999999999"]).max_age,
            Some(Delta::Secs(MAX_DELTA))
        );
        assert_eq!(cc(&[" , ,, max-age=5 ,"]).max_age, Some(Delta::Secs(5)));
        assert_eq!(cc(&["x-max-age=5"]).max_age, None, "no substring match");
    }

    #[test]
    fn requests_that_refuse_stored_answers() {
        let refuses = |name, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            request_refuses_stored(&h)
        };
        assert!(refuses(header::CACHE_CONTROL, "No-Cache"));
        assert!(refuses(header::CACHE_CONTROL, "max-age=0, NO-STORE"));
        assert!(refuses(header::PRAGMA, "No-Cache"));
        assert!(!refuses(header::CACHE_CONTROL, "max-age=10"));
        assert!(!refuses(header::CACHE_CONTROL, "x-no-cache-please"));
    }

    #[test]
    fn age_takes_the_first_valid_member() {
        let age_of = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AGE, HeaderValue::from_static(v));
            age(&h)
        };
        assert_eq!(age_of("30"), Some(30));
        assert_eq!(age_of("7200, 0"), Some(7200));
        assert_eq!(age_of("abc"), None);
        assert_eq!(age_of("-5"), None);
    }

    #[test]
    fn dates_parse_or_say_invalid() {
        let mut h = HeaderMap::new();
        assert_eq!(date(&h, &header::EXPIRES), None);
        h.insert(header::EXPIRES, HeaderValue::from_static("0"));
        assert_eq!(date(&h, &header::EXPIRES), Some(None));
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(date(&h, &header::EXPIRES), Some(Some(1_445_412_480_000)));
    }
}
