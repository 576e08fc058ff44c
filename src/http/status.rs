//! `Cache-Status` (RFC 9211): how the layer handled a response, as this
//! cache's member of the response's `Cache-Status` list, after the members
//! of the caches behind it.

use http::header::HeaderValue;
use http::HeaderMap;

/// Why a request went forward to the handler (RFC 9211 §2.2, `fwd`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Fwd {
    /// Nothing stored for the URL.
    #[default]
    UriMiss,
    /// Responses stored for the URL, none for the request's variant.
    VaryMiss,
    /// A stored response that could not be served as it was.
    Stale,
    /// The request's directives (`no-cache`, `no-store`) ruled stored
    /// responses out.
    Request,
    /// The method's semantics require the handler.
    Method,
    /// The layer does not cache this request (`detail` says why).
    Bypass,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Method => "method",
            Fwd::Bypass => "bypass",
        }
    }
}

/// What the layer learned about one request on its way through.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Outcome {
    pub(super) fwd: Fwd,
    /// The served entry's freshness left, in seconds (negative: stale).
    pub(super) ttl: Option<i64>,
    /// The request went to the handler.
    pub(super) forwarded: bool,
    /// What the handler answered when a stored copy was served instead
    /// (`stale-if-error`), if it answered at all.
    pub(super) fwd_status: Option<u16>,
    /// The response was stored.
    pub(super) stored: bool,
    /// The request waited on a concurrent one: `Some(true)` if it got that
    /// one's response, `Some(false)` if it then had to go itself.
    pub(super) collapsed: Option<bool>,
    /// Why the layer bypassed the request.
    pub(super) detail: Option<&'static str>,
}

/// The cache's identifier as an RFC 8941 item: a token when it is one,
/// else a string (quoted, escaped, with what a string cannot hold left
/// out); `None` for an empty name (no `Cache-Status`).
pub(super) fn identifier(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut chars = name.chars();
    let first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*');
    let token = first
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/!#$%&'*+-.^_`|~".contains(&b));
    if token {
        return Some(name.to_owned());
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars().filter(|c| matches!(c, ' '..='~')) {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Some(quoted)
}

/// Appends this cache's member for a response labelled `label` (`hit`,
/// `stale`, `revalidated`, `miss`, `bypass`) with `status`.
pub(super) fn append(
    headers: &mut HeaderMap,
    id: &str,
    label: &[u8],
    status: u16,
    outcome: &Outcome,
) {
    use std::fmt::Write as _;
    let mut v = String::with_capacity(id.len() + 48);
    v.push_str(id);
    let ttl = |v: &mut String| {
        if let Some(ttl) = outcome.ttl {
            let _ = write!(v, "; ttl={ttl}");
        }
    };
    let fwd = |v: &mut String, fwd: Fwd, status: Option<u16>| {
        let _ = write!(v, "; fwd={}", fwd.as_str());
        if let Some(s) = status {
            let _ = write!(v, "; fwd-status={s}");
        }
    };
    match label {
        b"hit" if outcome.collapsed == Some(true) => {
            fwd(&mut v, outcome.fwd, Some(status));
            v.push_str("; collapsed");
        }
        // Served without going forward (a stale one while it is
        // revalidated in the background).
        b"hit" => {
            v.push_str("; hit");
            ttl(&mut v);
        }
        b"stale" if outcome.forwarded => {
            // Went forward, failed, and was given the stored copy.
            fwd(&mut v, Fwd::Stale, outcome.fwd_status);
            ttl(&mut v);
            v.push_str("; detail=stale-if-error");
        }
        b"stale" => {
            v.push_str("; hit");
            ttl(&mut v);
        }
        b"revalidated" => {
            fwd(&mut v, Fwd::Stale, Some(304));
            ttl(&mut v);
        }
        b"miss" => {
            fwd(&mut v, outcome.fwd, Some(status));
            if outcome.stored {
                v.push_str("; stored");
            }
            if outcome.collapsed == Some(false) {
                v.push_str("; collapsed=?0");
            }
        }
        b"bypass" => {
            fwd(&mut v, outcome.fwd, None);
            if let Some(detail) = outcome.detail {
                let _ = write!(v, "; detail={detail}");
            }
        }
        _ => return,
    }
    if let Ok(value) = HeaderValue::try_from(v) {
        headers.append(http::header::HeaderName::from_static("cache-status"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(label: &str, status: u16, outcome: Outcome) -> String {
        let mut h = HeaderMap::new();
        h.append(
            "cache-status",
            HeaderValue::from_static("origin; fwd=uri-miss"),
        );
        append(&mut h, "fusebox", label.as_bytes(), status, &outcome);
        let all: Vec<_> = h.get_all("cache-status").iter().collect();
        assert_eq!(all.len(), 2, "appended after the members behind it");
        all[1].to_str().unwrap().to_owned()
    }

    #[test]
    fn members_say_what_the_layer_did() {
        let hit = Outcome {
            ttl: Some(42),
            ..Outcome::default()
        };
        assert_eq!(member("hit", 200, hit), "fusebox; hit; ttl=42");
        let swr = Outcome {
            ttl: Some(-3),
            ..Outcome::default()
        };
        assert_eq!(member("stale", 200, swr), "fusebox; hit; ttl=-3");
        let failed = Outcome {
            fwd: Fwd::Stale,
            forwarded: true,
            ttl: Some(-9),
            fwd_status: Some(503),
            ..Outcome::default()
        };
        assert_eq!(
            member("stale", 200, failed),
            "fusebox; fwd=stale; fwd-status=503; ttl=-9; detail=stale-if-error"
        );
        let stored = Outcome {
            stored: true,
            ..Outcome::default()
        };
        assert_eq!(
            member("miss", 404, stored),
            "fusebox; fwd=uri-miss; fwd-status=404; stored"
        );
        let shared = Outcome {
            collapsed: Some(true),
            ..Outcome::default()
        };
        assert_eq!(
            member("hit", 200, shared),
            "fusebox; fwd=uri-miss; fwd-status=200; collapsed"
        );
        let alone = Outcome {
            fwd: Fwd::VaryMiss,
            collapsed: Some(false),
            ..Outcome::default()
        };
        assert_eq!(
            member("miss", 200, alone),
            "fusebox; fwd=vary-miss; fwd-status=200; collapsed=?0"
        );
        let bypass = Outcome {
            fwd: Fwd::Bypass,
            detail: Some("bypass-credentials"),
            ..Outcome::default()
        };
        assert_eq!(
            member("bypass", 200, bypass),
            "fusebox; fwd=bypass; detail=bypass-credentials"
        );
        let revalidated = Outcome {
            ttl: Some(60),
            ..Outcome::default()
        };
        assert_eq!(
            member("revalidated", 200, revalidated),
            "fusebox; fwd=stale; fwd-status=304; ttl=60"
        );
    }

    #[test]
    fn identifiers_are_tokens_or_strings() {
        assert_eq!(identifier("fusebox").unwrap(), "fusebox");
        assert_eq!(
            identifier("edge-1.example:8080").unwrap(),
            "edge-1.example:8080"
        );
        assert_eq!(identifier("1edge").unwrap(), "\"1edge\"");
        assert_eq!(
            identifier("my \"cache\"\n").unwrap(),
            "\"my \\\"cache\\\"\""
        );
        assert_eq!(identifier(""), None);
    }
}
