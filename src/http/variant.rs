//! Variants (RFC 9111 §4.1). A response whose `Vary` names request
//! headers the key does not hold is stored once per set of their values,
//! at most [`max_variants`](super::HttpCacheLayer::max_variants) per URL:
//! the URL's key holds an index of the names, each variant sits in one of
//! that many slots beside it, and records which values it was made for
//! (as a SHA-256, so a credential among them never reaches Redis in
//! clear). A stored response is given only to a request presenting the
//! same values; two variants that land in one slot replace each other.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use sha2::{Digest, Sha256};

use super::key::Scope;
use super::serve::{cached_bytes, decoded};
use super::{Config, Entry};
use crate::cache::{Backend, Cache};

/// The index format: the magic, then the names, comma-separated.
const INDEX: &[u8; 4] = b"FBV1";

/// The headers a response's `Vary` names that the key does not hold,
/// lower-cased, sorted, each once (empty when there are none); `None` for
/// `Vary: *`, which no request matches.
pub(super) fn names(scope: &Scope, response: &HeaderMap) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for line in response.get_all(header::VARY) {
        for name in line.as_bytes().split(|b| *b == b',') {
            let name = name.trim_ascii();
            if name == b"*" {
                return None;
            }
            if name.is_empty() || scope.keys(name) {
                continue;
            }
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            if let Err(at) = out.binary_search(&name) {
                out.insert(at, name);
            }
        }
    }
    Some(out)
}

/// The identity of the values a request presents for `names`. An absent
/// header differs from an empty one; a header's field lines are combined
/// and the whitespace around its commas (outside quoted strings) dropped,
/// as RFC 9110 §5.3 and §5.6.1 allow, so that `a, b` and the two lines `a`
/// and `b` are one variant.
pub(super) fn id(names: &[String], request: &HeaderMap) -> [u8; 32] {
    let mut hash = Sha256::new();
    for name in names {
        hash.update(name.as_bytes());
        let mut lines = request.get_all(name.as_str()).iter().peekable();
        if lines.peek().is_none() {
            hash.update(b"\0-");
            continue;
        }
        hash.update(b"\0=");
        let mut value = Vec::new();
        for (i, line) in lines.enumerate() {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(line.as_bytes());
        }
        hash.update(normalise(&value));
        hash.update(b"\0");
    }
    hash.finalize().into()
}

/// `value` without whitespace at its ends or around its commas, but inside
/// quoted strings.
fn normalise(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let (mut quoted, mut escaped) = (false, false);
    // Whitespace outside quotes (from this index of `value`) is kept only
    // if something other than a comma follows it, and never after a comma.
    let (mut space, mut after_comma) = (None, true);
    for (i, &b) in value.iter().enumerate() {
        if quoted {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match b {
            b' ' | b'\t' => {
                if !after_comma && space.is_none() {
                    space = Some(i);
                }
            }
            b',' => {
                space = None;
                after_comma = true;
                out.push(b',');
            }
            _ => {
                if let Some(from) = space.take() {
                    out.extend_from_slice(&value[from..i]);
                }
                after_comma = false;
                quoted = b == b'"';
                out.push(b);
            }
        }
    }
    out
}

/// The key of the slot the variant `id` of the URL at `key` is stored in:
/// one of `max`.
pub(super) fn slot(key: &[u8], id: &[u8; 32], max: u16) -> Vec<u8> {
    let n = u16::from_be_bytes([id[0], id[1]]) % max.max(1);
    let mut at = Vec::with_capacity(key.len() + 14);
    at.extend_from_slice(key);
    at.extend_from_slice(b"\nvariant=");
    at.extend_from_slice(n.to_string().as_bytes());
    at
}

/// The index stored at a URL's key when its responses vary.
pub(super) fn index(names: &[String]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + names.len() * 16);
    out.put_slice(INDEX);
    out.put_slice(names.join(",").as_bytes());
    out.freeze()
}

/// The names an index holds; `None` for bytes that are not an index.
fn read_index(bytes: &[u8]) -> Option<Vec<String>> {
    let names = bytes.strip_prefix(INDEX)?;
    let names = std::str::from_utf8(names).ok()?;
    Some(names.split(',').map(str::to_owned).collect())
}

/// Whether `entry` may be given to a request with `headers`: it was made
/// for the values the request presents for every header its `Vary` names
/// outside the key (an entry that varies on none must say so).
pub(super) fn fits(scope: &Scope, entry: &Entry, headers: &HeaderMap) -> bool {
    match names(scope, &entry.headers) {
        None => false,
        Some(names) if names.is_empty() => entry.variant.is_none(),
        Some(names) => entry.variant == Some(id(&names, headers)),
    }
}

/// What a lookup found for a request.
pub(super) struct Found {
    /// A stored response the request may be given (fresh or not).
    pub(super) entry: Option<Entry>,
    /// The last purge of the URL (ms since the epoch; 0: none known).
    pub(super) purged: u64,
    /// The key the request's misses share a flight on: the URL's, or its
    /// variant's slot when the URL's responses vary.
    pub(super) flight: Vec<u8>,
    /// The URL's responses vary, and none was stored for these values.
    pub(super) vary_miss: bool,
}

/// The stored response for a request whose URL key is `key` (and purge
/// marker `purge`): the entry there, or, when an index is there, the entry
/// in its variant's slot; only one made for the request's values.
pub(super) async fn lookup<C: Backend>(
    cache: &Cache<C>,
    config: &Config,
    (key, purge): (&[u8], &[u8]),
    headers: &HeaderMap,
) -> Found {
    let (bytes, purged) = cached_bytes(cache, key, Some(purge)).await;
    let mut found = Found {
        entry: None,
        purged,
        flight: key.to_vec(),
        vary_miss: false,
    };
    let Some(bytes) = bytes else {
        return found;
    };
    let bytes = match read_index(&bytes) {
        Some(_) if config.max_variants == 0 => return found,
        Some(names) => {
            found.flight = slot(key, &id(&names, headers), config.max_variants);
            let bytes = cache.get(&found.flight).await;
            found.vary_miss = true;
            match bytes {
                Some(bytes) => bytes,
                None => return found,
            }
        }
        None => bytes,
    };
    found.entry = decoded(cache, "http", &bytes)
        .filter(|e| e.lifetime.requested > purged && fits(&config.scope, e, headers));
    found.vary_miss &= found.entry.is_none();
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::key::tests::headers;
    use http::header::HeaderName;

    #[test]
    fn names_outside_the_key_sorted_once_and_star_never() {
        let mut scope = Scope::new();
        scope.vary = vec![HeaderName::from_static("accept-language")];
        let of = |pairs| names(&scope, &headers(pairs));
        assert_eq!(of(&[]), Some(vec![]));
        assert_eq!(
            of(&[("vary", "Accept-Language, Host, X-Forwarded-Host")]),
            Some(vec![])
        );
        assert_eq!(
            of(&[("vary", "Foo, bar"), ("vary", " FOO ,, baz")]),
            Some(vec!["bar".into(), "baz".into(), "foo".into()])
        );
        assert_eq!(of(&[("vary", "foo"), ("vary", "*")]), None);
        assert_eq!(of(&[("vary", ", *")]), None);
    }

    #[test]
    fn values_are_combined_and_spaces_around_commas_dropped_but_quoted() {
        let names = vec!["foo".to_owned()];
        let of = |pairs| id(&names, &headers(pairs));
        assert_eq!(of(&[("foo", "1, 2")]), of(&[("foo", "1"), ("foo", "2")]));
        assert_eq!(of(&[("foo", "1,2")]), of(&[("foo", " 1 ,\t2 ")]));
        assert_ne!(of(&[("foo", "1 2")]), of(&[("foo", "12")]));
        assert_ne!(of(&[("foo", "\"a , b\"")]), of(&[("foo", "\"a,b\"")]));
        assert_ne!(of(&[("foo", "")]), of(&[]), "empty is not absent");
        assert_ne!(of(&[("foo", "1")]), of(&[("foo", "2")]));
        assert_eq!(normalise(b" a , \"x , y\" ,b c "), b"a,\"x , y\",b c");
        assert_eq!(normalise(b"\"a\\\" , b\" , c"), b"\"a\\\" , b\",c");
        let two = vec!["bar".to_owned(), "foo".to_owned()];
        assert_ne!(
            id(&two, &headers(&[("foo", "1")])),
            id(&two, &headers(&[("bar", "1")])),
            "which header holds a value counts"
        );
    }

    #[test]
    fn slots_are_bounded_and_indexes_read_back() {
        let key = b"http:GET //a/p";
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u8 {
            let id: [u8; 32] = Sha256::digest([i]).into();
            let at = slot(key, &id, 4);
            assert!(at.starts_with(b"http:GET //a/p\nvariant="));
            seen.insert(at);
        }
        assert_eq!(seen.len(), 4);
        assert_eq!(slot(key, &[0; 32], 0), b"http:GET //a/p\nvariant=0");
        let names = vec!["bar".to_owned(), "foo".to_owned()];
        assert_eq!(read_index(&index(&names)), Some(names));
        assert_eq!(read_index(b"FBH3..."), None);
    }

    #[test]
    fn an_entry_fits_only_requests_with_the_values_it_was_made_for() {
        let scope = Scope::new();
        let entry = |vary: Option<&'static str>, variant| Entry {
            status: http::StatusCode::OK,
            headers: vary.map_or_else(HeaderMap::new, |v| headers(&[("vary", v)])),
            body: Bytes::new(),
            trailers: None,
            lifetime: super::super::entry::Lifetime::fresh_for(0, 0),
            variant,
        };
        let one = headers(&[("foo", "1")]);
        let foo = vec!["foo".to_owned()];
        let made_for_one = Some(id(&foo, &one));
        assert!(fits(&scope, &entry(None, None), &one));
        assert!(
            !fits(&scope, &entry(None, made_for_one), &one),
            "says it varies on none"
        );
        assert!(fits(&scope, &entry(Some("Foo"), made_for_one), &one));
        assert!(!fits(
            &scope,
            &entry(Some("Foo"), made_for_one),
            &headers(&[("foo", "2")])
        ));
        assert!(
            !fits(&scope, &entry(Some("Foo"), None), &one),
            "a variant without its values"
        );
        assert!(!fits(&scope, &entry(Some("*"), None), &one));
        assert!(
            fits(&scope, &entry(Some("Host"), None), &one),
            "the key holds it"
        );
    }
}
