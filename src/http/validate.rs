//! Validation (RFC 9111 §4.3): a stored response that may not be served
//! as it is, but has a validator, is checked with the handler by a
//! conditional request; a `304` freshens it (§4.3.4) and the caller gets
//! the stored response. A client's own conditional request is answered
//! `304` from a stored response that matches it (§4.3.2).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};

use super::directives::{self, now_ms};
use super::policy::{lifetime_of, ttl_of};
use super::{CachedBody, Config, Entry};
use crate::cache::Ttl;

/// Whether a response carries a validator (`ETag` or `Last-Modified`), so a
/// conditional request can check it.
pub(super) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// Makes `req` a validation of `stored`: `If-None-Match` with its `ETag`,
/// `If-Modified-Since` with its `Last-Modified`, in place of the client's
/// own conditions (the answer is the stored response's, then the client's
/// conditions are evaluated on it).
pub(super) fn make_conditional<B>(req: &mut Request<B>, stored: &Entry) {
    let headers = req.headers_mut();
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
    if let Some(etag) = stored.headers.get(header::ETAG) {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(modified) = stored.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// `stored` updated by the `304` the handler answered a validation with
/// (§3.2, §4.3.4): its headers replace the stored ones (but
/// `Content-Length`, which describes the stored body), and its freshness
/// is computed afresh. The response to serve, and what to store: nothing
/// when the updated response may no longer be stored, or the `304` names
/// another entity tag (then it is still served once, as the handler has
/// just approved it).
pub(super) fn freshen<B>(
    config: &Config,
    req: &Request<()>,
    mut stored: Entry,
    not_modified: &HeaderMap,
    requested: u64,
) -> (Response<CachedBody<B>>, Option<(Bytes, Ttl)>) {
    let received = now_ms();
    // §4.3.4: a `304` naming another entity tag does not describe the
    // stored response: it is served once, as the handler approved the tag
    // it was asked about, but not updated or stored again.
    let (new_tag, old_tag) = (
        not_modified.get(header::ETAG),
        stored.headers.get(header::ETAG),
    );
    if let (Some(new), Some(old)) = (new_tag, old_tag) {
        if opaque(new.as_bytes()).is_none() || opaque(new.as_bytes()) != opaque(old.as_bytes()) {
            stored.lifetime = super::entry::Lifetime::fresh_for(received, 0);
            return (stored.into_response(false, received), None);
        }
    }
    for name in not_modified.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        stored.headers.remove(name);
        for value in not_modified.get_all(name) {
            stored.headers.append(name.clone(), value.clone());
        }
    }
    let lifetime = lifetime_of(
        config,
        req,
        stored.status,
        &stored.headers,
        requested,
        received,
    );
    let share = lifetime.map(|lifetime| {
        stored.lifetime = lifetime;
        (stored.encode(), ttl_of(config, &stored))
    });
    if share.is_none() {
        // Served once, as approved, with no age of its own.
        stored.lifetime = super::entry::Lifetime::fresh_for(received, 0);
    }
    (stored.into_response(false, received), share)
}

/// A client's conditions (`If-None-Match`, `If-Modified-Since`), kept
/// before the request goes to the handler.
#[derive(Debug, Default)]
pub(super) struct Conditions {
    none_match: Option<Vec<HeaderValue>>,
    modified_since: Option<u64>,
}

impl Conditions {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let none_match: Vec<HeaderValue> = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .cloned()
            .collect();
        Conditions {
            modified_since: directives::date(headers, &header::IF_MODIFIED_SINCE).flatten(),
            none_match: (!none_match.is_empty()).then_some(none_match),
        }
    }

    /// `res` (a `200` the layer serves from the cache) as a `304` when the
    /// client's conditions say it has it already (RFC 9110 §13.2.2:
    /// `If-None-Match` by weak comparison, else `If-Modified-Since`
    /// against `Last-Modified`).
    /// `label` (the layer's status header) is kept too.
    pub(super) fn apply<B>(
        &self,
        res: Response<CachedBody<B>>,
        label: &HeaderName,
    ) -> Response<CachedBody<B>> {
        if res.status() != StatusCode::OK || !self.matched(res.headers()) {
            return res;
        }
        let (mut parts, _) = res.into_parts();
        parts.status = StatusCode::NOT_MODIFIED;
        // RFC 9110 §15.4.5: what a 200 would have said about caching and
        // the representation's identity, no more.
        let kept = [
            label.clone(),
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::ETAG,
            header::EXPIRES,
            header::VARY,
            header::AGE,
            header::LAST_MODIFIED,
            // The members of the caches behind this one (RFC 9211).
            HeaderName::from_static("cache-status"),
        ];
        let mut headers = HeaderMap::new();
        for name in kept {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        parts.headers = headers;
        Response::from_parts(parts, CachedBody::full(Bytes::new()))
    }

    fn matched(&self, headers: &HeaderMap) -> bool {
        if let Some(lines) = &self.none_match {
            let Some(etag) = headers.get(header::ETAG) else {
                return false;
            };
            let etag = opaque(etag.as_bytes());
            return lines
                .iter()
                .flat_map(|l| tags(l.as_bytes()))
                .any(|t| t == b"*" || Some(t) == etag);
        }
        let Some(since) = self.modified_since else {
            return false;
        };
        directives::date(headers, &header::LAST_MODIFIED)
            .flatten()
            .is_some_and(|modified| modified <= since)
    }
}

/// An entity tag's opaque part (`W/"x"` and `"x"` compare equal weakly).
fn opaque(tag: &[u8]) -> Option<&[u8]> {
    let tag = tag.trim_ascii();
    let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
    (tag.len() >= 2 && tag[0] == b'"' && tag[tag.len() - 1] == b'"').then_some(tag)
}

/// The tags of an `If-None-Match` line (`*`, or quoted tags that may hold
/// commas), each as its opaque part.
fn tags(line: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_ascii_start();
        while let Some(r) = rest.strip_prefix(b",") {
            rest = r.trim_ascii_start();
        }
        if rest.is_empty() {
            return out;
        }
        if let Some(r) = rest.strip_prefix(b"*") {
            out.push(&b"*"[..]);
            rest = r;
            continue;
        }
        let start = usize::from(rest.starts_with(b"W/")) * 2;
        if rest.get(start) != Some(&b'"') {
            return out;
        }
        let Some(close) = rest[start + 1..].iter().position(|&b| b == b'"') else {
            return out;
        };
        let end = start + 1 + close + 1;
        out.push(&rest[start..end]);
        rest = &rest[end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_reads_commas_inside_tags() {
        assert_eq!(
            tags(br#""a", W/"b,c" ,*"#),
            vec![&b"\"a\""[..], b"\"b,c\"", b"*"]
        );
        assert_eq!(opaque(br#"W/"x""#), Some(&b"\"x\""[..]));
        for not_a_tag in [&b"x"[..], b"ab", b"a\"", b"\"a", b"\"", b"W/x"] {
            assert_eq!(opaque(not_a_tag), None, "{not_a_tag:?}");
        }
        assert_eq!(opaque(b" \"\" "), Some(&b"\"\""[..]));
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, HeaderValue::from_static("W/\"v1\""));
        let ask = |line: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static(line));
            Conditions::of(&h).matched(&stored)
        };
        assert!(ask("\"v1\""));
        assert!(ask("\"v0\", W/\"v1\""));
        assert!(ask("*"));
        assert!(!ask("\"v2\""));
    }

    #[test]
    fn if_modified_since_is_read_only_without_if_none_match() {
        let mut stored = HeaderMap::new();
        stored.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Tue, 02 Jan 2024 00:00:00 GMT"),
        );
        assert!(Conditions::of(&h).matched(&stored));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert!(!Conditions::of(&h).matched(&stored));
        let mut earlier = HeaderMap::new();
        earlier.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_static("Sun, 31 Dec 2023 00:00:00 GMT"),
        );
        assert!(!Conditions::of(&earlier).matched(&stored));
    }

    fn stored(pairs: &[(&'static str, &'static str)]) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: crate::http::key::tests::headers(pairs),
            body: Bytes::from_static(b"page"),
            trailers: None,
            lifetime: super::super::entry::Lifetime::fresh_for(0, 0),
            variant: None,
        }
    }

    #[test]
    fn a_validation_asks_with_the_stored_validators_only() {
        let entry = stored(&[
            ("etag", "\"v1\""),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        let mut req = Request::new(());
        req.headers_mut().insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"client\""),
        );
        make_conditional(&mut req, &entry);
        assert_eq!(req.headers()[header::IF_NONE_MATCH], "\"v1\"");
        assert_eq!(
            req.headers()[header::IF_MODIFIED_SINCE],
            "Mon, 01 Jan 2024 00:00:00 GMT"
        );
        let mut req = Request::new(());
        req.headers_mut().insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"client\""),
        );
        make_conditional(&mut req, &stored(&[]));
        assert!(req.headers().is_empty(), "the client's own conditions go");
    }

    #[test]
    fn a_304_freshens_the_copy_unless_it_names_another_tag() {
        let config = Config::new();
        let req = Request::new(());
        let entry = stored(&[("etag", "\"v1\""), ("content-length", "4"), ("x-old", "a")]);
        let fresh = crate::http::key::tests::headers(&[
            ("etag", "\"v1\""),
            ("cache-control", "max-age=60"),
            ("x-old", "b"),
            ("content-length", "0"),
        ]);
        let now = now_ms();
        let (res, share) = freshen::<()>(&config, &req, entry.clone(), &fresh, now);
        assert_eq!(res.headers()["x-old"], "b");
        assert_eq!(
            res.headers()[header::CONTENT_LENGTH],
            "4",
            "the stored body's"
        );
        let (bytes, _) = share.expect("stored again");
        let again = Entry::decode(&bytes).unwrap();
        assert_eq!(again.lifetime.fresh, 60_000);
        // Another tag, or one that is not a tag: served once, not stored.
        for other in ["\"v2\"", "v1"] {
            let mut h = fresh.clone();
            h.insert(header::ETAG, HeaderValue::from_static(other));
            let (res, share) = freshen::<()>(&config, &req, entry.clone(), &h, now);
            assert!(share.is_none(), "{other}");
            assert_eq!(res.headers()["x-old"], "a", "{other}: not merged");
        }
        // No lifetime left to store: served, not stored.
        let mut h = fresh.clone();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert!(freshen::<()>(&config, &req, entry, &h, now).1.is_none());
    }

    #[test]
    fn only_a_matching_200_becomes_a_304_with_the_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        let conditions = Conditions::of(&h);
        let label = HeaderName::from_static("x-cache");
        let response = |status: StatusCode, etag: &'static str| {
            let mut res = Response::new(CachedBody::<()>::full(Bytes::from_static(b"page")));
            *res.status_mut() = status;
            res.headers_mut()
                .insert(header::ETAG, HeaderValue::from_static(etag));
            res.headers_mut()
                .insert("x-other", HeaderValue::from_static("x"));
            res.headers_mut()
                .insert("x-cache", HeaderValue::from_static("hit"));
            res
        };
        let res = conditions.apply(response(StatusCode::OK, "\"v1\""), &label);
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()["x-cache"], "hit");
        assert!(!res.headers().contains_key("x-other"));
        let res = conditions.apply(response(StatusCode::OK, "\"v2\""), &label);
        assert_eq!(res.status(), StatusCode::OK);
        let res = conditions.apply(response(StatusCode::NOT_FOUND, "\"v1\""), &label);
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let none = Conditions::of(&HeaderMap::new());
        let res = none.apply(response(StatusCode::OK, "\"v1\""), &label);
        assert_eq!(res.status(), StatusCode::OK);
    }
}
