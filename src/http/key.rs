//! Whose response a request may be given: the key of a request (its host,
//! its target and the headers it varies on), the credentials that keep a
//! request out of a shared cache, and the `Vary` a stored response may
//! name.

use std::fmt::Write as _;

use http::header::{self, HeaderName};
use http::uri::Authority;
use http::{HeaderMap, Uri};
use sha2::{Digest, Sha256};

/// Plain keys longer than this are hashed.
const MAX_PLAIN: usize = 256;

/// Request headers always in the key when present: a handler behind a
/// proxy builds links from them, so a request that forges them must not
/// share an entry with one that does not.
const FORWARDED: [HeaderName; 3] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
];

/// Which requests share an entry.
#[derive(Clone, Debug)]
pub(super) struct Scope {
    /// Request headers (or gRPC metadata) in the key.
    pub(super) vary: Vec<HeaderName>,
    /// Headers that make a request one caller's: with one present (and not
    /// in `vary`), the request bypasses the cache.
    pub(super) credentials: Vec<HeaderName>,
    /// The responses do not depend on the caller: credentials are ignored.
    pub(super) public: bool,
}

impl Scope {
    pub(super) fn new() -> Self {
        Scope {
            vary: Vec::new(),
            credentials: vec![
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::COOKIE,
            ],
            public: false,
        }
    }

    /// Adds `names` to the credentials, keeping each once.
    pub(super) fn add_credentials(&mut self, names: Vec<HeaderName>) {
        for name in names {
            if !self.credentials.contains(&name) {
                self.credentials.push(name);
            }
        }
    }

    /// The request carries a credential that is not part of the key.
    pub(super) fn is_personal(&self, headers: &HeaderMap) -> bool {
        !self.public
            && self
                .credentials
                .iter()
                .any(|n| headers.contains_key(n) && !self.vary.contains(n))
    }

    /// Whether the key holds the request header `name` (any case): `Host`,
    /// the forwarded headers, and those named with `vary`.
    pub(super) fn keys(&self, name: &[u8]) -> bool {
        name.eq_ignore_ascii_case(b"host")
            || self
                .vary
                .iter()
                .chain(&FORWARDED)
                .any(|k| name.eq_ignore_ascii_case(k.as_str().as_bytes()))
    }

    /// Appends a line `\nname=value` per value of each keyed header the
    /// request has (none for a header it lacks). Returns whether a
    /// credential went in, so that the key must be hashed.
    pub(super) fn push_lines(&self, key: &mut Vec<u8>, headers: &HeaderMap) -> bool {
        let mut secret = false;
        for name in self.vary.iter().chain(&FORWARDED) {
            for value in headers.get_all(name) {
                key.push(b'\n');
                key.extend_from_slice(name.as_str().as_bytes());
                key.push(b'=');
                key.extend_from_slice(value.as_bytes());
                secret |= self.credentials.contains(name);
            }
        }
        secret
    }
}

/// The valid header names among `names`, lower-cased and without repeats.
pub(super) fn header_names<I, N>(names: I) -> Vec<HeaderName>
where
    I: IntoIterator<Item = N>,
    N: AsRef<str>,
{
    let mut out: Vec<HeaderName> = Vec::new();
    for name in names {
        if let Ok(name) = HeaderName::from_bytes(name.as_ref().as_bytes()) {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// The host a request is for, lower-cased: the URI's authority (HTTP/2's
/// `:authority`, or an absolute-form request line), else `Host`. `None`
/// when they disagree or `Host` is not a valid authority: such a request is
/// not cached, as the handler may read either.
pub(super) fn authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = match headers.get(header::HOST) {
        Some(v) => Some(Authority::try_from(v.as_bytes()).ok()?),
        None => None,
    };
    let chosen = match (uri.authority(), &host) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h.as_str()) => return None,
        (Some(a), _) => a.as_str(),
        (None, Some(h)) => h.as_str(),
        (None, None) => "",
    };
    Some(chosen.to_ascii_lowercase())
}

/// The key to store under: `plain` itself when it is short and holds no
/// credential, else its first `readable` bytes, `#` and the hex SHA-256 of
/// the whole (a credential never reaches Redis, where `SCAN` and `MONITOR`
/// would show it, and keys stay small).
pub(super) fn finish(plain: Vec<u8>, readable: usize, hash: bool) -> Vec<u8> {
    if !hash && plain.len() <= MAX_PLAIN {
        return plain;
    }
    let digest = Sha256::digest(&plain);
    let mut key = String::with_capacity(readable + 65);
    key.push_str(&String::from_utf8_lossy(
        &plain[..readable.min(plain.len())],
    ));
    key.push('#');
    for b in digest {
        let _ = write!(key, "{b:02x}");
    }
    key.into_bytes()
}

/// Prefix of the layer's keys (inside the cache's own prefix).
const PREFIX: &[u8] = b"http:";

/// The keys of a cacheable request: its entry, and its URL's purge
/// marker.
pub(super) struct Keys {
    /// The entry: host, target and the keyed headers.
    pub(super) entry: Vec<u8>,
    /// The marker every variant of the URL is checked against.
    pub(super) purge: Vec<u8>,
}

/// Why a request bypasses the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Bypass {
    /// It asks for no stored answer (`no-cache`, `no-store`).
    Request,
    /// It carries a credential the key does not hold.
    Credentials,
    /// Its URI and `Host` name different hosts.
    Host,
}

/// The keys of a cacheable request, or why it must bypass the cache.
pub(super) fn request<B>(scope: &Scope, req: &http::Request<B>) -> Result<Keys, Bypass> {
    let headers = req.headers();
    if super::directives::request_refuses_stored(headers) {
        return Err(Bypass::Request);
    }
    if scope.is_personal(headers) {
        return Err(Bypass::Credentials);
    }
    let host = authority(req.uri(), headers).ok_or(Bypass::Host)?;
    let mut plain = Vec::with_capacity(128);
    plain.extend_from_slice(PREFIX);
    plain.extend_from_slice(b"GET ");
    if let Some(scheme) = req.uri().scheme_str() {
        plain.extend_from_slice(scheme.to_ascii_lowercase().as_bytes());
        plain.push(b':');
    }
    push_url(&mut plain, &host, req.uri().path(), req.uri().query());
    let secret = scope.push_lines(&mut plain, headers);
    Ok(Keys {
        entry: finish(plain, PREFIX.len(), secret),
        purge: purge(&host, req.uri().path(), req.uri().query()),
    })
}

/// The purge marker of a URL (any scheme, every variant): the time of its
/// last invalidation; entries fetched by a request sent before it are not
/// used.
pub(super) fn purge(host: &str, path: &str, query: Option<&str>) -> Vec<u8> {
    let mut plain = Vec::with_capacity(64);
    plain.extend_from_slice(PREFIX);
    plain.extend_from_slice(b"purge ");
    push_url(&mut plain, &host.to_ascii_lowercase(), path, query);
    finish(plain, PREFIX.len(), false)
}

fn push_url(plain: &mut Vec<u8>, host: &str, path: &str, query: Option<&str>) {
    plain.extend_from_slice(b"//");
    plain.extend_from_slice(host.as_bytes());
    plain.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        plain.push(b'?');
        plain.extend_from_slice(q.as_bytes());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use http::HeaderValue;

    /// A header map of `pairs`, in order.
    pub(in crate::http) fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_host_comes_from_the_uri_or_host_and_they_must_agree() {
        let origin: Uri = "/page".parse().unwrap();
        let absolute: Uri = "http://A.example:8080/page".parse().unwrap();
        let host = headers(&[("host", "a.EXAMPLE:8080")]);
        assert_eq!(authority(&origin, &host).unwrap(), "a.example:8080");
        assert_eq!(
            authority(&absolute, &HeaderMap::new()).unwrap(),
            "a.example:8080"
        );
        assert_eq!(authority(&absolute, &host).unwrap(), "a.example:8080");
        let other = headers(&[("host", "b.example")]);
        assert_eq!(authority(&absolute, &other), None);
        // A Host that could be read as a host and a path is refused.
        let forged = headers(&[("host", "a.example/page")]);
        assert_eq!(authority(&origin, &forged), None);
        assert_eq!(authority(&origin, &HeaderMap::new()).unwrap(), "");
    }

    #[test]
    fn credentials_keep_requests_out_unless_keyed_or_public() {
        let mut scope = Scope::new();
        let cookie = headers(&[("cookie", "session=1")]);
        assert!(scope.is_personal(&cookie));
        assert!(scope.is_personal(&headers(&[("authorization", "Bearer x")])));
        assert!(!scope.is_personal(&headers(&[("accept", "*/*")])));
        scope.vary = vec![header::COOKIE];
        assert!(!scope.is_personal(&cookie));
        let mut key = Vec::new();
        assert!(scope.push_lines(&mut key, &cookie), "a keyed credential");
        let mut public = Scope::new();
        public.public = true;
        assert!(!public.is_personal(&cookie));
    }

    #[test]
    fn credentials_and_names_are_kept_once_and_invalid_names_dropped() {
        let mut scope = Scope::new();
        let api = HeaderName::from_static("x-api-key");
        scope.add_credentials(vec![api.clone(), header::COOKIE, api.clone()]);
        assert_eq!(
            scope.credentials,
            [
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::COOKIE,
                api
            ]
        );
        let names = header_names(["Accept-Language", "bad name", "accept-language", "x"]);
        assert_eq!(names, ["accept-language", "x"]);
    }

    #[test]
    fn keys_name_the_scheme_host_target_and_keyed_headers() {
        let req = http::Request::get("https://A.example/p?q=1")
            .header("accept-language", "fr")
            .body(())
            .unwrap();
        let mut scope = Scope::new();
        scope.vary = vec![HeaderName::from_static("accept-language")];
        let keys = request(&scope, &req).unwrap();
        assert_eq!(
            keys.entry,
            b"http:GET https://a.example/p?q=1\naccept-language=fr"
        );
        assert_eq!(keys.purge, b"http:purge //a.example/p?q=1");
        assert_eq!(purge("A.example", "/p", None), b"http:purge //a.example/p");
        let personal = http::Request::get("/p")
            .header("cookie", "a")
            .body(())
            .unwrap();
        assert_eq!(
            request(&Scope::new(), &personal).err(),
            Some(Bypass::Credentials)
        );
        let refusing = http::Request::get("/p")
            .header("cache-control", "no-store")
            .body(())
            .unwrap();
        assert_eq!(request(&scope, &refusing).err(), Some(Bypass::Request));
        let two = http::Request::get("http://a/p")
            .header("host", "b")
            .body(())
            .unwrap();
        assert_eq!(request(&scope, &two).err(), Some(Bypass::Host));
    }

    #[test]
    fn the_key_holds_host_forwarded_and_vary_headers() {
        let mut scope = Scope::new();
        scope.vary = vec![HeaderName::from_static("accept-language")];
        for name in ["Accept-Language", "host", "X-Forwarded-Proto", "forwarded"] {
            assert!(scope.keys(name.as_bytes()), "{name}");
        }
        for name in ["cookie", "accept-encoding", "*", ""] {
            assert!(!scope.keys(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn lines_are_unambiguous_and_absent_headers_add_nothing() {
        let mut scope = Scope::new();
        scope.vary = vec![HeaderName::from_static("a"), HeaderName::from_static("b")];
        let line = |h: &HeaderMap| {
            let mut k = Vec::new();
            scope.push_lines(&mut k, h);
            k
        };
        assert_eq!(line(&HeaderMap::new()), b"");
        assert_eq!(line(&headers(&[("a", "1"), ("a", "2")])), b"\na=1\na=2");
        assert_ne!(
            line(&headers(&[("a", "1,2")])),
            line(&headers(&[("a", "1"), ("a", "2")]))
        );
        assert_ne!(line(&headers(&[("a", "")])), line(&HeaderMap::new()));
        assert_eq!(
            line(&headers(&[("x-forwarded-host", "evil")])),
            b"\nx-forwarded-host=evil"
        );
    }

    #[test]
    fn long_or_secret_keys_are_hashed() {
        let short = b"http:GET //a/p".to_vec();
        assert_eq!(finish(short.clone(), 5, false), short);
        let hashed = finish(short.clone(), 5, true);
        assert_eq!(hashed.len(), 5 + 1 + 64);
        assert!(hashed.starts_with(b"http:#"));
        assert_ne!(hashed, finish(b"http:GET //a/q".to_vec(), 5, true));
        let long = vec![b'x'; 100_000];
        assert_eq!(finish(long, 5, false).len(), 70);
    }
}
